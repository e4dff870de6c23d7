"""`assembler import` / `from_torch`: a PyTorch module -> a checkpoint directory that specs `use`.

Steps: load the weights (if given) into the module; trace it and map it to ops
(`trace.py`); write the spec text (`spec_writer.py`); check and compile it; copy every torch
module's tensors into the compiled module at its key; check that the compiled network
computes what the module computes (eval mode, random inputs) and holds as many parameters;
only then save the checkpoint (atomically). Any failure is a `SpecError` naming the place
(the module path, the weights file, the factory) and nothing is written.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import Diagnostic, SpecError
from ..locate import SPEC
from .spec_writer import write
from .trace import Traced, UnsupportedError, trace

TOLERANCE = 1e-5  # max abs difference allowed, relative to the outputs' scale when it is above 1
CHECK_BATCH = 4


@dataclass
class Imported:
    """What `from_torch` wrote."""

    path: Path
    network: str
    params: int
    max_abs_diff: float
    text: str  # the spec
    templates: list[str]


def from_torch(model: nn.Module, inputs: dict[str, tuple[int, ...]] = {"x": (3, 224, 224)}, name: str = "net",
               out: str | os.PathLike = "DIR", weights: str | os.PathLike | dict | None = None, *,
               source: str | None = None) -> Imported:
    """Import `model` as network `name` with the given input shapes (without the batch) and
    save it as the checkpoint directory `out`. `weights` is a state dict or a `.safetensors`,
    `.pt` or `.pth` file loaded into the model first (`.pt` with `weights_only=True`).
    `source` names the model in error messages (default: its class)."""
    where = source or type(model).__name__
    _check_names(name, inputs, where)
    target = _output_dir(out)
    if weights is not None:
        load_weights(model, weights)
    model.eval()
    try:
        traced = trace(model, {k: tuple(v) for k, v in inputs.items()})
        written = write(traced, name)
    except UnsupportedError as e:
        raise SpecError(Diagnostic(str(e), where, hint=e.hint)) from None
    asm = _compile(written.text, name)
    _load_into(asm, traced, written.keys)
    params, diff = _verify(asm, traced, name, where)
    from ..checkpoint import save
    save(asm, target, extra={"imported": {"source": where, "network": name, "params": params,
                                          "max_abs_diff": diff, "inputs": {k: list(v) for k, v in inputs.items()}}})
    return Imported(target, name, params, diff, (target / SPEC).read_text(encoding="utf-8"), written.templates)


# ---------------------------------------------------------------------------------------------
# Inputs


def load_factory(spec: str) -> nn.Module:
    """`MODULE:FACTORY` -> the module it builds. MODULE is a `.py` file or an importable
    module name; FACTORY a class, a function (called without arguments) or a module object."""
    module_name, sep, attr = spec.rpartition(":")
    if not sep or not module_name or not attr:
        raise SpecError(Diagnostic(f"'{spec}' is not MODULE:FACTORY", spec,
                                   hint="e.g. models/resnet.py:resnet18 or mypackage.models:Net"))
    try:
        module = _import_module(module_name)
    except SpecError:
        raise
    except Exception as e:  # the user's module failed to import: say so, with its error
        raise SpecError(Diagnostic(f"cannot import {module_name}: {type(e).__name__}: {e}", spec,
                                   hint="run it with python to see the whole error")) from None
    factory = getattr(module, attr, None)
    if factory is None:
        from ..errors import did_you_mean
        candidates = _factories(module)
        raise SpecError(Diagnostic(f"{module_name} has no '{attr}'", spec,
                                   hint=did_you_mean(attr, candidates) or
                                   f"modules and functions there: {', '.join(candidates) or 'none'}"))
    try:
        model = factory if isinstance(factory, nn.Module) else factory()
    except Exception as e:
        raise SpecError(Diagnostic(f"{attr}() failed: {type(e).__name__}: {e}", spec,
                                   hint="the factory is called without arguments; wrap it in a function that "
                                        "passes them")) from None
    if not isinstance(model, nn.Module):
        raise SpecError(Diagnostic(f"{attr} gave a {type(model).__name__}, not a torch.nn.Module", spec))
    return model


def _factories(module) -> list[str]:
    """Names in `module` that could be factories: its nn.Module classes and functions."""
    import inspect
    return sorted(n for n, v in vars(module).items() if not n.startswith("_") and (
        isinstance(v, type) and issubclass(v, nn.Module) and v.__module__ == module.__name__ or
        inspect.isfunction(v) and v.__module__ == module.__name__))


def _import_module(name: str):
    if name.endswith(".py") or os.sep in name or "/" in name:
        path = Path(name)
        if not path.is_file():
            raise SpecError(Diagnostic(f"no such file: {name}", name, hint="check the path before the ':'"))
        mod_name = f"_assembler_import_{path.stem}"
        spec = importlib.util.spec_from_file_location(mod_name, path)
        module = importlib.util.module_from_spec(spec)
        sys.path.insert(0, str(path.parent.resolve()))  # so the file can import its neighbours
        try:
            sys.modules[mod_name] = module
            spec.loader.exec_module(module)
        finally:
            sys.path.remove(str(path.parent.resolve()))
        return module
    sys.path.insert(0, os.getcwd())  # as `python -m` would: modules of the current directory first
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(os.getcwd())


def load_weights(model: nn.Module, weights: str | os.PathLike | dict) -> None:
    """Load a state dict (or a `.safetensors`/`.pt`/`.pth` file of one) into `model`, strictly."""
    where = str(weights) if not isinstance(weights, dict) else "the weights"
    state = weights if isinstance(weights, dict) else read_state_dict(Path(weights))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        missing, unexpected = _key_diff(model, state)
        detail = "; ".join(p for p in (f"missing {_few(missing)}" if missing else "",
                                       f"unexpected {_few(unexpected)}" if unexpected else "") if p)
        raise SpecError(Diagnostic(f"the weights do not fit the model: {detail or str(e).splitlines()[0]}", where,
                                   hint="the file must be this model's state_dict()")) from None


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise SpecError(Diagnostic(f"no such file: {path}", str(path), hint="check --weights"))
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise SpecError(Diagnostic(f"cannot read safetensors: {e}", str(path))) from None
    if path.suffix not in (".pt", ".pth", ".bin"):
        raise SpecError(Diagnostic(f"unknown weights format '{path.suffix}'", str(path),
                                   hint="give a .safetensors, .pt or .pth file"))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # weights_only refuses arbitrary pickles: the safe failure we want
        raise SpecError(Diagnostic(f"cannot load with weights_only=True: {type(e).__name__}: "
                                   f"{str(e).splitlines()[0]}", str(path),
                                   hint="save the model's state_dict() (torch.save(model.state_dict(), path)) or "
                                        "use safetensors")) from None
    if isinstance(obj, dict) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
        # a training checkpoint that holds the state dict under a usual key
        obj = next((obj[k] for k in ("state_dict", "model_state_dict", "model") if isinstance(obj.get(k), dict)), obj)
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise SpecError(Diagnostic("the file does not hold a state dict (names -> tensors)", str(path),
                                   hint="save the model's state_dict()"))
    return obj


def _key_diff(model: nn.Module, state: dict) -> tuple[list[str], list[str]]:
    own = set(model.state_dict())
    return sorted(own - set(state)), sorted(set(state) - own)


def _few(keys: list[str], n: int = 4) -> str:
    return ", ".join(keys[:n]) + (f" and {len(keys) - n} more" if len(keys) > n else "")


def _check_names(name: str, inputs: dict, where: str) -> None:
    from ..lower import name_problem
    from ..ops import builtin_names
    import re
    for what, n in [("the network", name)] + [("an input", k) for k in inputs]:
        problem = name_problem(n, what, builtin_names() if what == "the network" else frozenset())
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", n):
            problem = (f"'{n}' is not a name", "names are letters, digits and _, not starting with a digit")
        if problem:
            raise SpecError(Diagnostic(problem[0], where, hint=problem[1]))
    for k, shape in inputs.items():
        if not shape or not all(isinstance(d, int) and d > 0 for d in shape):
            raise SpecError(Diagnostic(f"input '{k}' has shape {list(shape)}; shapes are positive whole numbers "
                                       "without the batch", where, hint="e.g. x=3,224,224"))


def _output_dir(out) -> Path:
    from ..checkpoint import is_checkpoint
    target = Path(out)
    if target.exists() and not is_checkpoint(target) and (not target.is_dir() or any(target.iterdir())):
        raise SpecError(Diagnostic(f"{target} exists and is not a checkpoint directory", str(target),
                                   hint="choose a new directory (an existing checkpoint is replaced)"))
    return target


# ---------------------------------------------------------------------------------------------
# Compile, fill, verify


def _compile(text: str, name: str):
    from ..compiler import compile as compile_spec
    from ..parser import parse
    from ..printer import format_spec
    try:
        spec = parse(format_spec(parse(text, f"<import {name}>")), f"<import {name}>")
        return compile_spec(spec, seed=0)
    except SpecError as e:  # our writer produced a spec the language refuses: a bug of ours
        raise RuntimeError(f"assembler import wrote a spec that does not check:\n{e.render()}\n--- spec ---\n{text}") \
            from None


def _load_into(asm, traced: Traced, keys: dict[str, str]) -> None:
    stateful = {k for k, m in asm.modules.items() if any(True for _ in m.state_dict())}
    missing = stateful - set(keys.values())
    if missing:
        raise RuntimeError(f"assembler import left compiled modules without weights: {sorted(missing)}")
    with torch.no_grad():
        for path, key in keys.items():
            source, target = traced.model.get_submodule(path).state_dict(), asm.modules[key].state_dict()
            if set(source) != set(target) or any(source[k].shape != target[k].shape for k in source):
                raise RuntimeError(f"assembler import mapped '{path}' to '{key}' but their tensors differ: "
                                   f"{ {k: tuple(v.shape) for k, v in source.items()} } vs "
                                   f"{ {k: tuple(v.shape) for k, v in target.items()} }")
            for k, t in target.items():
                t.copy_(source[k])


def _verify(asm, traced: Traced, name: str, where: str) -> tuple[int, float]:
    from ..inference import example_inputs, outputs
    model = traced.model
    ours = asm.checked.params(name)
    theirs = sum(p.numel() for p in model.parameters())
    if ours != theirs:
        used = {s.module for s in traced.steps if s.module}
        idle = [p for p, m in model.named_modules() if p and p not in used and any(True for _ in m.parameters(False))]
        raise SpecError(Diagnostic(f"the imported network holds {ours:,} parameters but the model {theirs:,}: "
                                   f"forward never uses {_few(idle) or 'some of its parameters'}", where,
                                   hint="import a module whose forward uses all its parameters (e.g. without its "
                                        "unused heads)"))
    x = example_inputs(traced.inputs, batch=CHECK_BATCH, seed=0)
    expected, got = outputs(model, x), outputs(asm[name], x)
    scale = max((float(t.abs().max()) for t in expected if t.numel()), default=0.0)
    diff = max((float((a - b).abs().max()) for a, b in zip(expected, got) if a.numel()), default=0.0)
    if len(expected) != len(got) or not diff <= TOLERANCE * max(1.0, scale):
        raise SpecError(Diagnostic(f"the imported network's outputs differ from the model's by {diff:.3g} "
                                   f"(allowed {TOLERANCE * max(1.0, scale):.3g}); nothing was written", where,
                                   hint="the forward may compute something outside its traced graph (in-place "
                                        "updates of its inputs, global state); please report this model"))
    return ours, diff
