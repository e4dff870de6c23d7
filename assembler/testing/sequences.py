"""Random sequences of graph edits, each valid on the spec it is applied to.

    from assembler.testing.sequences import edit_sequences

    @given(edit_sequences())
    def test_edits_keep_specs_valid(drawn):
        spec, applied = drawn   # the edited spec, and [(edit name, arguments), ...]
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from .. import edits, ir
from ..errors import SpecError

EDITS = ("insert_adapter", "add_skips", "freeze", "unfreeze", "remove", "replace", "prune")


def _image_bindings(checked, net: str) -> list[str]:
    n = checked.networks[net]
    return [b for b in n.bindings if len(n.shape(b)) == 3]


def propose(draw, spec: ir.Spec) -> tuple[str, dict[str, Any]]:
    """One edit (name and arguments) that may apply to `spec`; it can still be refused."""
    from ..resolve import check
    checked = check(spec)
    net = draw(st.sampled_from(sorted(checked.networks)))
    names = [b for b in checked.networks[net].bindings if b not in checked.networks[net].inputs]
    kind = draw(st.sampled_from(EDITS))
    if kind == "insert_adapter":
        after = draw(st.sampled_from(list(checked.networks[net].bindings)))
        shape = checked.networks[net].shape(after)
        chain = draw(st.sampled_from(["identity", "relu"] + ([f"conv({shape[0]}, 1)", f"conv({shape[0]}, 3, pad=1)"
                                                              ] if len(shape) == 3 else [f"linear({shape[-1]})"])))
        return kind, {"net": net, "after": after, "chain": chain}
    if kind == "add_skips":
        images = [i for i in checked.networks[net].inputs if len(checked.networks[net].inputs[i]) == 3]
        pool = images + _image_bindings(checked, net)
        if len(pool) < 2:
            return "freeze", {"net": net, "pattern": "*"}
        nodes = draw(st.lists(st.sampled_from(pool), min_size=2, max_size=4, unique=True))
        order = list(checked.networks[net].bindings)
        nodes = sorted(nodes, key=lambda n: order.index(n) if n in order else 0)
        return kind, {"net": net, "nodes": nodes, "k": draw(st.integers(1, 3))}
    if kind in ("freeze", "unfreeze"):
        pattern = draw(st.sampled_from(names + ["*", "c*"])) if names else "*"
        return kind, {"net": net, "pattern": pattern}
    if kind in ("remove", "replace"):
        binding = draw(st.sampled_from(names)) if names else "?"
        if kind == "remove":
            return kind, {"net": net, "binding": binding}
        shape = checked.networks[net].shape(binding) if binding in checked.networks[net].bindings else (1,)
        chain = f"conv({shape[0]}, 1) -> relu" if len(shape) == 3 else "relu"
        return kind, {"net": net, "binding": binding, "chain": chain}
    gates = [f"{n.binding}.in{i}" for n in checked.networks[net].nodes if n.role == "gate"
             for i in range(len(n.inputs))]
    remove = draw(st.lists(st.sampled_from(gates), max_size=3, unique=True)) if gates else []
    return "prune", {"net": net, "remove": remove}


def apply(spec: ir.Spec, kind: str, args: dict[str, Any]) -> ir.Spec:
    return getattr(edits, kind)(spec, **args)


@st.composite
def edit_sequences(draw, base: st.SearchStrategy[ir.Spec] | None = None, max_edits: int = 5):
    """(edited spec, applied edits): edits drawn one at a time against the current spec; an
    edit the API refuses (a SpecError) is skipped, so every step leaves a valid spec."""
    from .strategies import specs
    spec = draw(base if base is not None else specs(max_networks=2, max_bindings=6))
    applied = []
    for _ in range(draw(st.integers(1, max_edits))):
        kind, args = propose(draw, spec)
        try:
            spec = apply(spec, kind, args)
        except SpecError:
            continue
        applied.append((kind, args))
    return spec, applied
