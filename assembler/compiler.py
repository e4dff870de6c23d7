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
from .keys import Key, ModuleKey
from .lowerings import build, emit
from .matching import build_edge


class Assembly:
    """Compiled networks sharing one set of modules. `asm["student"]` is a GraphModule.

    `imports` maps each import alias to the Assembly of the imported spec once its weights are
    resolved (`assembler.checkpoint.attach_imports`): its modules are the very instances this
    Assembly's imported blocks use, frozen, so `network("pre.cnn")` runs the imported network."""

    def __init__(self, spec: ir.Spec | None, checked: Checked, modules: dict[str, nn.Module],
                 edges: nn.ModuleList, seed: int):
        self.spec = spec
        self.checked = checked
        self.modules = modules  # module key -> instance
        self.edges = edges  # one module per checked.edges entry
        self.seed = seed
        self.warnings: list[str] = list(checked.warnings)
        self.imports: dict[str, "Assembly"] = {}
        self.device = torch.device("cpu")
        self._graphs: dict[tuple, fx.GraphModule] = {}

    def __getitem__(self, name: str) -> fx.GraphModule:
        return self.network(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self.checked.networks)

    def __contains__(self, name: str) -> bool:
        return name in self.checked.networks

    @property
    def names(self) -> list[str]:
        return list(self.checked.networks)

    def network(self, name: str, taps: Iterable[str] = (), *, start: Iterable[str] = (),
                end: Iterable[str] = (), variant: str | None = None) -> fx.GraphModule:
        """The network as a GraphModule, built once and cached.

        `taps`: it returns `(outputs, {binding: value})` from one forward pass. `start`: a
        sub-graph whose inputs are these bindings' values (one argument each, in order) and
        whose outputs are the network's. `end`: a sub-graph whose outputs are these bindings'
        values (in order) instead; with `start`, the part between them. `variant`: a registered
        rewrite of the graph (`assembler.variants`). `name` may be an imported network
        (`pre.cnn`, or `pre` when the imported file holds one network)."""
        taps, start, end = tuple(taps), tuple(start), tuple(end)
        if name not in self.checked.networks:
            return self._imported(name).network(self._imported_name(name), taps, start=start, end=end,
                                                variant=variant)
        key = (name, taps, start, end, variant)
        if key not in self._graphs:
            net = self.checked.networks[name]
            gm = build_graph(subgraph(net, start, end) if start or end else net, self.modules, taps)
            if variant is not None:
                from .variants import apply_variant
                gm = apply_variant(variant, gm)
            self._graphs[key] = gm.to(self.device)
        return self._graphs[key]

    def checked_network(self, name: str):
        """The checked network `name` designates, as `network` takes it: a network of this
        spec, or an imported `alias.net` (`alias`: a file with one network). KeyError, saying
        what there is, when none."""
        if name in self.checked.networks:
            return self.checked.networks[name]
        sub = self._imported(name)
        return sub.checked.networks[self._imported_name(name)]

    def _imported(self, name: str) -> "Assembly":
        alias = name.split(".", 1)[0]
        if alias not in self.imports:
            known = list(self.checked.networks) + [f"{a}.{n}" for a, sub in self.imports.items() for n in sub.names]
            where = "" if alias not in self.checked.imports else (
                f"; the import '{alias}' has not been attached (assembler.checkpoint.attach_imports)")
            raise KeyError(f"no network '{name}'{where}; networks: {', '.join(known)}")
        return self.imports[alias]

    def _imported_name(self, name: str) -> str:
        sub, rest = self.imports[Key(name).head], Key(name).rest
        if not rest and len(sub.names) == 1:
            return sub.names[0]
        if rest not in sub.checked.networks:
            raise KeyError(f"no network '{name}'; the import holds {', '.join(sub.names)}")
        return rest

    def module_of(self, network: str, binding: str) -> list[str]:
        """Module keys a binding uses."""
        net = self.checked.networks[network]
        return [n.module for n in net.nodes if n.binding == binding and n.module]

    def trainable_parameters(self, network: str) -> list[nn.Parameter]:
        """The parameters training `network` may change: its trainable nodes' modules, each once."""
        return list(self.named_parameters(network, edges=False).values())

    def named_parameters(self, network: str, *, edges: bool = True) -> dict[str, nn.Parameter]:
        """The trainable parameters of a network by names that read like the spec (`c2.0.weight`,
        a shared module's `rot.0.4.weight`), each once; with `edges`, also the trainable parts of
        the matching edges into it (`match[src.c2->tgt.b1].regressor.weight`), which train with
        the network. Meta-parameters are apart: `meta_parameters`."""
        net = self.checked.networks[network]
        out: dict[str, nn.Parameter] = {}
        seen: set[int] = set()
        keys = dict.fromkeys(n.module for n in net.nodes if n.module and n.trainable)
        for key in keys:
            for pname, p in self.modules[key].named_parameters():
                if p.requires_grad and id(p) not in seen:
                    seen.add(id(p))
                    out[f"{local_path(network, key)}.{pname}"] = p
        if edges:
            for label, edge in self.edges_into(network):
                for pname, p in edge.named_parameters():
                    if id(p) not in seen and not _is_meta(edge, pname):
                        seen.add(id(p))
                        out[f"{label}.{pname}"] = p
        return out

    def meta_parameters(self, network: str) -> dict[str, nn.Parameter]:
        """The meta-parameters of the matching edges into a network (L2T-ww's what/where networks)."""
        return {f"{label}.{pname}": p for label, edge in self.edges_into(network)
                for pname, p in edge.named_parameters() if _is_meta(edge, pname)}

    def edges_into(self, network: str) -> list[tuple[str, nn.Module]]:
        """(label, module) of every matching edge whose target is a binding of `network`."""
        return [(edge_label(e), self.edges[i]) for i, e in enumerate(self.checked.edges)
                if e.target.split(".", 1)[0] == network]

    def gate_alphas(self) -> dict[str, list[float]]:
        """The learned alphas of every gate, by module key."""
        with torch.no_grad():
            return {k: self.modules[k].alphas().tolist() for k, d in self.checked.modules.items() if d.role == "gate"}

    def to(self, device: torch.device | str) -> "Assembly":
        """Move every module (imported networks' too) and edge to `device`, in place."""
        self.device = torch.device(device)
        for m in self.modules.values():
            m.to(self.device)
        self.edges.to(self.device)
        for sub in self.imports.values():
            sub.to(self.device)
        for gm in self._graphs.values():
            gm.to(self.device)
        return self

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


def edge_label(edge) -> str:
    """How a matching edge is named among parameters: `match[src.c2->tgt.b1]`."""
    return f"match[{edge.source}->{edge.target}]"


def _is_meta(edge: nn.Module, pname: str) -> bool:
    meta = getattr(edge, "meta_parameters", None)
    return meta is not None and any(p is dict(edge.named_parameters())[pname] for p in meta())


def subgraph(net: CheckedNetwork, start: tuple[str, ...], end: tuple[str, ...] = ()) -> CheckedNetwork:
    """The part of a network from the values of the `start` bindings (its inputs; without
    `start`, the network's own) to its outputs, or to the values of the `end` bindings. Raises
    KeyError when a start or end is no binding, or when the outputs still depend on an input
    that no start cuts off."""
    missing = [b for b in (*start, *end) if b not in net.bindings]
    if missing:
        raise KeyError(f"network '{net.name}' has no binding(s) {', '.join(missing)} to start from or end at")
    outputs = tuple(net.bindings[b] for b in end) if end else net.outputs
    starts = tuple(net.bindings[b] for b in start) if start else tuple(net.inputs)
    return net.cut(starts, outputs)


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


def compile(spec: ir.Spec | Checked, *, seed: int = 0) -> Assembly:
    """Compile every network of a spec, with weights initialised from `seed` and `copy(...)`
    modules starting from their source's weights. Reads no files: imported blocks keep their
    initial weights until `assembler.checkpoint.attach_imports` resolves them (the public
    `assembler.compile` does both)."""
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
    init_copies(asm)
    return asm


def init_copies(asm: Assembly) -> None:
    """Give `copy(...)` modules their source's current weights."""
    for key, decl in asm.checked.modules.items():
        if decl.init_from:
            with torch.no_grad():
                src = asm.modules[decl.init_from].state_dict()
                asm.modules[key].load_state_dict(src)


def copy_weights(src, dst, keymap: dict[str, str] | None = None, gates: dict[str, list[int]] | None = None,
                  network: str | None = None) -> int:
    """Copy tensors from Assembly `src` into `dst` where their module keys agree (after
    `keymap`, a map of module path prefixes inside `network` as `edits.prune_with_map` returns;
    `gates` selects the surviving logits of pruned gates). Returns how many modules were copied."""
    keymap = keymap or {}
    gates = gates or {}
    copied = 0
    with torch.no_grad():
        for key, module in src.modules.items():
            new = _map_key(key, keymap, network)
            if new not in dst.modules:
                continue
            state = module.state_dict()
            if network and key.endswith(".gate") and key[len(network) + 1:-len(".gate")] in gates:
                keep = gates[key[len(network) + 1:-len(".gate")]]
                state = {"logits": state["logits"][keep]}
            target = dst.modules[new].state_dict()
            if all(k in target and target[k].shape == v.shape for k, v in state.items()):
                for k, v in state.items():
                    target[k].copy_(v)
                copied += 1
    return copied


def _map_key(key: str, keymap: dict[str, str], network: str | None) -> str:
    if not network or not key.startswith(network + "."):
        return key
    local = key[len(network) + 1:]
    best = max((p for p in keymap if local == p or local.startswith(p + ".")), key=len, default=None)
    if best is None:
        return key
    return f"{network}.{keymap[best]}{local[len(best):]}"


__all__ = ["Assembly", "build_graph", "compile", "copy_weights", "edge_label", "init_copies", "local_path", "subgraph"]
