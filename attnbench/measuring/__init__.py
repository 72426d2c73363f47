"""Measurement layer: timing, memory, device fingerprint and peak FLOP/s.

* :mod:`~attnbench.measuring.stats` -- :class:`Measurement`, raw samples with derived statistics;
* :mod:`~attnbench.measuring.timing` -- :func:`time_callable` and :func:`build_workload`;
* :mod:`~attnbench.measuring.memory` -- :func:`measure_memory` and :func:`run_guarded` (OOM as a result);
* :mod:`~attnbench.measuring.device` -- :func:`fingerprint`, :func:`device_slug`, device/dtype checks;
* :mod:`~attnbench.measuring.peaks` -- dense peak FLOP/s per GPU and dtype, :func:`achieved`.
"""

from attnbench.measuring.device import (
    DTYPES,
    device_slug,
    fingerprint,
    resolve_device,
    resolve_dtype,
)
from attnbench.measuring.memory import OOM, MemoryReport, is_oom, measure_memory, run_guarded
from attnbench.measuring.peaks import achieved, peak_flops
from attnbench.measuring.stats import Measurement
from attnbench.measuring.timing import CaptureError, Workload, build_workload, time_callable

__all__ = [
    "DTYPES",
    "OOM",
    "CaptureError",
    "Measurement",
    "MemoryReport",
    "Workload",
    "achieved",
    "build_workload",
    "device_slug",
    "fingerprint",
    "is_oom",
    "measure_memory",
    "peak_flops",
    "resolve_device",
    "resolve_dtype",
    "run_guarded",
    "time_callable",
]
