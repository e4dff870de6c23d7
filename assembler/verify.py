"""Invariants of the checked IR, in the spirit of `torch.fx.Graph.lint`: what every pass that
produces or edits a `Checked` must keep. Tests run `verify` after lowering, after edits and
after pruning; a failure is a bug of the pass, not of the user's spec.
"""

from __future__ import annotations

from .graph import Checked, CheckedNetwork
from .keys import BindingRef
from .ops import entry


class VerifyError(AssertionError):
    """A `Checked` breaks an invariant; the message lists every problem found."""


def verify(checked: Checked) -> Checked:
    """Check the invariants of a whole checked spec; return it, or raise `VerifyError`."""
    problems: list[str] = []
    for key, m in checked.modules.items():
        if m.key != key:
            problems.append(f"module '{key}' is declared under the key '{m.key}'")
        if m.init_from is not None and m.init_from not in checked.modules:
            problems.append(f"module '{key}' starts from '{m.init_from}', which is not declared")
        if entry(m.op) is None:
            problems.append(f"module '{key}' has the op '{m.op}', which is not in the op table")
    for name, net in checked.networks.items():
        if net.name != name:
            problems.append(f"network '{name}' is named '{net.name}' inside")
        problems += [f"network '{name}': {p}" for p in network_problems(net, checked.modules)]
    heads = set(checked.networks) | set(checked.imports)
    for e in checked.edges:
        for end in (e.source, e.target):
            if BindingRef(end).network not in heads:
                problems.append(f"matching edge {e.source} -> {e.target} names '{end}', of no network or import")
    for t in checked.trains:
        problems += [f"a train section names the unknown network '{n}'" for n in t.networks
                     if n not in checked.networks]
    if problems:
        raise VerifyError("the checked IR breaks its invariants:\n  " + "\n  ".join(problems))
    return checked


def network_problems(net: CheckedNetwork, modules) -> list[str]:
    """What is wrong with one checked network (an empty list when nothing is)."""
    problems: list[str] = []
    defined: set[str] = set()
    for n in net.nodes:
        if n.name in defined:
            problems.append(f"node '{n.name}' is defined twice")
        missing = [i for i in n.inputs if i not in defined]
        if missing:
            problems.append(f"node '{n.name}' reads {', '.join(missing)} before (or without) its definition")
        defined.add(n.name)
        problems += _node_problems(n, net, modules)
    for b, node in net.bindings.items():
        if node not in defined:
            problems.append(f"binding '{b}' points at the missing node '{node}'")
        elif net.node(node).binding != b:
            problems.append(f"binding '{b}' points at '{node}', a node of '{net.node(node).binding}'")
    problems += [f"output '{o}' is no node" for o in net.outputs if o not in defined]
    for name, shape in net.inputs.items():
        if name not in defined or net.node(name).op != "input" or net.node(name).shape != tuple(shape):
            problems.append(f"input '{name}' has no input node of shape {list(shape)}")
    return problems


def _node_problems(n, net: CheckedNetwork, modules) -> list[str]:
    problems = []
    if not n.shape or not all(isinstance(d, int) and d > 0 for d in n.shape):
        problems.append(f"node '{n.name}' has the shape {list(n.shape)}")
    if n.op == "input":
        if n.inputs or n.name not in net.inputs:
            problems.append(f"input node '{n.name}' is not an input of the network")
        return problems
    op = entry(n.op)
    if op is None:
        problems.append(f"node '{n.name}' has the op '{n.op}', which is not in the op table")
    elif op.module != (n.module is not None):
        problems.append(f"node '{n.name}' ({n.op}) {'lacks' if op.module else 'has'} a module")
    if n.module is not None and n.module not in modules:
        problems.append(f"node '{n.name}' uses the undeclared module '{n.module}'")
    if not n.inputs:
        problems.append(f"node '{n.name}' reads nothing")
    return problems
