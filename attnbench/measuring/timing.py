"""Timing a callable: warm-up until stable, then enough timed repetitions for a stable median.

:func:`time_callable` only measures; it returns a :class:`~attnbench.measuring.stats.Measurement` holding
every per-call time, and all statistics are derived from those. :func:`build_workload` turns a module
and its input shapes into the zero-argument callable that is timed.

How a call is timed
-------------------
Calls are made in *rounds* of k calls; a sample is always the time of one call.

* CPU: ``time.perf_counter_ns()`` around each call (the call returns when its work is done).
* CUDA, ``timing="pipelined"``: one pair of CUDA events around each call, the calls of a round enqueued
  back to back and the device synchronised once at the end of the round, as triton's ``do_bench`` does.
  While the host enqueues faster than the GPU executes, the GPU never waits between calls, so a sample
  is the GPU time of one call. When the host is the slower side (many small kernels), the GPU idles
  between launches and a sample is the host's launch time: the round's host time per call is compared
  with the event times, and ``Measurement.launch_bound`` says so.
* CUDA, ``timing="isolated"``: the device is synchronised before every call, so each sample is the
  latency of one call on an idle GPU as a single caller sees it, launch gaps included.
* CUDA, ``timing="graph"`` (or ``cuda_graph=True``): the callable is captured once into a CUDA graph
  (after eager warm-up on a side stream, and a throwaway capture so that per-stream workspaces are not
  charged to the measured one) and each call is one ``graph.replay()``, which removes Python and launch
  overhead. A callable that cannot be captured raises :class:`CaptureError`. The memory the capture
  needed (the graph's pool) is recorded in ``Measurement.graph_pool_bytes``.
* CUDA, ``timing="auto"`` (the default): ``graph`` where the capture works, else ``pipelined``, with
  the reason in ``Measurement.timing_note``.
* ``flush_l2=True``: before every call a buffer twice the L2 size is overwritten (outside the timed
  region), so no call finds the previous call's data in the L2.

Which of these ran is in ``Measurement.timing_mode`` (``per-call``, ``pipelined``, ``isolated``, ``graph``).

Warm-up
-------
Rounds of ``warmup_min`` calls (more for very short calls, so that a round lasts at least ~10 ms) until the
medians of two consecutive rounds differ by at most ``warmup_tol`` (5%). The very first call (which may
compile, autotune or allocate) is timed on its own and kept as ``first_call_s`` (with ``compile``, that is
the compile time); it does not count towards the warm-up cap. The cap is ``max_warmup_s`` or, for calls so
slow that fewer than ``MIN_WARMUP_ROUNDS`` rounds fit in it, the time of that many rounds: convergence is
then judged on at least two 2-call rounds, so ``warmup_converged`` means something for slow calls too.
Then calls are timed until at least ``min_reps`` samples and ``target_s`` seconds of measured time (or
twice ``target_s`` of wall time) have been collected, up to ``max_reps``.

Inference mode
--------------
``time_callable(..., inference_mode=True)`` (the default) enters ``torch.inference_mode()`` once around
warm-up, capture and timing, so callers need not; pass False to time a callable as it is (e.g. one
that needs autograd).
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
from attnbench.measuring import device as _device
from attnbench.measuring.device import DTYPES, resolve_device, resolve_dtype
from attnbench.measuring.stats import Measurement, median

WARMUP_TOL = 0.05  # consecutive warm-up round medians within 5% => warm
MAX_REPS = 1000  # most timed calls per measurement
MAX_SECONDS = 600.0  # longest --target-s / --warmup-s a command accepts
MIN_ROUND_S = 0.01  # a warm-up round lasts at least this long (more calls for very short ones)
MIN_WARMUP_ROUNDS = 2  # slow calls: warm-up may exceed max_warmup_s to compare at least this many rounds
MAX_ROUND_CALLS = 1000
SAMPLE_ROUND_S = 0.05  # timed rounds last about this long (one synchronisation per round when pipelined)
MAX_SAMPLE_ROUND_CALLS = 100
GRAPH_WARMUP_CALLS = 3  # eager calls on a side stream before CUDA-graph capture
DEFAULT_L2_BYTES = 128 * 2**20  # flush size if torch does not report the L2 size
PRECISIONS = ("pure", "autocast")
TIMING_MODES = ("auto", "graph", "pipelined", "isolated")
LAUNCH_BOUND = 0.9  # host time per call >= 90% of the event time per call: the GPU waited for the host


class CaptureError(AttnBenchError):
    """The callable could not be captured into a CUDA graph."""


# -- timers ----------------------------------------------------------------------------------------


class _CpuTimer:
    name = "perf_counter_ns"
    mode = "per-call"

    def __init__(self, run: Callable[[], Any]) -> None:
        self.run = run

    def round(self, calls: int) -> list[float]:
        out = []
        for _ in range(calls):
            start = time.perf_counter_ns()
            self.run()
            out.append((time.perf_counter_ns() - start) * 1e-9)
        return out


class _CudaTimer:
    name = "cuda_event"

    def __init__(self, run: Callable[[], Any], device: torch.device, flush: torch.Tensor | None, mode: str) -> None:
        self.run = run
        self.device = device
        self.flush = flush
        self.mode = mode
        self.launch_bound: list[bool] = []  # per round (pipelined and graph): did the GPU wait for the host?

    def _events(self, calls: int) -> tuple[list[Any], list[Any]]:
        return ([torch.cuda.Event(enable_timing=True) for _ in range(calls)],
                [torch.cuda.Event(enable_timing=True) for _ in range(calls)])

    def round(self, calls: int) -> list[float]:
        starts, ends = self._events(calls)
        torch.cuda.synchronize(self.device)
        host = time.perf_counter()
        for start, end in zip(starts, ends):
            if self.flush is not None:
                self.flush.fill_(1.0)  # evict the L2: enqueued before the start event, so not timed
            if self.mode == "isolated":
                torch.cuda.synchronize(self.device)
            start.record()
            self.run()
            end.record()
            if self.mode == "isolated":
                end.synchronize()
        host = (time.perf_counter() - host) / calls
        ends[-1].synchronize()
        times = [s.elapsed_time(e) * 1e-3 for s, e in zip(starts, ends)]  # ms -> s
        if self.mode != "isolated" and calls > 1:
            self.launch_bound.append(host >= LAUNCH_BOUND * median(times))
        return times


def l2_flush_buffer(device: torch.device) -> torch.Tensor:
    """A float32 buffer twice the size of the device's L2 cache (writing it evicts the L2)."""
    props = torch.cuda.get_device_properties(device)
    l2 = int(getattr(props, "L2_cache_size", 0) or DEFAULT_L2_BYTES)
    return torch.empty(2 * l2 // 4, dtype=torch.float32, device=_device.placement(device))


def _capture(fn: Callable[[], Any], device: torch.device) -> tuple[Callable[[], Any], Any, int, float]:
    """Warm ``fn`` up on a side stream and capture it into a CUDA graph. Returns (replay, keep-alive,
    bytes the capture allocated: the graph's working memory, held in its private pool, and the first eager
    call's seconds: with torch.compile, the compile time)."""
    try:
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            start = time.perf_counter()
            fn()
            torch.cuda.synchronize(device)
            first = time.perf_counter() - start
            for _ in range(GRAPH_WARMUP_CALLS - 1):
                fn()
        torch.cuda.current_stream(device).wait_stream(side)
        torch.cuda.synchronize(device)
        throwaway = torch.cuda.CUDAGraph()  # allocates the capture stream's workspaces (cuBLAS) once
        with torch.cuda.graph(throwaway):
            fn()
        del throwaway
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            output = fn()
        torch.cuda.synchronize(device)
        pool = max(0, int(torch.cuda.max_memory_allocated(device)) - int(before))
    except torch.cuda.OutOfMemoryError:
        raise
    except RuntimeError as exc:
        if "out of memory" in str(exc).lower():
            raise
        raise CaptureError(f"CUDA graph capture failed: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from exc
    return graph.replay, (graph, output), pool, first


# -- warm-up and measurement -------------------------------------------------------------------------


def _round_size(estimate_s: float, warmup_min: int, max_warmup_s: float) -> int:
    """Calls per warm-up round: enough for ``MIN_ROUND_S`` of short calls; for calls so slow that
    ``MIN_WARMUP_ROUNDS`` full rounds would not fit in ``max_warmup_s``, rounds of at most 2 calls."""
    size = max(1, warmup_min)
    if estimate_s > 0:
        size = max(size, min(MAX_ROUND_CALLS, math.ceil(MIN_ROUND_S / estimate_s)))
        if estimate_s * size * MIN_WARMUP_ROUNDS > max_warmup_s:
            size = min(size, 2)
    return size


def _warm_up(timer: Any, warmup_min: int, max_warmup_s: float, tol: float) -> tuple[int, bool, float, float]:
    """Run warm-up rounds; return (calls made, converged?, last round's median s, first call's s)."""
    first = timer.round(1)[0]  # may compile / autotune / allocate: not counted against the cap
    calls, rounds = 1, 0
    started = time.perf_counter()
    round_size = _round_size(first, warmup_min, max_warmup_s)
    previous: float | None = None
    last = first
    while True:
        last = median(timer.round(round_size))
        calls += round_size
        rounds += 1
        if previous is not None and previous > 0 and abs(last - previous) / previous <= tol:
            return calls, True, last, first
        if previous is not None and previous == 0 and last == 0:
            return calls, True, last, first
        if time.perf_counter() - started >= max_warmup_s and rounds >= MIN_WARMUP_ROUNDS:
            return calls, False, last, first
        previous = last
        round_size = _round_size(last, warmup_min, max_warmup_s)


def _sample(timer: Any, min_reps: int, target_s: float, max_reps: int, estimate_s: float = 0.0) -> list[float]:
    """Timed calls in rounds (about ``SAMPLE_ROUND_S`` each, sized from ``estimate_s``) until ``min_reps``
    samples and ``target_s`` measured seconds (or twice that in wall time), at most ``max_reps``."""
    per_round = 1
    if estimate_s > 0:
        per_round = max(1, min(MAX_SAMPLE_ROUND_CALLS, int(SAMPLE_ROUND_S / estimate_s)))
    samples: list[float] = []
    measured = 0.0
    started = time.perf_counter()
    while len(samples) < max_reps:
        for t in timer.round(min(per_round, max_reps - len(samples))):
            samples.append(t)
            measured += t
            if len(samples) >= min_reps and (measured >= target_s or time.perf_counter() - started >= 2 * target_s):
                return samples
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
    max_reps: int = MAX_REPS,
    cuda_graph: bool = False,
    flush_l2: bool = False,
    timing: str = "auto",
    inference_mode: bool = True,
    what: str = "",
    dtype: str = "fp32",
    batch: int = 1,
) -> Measurement:
    """Time the zero-argument ``fn`` on ``device`` (see the module docstring for the procedure).

    ``what``, ``dtype`` and ``batch`` only label the result. ``cuda_graph`` (the same as ``timing="graph"``),
    ``flush_l2`` and ``timing`` apply to CUDA. Raises UsageError for bad settings or names, DeviceError if
    CUDA is asked for and absent, and CaptureError if a required graph capture fails (with ``auto`` a
    failed capture falls back to pipelined); out-of-memory errors propagate (see ``memory.run_guarded``).
    """
    dev = resolve_device(device)
    resolve_dtype(dtype)
    if min_reps < 1 or max_reps < min_reps:
        raise UsageError(f"need 1 <= min_reps <= max_reps, got min_reps={min_reps}, max_reps={max_reps}")
    if warmup_min < 1 or max_warmup_s < 0 or target_s < 0:
        raise UsageError("warmup_min must be >= 1 and max_warmup_s, target_s >= 0")
    if dev.type != "cuda" and (cuda_graph or flush_l2):
        raise UsageError("cuda_graph and flush_l2 need --device cuda")
    if timing not in TIMING_MODES:
        raise UsageError(f"unknown timing mode '{timing}'; valid choices: {', '.join(TIMING_MODES)}")

    if cuda_graph:
        timing = "graph"
    guard = torch.inference_mode() if inference_mode else nullcontext()
    device_ctx = torch.cuda.device(dev) if dev.type == "cuda" else nullcontext()
    keep_alive: Any = None
    pool: int | None = None
    captured_first: float | None = None
    note = ""
    with guard, device_ctx:
        if dev.type == "cuda":
            run, mode = fn, timing
            if timing in ("graph", "auto"):
                try:
                    run, keep_alive, pool, captured_first = _capture(fn, dev)
                    mode = "graph"
                except CaptureError as e:
                    if timing == "graph":
                        raise
                    mode, note = "pipelined", f"{e}; timed pipelined instead"
            flush = l2_flush_buffer(dev) if flush_l2 else None
            timer: Any = _CudaTimer(run, dev, flush, mode)
        else:
            timer = _CpuTimer(fn)
            mode = timer.mode
        warm_calls, converged, last, first = _warm_up(timer, warmup_min, max_warmup_s, warmup_tol)
        if isinstance(timer, _CudaTimer):
            timer.launch_bound = []  # judge the timed rounds only
        samples = _sample(timer, min_reps, target_s, max_reps, estimate_s=last if mode != "per-call" else 0.0)
    del keep_alive
    flags = getattr(timer, "launch_bound", [])
    launch_bound = (sum(flags) > len(flags) / 2) if flags else None
    return Measurement(
        samples_s=tuple(samples),
        what=what,
        device=str(dev),
        dtype=dtype,
        batch=batch,
        threads=torch.get_num_threads(),
        timer=timer.name,
        warmup_reps=warm_calls + (GRAPH_WARMUP_CALLS + 1 if mode == "graph" else 0),
        warmup_converged=converged,
        cuda_graph=mode == "graph",
        flush_l2=flush_l2,
        timing_mode=mode,
        first_call_s=captured_first if captured_first is not None else first,
        graph_pool_bytes=pool,
        timing_note=note,
        launch_bound=launch_bound,
    )


# -- workloads ---------------------------------------------------------------------------------------


@dataclass
class Workload:
    """A module on its device with seeded inputs; calling it runs one forward pass.

    ``module`` is the (possibly compiled) module that is called, ``inputs`` the tensors passed to it,
    ``shapes`` their shapes. ``precision`` says how ``dtype`` is applied: ``pure`` (weights and inputs
    converted to it once) or ``autocast`` (weights and inputs fp32, ``torch.autocast`` entered per call,
    so every call pays its casts, as mixed-precision inference does).
    """

    module: nn.Module | Callable[..., Any]
    inputs: tuple[torch.Tensor, ...]
    device: torch.device
    dtype: str
    batch: int
    compiled: bool = False
    channels_last: bool = False
    shapes: tuple[tuple[int, ...], ...] = field(default_factory=tuple)
    precision: str = "pure"

    @property
    def autocast(self) -> bool:
        return self.precision == "autocast" and self.dtype != "fp32"

    def __call__(self) -> Any:
        if not self.autocast:
            return self.module(*self.inputs)
        with torch.autocast(device_type=self.device.type, dtype=DTYPES[self.dtype]):
            return self.module(*self.inputs)

    @property
    def fn(self) -> Callable[[], Any]:
        return self.__call__


def seeded_inputs(
    shapes: Sequence[Sequence[int]], device: torch.device, seed: int = 0, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, ...]:
    """Standard-normal tensors of the given shapes, drawn in fp32 on the CPU from a generator seeded with
    ``seed`` (the same values on every device), then converted to ``dtype`` and moved to ``device``."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    where = _device.placement(device)
    return tuple(torch.randn(tuple(s), generator=gen, dtype=torch.float32).to(where, dtype) for s in shapes)


def resolve_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise UsageError(f"unknown precision '{precision}'; valid choices: {', '.join(PRECISIONS)}")
    return precision


def _memory_format(dim: int) -> torch.memory_format | None:
    return {4: torch.channels_last, 5: torch.channels_last_3d}.get(dim)


def build_workload(
    module: nn.Module,
    input_shapes: Sequence[Sequence[int]],
    *,
    device: str | torch.device = "cpu",
    dtype: str = "fp32",
    precision: str = "pure",
    batch: int | None = None,
    compile: bool = False,
    channels_last: bool = False,
    seed: int = 0,
) -> Workload:
    """Prepare ``module`` for timing: eval mode, moved to ``device`` (in place), inputs built seeded.

    ``batch`` replaces the leading dimension of every input shape (None keeps the shapes as given).
    ``precision`` as in :class:`Workload`. ``channels_last`` puts 5-D parameters and inputs in
    ``torch.channels_last_3d`` and 4-D ones (2-D convolutions, e.g. TSM's) in ``torch.channels_last``.
    ``compile`` resets dynamo's state (so no earlier target's graphs or recompile count carry over) and
    wraps the module in ``torch.compile(dynamic=False)``; compilation happens on the first call, whose
    time is kept apart (``Measurement.first_call_s``).
    """
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype)
    resolve_precision(precision)
    shapes = tuple(tuple(int(d) for d in s) for s in input_shapes)
    if not shapes:
        raise UsageError("a workload needs at least one input shape")
    if batch is not None:
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise UsageError(f"batch must be a positive integer, got {batch!r}")
        shapes = tuple((batch, *s[1:]) if s else s for s in shapes)
    items = shapes[0][0] if shapes[0] else 1

    pure_low = precision == "pure" and dtype != "fp32"
    module = module.to(_device.placement(dev)).eval()
    if pure_low:
        module = module.to(torch_dtype)
    inputs = seeded_inputs(shapes, dev, seed, torch_dtype if pure_low else torch.float32)
    if channels_last:
        with torch.no_grad():
            for p in module.parameters():
                fmt = _memory_format(p.dim())
                if fmt is not None:
                    p.data = p.data.contiguous(memory_format=fmt)
        inputs = tuple(t.contiguous(memory_format=f) if (f := _memory_format(t.dim())) else t for t in inputs)
    called: Any = module
    if compile:
        import torch._dynamo as dynamo
        from torch._dynamo.utils import counters

        dynamo.reset()
        counters.clear()  # compile_stats() then describes this target alone
        called = torch.compile(module, dynamic=False)
    return Workload(
        module=called,
        inputs=inputs,
        device=dev,
        dtype=dtype,
        batch=items,
        compiled=compile,
        channels_last=channels_last,
        shapes=shapes,
        precision=precision if dtype != "fp32" else "pure",
    )


def compile_stats() -> dict[str, int]:
    """What dynamo did since its last reset: graphs compiled and graph breaks. Zero graphs after a compiled
    call means the call ran eagerly (dynamo fell back)."""
    from torch._dynamo.utils import counters

    return {
        "unique_graphs": int(counters["stats"].get("unique_graphs", 0)),
        "graph_breaks": int(sum(counters["graph_break"].values())),
    }
