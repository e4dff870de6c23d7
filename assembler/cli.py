"""The `assembler` command line. Exit codes: 0 ok, 1 a spec, data or checkpoint error,
2 a usage error. Bad input never shows a Python traceback (set ASSEMBLER_DEBUG=1 to see ours)."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import click

from .errors import SpecError


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


def _fmt_count(n: int) -> str:
    return f"{n:,}"


def _fmt_flops(n: int) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return str(n)


def network_summary(checked, name: str) -> dict:
    net = checked.networks[name]
    return {
        "inputs": {k: list(v) for k, v in net.inputs.items()},
        "outputs": list(net.outputs),
        "params": checked.params(name),
        "trainable": checked.params(name, trainable_only=True),
        "flops": checked.flops(name),
        "bindings": {b: list(net.node(n).shape) for b, n in net.bindings.items() if b not in net.inputs},
    }


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
