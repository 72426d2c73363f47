"""The calling thread's CPU time as a per-call clock (``--clock cpu`` of the performance gate).

Wall-clock timing (:func:`attnbench.measuring.timing.time_callable`) counts the time a call spends
descheduled while other processes run; on a shared machine their load then reads as a slowdown. The
CPU time of the one thread that runs a call (one torch thread) does not grow while it waits.

How it follows the calls: :func:`stamp_calls` makes a module append ``time.thread_time_ns()`` to a list
as each of its forward calls *starts*; :func:`per_call_ms` turns the stamps of one timed run into per-call
times, each the difference between the starts of two consecutive calls, so everything a call does in
that thread (its own Python, the operators, the freeing of its tensors) is included.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from torch import nn

TIMER = "thread_time_ns"  # the clock's name in a Measurement's ``timer`` field


def stamp_calls(module: nn.Module, stamps: list[int]) -> nn.Module:
    """``module``, which now appends the calling thread's CPU time (ns) to ``stamps`` as each call starts."""
    module.register_forward_pre_hook(lambda _m, _a: stamps.append(time.thread_time_ns()))
    return module


def per_call_ms(stamps: Sequence[int], warmup_reps: int, n: int) -> list[float] | None:
    """Per-call thread CPU times (ms) of the ``n`` timed calls that followed ``warmup_reps`` warm-up calls:
    the differences between the starts of consecutive timed calls. The last timed call has no timed
    successor, so n timed calls give n - 1 samples, and at least one more stamp (any later call, e.g. a
    memory measurement) must follow them. None when the stamps cannot cover the timed calls or n < 2."""
    if len(stamps) < warmup_reps + n + 1 or n < 2:
        return None
    return [(stamps[i + 1] - stamps[i]) / 1e6 for i in range(warmup_reps, warmup_reps + n - 1)]
