"""Timing a callable: warm-up until stable, then enough timed repetitions for a stable median.

:func:`time_callable` only measures; it returns a :class:`~attnbench.measure.stats.Measurement` holding
every per-call time, and all statistics are derived from those. :func:`build_workload` turns a module
and its input shapes into the zero-argument callable that is timed.

How a call is timed
-------------------
* CPU: ``time.perf_counter_ns()`` around each call.
* CUDA: a pair of CUDA events around each call, *isolated*: before each repetition the device is
  synchronised (and, with ``flush_l2``, a buffer twice the L2 size is overwritten and synchronised
  first), so every sample is the latency of one call on an idle GPU, including kernel-launch gaps.
  With ``cuda_graph=True`` the callable is captured once into a CUDA graph (after eager warm-up on a
  side stream) and each repetition is one ``graph.replay()``, which removes Python and launch overhead.

Warm-up
-------
Calls are made in rounds (``warmup_min`` calls, or more for very short calls, so that a round lasts at
least ~10 ms); warm-up ends when the medians of two consecutive rounds differ by at most
``warmup_tol`` (5%), or when warm-up has run for ``max_warmup_s`` (the very first call, which may
compile, autotune or allocate, does not count towards that cap). ``Measurement.warmup_converged`` says
which. Then calls are timed until at least ``min_reps`` samples and ``target_s`` seconds of measured
time (or twice ``target_s`` of wall time) have been collected, up to ``max_reps``.

Inference mode
--------------
``time_callable(..., inference_mode=True)`` (the default) enters ``torch.inference_mode()`` once around
warm-up, capture and timing, so callers need not; pass False to time a callable as it is (e.g. one
that needs autograd). The callable from :func:`build_workload` does *not* enter inference mode itself
(entering it per call would add overhead to every sample), but it does enter ``torch.autocast`` per
call for fp16/bf16: that is how mixed precision runs in real inference, so weight casts are part of
every sample.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from attnbench.errors import AttnBenchError, UsageError
from attnbench.measure.device import DTYPES, resolve_device, resolve_dtype
from attnbench.measure.stats import Measurement, median

WARMUP_TOL = 0.05  # consecutive warm-up round medians within 5% => warm
MIN_ROUND_S = 0.01  # a warm-up round lasts at least this long (more calls for very short ones)
MAX_ROUND_CALLS = 1000
GRAPH_WARMUP_CALLS = 3  # eager calls on a side stream before CUDA-graph capture
DEFAULT_L2_BYTES = 128 * 2**20  # flush size if torch does not report the L2 size


class CaptureError(AttnBenchError):
    """The callable could not be captured into a CUDA graph."""


# -- timers ----------------------------------------------------------------------------------------


class _CpuTimer:
    name = "perf_counter_ns"

    def __init__(self, run: Callable[[], Any]) -> None:
        self.run = run

    def once(self) -> float:
        start = time.perf_counter_ns()
        self.run()
        return (time.perf_counter_ns() - start) * 1e-9


class _CudaTimer:
    name = "cuda_event"

    def __init__(self, run: Callable[[], Any], device: torch.device, flush: torch.Tensor | None) -> None:
        self.run = run
        self.device = device
        self.flush = flush
        self.start = torch.cuda.Event(enable_timing=True)
        self.end = torch.cuda.Event(enable_timing=True)

    def once(self) -> float:
        if self.flush is not None:
            self.flush.fill_(1.0)  # evict the L2: written outside the timed region
        torch.cuda.synchronize(self.device)
        self.start.record()
        self.run()
        self.end.record()
        self.end.synchronize()
        return self.start.elapsed_time(self.end) * 1e-3  # ms -> s


def l2_flush_buffer(device: torch.device) -> torch.Tensor:
    """A float32 buffer twice the size of the device's L2 cache (writing it evicts the L2)."""
    props = torch.cuda.get_device_properties(device)
    l2 = int(getattr(props, "L2_cache_size", 0) or DEFAULT_L2_BYTES)
    return torch.empty(2 * l2 // 4, dtype=torch.float32, device=device)


def _capture(fn: Callable[[], Any], device: torch.device) -> tuple[Callable[[], Any], Any]:
    """Warm ``fn`` up on a side stream, capture it into a CUDA graph; return (replay, keep-alive)."""
    try:
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(GRAPH_WARMUP_CALLS):
                fn()
        torch.cuda.current_stream(device).wait_stream(side)
        torch.cuda.synchronize(device)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            output = fn()
    except torch.cuda.OutOfMemoryError:
        raise
    except RuntimeError as exc:
        if "out of memory" in str(exc).lower():
            raise
        raise CaptureError(f"CUDA graph capture failed: {str(exc).splitlines()[0]}") from exc
    return graph.replay, (graph, output)


# -- warm-up and measurement -------------------------------------------------------------------------


def _warm_up(timer: Any, warmup_min: int, max_warmup_s: float, tol: float) -> tuple[int, bool, float]:
    """Run warm-up rounds; return (calls made, converged?, last round's median seconds)."""
    first = timer.once()  # may compile / autotune / allocate: not counted against the cap
    calls = 1
    started = time.perf_counter()
    round_size = max(1, warmup_min)
    previous: float | None = None
    last = first
    while True:
        times = [timer.once() for _ in range(round_size)]
        calls += round_size
        last = median(times)
        if previous is not None and previous > 0 and abs(last - previous) / previous <= tol:
            return calls, True, last
        if previous is not None and previous == 0 and last == 0:
            return calls, True, last
        if time.perf_counter() - started >= max_warmup_s:
            return calls, False, last
        previous = last
        if last > 0:
            round_size = max(warmup_min, min(MAX_ROUND_CALLS, math.ceil(MIN_ROUND_S / last)))


def _sample(timer: Any, min_reps: int, target_s: float, max_reps: int) -> list[float]:
    samples: list[float] = []
    measured = 0.0
    started = time.perf_counter()
    while len(samples) < max_reps:
        t = timer.once()
        samples.append(t)
        measured += t
        if len(samples) >= min_reps and (
            measured >= target_s or time.perf_counter() - started >= 2 * target_s
        ):
            break
    return samples


def time_callable(
    fn: Callable[[], Any],
    *,
    device: str | torch.device,
    warmup_min: int = 3,
    max_warmup_s: float = 2.0,
    warmup_tol: float = WARMUP_TOL,
    min_reps: int = 10,
    target_s: float = 1.0,
    max_reps: int = 1000,
    cuda_graph: bool = False,
    flush_l2: bool = False,
    inference_mode: bool = True,
    what: str = "",
    dtype: str = "fp32",
    batch: int = 1,
) -> Measurement:
    """Time the zero-argument ``fn`` on ``device`` (see the module docstring for the procedure).

    ``what``, ``dtype`` and ``batch`` only label the result. ``cuda_graph`` and ``flush_l2`` need CUDA.
    Raises UsageError for bad settings or names, DeviceError if CUDA is asked for and absent, and
    CaptureError if graph capture fails; out-of-memory errors propagate (see ``memory.run_guarded``).
    """
    dev = resolve_device(device)
    resolve_dtype(dtype)  # UsageError listing the choices
    if min_reps < 1 or max_reps < min_reps:
        raise UsageError(f"need 1 <= min_reps <= max_reps, got min_reps={min_reps}, max_reps={max_reps}")
    if warmup_min < 1 or max_warmup_s < 0 or target_s < 0:
        raise UsageError("warmup_min must be >= 1 and max_warmup_s, target_s >= 0")
    if dev.type != "cuda" and (cuda_graph or flush_l2):
        raise UsageError("cuda_graph and flush_l2 need --device cuda")

    guard = torch.inference_mode() if inference_mode else nullcontext()
    device_ctx = torch.cuda.device(dev) if dev.type == "cuda" else nullcontext()
    keep_alive: Any = None
    with guard, device_ctx:
        if dev.type == "cuda":
            run = fn
            if cuda_graph:
                run, keep_alive = _capture(fn, dev)
            flush = l2_flush_buffer(dev) if flush_l2 else None
            timer: Any = _CudaTimer(run, dev, flush)
        else:
            timer = _CpuTimer(fn)
        warm_calls, converged, _ = _warm_up(timer, warmup_min, max_warmup_s, warmup_tol)
        samples = _sample(timer, min_reps, target_s, max_reps)
    del keep_alive
    return Measurement(
        samples_s=tuple(samples),
        what=what,
        device=str(dev),
        dtype=dtype,
        batch=batch,
        threads=torch.get_num_threads(),
        timer=timer.name,
        warmup_reps=warm_calls + (GRAPH_WARMUP_CALLS if cuda_graph else 0),
        warmup_converged=converged,
        cuda_graph=cuda_graph,
        flush_l2=flush_l2,
    )


# -- workloads ---------------------------------------------------------------------------------------


@dataclass
class Workload:
    """A module on its device with seeded inputs; calling it runs one forward pass.

    ``module`` is the (possibly compiled) module that is called, ``inputs`` the tensors passed to it
    (kept in fp32; under fp16/bf16 ``torch.autocast`` casts them per op), ``shapes`` their shapes.
    """

    module: nn.Module | Callable[..., Any]
    inputs: tuple[torch.Tensor, ...]
    device: torch.device
    dtype: str
    batch: int
    compiled: bool = False
    channels_last: bool = False
    shapes: tuple[tuple[int, ...], ...] = field(default_factory=tuple)

    def __call__(self) -> Any:
        if self.dtype == "fp32":
            return self.module(*self.inputs)
        with torch.autocast(device_type=self.device.type, dtype=DTYPES[self.dtype]):
            return self.module(*self.inputs)

    @property
    def fn(self) -> Callable[[], Any]:
        return self.__call__


def seeded_inputs(
    shapes: Sequence[Sequence[int]], device: torch.device, seed: int = 0
) -> tuple[torch.Tensor, ...]:
    """Standard-normal fp32 tensors of the given shapes, drawn on the CPU from a generator seeded with
    ``seed`` (the same values on every device), then moved to ``device``."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    return tuple(torch.randn(tuple(s), generator=gen, dtype=torch.float32).to(device) for s in shapes)


def build_workload(
    module: nn.Module,
    input_shapes: Sequence[Sequence[int]],
    *,
    device: str | torch.device = "cpu",
    dtype: str = "fp32",
    batch: int | None = None,
    compile: bool = False,
    channels_last: bool = False,
    seed: int = 0,
) -> Workload:
    """Prepare ``module`` for timing: eval mode, moved to ``device`` (in place), inputs built seeded.

    ``batch`` replaces the leading dimension of every input shape (None keeps the shapes as given).
    ``channels_last`` puts 5-D parameters and inputs in ``torch.channels_last_3d``. ``compile`` wraps the
    module in ``torch.compile`` (compilation happens on the first call, i.e. in warm-up). Parameters stay
    fp32; fp16/bf16 run under ``torch.autocast``.
    """
    dev = resolve_device(device)
    resolve_dtype(dtype)
    shapes = tuple(tuple(int(d) for d in s) for s in input_shapes)
    if not shapes:
        raise UsageError("a workload needs at least one input shape")
    if batch is not None:
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise UsageError(f"batch must be a positive integer, got {batch!r}")
        shapes = tuple((batch, *s[1:]) if s else s for s in shapes)
    items = shapes[0][0] if shapes[0] else 1

    module = module.to(dev).eval()
    inputs = seeded_inputs(shapes, dev, seed)
    if channels_last:
        fmt = torch.channels_last_3d
        with torch.no_grad():
            for p in module.parameters():
                if p.dim() == 5:
                    p.data = p.data.contiguous(memory_format=fmt)
        inputs = tuple(t.contiguous(memory_format=fmt) if t.dim() == 5 else t for t in inputs)
    called: Any = torch.compile(module) if compile else module
    return Workload(
        module=called,
        inputs=inputs,
        device=dev,
        dtype=dtype,
        batch=items,
        compiled=compile,
        channels_last=channels_last,
        shapes=shapes,
    )
