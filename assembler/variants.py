"""Variants: named rewrites of a compiled network's fx graph, e.g. back-distillation's
pseudo-gradient graph (ReLU passing gradients through, max-pooling routing them as average
pooling). A variant registers when the module defining it is imported (a procedure imports
the variants it uses). A variant is a function `GraphModule -> GraphModule` that returns a new module
sharing the original's submodules (parameters stay tied) and never edits its input.

    @register_variant("pseudo_gradient")
    def pseudo_gradient(gm): ...

    asm.network("student", start=["f"], variant="pseudo_gradient")
"""

from __future__ import annotations

from typing import Callable

from torch import fx

Rewrite = Callable[[fx.GraphModule], fx.GraphModule]

VARIANTS: dict[str, Rewrite] = {}


def register_variant(name: str) -> Callable[[Rewrite], Rewrite]:
    """Register a rewrite under `name` (a decorator)."""
    def add(fn: Rewrite) -> Rewrite:
        if name in VARIANTS and VARIANTS[name] is not fn:
            raise ValueError(f"variant '{name}' is already registered")
        VARIANTS[name] = fn
        return fn
    return add


def apply_variant(name: str, gm: fx.GraphModule) -> fx.GraphModule:
    if name not in VARIANTS:
        raise KeyError(f"no variant '{name}'; registered: {', '.join(sorted(VARIANTS)) or 'none'}")
    out = VARIANTS[name](gm)
    out.graph.lint()
    return out


def copy_graph(gm: fx.GraphModule, class_name: str | None = None) -> fx.GraphModule:
    """A new GraphModule over the same submodules with a copy of the graph, for rewriting."""
    graph = fx.Graph()
    out = graph.graph_copy(gm.graph, {})
    graph.output(out)
    return fx.GraphModule(gm, graph, class_name or type(gm).__name__)


__all__ = ["VARIANTS", "apply_variant", "copy_graph", "register_variant"]
