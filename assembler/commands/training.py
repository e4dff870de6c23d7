"""The verbs on training: `train`, `eval`, `prune`, `bundle`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from ..errors import Diagnostic, SpecError
from ..ir import Span
from ..summary import fmt_count as _fmt_count, fmt_flops as _fmt_flops
from .common import DEVICE_HELP, checkpoint_arg, data_flag, networks_of, rounded


@click.command()
@click.argument("file", type=click.Path(exists=False))
@click.option("--network", "-n", help="Train only this network's section (and what it depends on).")
@click.option("--out", "-o", type=click.Path(file_okay=False),
              help="Checkpoint directory (default: runs/<spec>[/<network>]).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Override a setting, e.g. --set epochs=5 --set procedure.gamma1=0.1 (repeatable).")
@click.option("--resume", is_flag=True, help="Continue an interrupted run from its checkpoint.")
@click.option("--force", is_flag=True, help="Overwrite an existing checkpoint instead of refusing.")
@click.option("--device", help=DEVICE_HELP + " Default: the section's device setting, else auto.")
@click.option("--quiet", "-q", is_flag=True, help="No progress output.")
def train(file, network, out, sets, resume, force, device, quiet):
    """Train a spec's networks; a checkpoint after every epoch; Ctrl-C saves and stops."""
    from .. import resolve
    from ..train import distributed as dist
    from ..train.run import Interrupted, train_spec
    spec = resolve.read(file)
    if out is None:
        out = Path("runs") / Path(file).stem / (network or "") if network else Path("runs") / Path(file).stem
    out = Path(out)
    try:
        results = train_spec(spec, network=network, out=out, sets=list(sets), resume=resume, quiet=quiet,
                             device=device, force=force)
    except Interrupted as e:
        command = resume_command(file, network, out, sets, device)
        saved = f"saved {e.path}" if e.path is not None else \
            "nothing saved (a section trained in memory, for the asked network, stopped; it trains again)"
        click.echo(f"interrupted: {saved}; continue with: {command}", err=True)
        sys.exit(130)
    if dist.rank() != 0:
        return
    for name, history in results.items():
        if network is not None and name != network:
            continue
        acc = _last_test_accuracy(history, name)
        where = out if network else out / name
        click.echo(f"{name}: test accuracy {acc:.4f} ({where})" if acc is not None else f"{name}: trained ({where})")


def _last_test_accuracy(history: list[dict], name: str) -> float | None:
    """A network's last test accuracy in a metrics history (top level, or per network when the
    section trained several)."""
    for m in reversed(history):
        row = (m.get("networks") or {}).get(name, m)
        if row.get("test_accuracy") is not None:
            return row["test_accuracy"]
    return None


def resume_command(file: str, network: str | None, out: Path, sets, device: str | None) -> str:
    """The command that continues an interrupted run, every flag that shaped it included."""
    import shlex
    words = ["assembler", "train", file] + (["--network", network] if network else []) + ["--out", str(out)]
    for s in sets:
        words += ["--set", s]
    if device:
        words += ["--device", device]
    return " ".join(shlex.quote(w) for w in words + ["--resume"])


@click.command("eval")
@click.argument("checkpoint", type=click.Path(exists=False))
@click.option("--network", "-n", help="Network to evaluate (default: the one the checkpoint trained).")
@click.option("--data", "data_text", help='Data source, e.g. \'digits(split="test", classes=[5, 6])\'; '
              "paths in it are relative to the current directory.")
@click.option("--device", help=DEVICE_HELP)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--verbose", "-v", is_flag=True, help="Accuracy per class.")
def eval_cmd(checkpoint, network, data_text, device, as_json, verbose):
    """Accuracy and loss of a trained checkpoint on its test data (or --data)."""
    from .. import data as data_mod
    from ..checkpoint import restore
    from ..train.device import resolve as resolve_device
    from ..train.evaluation import evaluate
    asm = restore(checkpoint_arg(checkpoint))
    meta = asm.meta
    name = network or (meta.get("train", {}).get("networks") or asm.names)[0]
    networks_of(asm.checked, name)
    if data_text:
        call, base = data_flag(data_text), Path.cwd()
    else:
        call, base = _recorded_test_data(meta, _data_index(asm, meta, name)), Path(meta.get("base_dir") or ".")
    net = asm.checked.networks[name]
    shape = next(iter(net.inputs.values()))
    flag = Span(file="--data") if data_text else None
    ds = data_mod.load(call, base, flag, seed=meta.get("settings", {}).get("seed"), shape=shape)
    out_shape = net.node(net.outputs[0]).shape
    data_mod.fits(ds, shape, flag, input_name=next(iter(net.inputs)),
                  outputs=out_shape[0] if len(out_shape) == 1 else None)
    asm.to(resolve_device(device))
    result = evaluate(asm.network(name), ds, per_class=verbose)
    result = {"network": name, "data": ds.name, **rounded(result)}
    if not data_text:  # what the checkpoint's procedure adds (compat: recombination accuracy)
        result.update(rounded(_procedure_report(asm, meta, name, base, shape)))
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    click.echo(f"{name}: accuracy {result['accuracy']:.4f}, loss {result['loss']:.4f} on {result['samples']} "
               f"samples of {ds.name}")
    for c, a in (result.get("per_class") or {}).items():
        click.echo(f"  class {c}: {a:.4f}" if a is not None else f"  class {c}: no samples")
    for key, row in {**(result.get("recombination") or {}).get("pairs", {}),
                     **({"recombined " + name: result["recombined"]} if "recombined" in result else {})}.items():
        click.echo(f"{key}: accuracy {row['batch']:.4f} (batch statistics), {row['running']:.4f} (running "
                   f"statistics) on {row['samples']} samples of the common classes")


def _data_index(asm, meta: dict, name: str) -> int:
    """Whose recorded data evaluates `name`: its own when the checkpoint trained it, else that of
    the trained network whose module gives its output (a recombined network: its head's task)."""
    trained = meta.get("train", {}).get("networks") or []
    if name in trained:
        return trained.index(name)
    net = asm.checked.networks[name]
    key = (net.node(net.outputs[0]).module or "") if net.outputs else ""
    return next((i for i, t in enumerate(trained) if key.startswith(t + ".")), 0)


def _procedure_report(asm, meta: dict, name: str, base: Path, shape) -> dict:
    """The extra results of the checkpoint's procedure: its `eval_report(asm, meta, load,
    network)`, if it has one, given `load(key, i)` for the recorded "data" or "test" setting of
    the i-th trained network."""
    from .. import data as data_mod
    from ..settings import plugins
    proc = meta.get("settings", {}).get("procedure", {}).get("name")
    plugin = plugins("procedure").get(proc) if proc else None
    hook = getattr(plugin.resolve(), "eval_report", None) if plugin else None
    if hook is None:
        return {}

    def load(key: str, i: int):
        value = meta["settings"].get(key) if key == "data" else _recorded_test_data(meta, i)
        call = value[min(i, len(value) - 1)] if isinstance(value, list) else value
        return data_mod.load(call, base, None, seed=meta.get("settings", {}).get("seed"), shape=shape)
    return hook(asm, meta, load, name)


def _recorded_test_data(meta: dict, index: int) -> dict:
    """The test data a checkpoint's run recorded for its network at `index`."""
    from .. import data as data_mod
    settings = meta.get("settings", {})
    for key, derive in (("test", lambda c: c), ("data", data_mod.test_split)):
        value = settings.get(key)
        if isinstance(value, list):
            value = value[min(index, len(value) - 1)] if value else None
        call = derive(value) if isinstance(value, dict) else None
        if call is not None:
            return call
    raise click.UsageError("the checkpoint records no test data; give --data")


@click.command()
@click.argument("checkpoint", type=click.Path(exists=False))
@click.option("--threshold", "-t", type=float, default=0.05, show_default=True,
              help="Remove proxies whose gate alpha is below this.")
@click.option("--blocks", "-k", type=click.IntRange(min=0), default=0, show_default=True,
              help="Remove this many pre-trained blocks, those with the smallest alpha.")
@click.option("--network", "-n", help="The gated network (default: the one the checkpoint trained).")
@click.option("--output", "-o", required=True, type=click.Path(file_okay=False), help="Where to save the pruned checkpoint.")
def prune(checkpoint, threshold, blocks, network, output):
    """NetTailor's pruning step alone: drop weak proxies and the k least important blocks,
    cascading; the result is an ordinary spec with the surviving weights (no fine-tuning)."""
    from ..checkpoint import restore, save
    from ..train.tailor import prune_assembly, removable_blocks
    asm = restore(checkpoint_arg(checkpoint))
    name = network or (asm.meta.get("train", {}).get("networks") or asm.names)[0]
    networks_of(asm.checked, name)
    if not any(n.role == "gate" for n in asm.checked.networks[name].nodes):
        raise SpecError(Diagnostic(f"network '{name}' has no gates to prune", str(checkpoint),
                                   hint="prune a network trained with gates (skips or gate(...))"))
    n = removable_blocks(asm.checked.networks[name])
    if blocks > n:
        raise SpecError(Diagnostic(f"--blocks {blocks}: network '{name}' has only {n} removable pre-trained "
                                   "block(s)", "--blocks", hint=f"give --blocks {n} or less"))
    new, removed, items = prune_assembly(asm, name, threshold, blocks, int(asm.meta.get("seed", 0)))
    save(new, output, settings=asm.meta.get("settings", {}),
         extra={"pruned_from": str(checkpoint), "pruned": items, "train": {"complete": True, "networks": [name]}})
    click.echo(f"removed {len(items)} path(s): {', '.join(items) or 'none'}")
    click.echo(f"{name}: {_fmt_count(asm.checked.params(name))} -> {_fmt_count(new.checked.params(name))} params, "
               f"{_fmt_flops(asm.checked.flops(name))}FLOPs -> {_fmt_flops(new.checked.flops(name))}FLOPs; saved {output}")


@click.command("bundle")
@click.argument("checkpoint", type=click.Path(exists=False))
@click.option("--output", "-o", required=True, type=click.Path(file_okay=False),
              help="Where to write the self-contained copy.")
def bundle_cmd(checkpoint, output):
    """Copy a checkpoint with every checkpoint it imports inside it, so that one directory
    travels alone (to another machine, user or cache)."""
    from ..checkpoint import bundle
    if Path(output).exists():
        raise SpecError(Diagnostic(f"{output} already exists", output, hint="give a new folder to -o"))
    ids = bundle(checkpoint_arg(checkpoint), output)
    click.echo(f"wrote {output} with {len(ids)} imported checkpoint(s) inside")
