"""Check of `l2tww`'s section (torch-free): its look-ahead steps are SGD steps with the
section's optimizer settings, and it trains one network."""

from __future__ import annotations

from . import Problem


def validate(settings: dict, scope) -> list[Problem]:
    """Problems of an l2tww section: another optimizer than sgd; several trained networks."""
    problems = []
    opt = settings.get("optimizer")
    if isinstance(opt, dict) and opt.get("name") != "sgd":
        problems.append(Problem(f"l2tww takes its look-ahead steps with SGD (momentum and weight decay as set); "
                                f"the optimizer must be sgd, not {opt.get('name')}", at="optimizer",
                                hint="optimizer = sgd(lr=0.1, momentum=0.9, weight_decay=0.0001)"))
    if len(scope.trained) > 1:
        problems.append(Problem(f"l2tww trains one network; this section lists {len(scope.trained)}: "
                                f"{', '.join(scope.trained)}", at="procedure",
                                hint="give each network its own train section"))
    return problems
