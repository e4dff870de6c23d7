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
from .summary import (binding_rows, edge_rows, fmt_bytes, fmt_count as _fmt_count, fmt_flops as _fmt_flops,
                      learned_weights, network_summary)


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
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object: per file its IR, per-network summaries and diagnostics.")
@click.option("--quiet", "-q", is_flag=True, help="Print nothing when the spec is valid.")
@click.option("--max-params", type=click.IntRange(min=1), metavar="N",
              help="Refuse specs whose modules have more than N parameters in all (default 2e9).")
@click.option("--max-activation", type=click.IntRange(min=1), metavar="N",
              help="Refuse values of more than N numbers per sample (default 1e9).")
def check(files, as_json, quiet, max_params, max_activation):
    """Parse and check spec files; print each network's bindings with their shapes."""
    from . import resolve
    limits = resolve.Limits().with_(params=max_params, activation=max_activation)
    reports = []
    for file in files:
        try:
            spec = resolve.read(file)
            checked = resolve.check(spec, limits)
        except SpecError as e:
            if not as_json:
                click.echo(e.render(), err=True)
            reports.append({"file": file, "ok": False, "diagnostics": [_diagnostic_json(d) for d in e.diagnostics]})
            continue
        reports.append(_check_report(file, spec, checked))
        if not as_json:
            for w in checked.warnings:
                click.echo(f"warning: {w}", err=True)
            if not quiet:
                click.echo(_check_text(file, checked))
    ok = all(r["ok"] for r in reports)
    if as_json:
        click.echo(json.dumps({"ok": ok, "files": reports}, indent=2))
    sys.exit(0 if ok else 1)


def _check_report(file: str, spec, checked) -> dict:
    """What `check --json` says of a valid file (the same keys as a failed one, and more)."""
    return {"file": file, "ok": True, "diagnostics": [], "warnings": list(checked.warnings),
            "spec": spec.model_dump(mode="json", exclude={"text"}),
            "networks": {n: network_summary(checked, n) for n in checked.networks},
            "edges": [e.model_dump(mode="json") for e in checked.edges],
            "train": [t.model_dump(mode="json", exclude={"spans"}) for t in checked.trains]}


def _diagnostic_json(d: Diagnostic) -> dict:
    """A diagnostic for machines: where (line and column 1-based; 0 when the whole file) and what."""
    return {"file": d.filename, "line": d.line, "column": d.column, "width": d.width, "message": d.message,
            "hint": d.hint, "notes": list(d.notes)}


def _check_text(file: str, checked) -> str:
    lines = [f"{file}: ok"]
    for name, net in checked.networks.items():
        s = network_summary(checked, name)
        inputs = ", ".join(f"{k}: {v}" for k, v in s["inputs"].items())
        lines.append(f"  network {name}({inputs}) -> {', '.join(s['outputs'])}: {_fmt_count(s['params'])} params "
                     f"({_fmt_count(s['trainable'])} trainable), {_fmt_flops(s['flops'])}FLOPs, "
                     f"{fmt_bytes(s['param_bytes'])} of weights, {fmt_bytes(s['activation_bytes'])} of values per "
                     "sample")
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
@click.option("--network", "-n", multiple=True, help="Network(s) or import alias(es) to draw (default: all).")
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False),
              help="Output file: .svg or .dot.")
def graph(target, network, output):
    """Draw networks: frozen and trainable parts, shared and imported modules, gates and matching
    edges; with a checkpoint, gate alphas and edge lambdas as widths. By default every network
    and the imports that matching edges reach; -n takes networks and import aliases."""
    from pathlib import Path as _P

    from . import checkpoint, draw, resolve
    suffix = _P(output).suffix.lower()
    if suffix not in (".svg", ".dot"):
        raise click.BadParameter("the output must end in .svg or .dot", param_hint="'-o'")
    checked = resolve.check(resolve.read(target))
    names = list(network) if network else draw.default_networks(checked)
    for n in names:
        if n not in checked.imports:
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
    result = {"network": name, "data": ds.name, **_rounded(result)}
    if not data_text:  # what the checkpoint's procedure adds (compat: recombination accuracy)
        result.update(_rounded(_procedure_report(asm, meta, name, base, shape)))
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
    from . import data as data_mod
    from .settings import plugins
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


def _checkpoint_arg(path: str) -> Path:
    """A checkpoint directory given on the command line, or a clear error saying what it is."""
    from .atomic import recover
    from .checkpoint import META, is_checkpoint
    p = Path(path)
    recover(p)
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


@main.command("bundle")
@click.argument("checkpoint", type=click.Path(exists=False))
@click.option("--output", "-o", required=True, type=click.Path(file_okay=False),
              help="Where to write the self-contained copy.")
def bundle_cmd(checkpoint, output):
    """Copy a checkpoint with every checkpoint it imports inside it, so that one directory
    travels alone (to another machine, user or cache)."""
    from .checkpoint import bundle
    if Path(output).exists():
        raise SpecError(Diagnostic(f"{output} already exists", output, hint="give a new folder to -o"))
    ids = bundle(_checkpoint_arg(checkpoint), output)
    click.echo(f"wrote {output} with {len(ids)} imported checkpoint(s) inside")


@main.command("import")
@click.argument("factory", metavar="MODULE:FACTORY")
@click.option("--input", "-i", "inputs", multiple=True, required=True, metavar="NAME=C,H,W",
              help="An input of forward and its shape without the batch, e.g. x=3,224,224 (one per argument, in "
                   "order).")
@click.option("--weights", "-w", type=click.Path(dir_okay=False),
              help="A state dict to load first: .safetensors, or .pt/.pth (loaded with weights_only=True).")
@click.option("--name", "-n", default="net", show_default=True, help="The network's name in the spec.")
@click.option("--output", "-o", required=True, type=click.Path(file_okay=False), help="The checkpoint directory.")
def import_cmd(factory, inputs, weights, name, output):
    """Import a PyTorch module as a checkpoint directory that specs `use`.

    MODULE is a .py file or an importable module, FACTORY a class or function in it called
    without arguments. The module is traced with torch.fx; its outputs and parameter count
    are checked against the imported network before anything is written."""
    from .interop import from_torch, load_factory
    shapes = dict(_input_flag(text) for text in inputs)
    if len(shapes) != len(inputs):
        raise click.BadParameter("an input name is given twice", param_hint="'--input'")
    model = load_factory(factory)
    result = from_torch(model, shapes, name=name, out=output, weights=weights, source=factory)
    templates = f", templates: {', '.join(result.templates)}" if result.templates else ""
    click.echo(f"imported {factory} as network {name}: {_fmt_count(result.params)} params{templates}")
    click.echo(f"outputs match the module's (max abs difference {result.max_abs_diff:.3g} on random inputs); "
               f"saved {result.path}")
    click.echo(f"its spec: {result.path / 'spec.net'}; a spec imports it with `use \"PATH\" as pre`, PATH leading "
               f"from the spec's directory to {result.path}")


def _input_flag(text: str) -> tuple[str, tuple[int, ...]]:
    name, sep, dims = text.partition("=")
    try:
        shape = tuple(int(d) for d in dims.split(","))
    except ValueError:
        shape = ()
    if not sep or not name.strip() or not shape or min(shape) < 1:
        raise click.BadParameter(f"'{text}' is not NAME=C,H,W (positive whole numbers without the batch)",
                                 param_hint="'--input'")
    return name.strip(), shape


@main.command()
@click.argument("checkpoint", type=click.Path(exists=False))
@click.option("--network", "-n", help="The network to export (default: the checkpoint's trained or only one).")
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False), help="The file to write.")
@click.option("--format", "fmt", type=click.Choice(["pt2", "onnx"]),
              help="pt2 (torch.export, the default) or onnx (needs: pip install 'assembler[onnx]'); by default "
                   "taken from the output's suffix.")
def export(checkpoint, network, output, fmt):
    """Export a network as a standalone torch.export program (or ONNX) of its inference
    compilation: batch-norm folded, gates fixed, every weight inside, any batch size. The
    written file is loaded back and checked against the checkpoint's network."""
    from .checkpoint import restore
    from .interop import export as export_network
    fmt = fmt or ("onnx" if Path(output).suffix.lower() == ".onnx" else "pt2")
    if fmt == "onnx":
        from .interop.exporter import require_onnx
        require_onnx()
    asm = restore(checkpoint)
    name = network or _default_network(asm)
    _networks(asm.checked, name)
    result = export_network(asm, name, output, format=fmt)
    click.echo(f"exported {name} ({_fmt_count(asm.checked.params(name))} params) to {result.path} as {fmt}; "
               f"max abs difference from the checkpoint's network {result.max_abs_diff:.3g}")


def _default_network(asm) -> str:
    meta = getattr(asm, "meta", {})
    named = (meta.get("train", {}).get("networks") or [meta.get("imported", {}).get("network")])[0]
    if named in asm.checked.networks:
        return named
    if len(asm.names) == 1:
        return asm.names[0]
    raise click.UsageError(f"the checkpoint holds several networks ({', '.join(asm.names)}); choose one with -n")


class _ListOption(click.Command):
    """Lets `--candidates A B C` stand for `--candidates A --candidates B --candidates C`:
    every word after the flag up to the next option is one more value."""

    lists = ("--candidates", "-c")

    def parse_args(self, ctx, args):
        out, flag, first = [], None, False
        for i, a in enumerate(args):
            if a == "--":  # the rest is not options
                out += args[i:]
                break
            if flag and not a.startswith("-"):
                if not first:
                    out.append(flag)
                out.append(a)
                first = False
                continue
            flag, first = (a, True) if a in self.lists else (None, False)
            out.append(a)
        return super().parse_args(ctx, out)


@main.command(cls=_ListOption)
@click.option("--candidates", "-c", multiple=True, required=True, metavar="MODEL...",
              help="Networks to rank: spec files (trained on demand and cached, as `use` does) or checkpoint "
                   "directories, each optionally :NETWORK.")
@click.option("--probe", "-p", "probe_text", required=True, metavar="DATA",
              help='Probe images and labels, e.g. \'digits(split="test", classes=[5, 6, 7, 8, 9])\'.')
@click.option("--target", "-t", metavar="MODEL",
              help="A network trained on the probe task (spec or checkpoint, optionally :NETWORK); DEPARA needs it.")
@click.option("--layers", default="auto", show_default=True, metavar="auto|encoder|L1,L2",
              help="Layers to score: every feature map or vector, each candidate's encoder (its last one "
                   "before the output), or these bindings.")
@click.option("--method", "-m", type=click.Choice(["all", "depara", "logme", "leep"]), default="all",
              show_default=True, help="Score(s) to compute; the first of depara, logme, leep sorts the results.")
@click.option("--lam", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="DEPARA's weight of the edge term: s = s_V + lam * s_E.")
@click.option("--scalar", type=click.Choice(["norm", "mean"]), default="norm", show_default=True,
              help="DEPARA's nodes: x * d s(F(x))/dx with s the l2 norm (paper) or the signed mean (reference code).")
@click.option("--target-layer", metavar="BINDING", help="The target's layer for DEPARA (default: its encoder).")
@click.option("--probes", "limit", type=click.IntRange(min=2), default=500, show_default=True,
              help="Probe at most this many images (a seeded, fixed subset).")
@click.option("--batch", type=click.IntRange(min=1), default=100, show_default=True, help="Probes per forward pass.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the probe subset.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="Also draw a candidates x layers heat map (.svg).")
def rank(candidates, probe_text, target, layers, method, lam, scalar, target_layer, limit, batch, seed, as_json,
         output):
    """Rank pre-trained networks, and their layers, for transfer to the task of a probe set:
    DEPARA beside LogME and LEEP."""
    from . import analysis
    from .analysis.models import check_fits
    methods = analysis.METHODS if method == "all" else (method,)
    if "depara" in methods and target is None:
        raise click.UsageError("DEPARA needs --target, a network trained on the probe task "
                               "(or use --method logme / --method leep)")
    if output and not output.lower().endswith(".svg"):
        raise click.BadParameter("the heat map is written as SVG: the name must end in .svg", param_hint="'-o'")
    names = tuple(x.strip() for x in layers.split(",")) if layers not in ("auto", "encoder") else layers
    if isinstance(names, tuple) and not all(names):
        raise click.BadParameter(f"'{layers}' names an empty layer", param_hint="'--layers'")
    settings = analysis.Settings(methods=methods, layers=names, lam=lam, scalar=scalar, target_layer=target_layer,
                                 batch=batch)
    probe = analysis.probe_from_flag(probe_text, limit, seed)
    models = [analysis.load_model(c, "--candidates", quiet=as_json) for c in candidates]
    tgt = analysis.load_model(target, "--target", quiet=as_json) if target and "depara" in methods else None
    for m, flag in [(m, "--candidates") for m in models] + ([(tgt, "--target")] if tgt else []):
        check_fits(m, probe, flag)
    result = analysis.rank(models, probe, tgt, settings)
    click.echo(json.dumps(analysis.to_json(result), indent=2) if as_json else analysis.to_text(result))
    if output:
        atomic_write(Path(output), analysis.to_svg(result))
        click.echo(f"wrote {output}", err=as_json)


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
