"""The verbs on specs: `check`, `fmt`, `show`, `compile`, `graph` (check and fmt never import torch)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from ..errors import Diagnostic, SpecError
from ..summary import (binding_rows, edge_rows, fmt_bytes, fmt_count as _fmt_count, fmt_flops as _fmt_flops,
                       learned_weights, network_summary)
from ..atomic import write_file as atomic_write
from .common import networks_of


@click.command()
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
    from .. import resolve
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
        reports.append(_check_report(file, spec, checked) if as_json else {"ok": True})
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


@click.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--write", "-w", is_flag=True, help="Rewrite the files in place (atomically).")
@click.option("--check", "check_only", is_flag=True, help="Exit 1 and list the files that are not formatted.")
def fmt(files, write, check_only):
    """Print specs in canonical form (comments kept)."""
    from ..imports import read_text
    from ..parser import parse
    from ..printer import format_spec
    if write and check_only:
        raise click.UsageError("--write and --check cannot be used together")
    status = 0
    for file in files:
        try:  # the reader `check` uses: a regular file, the size limit, located UTF-8 errors
            text = read_text(Path(file), file)
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


@click.command()
@click.argument("target", type=click.Path(exists=False))
@click.option("--network", "-n", help="Show only this network.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def show(target, network, as_json):
    """Per binding: shape, parameters, FLOPs, frozen/trainable and role; totals per network. For
    a checkpoint NetTailor trained, also its curve over k and the kept network."""
    from .. import resolve
    checked = resolve.check(resolve.read(target))
    names = networks_of(checked, network)
    recorded = _recorded_metrics(target)
    learned = _learned_edges(checked, recorded)
    tailored = recorded if recorded is not None and "tailor" in recorded and "chosen_k" in recorded else None
    students = {n for t in checked.trains if (t.settings.get("procedure") or {}).get("name") == "nettailor"
                for n in t.networks}
    if as_json:
        out = {n: {"params": checked.params(n), "trainable": checked.params(n, trainable_only=True),
                   "flops": checked.flops(n), "inputs": {k: list(v) for k, v in checked.networks[n].inputs.items()},
                   "outputs": list(checked.networks[n].outputs), "bindings": binding_rows(checked, n),
                   **({"edges": learned[n]} if learned.get(n) else {}),
                   **({"nettailor": {k: tailored[k] for k in TAILORING if k in tailored}}
                      if tailored is not None and n in students else {})}
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
    if tailored is not None and (network is None or network in students):
        from ..train.tailor import table
        try:
            text = table(tailored)
        except (KeyError, TypeError):  # metrics of an older version: meta.json has them as they are
            text = "(recorded in an older format; see the checkpoint's meta.json)"
        click.echo(f"nettailor's choice for {', '.join(sorted(students)) or 'the student'}, as recorded when the "
                   "checkpoint was trained:")
        click.echo("\n".join("  " + line for line in text.splitlines()))


# NetTailor's final metrics that `show --json` gives under the tailored network: the reference
# accuracies and costs, the rule, the curve over k and the kept network
TAILORING = ("teacher_val_accuracy", "teacher_accuracy", "teacher_flops", "student_val_accuracy",
             "student_test_accuracy", "student_flops", "student_params", "student_latency", "held_out", "validation",
             "tolerance", "cost", "tailor", "chosen_k", "slower_than_teacher")


def _recorded_metrics(target) -> dict | None:
    """A checkpoint's final metrics (read once: edge lambdas, NetTailor's curve), else None."""
    if not Path(target).is_dir():  # a spec file: nothing recorded (and no torch import for it)
        return None
    from ..store import is_checkpoint, read_meta
    if not is_checkpoint(target):
        return None
    return read_meta(Path(target)).get("metrics") or {}


def _learned_edges(checked, metrics: dict | None) -> dict[str, list[dict]]:
    """Per network, the edges into it whose lambda a checkpoint recorded (L2T-ww); {} for a spec."""
    rows = [r for r in edge_rows(checked, metrics) if r["lambda"] is not None]
    out: dict[str, list[dict]] = {}
    for r in rows:
        out.setdefault(r["target"].split(".", 1)[0], []).append(r)
    return out


@click.command("compile")
@click.argument("file", type=click.Path(exists=False))
@click.option("--network", "-n", help="Compile only this network.")
@click.option("--code", is_flag=True, help="Print each GraphModule's generated Python code.")
@click.option("--output", "-o", type=click.Path(file_okay=False), help="Save a freshly initialised checkpoint here.")
@click.option("--seed", default=0, show_default=True, help="Seed of the initial weights.")
def compile_cmd(file, network, code, output, seed):
    """Compile a spec to torch.fx GraphModules."""
    from .. import resolve
    from ..assemble import compile as compile_spec
    from ..checkpoint import save
    spec = resolve.read(file)
    asm = compile_spec(spec, seed=seed)
    for w in asm.warnings:
        click.echo(f"warning: {w}", err=True)
    for n in networks_of(asm.checked, network):
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


@click.command()
@click.argument("target", type=click.Path(exists=False))
@click.option("--network", "-n", multiple=True, help="Network(s) or import alias(es) to draw (default: all).")
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False),
              help="Output file: .svg or .dot.")
def graph(target, network, output):
    """Draw networks: frozen and trainable parts, shared and imported modules, gates and matching
    edges; with a checkpoint, gate alphas and edge lambdas as widths. By default every network
    and the imports that matching edges reach; -n takes networks and import aliases."""
    from pathlib import Path as _P

    from .. import checkpoint, draw, resolve
    suffix = _P(output).suffix.lower()
    if suffix not in (".svg", ".dot"):
        raise click.BadParameter("the output must end in .svg or .dot", param_hint="'-o'")
    checked = resolve.check(resolve.read(target))
    names = list(network) if network else draw.default_networks(checked)
    for n in names:
        if n not in checked.imports:
            networks_of(checked, n)
    weights = None
    if checkpoint.is_checkpoint(target):
        weights = learned_weights(checkpoint.restore(target))
    text = draw.to_svg(checked, names, weights) if suffix == ".svg" else draw.to_dot(checked, names, weights)
    atomic_write(_P(output), text)
    click.echo(f"wrote {output}")
