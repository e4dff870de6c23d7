"""The tools' verbs: `import` and `export` (PyTorch in and out), `rank` (which model and layer
to transfer from)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..summary import fmt_count as _fmt_count
from ..atomic import write_file as atomic_write
from .common import networks_of


@click.command("import")
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
    from ..interop import from_torch, load_factory
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


@click.command()
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
    from ..checkpoint import restore
    from ..interop import export as export_network
    fmt = fmt or ("onnx" if Path(output).suffix.lower() == ".onnx" else "pt2")
    if fmt == "onnx":
        from ..interop.exporter import require_onnx
        require_onnx()
    asm = restore(checkpoint)
    name = network or _default_network(asm)
    networks_of(asm.checked, name)
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


@click.command(cls=_ListOption)
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
    from .. import analysis
    from ..analysis.models import check_fits
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
