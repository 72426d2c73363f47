"""Which cases a baseline covers and their exact counts (attnbench.gate.cases), and the bounds of the
gate's settings (attnbench.gate.settings)."""

import pytest

from attnbench import cases, gate
from attnbench.api import resolve
from attnbench.errors import UsageError


def test_selection_keys() -> None:
    items = gate.select(["cs", "nl"], "banet", {})
    assert [i.key for i in items] == ["cs@banet", "nl@banet"]
    custom = gate.select(["cs"], "all", {"T": 4})
    assert "cs@1x96x4x28x28" in [i.key for i in custom]
    assert any(i.key.startswith("cs@1x96x4x28x28[order=") for i in custom)
    with pytest.raises(UsageError):
        gate.select(["cs"], "nope", {})


def test_uncountable_sizes_are_one_line(monkeypatch) -> None:
    """Whatever counting raises at absurd sizes (torch's size overflow, an int64 overflow) becomes one
    line and exit code 2, in snapshot and in check."""
    def boom(*_a, **_k):
        raise RuntimeError("Storage size calculation overflowed with sizes=[1, 1677721600000]\nsecond line")

    monkeypatch.setattr(cases, "flops_report", boom)
    with pytest.raises(UsageError, match=r"cannot count .*se@16f-res5.*RuntimeError: Storage size calculation overflowed") as e:
        gate.static_record(resolve("se", "16f-res5"), "se@16f-res5")
    assert "\n" not in str(e.value)


def test_timing_plan_bounds() -> None:
    for bad in ({"rounds": 0}, {"rounds": 1001}, {"round_s": 0}, {"round_s": 1e6}, {"min_reps": 10**6},
                {"max_warmup_s": -1}, {"threads": 0}, {"rounds": 1000, "round_s": 59}, {"timing": "sundial"}):
        with pytest.raises(UsageError):
            gate.TimingPlan(**bad).check()
    for bad in ({"rounds": 0}, {"round_s": 1e6}, {"retries": -1}, {"alpha": 0}):
        with pytest.raises(UsageError):
            gate.CheckOptions(**bad).check()
