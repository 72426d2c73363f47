"""The time budget, the prediction of what one measurement costs, and the threads a shared CPU leaves free."""

import math

import pytest
import torch

from attnbench.measuring import budget as bud


def test_budget_counts_down_on_its_clock() -> None:
    now = [100.0]
    b = bud.Budget(10.0, clock=lambda: now[0])
    assert b.limited and b.left() == 10.0 and b.fits(10.0) and not b.fits(10.5)
    now[0] += 4.0
    assert b.elapsed() == 4.0 and b.left() == 6.0 and not b.fits(6.5)
    now[0] += 7.0
    assert b.left() == -1.0 and not b.fits(0.0)
    free = bud.Budget(None)
    assert not free.limited and free.left() == math.inf and free.fits(1e9)


def test_prediction_follows_the_timing_procedure() -> None:
    kw = {"min_reps": 3, "target_s": 0.1, "max_warmup_s": 0.2}
    # a slow call: first call + 2 warm-up rounds of 2 + 3 timed + 4 call-equivalents of memory measurement (CPU)
    slow = bud.predicted_measurement_s(2.0, device_type="cpu", **kw)
    assert slow == pytest.approx(bud.OVERHEAD_S + 2.0 * (1 + 4 + 3 + 4))
    # on CUDA the memory measurement is one call
    assert bud.predicted_measurement_s(2.0, device_type="cuda", **kw) == pytest.approx(bud.OVERHEAD_S + 2.0 * (1 + 4 + 3 + 1))
    # a very short call costs the warm-up cap and the timed target, whatever its own time
    fast = bud.predicted_measurement_s(1e-6, device_type="cpu", **kw)
    assert fast == pytest.approx(bud.OVERHEAD_S + 0.2 + 0.1, abs=1e-4)
    assert bud.predicted_measurement_s(0.5, device_type="cpu", **kw) < slow


@pytest.mark.parametrize(("default", "cores", "busy", "want"), [
    (2, 2, None, 2),  # unknown: torch's default
    (2, 2, 0.3, 2),  # idle enough
    (2, 2, 1.2, 1),  # one core taken: one thread
    (2, 2, 3.0, 1),  # oversubscribed: still one
    (8, 16, 2.0, 8),  # never more than torch's default
    (16, 16, 4.6, 11),
])
def test_free_threads(default: int, cores: int, busy: float | None, want: int) -> None:
    assert bud.free_threads(default, cores, busy) == want


def test_busy_cores_is_a_share_of_the_machine() -> None:
    busy = bud.busy_cores(0.02)
    import os

    assert busy is None or 0.0 <= busy <= (os.cpu_count() or 1)


def test_one_call_s_times_one_forward_call() -> None:
    seconds = bud.one_call_s(lambda: torch.nn.Conv3d(4, 4, 1), [(1, 4, 2, 4, 4)], device="cpu")
    assert 0.0 < seconds < 5.0
