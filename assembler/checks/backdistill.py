"""Checks of `backdistill(teacher=, at=, ...)` against the checked networks (torch-free).

Back-distillation trains the adapter `at` of one network (the student) so that the student's
suffix from the binding the adapter reads (call it f) has pseudo-gradients like the teacher's
suffix from its own binding f. So:
  - `at` is an `adapter` binding that reads exactly one binding f, and only the adapter trains
    (the paper fixes the category and task modules);
  - the student's outputs depend on the adapter and reach its inputs only through f;
  - the teacher is another network with a binding f of the same shape, whose outputs reach its
    inputs only through f and have the student's shape.
Label-free data with `ce=true` is refused by the registry (`labels` is a function of `ce`)."""

from __future__ import annotations

from dataclasses import dataclass

from . import Problem


@dataclass(frozen=True)
class AdapterSite:
    """Where an adapter sits: the binding it reads (f) and the node holding f's value."""

    adapter: str
    reads: str  # binding name
    node: str  # node name of the binding's value


def adapter_site(net, at: str) -> AdapterSite | Problem:
    """The binding the adapter `at` of `net` reads, or what is wrong with `at`."""
    nodes = [n for n in net.nodes if n.binding == at]
    if not any(n.role == "adapter" for n in nodes):
        return Problem(f"'at' of backdistill must name an adapter binding of {net.name}: '{at}' is not one", "at",
                       hint=f"declare it with: adapter {at} = ...")
    inside = {n.name for n in nodes}
    read = list(dict.fromkeys(i for n in nodes for i in n.inputs if i not in inside))
    by_node = {node: b for b, node in net.bindings.items()}
    if len(read) != 1 or read[0] not in by_node:
        what = ", ".join(f"'{by_node.get(r, r)}'" for r in read) or "nothing"
        return Problem(f"the adapter '{at}' of {net.name} must read exactly one binding; it reads {what}", "at",
                       hint=f"write it as: adapter {at} = BINDING -> ...")
    return AdapterSite(at, by_node[read[0]], read[0])


def reaches(net, start_node: str) -> tuple[set[str], list[str]]:
    """(nodes the outputs need when cut at `start_node`, network inputs they still read)."""
    needed, todo = set(), list(net.outputs)
    while todo:
        name = todo.pop()
        if name in needed:
            continue
        needed.add(name)
        if name != start_node:
            todo.extend(net.node(name).inputs)
    leaks = [n.name for n in net.nodes if n.op == "input" and n.name in needed and n.name != start_node]
    return needed, leaks


def output_shape(net) -> tuple[int, ...] | None:
    return net.node(net.outputs[0]).shape if net.outputs else None


def _student(student, site: AdapterSite) -> list[Problem]:
    at = site.adapter
    others = list(dict.fromkeys(n.binding for n in student.nodes if n.trainable and n.binding != at))
    if others:
        return [Problem(f"backdistill trains only the adapter '{at}', but {', '.join(repr(b) for b in others)} "
                        f"of {student.name} {'is' if len(others) == 1 else 'are'} trainable too", "at",
                        hint=f"the category and task modules stay fixed: write frozen {others[0]} = ...")]
    needed, leaks = reaches(student, site.node)
    if leaks:
        return [Problem(f"the outputs of {student.name} read {', '.join(leaks)} besides '{site.reads}', the binding "
                        f"the adapter '{at}' reads", "at", hint="the student's suffix must start at the adapter's input")]
    if not any(n.binding == at and n.name in needed for n in student.nodes):
        return [Problem(f"the outputs of {student.name} do not depend on the adapter '{at}'", "at",
                        hint=f"feed the task module from {at}")]
    return []


def _teacher(teacher, name: str, student, site: AdapterSite) -> list[Problem]:
    f = site.reads
    if f not in teacher.bindings:
        return [Problem(f"teacher {name} has no binding '{f}', which the adapter '{site.adapter}' reads", "teacher",
                        hint=f"the teacher's suffix starts from the same binding: name it '{f}' in {name}, or "
                             f"insert the adapter after a binding both networks have")]
    want, have = student.node(site.node).shape, teacher.shape(f)
    if tuple(want) != tuple(have):
        return [Problem(f"binding '{f}' of teacher {name} has shape {list(have)} but the adapter "
                        f"'{site.adapter}' reads '{f}' of {student.name} as {list(want)}", "teacher",
                        hint="the student's and the teacher's suffixes must start from the same features")]
    _, leaks = reaches(teacher, teacher.bindings[f])
    if leaks:
        return [Problem(f"the outputs of teacher {name} read {', '.join(leaks)} besides '{f}'", "teacher",
                        hint=f"the teacher's suffix from '{f}' must compute its outputs alone")]
    ts, ss = output_shape(teacher), output_shape(student)
    if tuple(ts or ()) != tuple(ss or ()):
        return [Problem(f"teacher {name} gives outputs of shape {list(ts or ())} from '{f}' but {student.name} "
                        f"gives {list(ss or ())}", "teacher",
                        hint="back-distillation matches d(r^T y)/dx: both networks need outputs of one shape")]
    return []


def validate(settings: dict, scope) -> list[Problem]:
    """The located problems of a `backdistill` section (see the module docstring)."""
    args = settings["procedure"]["args"]
    if len(scope.trained) != 1:
        return [Problem(f"backdistill trains one network; this section trains {', '.join(scope.trained)}")]
    student = scope.checked.get(scope.trained[0])
    teacher = scope.checked.get(args["teacher"])
    if student is None or teacher is None:
        return []  # a network with errors of its own: they are reported already
    site = adapter_site(student, args["at"])
    if isinstance(site, Problem):
        return [site]
    if teacher is student:
        return [Problem(f"the teacher must be another network than the student {student.name}", "teacher",
                        hint="name the pre-trained network whose task module the adapter must reproduce")]
    return _student(student, site) or _teacher(teacher, args["teacher"], student, site)
