"""Procedures' own argument checks (`Plugin.validate` in `assembler.settings`): torch-free
functions of a train section's checked settings and its `SectionScope` that return located
`Problem`s, one module per procedure, named in the registry as "assembler.checks.NAME:validate"
(imported on first use). `check` runs them, so a bad argument is a located check error before
any training code runs.

    def validate(settings: dict, scope: SectionScope) -> list[Problem]: ...

`settings` holds the section's checked values (`settings["procedure"]["args"]`, `"data"`);
`scope.checked` maps network names (`net`, `alias`, `alias.net`) to their CheckedNetworks (a
network with errors of its own is left out: its errors are reported, a check should not add more),
`scope.modules` the module declarations, `scope.shared` the shared module names."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """What a check finds wrong: a message, the procedure argument (or setting key, such as
    "data") it is located at, and a hint."""

    message: str
    at: str | None = None
    hint: str | None = None

