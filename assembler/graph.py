"""The checked IR: each network lowered to a graph of ops with shapes, counts and roles.

This is what the compiler, `show`, `graph` and the procedures read. It is produced by
`assembler.resolve.check` from a syntax `Spec`; users rarely build it by hand.
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from .ir import Span

Role = Literal["input", "layer", "proxy", "gate", "merge", "adapter", "shared", "imported", "copy", "reference"]


class Module(BaseModel):
    """One module instance (a set of parameters), shared by every node that names its key.

    Keys are paths from the top of the spec: `student.c2.0`, `rot.0` (a shared module),
    `pre.c2.0` (imported), so a key says who owns the module."""

    model_config = ConfigDict(frozen=True)
    key: str
    op: str
    args: dict[str, Any]
    in_shape: tuple[int, ...]
    trainable: bool
    role: Role
    params: int
    init_from: str | None = None  # `copy(...)`: the module whose weights it starts from
    imported_from: str | None = None  # the import alias that owns it
    origin: str | None = None  # for an imported module: its key inside the imported spec


class GraphNode(BaseModel):
    """One op application: an fx node once compiled."""

    model_config = ConfigDict(frozen=True)
    name: str  # unique within the network; the binding's own name for its last node
    op: str  # "input", an op of the table, or a merge: add, mul, cat, gate
    args: dict[str, Any] = {}
    inputs: tuple[str, ...] = ()
    shape: tuple[int, ...]
    binding: str  # the spec binding this node belongs to
    module: str | None = None  # key into Checked.modules, for ops with a module
    trainable: bool = False
    role: Role = "layer"
    params: int = 0
    flops: int = 0
    span: Span | None = None


class CheckedNetwork(BaseModel):
    model_config = ConfigDict(frozen=True)
    name: str
    inputs: dict[str, tuple[int, ...]]
    outputs: tuple[str, ...]
    nodes: tuple[GraphNode, ...]  # in topological (definition) order
    bindings: dict[str, str]  # binding name -> the node that holds its value
    span: Span | None = None
    failed: tuple[str, ...] = ()  # bindings that had errors (so later errors do not pile up)
    _by_name: dict[str, GraphNode] | None = PrivateAttr(default=None)
    _by_binding: dict[str, list[GraphNode]] | None = PrivateAttr(default=None)
    _bindings_graph: Any = PrivateAttr(default=None)

    def node(self, name: str) -> GraphNode:
        if self._by_name is None:
            self._by_name = {n.name: n for n in self.nodes}
        return self._by_name[name]

    def nodes_of(self, binding: str) -> list[GraphNode]:
        """The nodes of one binding (or input), in order."""
        if self._by_binding is None:
            self._by_binding = {}
            for n in self.nodes:
                self._by_binding.setdefault(n.binding, []).append(n)
        return self._by_binding.get(binding, [])

    def shape(self, binding: str) -> tuple[int, ...]:
        return self.node(self.bindings[binding]).shape

    def digraph(self):
        """A networkx view: nodes are node names with their GraphNode as `data`."""
        import networkx as nx
        g = nx.DiGraph()
        for n in self.nodes:
            g.add_node(n.name, data=n)
            for i in n.inputs:
                g.add_edge(i, n.name)
        return g

    def cut(self, start: tuple[str, ...], end: tuple[str, ...]) -> "CheckedNetwork":
        """The part of the network from the values of the `start` nodes, which become its inputs,
        to the `end` nodes, its outputs. Raises KeyError when the outputs still read an input
        that no start cuts off."""
        cut = set(start)
        needed, todo = set(), list(end)
        while todo:
            name = todo.pop()
            if name not in needed:
                needed.add(name)
                if name not in cut:
                    todo.extend(self.node(name).inputs)
        leaks = [n.name for n in self.nodes if n.op == "input" and n.name in needed and n.name not in cut]
        if leaks:
            raise KeyError(f"the outputs of '{self.name}' still read the input(s) {', '.join(leaks)} besides "
                           f"{', '.join(start)}: they do not cut the network")
        placeholders = tuple(GraphNode.model_construct(**{**self.node(c).__dict__, "op": "input", "inputs": (),
                                                          "module": None, "args": {}}) for c in start)
        nodes = placeholders + tuple(n for n in self.nodes if n.name in needed and n.name not in cut)
        return CheckedNetwork.model_construct(
            name=self.name, inputs={c: self.node(c).shape for c in start}, outputs=tuple(end), nodes=nodes,
            bindings={b: n for b, n in self.bindings.items() if n in needed}, span=self.span, failed=self.failed)

    def binding_graph(self):
        """A networkx view of the bindings (inputs included): an edge a -> b when b reads a."""
        if self._bindings_graph is None:
            import networkx as nx
            g = nx.DiGraph()
            g.add_nodes_from(dict.fromkeys(n.binding for n in self.nodes))
            for n in self.nodes:
                for i in n.inputs:
                    a = self.node(i).binding
                    if a != n.binding:
                        g.add_edge(a, n.binding)
            self._bindings_graph = g
        return self._bindings_graph


class Edge(BaseModel):
    """A resolved matching edge from a source binding to a target binding."""

    model_config = ConfigDict(frozen=True)
    source: str  # dotted, as written: `teacher.c3`, `src.c2`
    target: str
    source_shape: tuple[int, ...]
    target_shape: tuple[int, ...]
    weighting: str
    options: dict[str, Any] = {}
    span: Span | None = None


class TrainSection(BaseModel):
    model_config = ConfigDict(frozen=True)
    networks: tuple[str, ...]
    settings: dict[str, Any]  # plain values: numbers, strings, {"name": ..., "args": {...}} calls
    span: Span | None = None
    spans: dict[str, Span] = {}  # where each setting was written


class Checked(BaseModel):
    """A checked spec: every network lowered, every module declared, edges and sections resolved."""

    model_config = ConfigDict(frozen=True)
    filename: str
    networks: dict[str, CheckedNetwork]
    modules: dict[str, Module]
    edges: tuple[Edge, ...] = ()
    trains: tuple[TrainSection, ...] = ()
    imports: dict[str, str] = {}  # alias -> resolved path
    warnings: tuple[str, ...] = ()
    # alias -> the imported spec, checked (pictures draw the sources of matching edges with it)
    imported: dict[str, "Checked"] = Field(default_factory=dict, exclude=True, repr=False)

    def params(self, network: str, trainable_only: bool = False) -> int:
        """Parameters a network uses, each module counted once."""
        nodes = self.networks[network].nodes
        keys = {n.module for n in nodes if n.module and (n.trainable or not trainable_only)}
        return sum(self.modules[k].params for k in keys)

    def flops(self, network: str) -> int:
        return sum(n.flops for n in self.networks[network].nodes)


class GatePath(NamedTuple):
    """One path of a gate: the gate node, the path's index, the path's own nodes (those of
    the gated binding that feed this input, in network order) and the bindings the path reads
    (in the order a walk back from the gate meets them)."""

    gate: GraphNode
    index: int
    nodes: tuple[GraphNode, ...]
    sources: tuple[str, ...]

    @property
    def proxy(self) -> bool:
        """Whether the path goes through a proxy (NetTailor's skip) rather than the block."""
        return any(n.role == "proxy" for n in self.nodes)

    @property
    def flops(self) -> int:
        return sum(n.flops for n in self.nodes)


def gate_paths(net: CheckedNetwork) -> list[GatePath]:
    """Every path of every gate of a network, gates in network order."""
    out = []
    for g in (n for n in net.nodes if n.role == "gate"):
        for i, start in enumerate(g.inputs):
            seen, sources, stack = set(), [], [start]
            while stack:  # walk back from the gate's input until leaving the binding
                n = net.node(stack.pop())
                if n.binding != g.binding or n.op == "input":
                    if n.binding not in sources:
                        sources.append(n.binding)
                elif n.name not in seen:
                    seen.add(n.name)
                    stack.extend(n.inputs)
            nodes = tuple(n for n in net.nodes_of(g.binding) if n.name in seen)
            out.append(GatePath(g, i, nodes, tuple(sources)))
    return out
