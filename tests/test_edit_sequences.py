"""Random edit sequences (a hypothesis state machine) keep specs valid, compilable and
round-trippable after every step."""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

import assembler
from assembler.errors import SpecError
from assembler.testing.checks import assert_compiles
from assembler.testing.sequences import apply, propose
from assembler.testing.strategies import specs
from assembler.verify import verify


class EditMachine(RuleBasedStateMachine):
    """Applies edits the API accepts; a refused edit must leave nothing half-done."""

    @initialize(spec=specs(max_networks=2, max_bindings=6))
    def start(self, spec):
        self.spec = spec
        self.applied = []

    @rule(data=st.data())
    def edit(self, data):
        kind, args = propose(data.draw, self.spec)
        before = assembler.format(self.spec)
        try:
            self.spec = apply(self.spec, kind, args)
            self.applied.append(kind)
        except SpecError as e:
            assert e.render()  # a refusal is a located, renderable error
            assert assembler.format(self.spec) == before

    @invariant()
    def valid_and_round_trips(self):
        verify(assembler.check(self.spec))
        text = assembler.format(self.spec)
        assert assembler.parse(text) == self.spec
        assert assembler.format(assembler.parse(text)) == text

    @invariant()
    def compiles(self):
        assert_compiles(self.spec)


EditMachine.TestCase.settings = settings(max_examples=25, stateful_step_count=6, deadline=None,
                                         suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
test_edit_sequences = EditMachine.TestCase
