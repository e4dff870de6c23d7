"""What the command-line verbs share: choosing networks, checkpoint arguments, data flags,
numbers without float noise."""

from __future__ import annotations

from pathlib import Path

from ..errors import Diagnostic, SpecError


def networks_of(checked, network: str | None) -> list[str]:
    if network is None:
        return list(checked.networks)
    if network not in checked.networks:
        from ..errors import Diagnostic, did_you_mean
        raise SpecError(Diagnostic(f"no network '{network}' (given by --network)", checked.filename,
                                   hint=did_you_mean(network, checked.networks) or
                                   f"networks: {', '.join(checked.networks)}"))
    return [network]


def checkpoint_arg(path: str) -> Path:
    """A checkpoint directory given on the command line, or a clear error saying what it is."""
    from ..atomic import recover
    from ..checkpoint import META, SPEC, is_checkpoint
    p = Path(path)
    recover(p)
    if is_checkpoint(p):
        return p
    if p.is_dir() and (p / META).is_file():
        raise SpecError(Diagnostic(f"damaged checkpoint: {path} has {META} but no {SPEC}", path,
                                   hint="restore the checkpoint (or its spec.net), or retrain it"))
    if p.is_file():
        hint = f"train it first: assembler train {path}" if p.suffix == ".net" else "give a checkpoint directory"
        raise SpecError(Diagnostic(f"not a checkpoint: {path} is a file", path, hint=hint))
    if p.is_dir():
        inside = sorted(str(d) for d in p.iterdir() if d.is_dir() and (d / META).is_file())
        hint = f"it holds the checkpoints {', '.join(inside)}: give one of them" if inside else \
            "a checkpoint is a directory written by 'assembler train' or 'compile -o'"
        raise SpecError(Diagnostic(f"not a checkpoint: {path} has no {META}", path, hint=hint))
    raise SpecError(Diagnostic(f"not a checkpoint: {path} does not exist", path, hint="check the path"))


DEVICE_HELP = "Where to run: auto (a GPU when present), cpu, cuda or cuda:N."


def rounded(value):
    """Numbers without float32 noise: 6 significant digits."""
    if isinstance(value, float):
        return float(f"{value:.6g}")
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    return value


def data_flag(text: str) -> dict:
    from .. import settings as settings_mod
    from ..parser import parse_fragment
    try:
        return settings_mod.call(parse_fragment(text, "value", "--data"), "data",
                                 settings_mod.SectionScope(set(), set(), {}, set()))
    except SpecError as e:
        raise SpecError(Diagnostic(f"--data {text}: {e.message}", "--data", hint=e.diagnostics[0].hint)) from None
    except settings_mod._Bad as e:
        raise SpecError(Diagnostic(f"--data {text}: {e.diag.message}", "--data", hint=e.diag.hint)) from None
