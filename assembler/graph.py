"""The checked IR: each network lowered to a graph of ops with shapes, counts and roles.

This is what the compiler, `show`, `graph` and the procedures read. It is produced by
`assembler.resolve.check` from a syntax `Spec`; users rarely build it by hand.
"""

from __future__ import annotations

from typing import Any, Literal

import networkx as nx
from pydantic import BaseModel, ConfigDict, PrivateAttr

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

    def node(self, name: str) -> GraphNode:
        return self._index()[name]

    def _index(self) -> dict[str, GraphNode]:
        if self._by_name is None:
            self._by_name = {n.name: n for n in self.nodes}
        return self._by_name

    def shape(self, binding: str) -> tuple[int, ...]:
        return self.node(self.bindings[binding]).shape

    def digraph(self) -> nx.DiGraph:
        """A networkx view: nodes are node names with their GraphNode as `data`."""
        g = nx.DiGraph()
        for n in self.nodes:
            g.add_node(n.name, data=n)
            for i in n.inputs:
                g.add_edge(i, n.name)
        return g


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

    def params(self, network: str, trainable_only: bool = False) -> int:
        """Parameters a network uses, each module counted once."""
        nodes = self.networks[network].nodes
        keys = {n.module for n in nodes if n.module and (n.trainable or not trainable_only)}
        return sum(self.modules[k].params for k in keys)

    def flops(self, network: str) -> int:
        return sum(n.flops for n in self.networks[network].nodes)
