"""The `assembler` command line. Exit codes: 0 ok, 1 a spec, data or checkpoint error,
2 a usage error, 130 Ctrl-C after saving. Bad input never shows a Python traceback (set
ASSEMBLER_DEBUG=1 to see ours). The verbs live in `assembler.commands`."""

from __future__ import annotations

import os
import sys

import click

from .commands import specs, tools, training
from .errors import SpecError
from .allocator import steady_allocator


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


for _command in (specs.check, specs.fmt, specs.show, specs.compile_cmd, specs.graph, training.train, training.eval_cmd,
                 training.prune, training.bundle_cmd, tools.rank, tools.import_cmd, tools.export):
    main.add_command(_command)


def run() -> None:
    """Entry point that hides internal tracebacks unless ASSEMBLER_DEBUG is set. It fixes
    glibc's malloc thresholds first (`allocator.steady_allocator`): faster, steadier timings."""
    steady_allocator()
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
