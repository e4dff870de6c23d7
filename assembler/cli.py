"""The `assembler` command line. Exit codes: 0 ok, 1 a spec, data or checkpoint error,
2 a usage error. Bad input never shows a Python traceback (set ASSEMBLER_DEBUG=1 to see ours)."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import click

from .errors import Diagnostic, SpecError
from .ir import Span
from .summary import (binding_rows, edge_rows, fmt_count as _fmt_count, fmt_flops as _fmt_flops, learned_weights,
                      network_summary)


class _Group(click.Group):
    """Turns every SpecError into its rendered message and exit code 1."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except SpecError as e:
            click.echo(e.render(), err=True)
            ctx.exit(1)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="assembler")
def main() -> None:
    """Assemble, check, compile and train transfer-learning networks from .net specs."""


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=True))
@click.option("--json", "as_json", is_flag=True, help="Print the IR and per-network summaries as JSON.")
@click.option("--quiet", "-q", is_flag=True, help="Print nothing when the spec is valid.")
def check(files, as_json, quiet):
    """Parse and check spec files; print each network's bindings with their shapes."""
    from . import resolve
    failed = False
    reports = {}
    for file in files:
        try:
            spec = resolve.read(file)
            checked = resolve.check(spec)
        except SpecError as e:
            click.echo(e.render(), err=True)
            failed = True
            continue
        for w in checked.warnings:
            click.echo(f"warning: {w}", err=True)
        if as_json:
            reports[file] = {"spec": spec.model_dump(mode="json", exclude={"text"}),
                             "networks": {n: network_summary(checked, n) for n in checked.networks},
                             "edges": [e.model_dump(mode="json") for e in checked.edges],
                             "train": [t.model_dump(mode="json", exclude={"spans"}) for t in checked.trains]}
        elif not quiet:
            click.echo(_check_text(file, checked))
    if as_json:
        click.echo(json.dumps(reports if len(files) > 1 else next(iter(reports.values()), {}), indent=2))
    sys.exit(1 if failed else 0)


def _check_text(file: str, checked) -> str:
    lines = [f"{file}: ok"]
    for name, net in checked.networks.items():
        s = network_summary(checked, name)
        inputs = ", ".join(f"{k}: {v}" for k, v in s["inputs"].items())
        lines.append(f"  network {name}({inputs}) -> {', '.join(s['outputs'])}: {_fmt_count(s['params'])} params "
                     f"({_fmt_count(s['trainable'])} trainable), {_fmt_flops(s['flops'])}FLOPs")
        width = max((len(b) for b in s["bindings"]), default=0)
        for b, shape in s["bindings"].items():
            lines.append(f"    {b.ljust(width)}  {shape}")
    for e in checked.edges:
        lines.append(f"  match {e.source} -> {e.target} : {e.weighting}")
    for t in checked.trains:
        proc = t.settings.get("procedure", {}).get("name", "finetune")
        lines.append(f"  train {', '.join(t.networks)} with {proc}")
    return "\n".join(lines)


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--write", "-w", is_flag=True, help="Rewrite the files in place (atomically).")
@click.option("--check", "check_only", is_flag=True, help="Exit 1 and list the files that are not formatted.")
def fmt(files, write, check_only):
    """Print specs in canonical form (comments kept)."""
    from .parser import parse
    from .printer import format_spec
    if write and check_only:
        raise click.UsageError("--write and --check cannot be used together")
    status = 0
    for file in files:
        try:
            text = Path(file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            click.echo(f"{file}: error: cannot read: {e}", err=True)
            status = 1
            continue
        try:
            out = format_spec(parse(text, file))
        except SpecError as e:
            click.echo(e.render(), err=True)
            status = 1
            continue
        if check_only:
            if out != text:
                click.echo(f"{file}: not formatted (run: assembler fmt --write {file})")
                status = 1
        elif write:
            if out != text:
                atomic_write(Path(file), out)
        else:
            click.echo(out, nl=False)
    sys.exit(status)


def atomic_write(path: Path, text: str) -> None:
    """Write a file so that readers see the old or the new text, never a half."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        if path.exists():
            os.chmod(tmp, path.stat().st_mode & 0o777)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _networks(checked, network: str | None) -> list[str]:
    if network is None:
        return list(checked.networks)
    if network not in checked.networks:
        from .errors import Diagnostic, did_you_mean
        raise SpecError(Diagnostic(f"no network '{network}' (given by --network)", checked.filename,
                                   hint=did_you_mean(network, checked.networks) or
                                   f"networks: {', '.join(checked.networks)}"))
    return [network]


@main.command()
@click.argument("target", type=click.Path(exists=False))
@click.option("--network", "-n", help="Show only this network.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def show(target, network, as_json):
    """Per binding: shape, parameters, FLOPs, frozen/trainable and role; totals per network."""
    from . import resolve
    checked = resolve.check(resolve.read(target))
    names = _networks(checked, network)
    learned = _learned_edges(checked, target)
    if as_json:
        out = {n: {"params": checked.params(n), "trainable": checked.params(n, trainable_only=True),
                   "flops": checked.flops(n), "inputs": {k: list(v) for k, v in checked.networks[n].inputs.items()},
                   "outputs": list(checked.networks[n].outputs), "bindings": binding_rows(checked, n),
                   **({"edges": learned[n]} if learned.get(n) else {})}
               for n in names}
        click.echo(json.dumps(out, indent=2))
        return
    for n in names:
        rows = binding_rows(checked, n)
        click.echo(f"network {n}")
        header = ("binding", "shape", "params", "FLOPs", "state", "role")
        table = [header] + [(r["binding"], str(r["shape"]), _fmt_count(r["params"]), _fmt_flops(r["flops"]),
                             r["state"], r["role"]) for r in rows]
        widths = [max(len(row[i]) for row in table) for i in range(len(header))]
        for row in table:
            click.echo("  " + "  ".join(c.rjust(w) if i in (2, 3) else c.ljust(w)
                                        for i, (c, w) in enumerate(zip(row, widths))).rstrip())
        click.echo(f"  total: {_fmt_count(checked.params(n))} params, "
                   f"{_fmt_count(checked.params(n, trainable_only=True))} trainable, {_fmt_flops(checked.flops(n))}FLOPs")
        if learned.get(n):
            click.echo(f"  matching edges into {n} (learned lambda: mean ± sd over the training samples)")
            width = max(len(f"{r['source']} -> {r['target']}") for r in learned[n])
            for r in learned[n]:
                click.echo(f"    {r['source'] + ' -> ' + r['target']:<{width}}  {r['weighting']}  "
                           f"λ = {r['lambda']:.3f} ± {r['lambda_sd'] or 0.0:.3f}")


def _learned_edges(checked, target) -> dict[str, list[dict]]:
    """Per network, the edges into it whose lambda a checkpoint recorded (L2T-ww); {} for a spec."""
    if not Path(target).is_dir():  # a spec file: nothing recorded (and no torch import for it)
        return {}
    from .store import is_checkpoint, read_meta
    if not is_checkpoint(target):
        return {}
    rows = [r for r in edge_rows(checked, read_meta(Path(target)).get("metrics")) if r["lambda"] is not None]
    out: dict[str, list[dict]] = {}
    for r in rows:
        out.setdefault(r["target"].split(".", 1)[0], []).append(r)
    return out


@main.command("compile")
@click.argument("file", type=click.Path(exists=False))
@click.option("--network", "-n", help="Compile only this network.")
@click.option("--code", is_flag=True, help="Print each GraphModule's generated Python code.")
@click.option("--output", "-o", type=click.Path(file_okay=False), help="Save a freshly initialised checkpoint here.")
@click.option("--seed", default=0, show_default=True, help="Seed of the initial weights.")
def compile_cmd(file, network, code, output, seed):
    """Compile a spec to torch.fx GraphModules."""
    from . import resolve
    from .assemble import compile as compile_spec
    from .checkpoint import save
    spec = resolve.read(file)
    asm = compile_spec(spec, seed=seed)
    for w in asm.warnings:
        click.echo(f"warning: {w}", err=True)
    for n in _networks(asm.checked, network):
        gm = asm[n]
        if code:
            click.echo(f"# network {n}")
            click.echo(gm.code.strip() + "\n")
        else:
            ops = sum(node.op in ("call_module", "call_function", "call_method") for node in gm.graph.nodes)
            click.echo(f"network {n}: {ops} ops, {_fmt_count(asm.checked.params(n))} params")
    if output:
        save(asm, output, extra={"initialised_only": True})
        click.echo(f"saved {output}")


@main.command()
@click.argument("target", type=click.Path(exists=False))
@click.option("--network", "-n", multiple=True,
              help="Network(s) to draw, or an import alias whose bindings matching edges reference "
                   "(default: all, and those imports).")
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False),
              help="Output file: .svg or .dot.")
def graph(target, network, output):
    """Draw networks: frozen and trainable parts, shared and imported modules, gates and matching
    edges; with a checkpoint, gate alphas and edge lambdas as widths."""
    from pathlib import Path as _P

    from . import checkpoint, draw, resolve
    suffix = _P(output).suffix.lower()
    if suffix not in (".svg", ".dot"):
        raise click.BadParameter("the output must end in .svg or .dot", param_hint="'-o'")
    checked = resolve.check(resolve.read(target))
    # imports whose bindings matching edges reference are drawn too (as stubs), so edges show
    aliases = list(dict.fromkeys(end.split(".", 1)[0] for e in checked.edges for end in (e.source, e.target)
                                 if end.split(".", 1)[0] in checked.imports))
    names = list(network) if network else aliases + list(checked.networks)
    for n in names:
        if n not in aliases:
            _networks(checked, n)
    weights = None
    if checkpoint.is_checkpoint(target):
        weights = learned_weights(checkpoint.restore(target))
    text = draw.to_svg(checked, names, weights) if suffix == ".svg" else draw.to_dot(checked, names, weights)
    atomic_write(_P(output), text)
    click.echo(f"wrote {output}")


DEVICE_HELP = "Where to run: auto (a GPU when present), cpu, cuda or cuda:N."


@main.command()
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
    from . import resolve
    from .train import distributed as dist
    from .train.run import Interrupted, train_spec
    spec = resolve.read(file)
    if out is None:
        out = Path("runs") / Path(file).stem / (network or "") if network else Path("runs") / Path(file).stem
    out = Path(out)
    try:
        results = train_spec(spec, network=network, out=out, sets=list(sets), resume=resume, quiet=quiet,
                             device=device, force=force)
    except Interrupted as e:
        command = resume_command(file, network, out, sets, device)
        click.echo(f"interrupted: saved {e.path}; continue with: {command}", err=True)
        sys.exit(130)
    if dist.rank() != 0:
        return
    for name, history in results.items():
        if network is not None and name != network:
            continue
        last = next((m for m in reversed(history) if "test_accuracy" in m), history[-1] if history else {})
        acc = last.get("test_accuracy")
        where = out if network else out / name
        click.echo(f"{name}: test accuracy {acc:.4f} ({where})" if acc is not None else f"{name}: trained ({where})")


def resume_command(file: str, network: str | None, out: Path, sets, device: str | None) -> str:
    """The command that continues an interrupted run, every flag that shaped it included."""
    import shlex
    words = ["assembler", "train", file] + (["--network", network] if network else []) + ["--out", str(out)]
    for s in sets:
        words += ["--set", s]
    if device:
        words += ["--device", device]
    return " ".join(shlex.quote(w) for w in words + ["--resume"])


@main.command("eval")
@click.argument("checkpoint", type=click.Path(exists=False))
@click.option("--network", "-n", help="Network to evaluate (default: the one the checkpoint trained).")
@click.option("--data", "data_text", help='Data source, e.g. \'digits(split="test", classes=[5, 6])\'; '
              "paths in it are relative to the current directory.")
@click.option("--device", help=DEVICE_HELP)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--verbose", "-v", is_flag=True, help="Accuracy per class.")
def eval_cmd(checkpoint, network, data_text, device, as_json, verbose):
    """Accuracy and loss of a trained checkpoint on its test data (or --data)."""
    from . import data as data_mod
    from .checkpoint import restore
    from .train.device import resolve as resolve_device
    from .train.evaluation import evaluate
    asm = restore(_checkpoint_arg(checkpoint))
    meta = asm.meta
    name = network or (meta.get("train", {}).get("networks") or asm.names)[0]
    _networks(asm.checked, name)
    if data_text:
        call, base = _data_flag(data_text), Path.cwd()
    else:
        call, base = _recorded_test_data(meta, asm.names.index(name) if name in asm.names else 0), \
            Path(meta.get("base_dir") or ".")
    net = asm.checked.networks[name]
    shape = next(iter(net.inputs.values()))
    flag = Span(file="--data") if data_text else None
    ds = data_mod.load(call, base, flag, seed=meta.get("settings", {}).get("seed"), shape=shape)
    out_shape = net.node(net.outputs[0]).shape
    data_mod.fits(ds, shape, flag, input_name=next(iter(net.inputs)),
                  outputs=out_shape[0] if len(out_shape) == 1 else None)
    asm.to(resolve_device(device))
    result = evaluate(asm.network(name), ds, per_class=verbose)
    result = {"network": name, "data": ds.name, **_rounded(result)}
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    click.echo(f"{name}: accuracy {result['accuracy']:.4f}, loss {result['loss']:.4f} on {result['samples']} "
               f"samples of {ds.name}")
    for c, a in (result.get("per_class") or {}).items():
        click.echo(f"  class {c}: {a:.4f}" if a is not None else f"  class {c}: no samples")


def _checkpoint_arg(path: str) -> Path:
    """A checkpoint directory given on the command line, or a clear error saying what it is."""
    from .checkpoint import META, is_checkpoint
    p = Path(path)
    if is_checkpoint(p):
        return p
    if p.is_file():
        hint = f"train it first: assembler train {path}" if p.suffix == ".net" else "give a checkpoint directory"
        raise SpecError(Diagnostic(f"not a checkpoint: {path} is a file", path, hint=hint))
    if p.is_dir():
        inside = sorted(str(d) for d in p.iterdir() if d.is_dir() and (d / META).is_file())
        hint = f"it holds the checkpoints {', '.join(inside)}: give one of them" if inside else \
            "a checkpoint is a directory written by 'assembler train' or 'compile -o'"
        raise SpecError(Diagnostic(f"not a checkpoint: {path} has no {META}", path, hint=hint))
    raise SpecError(Diagnostic(f"not a checkpoint: {path} does not exist", path, hint="check the path"))


def _recorded_test_data(meta: dict, index: int) -> dict:
    """The test data a checkpoint's run recorded for its network at `index`."""
    from . import data as data_mod
    settings = meta.get("settings", {})
    for key, derive in (("test", lambda c: c), ("data", data_mod.test_split)):
        value = settings.get(key)
        if isinstance(value, list):
            value = value[min(index, len(value) - 1)] if value else None
        call = derive(value) if isinstance(value, dict) else None
        if call is not None:
            return call
    raise click.UsageError("the checkpoint records no test data; give --data")


def _rounded(value):
    """Numbers without float32 noise: 6 significant digits."""
    if isinstance(value, float):
        return float(f"{value:.6g}")
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return value


def _data_flag(text: str) -> dict:
    from . import settings as settings_mod
    from .parser import parse_fragment
    try:
        return settings_mod.call(parse_fragment(text, "value", "--data"), "data",
                                 settings_mod.SectionScope(set(), set(), {}, set()))
    except SpecError as e:
        raise SpecError(Diagnostic(f"--data {text}: {e.message}", "--data", hint=e.diagnostics[0].hint)) from None
    except settings_mod._Bad as e:
        raise SpecError(Diagnostic(f"--data {text}: {e.diag.message}", "--data", hint=e.diag.hint)) from None


@main.command()
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
    from .checkpoint import restore, save
    from .train.tailor import prune_assembly, removable_blocks
    asm = restore(_checkpoint_arg(checkpoint))
    name = network or (asm.meta.get("train", {}).get("networks") or asm.names)[0]
    _networks(asm.checked, name)
    if not any(n.op == "gate" for n in asm.checked.networks[name].nodes):
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


def run() -> None:
    """Entry point that hides internal tracebacks unless ASSEMBLER_DEBUG is set."""
    try:
        main(standalone_mode=True)
    except SystemExit:
        raise
    except Exception as e:  # a bug of ours, not the user's input
        if os.environ.get("ASSEMBLER_DEBUG"):
            raise
        click.echo(f"internal error: {type(e).__name__}: {e}\n"
                   "this is a bug in assembler; rerun with ASSEMBLER_DEBUG=1 for the traceback and report it",
                   err=True)
        sys.exit(70)
