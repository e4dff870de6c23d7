"""`assembler export`: a compiled network -> a standalone `torch.export` program (`.pt2`) or
ONNX file, from the inference compilation (batch-norm folded, gates fixed), with every
module's weights inside (frozen imported blocks included), and a batch dimension of any size.

The written file is loaded back (`torch.export.load`, or onnxruntime for ONNX) and its outputs
compared with the network's in eval mode, at batch sizes 1 and 3; only a file that matches is
moved into place.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import Diagnostic, SpecError
from .. import inference

FORMATS = ("pt2", "onnx")
ONNX_PACKAGES = ("onnx", "onnxscript", "onnxruntime")
TOLERANCE = 1e-5  # relative to the outputs' scale when it is above 1
CHECK_BATCHES = (1, 3)


@dataclass
class Exported:
    path: Path
    network: str
    format: str
    max_abs_diff: float


def export(asm, network: str, output: str | os.PathLike, format: str = "pt2") -> Exported:
    """Write `asm[network]` to `output` as `format` ("pt2" or "onnx"), verified."""
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}")
    if format == "onnx":
        require_onnx()
    target = Path(output)
    target.parent.mkdir(parents=True, exist_ok=True)
    gm = inference.compile(asm, network, channels_last=False)
    shapes = asm.checked.networks[network].inputs
    example = inference.example_inputs(shapes, batch=2)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with _quiet():
            run = _write_pt2(gm, example, tmp) if format == "pt2" else \
                _write_onnx(gm, example, tmp, list(shapes), list(asm.checked.networks[network].outputs))
        diff = _verify(asm[network], run, shapes, f"{network} ({format})", target)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp made it private; an export is an ordinary file
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return Exported(target, network, format, diff)


def require_onnx() -> None:
    """Raise a SpecError saying how to install the ONNX extra when it is missing."""
    missing = [p for p in ONNX_PACKAGES if importlib.util.find_spec(p) is None]
    if missing:
        raise SpecError(Diagnostic(f"--format onnx needs the packages {', '.join(ONNX_PACKAGES)}; missing: "
                                   f"{', '.join(missing)}", "--format",
                                   hint="pip install 'assembler[onnx]' (or: pip install onnx onnxscript onnxruntime)"))


def _dynamic(n: int):
    batch = torch.export.Dim("batch")
    return tuple({0: batch} for _ in range(n))


def _write_pt2(gm, example, path: Path):
    try:
        program = torch.export.export(gm, example, dynamic_shapes=_dynamic(len(example)))
    except Exception as e:  # torch.export reports many error types
        raise _failed("torch.export", e, path) from None
    torch.export.save(program, str(path))
    loaded = torch.export.load(str(path)).module()
    return lambda *xs: loaded(*xs)


def _write_onnx(gm, example, path: Path, inputs: list[str], outputs: list[str]):
    import onnxruntime
    try:
        torch.onnx.export(gm, example, str(path), dynamo=True, dynamic_shapes=_dynamic(len(example)),
                          input_names=inputs, output_names=outputs, verbose=False,
                          external_data=False)  # weights inside: one file that stands alone
    except Exception as e:
        raise _failed("torch.onnx.export", e, path) from None
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def run(*xs):
        got = session.run(None, {name: x.numpy() for name, x in zip(inputs, xs)})
        tensors = [torch.from_numpy(g) for g in got]
        return tensors[0] if len(tensors) == 1 else tuple(tensors)
    return run


def _failed(what: str, e: Exception, path: Path) -> SpecError:
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return SpecError(Diagnostic(f"{what} failed: {type(e).__name__}: {first}", str(path),
                                hint="please report this network; `assembler compile --code` shows its graph"))


def _verify(network, run, shapes, what: str, target: Path) -> float:
    worst = 0.0
    for batch in CHECK_BATCHES:
        x = inference.example_inputs(shapes, batch=batch, seed=batch)
        expected = inference.outputs(network, x)
        with torch.no_grad():
            got = inference.outputs(run, x)
        scale = max((float(t.abs().max()) for t in expected if t.numel()), default=0.0)
        if len(got) != len(expected) or any(a.shape != b.shape for a, b in zip(expected, got)):
            raise SpecError(Diagnostic(f"the exported {what} returns other outputs than the network", str(target)))
        diff = max((float((a - b).abs().max()) for a, b in zip(expected, got) if a.numel()), default=0.0)
        if not diff <= TOLERANCE * max(1.0, scale):
            raise SpecError(Diagnostic(f"the exported {what} differs from the network by {diff:.3g} at batch "
                                       f"{batch}; nothing was written", str(target),
                                       hint="please report this network"))
        worst = max(worst, diff)
    return worst


@contextlib.contextmanager
def _quiet():
    """torch.export and the ONNX exporter log and warn about internals users cannot act on."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "torch._export")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings(), open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
