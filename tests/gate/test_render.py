"""The report for people (attnbench.gate.render): the verdict line."""

import pytest

from attnbench import gate


def test_a_pass_on_an_unsteady_machine_says_latency_was_inconclusive() -> None:
    report = {"passed": True, "summary": {"entries": 2, "failures": 0, "by_status": {}}, "not_compared": [],
              "options": {}, "findings": [],
              "timing": {"inconclusive": ["cs@x (round medians spread x1.40)"]}}
    line = gate.headline(report)
    assert line.startswith("PASS (latency inconclusive") and "cs@x (round medians spread x1.40)" in line
    assert gate.spread_of([16.0, 22.4, 0.0]) == pytest.approx(1.4) and gate.spread_of([3.0]) == 1.0
