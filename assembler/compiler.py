"""Checked IR -> `torch.fx.GraphModule`s, built node by node (no tracing of user code).

One fx node per op; node names and module paths come from the spec, so `gm.code` and
`gm.state_dict()` read like the spec (`c2.0.weight`). Module instances are shared: a
`shared` module, an imported block or a same-file reference is one object in every network
that uses it. Frozen modules get no gradient and keep batch-norm in eval mode.
"""

from __future__ import annotations

from typing import Iterable, Iterator

import torch
from torch import fx, nn

from . import ir
from .graph import Checked, CheckedNetwork
from .keys import ModuleKey
from .lowerings import build, emit
from .matching import build_edge


class Assembly:
    """Compiled networks sharing one set of modules. `asm["student"]` is a GraphModule."""

    def __init__(self, spec: ir.Spec | None, checked: Checked, modules: dict[str, nn.Module],
                 edges: nn.ModuleList, seed: int):
        self.spec = spec
        self.checked = checked
        self.modules = modules  # module key -> instance
        self.edges = edges  # one module per checked.edges entry
        self.seed = seed
        self.warnings: list[str] = list(checked.warnings)
        self._graphs: dict[tuple[str, tuple[str, ...]], fx.GraphModule] = {}

    def __getitem__(self, name: str) -> fx.GraphModule:
        return self.network(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self.checked.networks)

    def __contains__(self, name: str) -> bool:
        return name in self.checked.networks

    @property
    def names(self) -> list[str]:
        return list(self.checked.networks)

    def network(self, name: str, taps: Iterable[str] = ()) -> fx.GraphModule:
        """The network as a GraphModule; with `taps`, it returns `(outputs, {binding: value})`
        from one forward pass."""
        taps = tuple(taps)
        if name not in self.checked.networks:
            raise KeyError(f"no network '{name}'; networks: {', '.join(self.checked.networks)}")
        key = (name, taps)
        if key not in self._graphs:
            self._graphs[key] = build_graph(self.checked.networks[name], self.modules, taps)
        return self._graphs[key]

    def module_of(self, network: str, binding: str) -> list[str]:
        """Module keys a binding uses."""
        net = self.checked.networks[network]
        return [n.module for n in net.nodes if n.binding == binding and n.module]

    def trainable_parameters(self, network: str) -> list[nn.Parameter]:
        """The parameters training `network` may change: its trainable nodes' modules, each once."""
        net = self.checked.networks[network]
        keys = dict.fromkeys(n.module for n in net.nodes if n.module and n.trainable)
        return [p for k in keys for p in self.modules[k].parameters()]

    def gate_alphas(self) -> dict[str, list[float]]:
        """The learned alphas of every gate, by module key."""
        with torch.no_grad():
            return {k: self.modules[k].alphas().tolist() for k, d in self.checked.modules.items() if d.op == "gate"}

    def state(self, owned_only: bool = True) -> dict[str, torch.Tensor]:
        """Every tensor by global key (`student.c2.0.weight`), imported modules left out when
        `owned_only`."""
        out = {}
        for key, m in self.modules.items():
            if owned_only and self.checked.modules[key].imported_from:
                continue
            for name, t in m.state_dict().items():
                out[f"{key}.{name}"] = t
        for i, e in enumerate(self.edges):
            for name, t in e.state_dict().items():
                out[f"match.{i}.{name}"] = t
        return out


def local_path(network: str, key: str) -> str:
    """Where a module sits inside a network's GraphModule: its own modules drop the prefix."""
    return ModuleKey(key).local(network)


def _attach(root: nn.Module, path: str, module: nn.Module) -> None:
    *parents, leaf = path.split(".")
    for p in parents:
        if not hasattr(root, p):
            root.add_module(p, nn.Module())
        root = getattr(root, p)
    root.add_module(leaf, module)


def build_graph(net: CheckedNetwork, modules: dict[str, nn.Module], taps: tuple[str, ...] = ()) -> fx.GraphModule:
    g = fx.Graph()
    root = nn.Module()
    env: dict[str, fx.Node] = {}
    attached: set[str] = set()
    for n in net.nodes:
        try:
            if n.op == "input":
                env[n.name] = g.placeholder(n.name)
                continue
            args = tuple(env[i] for i in n.inputs)
            if n.module is not None:
                path = local_path(net.name, n.module)
                if path not in attached:
                    _attach(root, path, modules[n.module])
                    attached.add(path)
                env[n.name] = g.create_node("call_module", path, args, {}, name=n.name)
            else:
                env[n.name] = emit(g, n, args)
        except Exception as e:  # a compiler bug: say which spec line it came from
            where = f"{n.span}: " if n.span else ""
            raise RuntimeError(f"{where}cannot compile node '{n.name}' ({n.op}): {e}") from e
    outs = [env[o] for o in net.outputs]
    result = outs[0] if len(outs) == 1 else tuple(outs)
    if taps:
        missing = [t for t in taps if t not in net.bindings]
        if missing:
            raise KeyError(f"network '{net.name}' has no binding(s) {', '.join(missing)} to tap")
        result = (result, {t: env[net.bindings[t]] for t in taps})
    g.output(result)
    g.lint()
    gm = fx.GraphModule(root, g, class_name=net.name)
    return gm


def compile(spec: ir.Spec | Checked, *, seed: int = 0, imports: bool = True) -> Assembly:
    """Compile every network of a spec. Weights are initialised from `seed`; imported blocks
    take their checkpoint's weights (with `imports`), `copy(...)` modules their source's."""
    from .resolve import check
    syntax = spec if isinstance(spec, ir.Spec) else None
    checked = check(spec) if isinstance(spec, ir.Spec) else spec
    modules: dict[str, nn.Module] = {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for key, decl in checked.modules.items():
            modules[key] = build(decl)
        edges = nn.ModuleList(build_edge(e) for e in checked.edges)
    asm = Assembly(syntax, checked, modules, edges, seed)
    if imports:
        from .checkpoint import load_imported_weights
        load_imported_weights(asm)
    _init_copies(asm)
    return asm


def _init_copies(asm: Assembly) -> None:
    for key, decl in asm.checked.modules.items():
        if decl.init_from:
            with torch.no_grad():
                src = asm.modules[decl.init_from].state_dict()
                asm.modules[key].load_state_dict(src)


__all__ = ["Assembly", "compile", "build_graph", "local_path"]
