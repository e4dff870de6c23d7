"""`train` sections: the keys they take, and the registries of procedures, data sources,
optimizers and schedules whose calls they hold. Each plug-in declares its parameters here,
so `check` validates a section before any training code runs; implementations attach to the
same names when they land (`Plugin.implementation`), and installed packages add more through
the entry-point groups `assembler.procedures` and `assembler.data`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Callable

from . import ir
from . import signature
from .errors import Diagnostic, SpecError, diagnostic, did_you_mean
from .signature import BindError
from .signature import fraction as _fraction, non_negative as _non_negative, one_of as _one_of
from .signature import positive as _positive


@dataclass(frozen=True)
class Param:
    """One parameter of a plug-in. `kind` is one of: int, float, bool, str, network (a network
    of this spec or an import), binding (of the trained network), shared (a shared module),
    ints (a list of whole numbers), names (a list of shared modules)."""

    name: str
    kind: str
    default: Any = ...
    check: Callable[[Any], str | None] | None = None
    doc: str = ""

    @property
    def required(self) -> bool:
        return self.default is ...


@dataclass
class Plugin:
    kind: str  # procedure, data, optimizer, schedule
    name: str
    params: tuple[Param, ...] = ()
    doc: str = ""
    positional: int = 0  # how many leading parameters may be given without a name
    implementation: Any = None  # set by the module that implements it
    loader: str | None = None  # "module:attr" imported on first use to attach the implementation
    labels: bool | Callable[[dict], bool] = True  # procedure: needs labelled data (given its arguments);
    # data source: gives labels
    validate: str | Callable | None = None  # procedure: "module:function" (or the function) checking
    # its arguments against the checked networks, torch-free, run by `check`: see assembler.checks
    validation: float = 0.0  # procedure: the share of the training data it holds out when the section
    # sets no `validation` (NetTailor chooses k on it)

    def available(self) -> bool:
        """Whether an implementation is attached or its loader's module exists (found on the
        import path without importing it: checking never imports the training code)."""
        if self.implementation is not None:
            return True
        if not self.loader:
            return False
        return _module_exists(self.loader.partition(":")[0])

    def resolve(self) -> Any:
        if self.implementation is None and self.loader:
            import importlib
            module, _, attr = self.loader.partition(":")
            self.implementation = getattr(importlib.import_module(module), attr)
        return self.implementation


def _module_exists(dotted: str) -> bool:
    """Whether module `dotted` (under this package) can be found, without importing it or
    the packages between (whose `__init__` could import torch)."""
    from importlib.machinery import PathFinder
    from pathlib import Path
    parts = dotted.split(".")
    if parts[0] != __package__:
        return False
    path = [str(Path(__file__).resolve().parent)]
    for i, part in enumerate(parts[1:], 1):
        found = PathFinder.find_spec(part, path)
        if found is None:
            return False
        path = list(found.submodule_search_locations or [])
        if i < len(parts) - 1 and not path:
            return False
    return True


REGISTRY: dict[str, dict[str, Plugin]] = {"procedure": {}, "data": {}, "optimizer": {}, "schedule": {}}
_GROUPS = {"procedure": "assembler.procedures", "data": "assembler.data"}
_loaded: set[str] = set()


def register(plugin: Plugin) -> Plugin:
    """Add a plug-in. Registering a name again attaches or replaces its implementation."""
    table = REGISTRY[plugin.kind]
    old = table.get(plugin.name)
    if old is not None and not plugin.params and old.params:
        old.implementation = plugin.implementation or old.implementation
        return old
    table[plugin.name] = plugin
    return plugin


def plugins(kind: str) -> dict[str, Plugin]:
    """The registry of one kind, with installed packages' entries loaded on first use, and the
    modules named in $ASSEMBLER_PLUGINS (comma-separated; each registers its plug-ins when
    imported), for plug-ins that are not packaged."""
    if "env" not in _loaded:
        _loaded.add("env")
        import importlib
        import os
        for module in filter(None, (m.strip() for m in os.environ.get("ASSEMBLER_PLUGINS", "").split(","))):
            try:
                importlib.import_module(module)
            except ImportError as e:
                raise SpecError(Diagnostic(f"ASSEMBLER_PLUGINS: cannot import '{module}': {e}", "ASSEMBLER_PLUGINS",
                                           hint="name importable modules (on PYTHONPATH), separated by commas")) from None
    if kind in _GROUPS and kind not in _loaded:
        _loaded.add(kind)
        for ep in entry_points(group=_GROUPS[kind]):
            obj = ep.load()
            if isinstance(obj, Plugin):
                register(obj)
    return REGISTRY[kind]


def _device(v):
    import re
    return None if re.fullmatch(r"auto|cpu|cuda(:\d+)?", v) else 'must be "auto", "cpu", "cuda" or "cuda:N"'


P = Param
_PROCEDURES = [
    Plugin("procedure", "finetune", (), "task loss only: the direct-learn baseline", loader="assembler.train.procedure:Finetune"),
    Plugin("procedure", "distill", (
        P("teacher", "network", doc="network whose outputs are distilled"),
        P("temperature", "float", 4.0, _positive, "softmax temperature of the KD term"),
        P("alpha", "float", 0.5, _fraction, "weight of the KD term; the task loss gets 1 - alpha"),
    ), "task loss plus temperature-scaled KD on a teacher's outputs", loader="assembler.train.distill:Distill"),
    Plugin("procedure", "matching", (
        P("beta", "float", 0.5, _non_negative, "weight of the matching edges' loss"),
    ), "task loss plus fixed-weight matching edges into the trained network (FitNets, attention transfer)",
        loader="assembler.train.matching:Matching"),
    Plugin("procedure", "backdistill", (
        P("teacher", "network", doc="the network whose task module the student must reproduce"),
        P("at", "binding", doc="the adapter whose input the pseudo-gradients are taken at"),
        P("lam", "float", 1.0, _non_negative, "weight of the gradient-matching term"),
        P("alpha", "float", 1.0, _positive, "fixed scale of the student's pseudo-gradients (not learned)"),
        P("projections", "int", 1, _non_negative, "random projections r per sample and step; 0: the full Jacobian"),
        P("ce", "bool", True, doc="add the task loss (needs labelled data); false: train without labels"),
    ), "back-distillation (network transplanting, paper 000)", loader="assembler.train.backdistill:BackDistill",
        labels=lambda args: args.get("ce", True), validate="assembler.checks.backdistill:validate"),
    Plugin("procedure", "nettailor", (
        P("teacher", "network", doc="fine-tuned network whose blocks and logits the student matches"),
        P("gamma1", "float", 0.3, _non_negative, "weight of the expected complexity E[C]"),
        P("gamma2", "float", 10.0, _non_negative, "weight of the teacher L2 term"),
        P("threshold", "float", 0.05, _fraction, "proxies whose alpha falls below this are pruned"),
        P("tolerance", "float", 0.005, _fraction, "accuracy the tailored network may lose against the teacher"),
        P("blocks", "ints", None, lambda v: None if v and all(k >= 0 for k in v) and len(set(v)) == len(v)
          else "must list distinct whole numbers, 0 or more", "numbers k of pre-trained blocks to try removing "
          "(default: every k)"),
        P("retrain_epochs", "int", None, _positive, "epochs of fine-tuning after pruning (default: epochs)"),
        P("omega", "str", "local", _one_of("local", "global"),
          "teacher term: each student layer on detached inputs (the reference code), or the whole student"),
        P("latency", "bool", True, doc="measure each candidate's CPU latency against the teacher's"),
        P("cost", "str", "flops", _one_of("flops", "latency"),
          "what the kept network minimises within tolerance: FLOPs (the paper), or measured latency against the "
          "teacher (the larger of the batch-1 and batch-256 ratios; needs latency=true)"),
    ), "NetTailor (paper 001)", loader="assembler.train.nettailor:NetTailor", validate="assembler.checks.nettailor:validate",
        validation=0.2),
    Plugin("procedure", "l2tww", (
        P("beta", "float", 0.5, _non_negative, "weight of the matching loss"),
        P("inner_steps", "int", 2, _positive, "T: look-ahead steps on the matching loss"),
        P("meta_lr", "float", 1e-4, _positive, "Adam learning rate of the meta-networks"),
        P("meta_wd", "float", 1e-4, _non_negative, "weight decay of the meta-networks"),
    ), "learning what and where to transfer (paper 003)", loader="assembler.train.l2tww:L2TWW",
        validate="assembler.checks.l2tww:validate"),
    Plugin("procedure", "compat", (
        P("aux", "names", (), doc="shared auxiliary heads: rotation (4 outputs) or common-class heads"),
        P("common", "ints", (), doc="the common classes (default: those every task's data has)"),
        P("schedule", "str", "joint", _one_of("joint", "incremental"), "train together or one after the other"),
        P("iiw", "bool", False, doc="identical initial weights for every network"),
        P("rotation", "names", None, doc="which aux heads predict rotation (default: those with 4 outputs)"),
    ), "compatible components (paper 002)", loader="assembler.train.compat:Compat",
        validate="assembler.checks.compat:validate"),
]
_DATA = [
    Plugin("data", "digits", (
        P("split", "str", "train", _one_of("train", "test", "all")),
        P("classes", "ints", None, lambda v: None if v and all(0 <= c <= 9 for c in v) and len(set(v)) == len(v)
          else "must list distinct digits 0-9", "keep these classes, relabelled 0..n-1 in order"),
        P("positive", "int", None, lambda v: None if 0 <= v <= 9 else "must be a digit 0-9",
          "one-vs-rest: this class is 1, a balanced sample of the rest 0"),
        P("per_class", "int", None, _positive, "a seeded few-shot subset of n samples per class"),
        P("invert", "bool", False, doc="1 - x: white digits on black become black on white"),
    ), "the 8x8 digits shipped with the package", positional=1, loader="assembler.data:digits"),
    Plugin("data", "npz", (P("path", "str"),), "arrays x and y from a .npz file", positional=1,
           loader="assembler.data:npz"),
    Plugin("data", "folder", (P("path", "str"), P("size", "ints", None)),
           "images in one sub-folder per class", positional=2, loader="assembler.data:folder"),
    Plugin("data", "noise", (
        P("n", "int", 512, _positive, "how many samples"),
        P("dist", "str", "uniform", _one_of("uniform", "normal"), "uniform in [0, 1] or standard normal"),
        P("seed", "int", 0, _non_negative, "seed of the draw"),
    ), "label-free random samples shaped like the trained network's input (zero-sample training)",
        loader="assembler.data:noise", labels=False),
]
_OPTIMIZERS = [
    Plugin("optimizer", "sgd", (P("lr", "float", 0.01, _positive), P("momentum", "float", 0.0, _non_negative),
                                P("weight_decay", "float", 0.0, _non_negative), P("nesterov", "bool", False)),
           positional=1),
    Plugin("optimizer", "adam", (P("lr", "float", 1e-3, _positive), P("weight_decay", "float", 0.0, _non_negative)),
           positional=1),
    Plugin("optimizer", "adamw", (P("lr", "float", 1e-3, _positive), P("weight_decay", "float", 0.01, _non_negative)),
           positional=1),
]
_SCHEDULES = [
    Plugin("schedule", "constant", ()),
    Plugin("schedule", "cosine", ()),
    Plugin("schedule", "step", (P("every", "int", check=_positive), P("gamma", "float", 0.1, _positive)),
           positional=2),
]
for _p in _PROCEDURES + _DATA + _OPTIMIZERS + _SCHEDULES:
    register(_p)


@dataclass(frozen=True)
class Key:
    kind: str  # a plugin kind, or int, or "data" (one call or a list of calls)
    doc: str
    check: Callable[[Any], str | None] | None = None


KEYS: dict[str, Key] = {
    "procedure": Key("procedure", "the training procedure"),
    "data": Key("data", "training data: one source, or a list with one per trained network"),
    "test": Key("data", "evaluation data (default: the test split of each data source)"),
    "optimizer": Key("optimizer", "optimizer over the trainable parameters"),
    "schedule": Key("schedule", "learning-rate schedule: constant, cosine or step(every=, gamma=)"),
    "epochs": Key("int", "passes over the training data", _positive),
    "batch": Key("int", "samples per step", _positive),
    "seed": Key("int", "seed of initialisation, sampling and shuffling", _non_negative),
    "validation": Key("float", "a stratified share of the training data kept out of training (the same samples "
                   "in every section with the same data and seed), for choices procedures make",
                   lambda v: None if 0 <= v < 1 else "must be in [0, 1)"),
    "device": Key("str", "where to train: auto, cpu, cuda or cuda:N (--device overrides)", _device),
}
DEFAULTS: dict[str, Any] = {
    "optimizer": {"name": "sgd", "args": {"lr": 0.01, "momentum": 0.0, "weight_decay": 0.0, "nesterov": False}},
    "schedule": {"name": "constant", "args": {}},
    "epochs": 10,
    "batch": 64,
    "seed": 0,
}


# ---------------------------------------------------------------------------------------------
# Values


class _Bad(Exception):
    def __init__(self, message: str, span, hint: str | None = None):
        super().__init__(message)
        self.diag = diagnostic(message, span, hint=hint)


def plain(expr) -> Any:
    """A setting's IR value as plain data: numbers, strings, lists, names (dotted strings) and
    calls ({"name": ..., "args": {...}, "positional": [...]})."""
    if isinstance(expr, (ir.Number, ir.String, ir.Bool)):
        return expr.value
    if isinstance(expr, ir.ListValue):
        return [plain(x) for x in expr.items]
    if isinstance(expr, ir.Ref):
        return _Name(expr.dotted)
    if isinstance(expr, ir.Call):
        return {"name": expr.ref.dotted, "positional": [plain(a.value) for a in expr.args if a.name is None],
                "args": {a.name: plain(a.value) for a in expr.args if a.name is not None}}
    raise _Bad("expected a value (a number, string, list, name or call)", getattr(expr, "span", None))


class _Name(str):
    """A bare name in a setting (a network, a plug-in, a shared module)."""


def held_out_source(settings: dict) -> tuple:
    """What decides which samples a section's `validation` share holds out, besides the share:
    its first data source and its seed (sections that agree on both hold out the same samples)."""
    data = settings.get("data")
    return (data[0] if isinstance(data, list) else data), settings.get("seed", 0)


@dataclass
class SectionScope:
    networks: set[str]  # same-file networks
    imported: set[str]  # `alias` and `alias.net` names of imported networks
    bindings: dict[str, set[str]]  # trained network -> its bindings
    shared: set[str]
    trained: tuple[str, ...] = ()
    checked: dict[str, Any] = field(default_factory=dict)  # network name (`net`, `alias`, `alias.net`) ->
    # its CheckedNetwork, for procedures' `validate` (networks with errors of their own left out)
    modules: dict[str, Any] = field(default_factory=dict)  # the spec's checked module declarations
    edges: tuple = ()  # the spec's checked matching edges (`graph.Edge`)




def check_train(t: ir.Train, scope: SectionScope) -> tuple[dict[str, Any], dict, list[Diagnostic]]:
    """Validate one train section; returns its settings as plain data, their spans and errors."""
    diags: list[Diagnostic] = []
    out: dict[str, Any] = {}
    spans = {}
    for s in t.settings:
        if s.key in out:
            diags.append(diagnostic(f"setting '{s.key}' is given twice", s.span))
            continue
        if s.key not in KEYS:
            diags.append(diagnostic(f"unknown setting '{s.key}'", s.span, width=len(s.key),
                                    hint=did_you_mean(s.key, KEYS) or f"settings are: {', '.join(KEYS)}"))
            continue
        try:
            out[s.key] = _setting(s.key, s.value, t, scope)
            spans[s.key] = s.span
        except _Bad as e:
            diags.append(e.diag)
    if "procedure" not in out and not any(d.message.startswith("setting 'procedure'") for d in diags):
        out.setdefault("procedure", {"name": "finetune", "args": {}})
    diags.extend(_label_problems(out, spans))
    if not diags:
        diags.extend(_validate(t, out, spans, scope))
    return out, spans, diags


def _validate(t: ir.Train, out: dict, spans: dict, scope: SectionScope) -> list[Diagnostic]:
    """A procedure's own checks, located at the argument (or setting) they name."""
    proc = out.get("procedure")
    plugin = plugins("procedure")[proc["name"]] if isinstance(proc, dict) else None
    if plugin is None or plugin.validate is None or any(n not in scope.checked for n in scope.trained):
        return []  # a trained network with errors of its own: those explain what would follow
    validate = plugin.validate
    if isinstance(validate, str):
        import importlib
        module, _, attr = validate.partition(":")
        validate = getattr(importlib.import_module(module), attr)
    written = next((x.value for x in t.settings if x.key == "procedure"), None)
    arg_spans = {a.name: a.value.span for a in getattr(written, "args", ()) if a.name}  # at the value, as _typed
    return [diagnostic(p.message, arg_spans.get(p.at) or spans.get(p.at) or spans.get("procedure"), hint=p.hint)
            for p in validate(out, scope)]


def _label_problems(out: dict, spans: dict) -> list[Diagnostic]:
    """A procedure that needs labels, given a label-free data source, is an error at the data."""
    proc = out.get("procedure")
    if not isinstance(proc, dict) or "data" not in out:
        return []
    needs = plugins("procedure")[proc["name"]].labels
    needs = needs(proc["args"]) if callable(needs) else needs
    calls = out["data"] if isinstance(out["data"], list) else [out["data"]]
    bare = [c["name"] for c in calls if not plugins("data")[c["name"]].labels]
    if not needs or not bare:
        return []
    return [diagnostic(f"procedure '{proc['name']}' needs labelled data, but '{bare[0]}' gives no labels",
                       spans.get("data"), hint="train on a labelled source, or use a procedure that trains "
                       "without labels (e.g. backdistill with ce=false)")]


def _setting(key: str, expr, t: ir.Train, scope: SectionScope) -> Any:
    spec = KEYS[key]
    if spec.kind == "int":
        v = plain(expr)
        if not isinstance(v, int) or isinstance(v, bool):
            raise _Bad(f"setting '{key}' must be a whole number, got {_show(v)}", expr.span)
        if p := signature.in_range(v) or (spec.check and spec.check(v)):
            raise _Bad(f"setting '{key}' {p}, got {_show(v)}", expr.span)
        return v
    if spec.kind == "float":
        v = plain(expr)
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            raise _Bad(f"setting '{key}' must be a number, got {_show(v)}", expr.span)
        if p := signature.in_range(v) or (spec.check and spec.check(v)):
            raise _Bad(f"setting '{key}' {p}, got {_show(v)}", expr.span)
        return float(v)
    if spec.kind == "str":
        v = plain(expr)
        if not isinstance(v, str) or isinstance(v, _Name):
            raise _Bad(f"setting '{key}' must be a string, got {_show(v)}", expr.span)
        if spec.check and (p := spec.check(v)):
            raise _Bad(f"setting '{key}' {p}, got {_show(v)}", expr.span)
        return v
    if spec.kind == "data":
        items = expr.items if isinstance(expr, ir.ListValue) else (expr,)
        if isinstance(expr, ir.ListValue) and len(items) != len(t.networks):
            raise _Bad(f"'{key}' lists {len(items)} source(s) for {len(t.networks)} network(s)", expr.span,
                       hint="give one source, or a list with one source per trained network")
        calls = [call(x, "data", scope) for x in items]
        return calls if isinstance(expr, ir.ListValue) else calls[0]
    return call(expr, spec.kind, scope)


def call(expr, kind: str, scope: SectionScope) -> dict:
    """Validate a plug-in call (or bare name) against the registry of `kind`."""
    if isinstance(expr, ir.Ref):
        name, args, span = expr.dotted, (), expr.span
    elif isinstance(expr, ir.Call):
        name, args, span = expr.ref.dotted, expr.args, expr.ref.span
    else:
        raise _Bad(f"expected a {kind} name or call, got {_show(plain(expr))}", expr.span)
    table = plugins(kind)
    if name not in table:
        raise _Bad(f"unknown {kind} '{name}'", span,
                   hint=did_you_mean(name, table) or f"known: {', '.join(sorted(table))}")
    plugin = table[name]
    names = [p.name for p in plugin.params]
    try:
        given = signature.bind(names, [(a.name, a) for a in args], positional=plugin.positional,
                               required=[p.name for p in plugin.params if p.required])
    except BindError as e:
        raise _bind_error(e, kind, name, names, plugin, args, expr) from None
    bound: dict[str, Any] = {}
    for p in plugin.params:
        if p.name in given:
            a = given[p.name]
            bound[p.name] = _typed(plain(a.value), p, f"'{p.name}' of {name}", a.value.span, scope)
        else:
            bound[p.name] = list(p.default) if isinstance(p.default, tuple) else p.default
    return {"name": name, "args": bound}


def _bind_error(e: BindError, kind: str, name: str, names: list[str], plugin: Plugin, args, expr) -> "_Bad":
    at = args[e.index].span if e.index is not None else expr.span
    if e.kind in ("too_many", "after_keyword"):
        i = e.index
        return _Bad(f"{kind} '{name}' takes its arguments by name", at,
                    hint=f"write {names[i] if i < len(names) else 'name'}=..." if names else None)
    if e.kind == "unknown":
        return _Bad(f"{kind} '{name}' has no setting '{e.name}'", at,
                    hint=did_you_mean(e.name, names) or (f"it takes: {', '.join(names)}" if names else
                                                         "it takes no settings"))
    if e.kind == "twice":
        return _Bad(f"setting '{e.name}' of '{name}' is given twice", at)
    doc = plugin.params[names.index(e.name)].doc
    return _Bad(f"{kind} '{name}' needs the setting '{e.name}'", expr.span, hint=doc or None)


def _typed(v, p: Param, what: str, span, scope: SectionScope):
    k = p.kind
    if k in ("int", "float", "ints") and (problem := signature.in_range(v)):
        raise _Bad(f"{what} {problem}, got {_show(v)}", span)
    if k == "float" and isinstance(v, (int, float)) and not isinstance(v, bool):
        v = float(v)
    elif k == "int" and isinstance(v, int) and not isinstance(v, bool):
        pass
    elif k == "bool" and isinstance(v, bool) or k == "str" and isinstance(v, str) and not isinstance(v, _Name):
        pass
    elif k == "ints" and isinstance(v, list) and all(isinstance(x, int) and not isinstance(x, bool) for x in v):
        pass
    elif k == "network" and isinstance(v, _Name):
        if v not in scope.networks and v not in scope.imported:
            raise _Bad(f"{what} names no network: '{v}'", span,
                       hint=did_you_mean(v, scope.networks | scope.imported))
        return str(v)
    elif k == "binding" and isinstance(v, _Name):
        known = set().union(*scope.bindings.values()) if scope.bindings else set()
        if v not in known:
            raise _Bad(f"{what} names no binding of {', '.join(scope.trained)}: '{v}'", span,
                       hint=did_you_mean(v, known))
        return str(v)
    elif k == "names" and isinstance(v, list) and all(isinstance(x, _Name) for x in v):
        for x in v:
            if x not in scope.shared:
                raise _Bad(f"{what}: '{x}' is not a shared module", span, hint=did_you_mean(x, scope.shared))
        return [str(x) for x in v]
    else:
        hint = None
        if k == "names" and isinstance(v, list) and all(isinstance(x, str) for x in v):
            hint = f"write {p.name}=[{', '.join(map(str, v))}] (names, not strings)"
        raise _Bad(f"{what} must be {_KIND_WORDS[k]}, got {_show(v)}", span, hint=hint)
    if problem := signature.in_range(v) or (p.check and p.check(v)):
        raise _Bad(f"{what} {problem}, got {_show(v)}", span)
    return v


_KIND_WORDS = {"int": "a whole number", "float": "a number", "bool": "true or false", "str": "a string",
               "network": "a network name", "binding": "a binding name", "ints": "a list of whole numbers",
               "names": "a list of shared module names"}


def _show(v) -> str:
    if isinstance(v, _Name):
        return f"the name '{v}'"
    if isinstance(v, dict):
        return f"the call {v['name']}(...)"
    if isinstance(v, list):
        return "[" + ", ".join(_show(x) for x in v) + "]"
    return signature.show(v)


def unimplemented(settings: dict) -> list[str]:
    """Plug-ins named in checked settings that have no implementation installed yet."""
    names = []
    for key in ("procedure",):
        value = settings.get(key)
        if isinstance(value, dict) and not plugins("procedure")[value["name"]].available():
            names.append(value["name"])
    return names
