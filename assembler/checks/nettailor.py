"""NetTailor's argument checks (torch-free, run by `check`), and the teacher/student pairs
of its teacher term, which the procedure computes the same way.

Located errors, each at the argument or setting it concerns (a tailored network's spec keeps
the section, so nothing here may depend on the student's gates: `blocks` beyond them is
refused when training starts):
- `teacher` (with gamma2 > 0): no pair of bindings for the teacher term Omega (no
  `match TEACHER.b -> STUDENT.b : l2` edge, no binding of equal name and shape): the term
  would silently be zero;
- `cost`: "latency" with latency=false (nothing to choose by);
- `validation`: 0, when k must be chosen on held-out training data.
"""

from __future__ import annotations

from ..settings import plugins
from ..keys import BindingRef, Key
from . import Problem


def teacher_pairs(student: str, student_net, teacher: str, teacher_net, edges) -> list[tuple[str, str]]:
    """(student binding, teacher binding) pairs of Omega: the `l2` matching edges from the
    teacher into the student when there are any, else every student binding (inputs aside)
    that the teacher has too, with the same shape."""
    declared = [(BindingRef(e.target).binding, Key(e.source).below(teacher)) for e in edges
                if e.weighting == "l2" and Key(e.source).below(teacher) and BindingRef(e.target).network == student]
    if declared:
        return declared
    if teacher_net is None:
        return []
    return [(b, b) for b in student_net.bindings if b in teacher_net.bindings and b not in student_net.inputs
            and student_net.shape(b) == teacher_net.shape(b)]


def validate(settings: dict, scope) -> list[Problem]:
    args = settings["procedure"]["args"]
    student = scope.trained[0] if scope.trained else None
    net = scope.checked.get(student)
    if net is None:
        return []
    problems = []
    teacher = args["teacher"]
    if args["gamma2"] > 0 and not teacher_pairs(student, net, teacher, scope.checked.get(teacher), scope.edges):
        problems.append(Problem(
            f"nettailor: the teacher '{teacher}' and the student '{student}' have no binding in common (same name "
            "and shape) and no 'l2' match edge pairs them: the teacher term would be empty", at="teacher",
            hint=f"add edges such as `match {teacher}.B -> {student}.B : l2`, name the student's blocks like the "
                 "teacher's, or set gamma2=0"))
    if args["cost"] == "latency" and not args["latency"]:
        problems.append(Problem('nettailor: cost="latency" chooses by measured latency, but latency=false turns the '
                                "measurement off", at="cost", hint='set latency=true, or cost="flops"'))
    if settings.get("validation", plugins("procedure")["nettailor"].validation) <= 0:
        problems.append(Problem("nettailor chooses k on held-out training data, but validation = 0", at="validation",
                                hint="hold out a share, e.g. validation = 0.2 (the same in the teacher's section)"))
    return problems
