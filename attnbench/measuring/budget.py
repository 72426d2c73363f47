"""A wall-time budget for a list of measurements, and what one measurement will cost before it starts.

:class:`Budget` is a deadline: ``left()`` seconds remain of ``total_s`` (None: no limit). A caller asks
:func:`predicted_measurement_s` how long timing a callable will take, given the time of one call (from
:func:`one_call_s`, a probe, or a lower bound from the device's roofline), and starts the measurement only
when it fits in what is left; what does not fit is listed by the caller, never dropped silently.

The prediction follows :func:`attnbench.measuring.timing.time_callable` and the memory measurements that
follow it in ``bench.measure_target``: one first call, warm-up rounds (at least ``MIN_WARMUP_ROUNDS``
rounds of at least 2 calls, or ``max_warmup_s`` of them for short calls), at least ``min_reps`` timed calls
or ``target_s`` of them, then on CPU one call for the resident set and two for the tensor peak (the tracked
one counted twice: tracking slows it), on CUDA one call. A budget holds up to the overrun of the last
measurement it started (a running measurement is never cut), so a prediction errs on the long side.

On a shared CPU, :func:`busy_cores` reads how many logical cores other processes keep busy, and
:func:`free_threads` the torch threads that leave them alone: an OpenMP thread that waits for a core another
process holds stalls every parallel region of the call (a 2-thread call on a 2-core machine with one core
busy was 5-10x slower than a 1-thread call in attnbench's measurements), so timing with the free cores
gives times that say something about the block rather than about the neighbours.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from attnbench.measuring import device as dev
from attnbench.measuring.timing import MIN_WARMUP_ROUNDS, build_workload

MEMORY_CALLS = {"cpu": 4.0, "cuda": 1.0}  # calls the memory measurement after timing costs, in call times
OVERHEAD_S = 0.1  # building the module and its inputs, releasing memory, writing the row
MARGIN = 1.25  # callers start a measurement only when this times its prediction fits (a loaded machine's calls vary)


@dataclass
class Budget:
    """``total_s`` seconds from when it is made, on ``clock`` (``time.perf_counter``); None: unlimited."""

    total_s: float | None
    clock: Callable[[], float] = time.perf_counter
    start: float = field(init=False)

    def __post_init__(self) -> None:
        self.start = self.clock()

    @property
    def limited(self) -> bool:
        return self.total_s is not None

    def elapsed(self) -> float:
        return self.clock() - self.start

    def left(self) -> float:
        """Seconds left (``inf`` when unlimited; negative once overrun)."""
        return math.inf if self.total_s is None else self.total_s - self.elapsed()

    def fits(self, predicted_s: float) -> bool:
        return predicted_s <= self.left()


def predicted_measurement_s(call_s: float, *, min_reps: int, target_s: float, max_warmup_s: float,
                            device_type: str = "cpu") -> float:
    """Seconds that timing a callable whose one call takes ``call_s`` will take (see the module docstring),
    memory measurements and overhead included."""
    call_s = max(0.0, call_s)
    warm = max(2 * MIN_WARMUP_ROUNDS * call_s, max_warmup_s)
    timed = max(min_reps * call_s, target_s)
    return OVERHEAD_S + call_s + warm + timed + MEMORY_CALLS.get(device_type, 1.0) * call_s


def one_call_s(build: Callable[[], torch.nn.Module], input_shapes: Sequence[Sequence[int]], *, device: str,
               dtype: str = "fp32", precision: str = "pure", batch: int = 1) -> float:
    """Wall seconds of one forward call of the module ``build()`` makes, on ``device`` with seeded inputs
    (the first call: it may include lazy initialisation, so it errs on the long side). Errors propagate. The
    module and its tensors are freed by reference counting on return (no garbage collection: a full
    collection costs more than a small block's call)."""
    d = dev.resolve_device(device)
    cuda = d.type == "cuda"
    with torch.device(dev.placement(d)):
        module = build()
    work = build_workload(module, input_shapes, device=device, dtype=dtype, precision=precision, batch=batch)
    with torch.inference_mode():
        if cuda:
            torch.cuda.synchronize(d)
        start = time.perf_counter()
        out = work()
        if cuda:
            torch.cuda.synchronize(d)
        seconds = time.perf_counter() - start
    del out, work, module
    return seconds


def _cpu_times() -> tuple[int, int] | None:
    """(total, idle) jiffies of all CPUs from /proc/stat; None where there is none."""
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            fields = fh.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu" or len(fields) < 5:
        return None
    values = [int(v) for v in fields[1:9]]
    return sum(values), values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait


def busy_cores(interval_s: float = 0.5) -> float | None:
    """Logical cores other processes keep busy, averaged over ``interval_s`` seconds while this process sleeps
    (from /proc/stat); None where the OS does not say (not Linux)."""
    first = _cpu_times()
    if first is None:
        return None
    time.sleep(interval_s)
    second = _cpu_times()
    if second is None or second[0] <= first[0]:
        return None
    total, idle = second[0] - first[0], second[1] - first[1]
    return max(0.0, 1.0 - idle / total) * (os.cpu_count() or 1)


def free_threads(default: int, cores: int, busy: float | None) -> int:
    """Torch threads that leave the busy cores alone: ``cores`` minus ``busy`` (rounded half up), at least 1
    and at most ``default`` (torch's own count); ``default`` when ``busy`` is unknown."""
    if busy is None:
        return default
    return max(1, min(default, cores - math.floor(busy + 0.5)))
