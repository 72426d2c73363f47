"""The thread-CPU-time clock of the performance gate: stamps at the start of each call, per-call times."""

from __future__ import annotations

import torch
from torch import nn

from attnbench.measuring.clocks import per_call_ms, stamp_calls


def test_per_call_times_are_differences_of_consecutive_starts() -> None:
    # 2 warm-up calls, 3 timed calls, one later call (e.g. the memory measurement): 2 samples
    stamps = [0, 1_000_000, 2_000_000, 5_000_000, 6_500_000, 9_000_000]
    assert per_call_ms(stamps, warmup_reps=2, n=3) == [3.0, 1.5]
    assert per_call_ms(stamps[:5], warmup_reps=2, n=3) is None  # the last timed call has no successor
    assert per_call_ms(stamps, warmup_reps=2, n=1) is None  # one timed call gives no difference


def test_stamp_calls_records_each_forward_call() -> None:
    stamps: list[int] = []
    module = stamp_calls(nn.Linear(4, 4), stamps)
    for _ in range(3):
        module(torch.randn(2, 4))
    assert len(stamps) == 3 and stamps == sorted(stamps)
