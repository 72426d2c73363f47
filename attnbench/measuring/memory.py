"""Peak memory of one call, and running a call so that running out of memory is a result, not a crash.

What is measured, and what it means
-----------------------------------
CUDA (:func:`measure_memory` on a cuda device): peak statistics are reset, the call runs once, the
device is synchronised, then

* ``peak_allocated_bytes``: ``torch.cuda.max_memory_allocated`` -- the most memory held in tensors at
  once during the call, including what was already allocated before it (weights, inputs);
* ``peak_allocated_delta_bytes``: that peak minus what was allocated just before the call -- the
  working memory (activations, workspaces) the call itself needed;
* ``peak_reserved_bytes``: ``torch.cuda.max_memory_reserved`` -- what the caching allocator held from
  the driver (>= allocated);
* ``device_used_bytes`` / ``device_total_bytes``: NVML's used and total memory of the whole GPU right
  after the call (all processes, CUDA context, allocator cache). If NVML cannot be used these are None
  and ``notes`` says why.

CPU: only the resident set of the *whole process* can be measured honestly. On Linux the process's
peak RSS is reset (``/proc/self/clear_refs``), the call runs, and ``VmHWM`` is read; elsewhere the
lifetime maximum from ``resource.getrusage`` is used, whose delta stays 0 unless the call raised the
lifetime peak. ``rss_peak_delta_bytes`` is that peak minus the resident size just before the call: an
approximation of the call's working memory (memory the allocator reuses without returning to the OS is
not seen). The CUDA-only fields are None, with a note saying they were not measured.

Tensor peak (any device, deterministic): :func:`tensor_peak_bytes` runs a call under
:class:`LiveTensorPeak`, which follows every tensor storage the call's ATen ops create and frees, and
returns the most bytes alive at once. That is what a block's closed-form memory prediction
(:mod:`attnbench.flops.memory`) predicts; unlike RSS it does not depend on the allocator. Scratch buffers a
kernel allocates inside itself are not seen.
"""

from __future__ import annotations

import gc
import sys
import weakref
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from attnbench.measuring.device import nvml_handle, resolve_device

T = TypeVar("T")

OOM = "OOM"
_OOM_MARKERS = ("out of memory", "can't allocate memory", "cannot allocate memory")


@dataclass(frozen=True)
class MemoryReport:
    """Memory of one call; None means not measured (``notes`` says why). All sizes in bytes."""

    device: str
    peak_allocated_bytes: int | None = None
    peak_allocated_delta_bytes: int | None = None
    peak_reserved_bytes: int | None = None
    device_used_bytes: int | None = None
    device_total_bytes: int | None = None
    rss_before_bytes: int | None = None
    rss_peak_bytes: int | None = None
    rss_peak_delta_bytes: int | None = None
    rss_method: str | None = None
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["notes"] = list(self.notes)
        return out


# -- out of memory -----------------------------------------------------------------------------------


def is_oom(exc: BaseException) -> bool:
    """True for torch's OutOfMemoryError, Python's MemoryError, and RuntimeErrors saying out of memory
    (CUDA's message, or the CPU allocator's "can't allocate memory")."""
    if isinstance(exc, (torch.cuda.OutOfMemoryError, MemoryError)):
        return True
    if isinstance(exc, RuntimeError):
        text = str(exc).lower()
        return any(marker in text for marker in _OOM_MARKERS)
    return False


def release_memory() -> None:
    """Collect garbage and, if CUDA has been used, return cached blocks to the driver."""
    gc.collect()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def run_guarded(fn: Callable[[], T]) -> tuple[T | None, str | None]:
    """``(fn(), None)``, or ``(None, "OOM")`` if it ran out of memory; other errors propagate.

    After an OOM the exception (and the frames and tensors its traceback holds) is dropped before
    garbage is collected and the CUDA cache emptied, so the next run starts clean.
    """
    out_of_memory = False
    try:
        return fn(), None
    except (RuntimeError, MemoryError) as exc:
        if not is_oom(exc):
            raise
        out_of_memory = True
    # Here the exception has been dropped, so its traceback no longer keeps tensors alive.
    if out_of_memory:
        release_memory()
    return None, OOM


# -- tensor peak ------------------------------------------------------------------------------------


class LiveTensorPeak(TorchDispatchMode):
    """Peak bytes of tensor storages created by the ATen ops run under it and still alive. A storage is
    counted when an op returns it and it is not one of the op's inputs (views and in-place results are
    not new memory), and uncounted when it is freed. Kernel-internal scratch buffers are not seen.

    With ``record=True`` it keeps a ``timeline`` of ``(op, dtype, shape, bytes created, bytes alive after)``,
    one entry per new storage: the tool for writing a block's memory formula."""

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        # torch wraps a mode's __torch_dispatch__ in torch._disable_dynamo unless this says False, and the
        # wrapper imports torch._dynamo (over a second, with sympy) on the first op; this mode never runs
        # under torch.compile, so there is nothing for it to disable
        return False

    def __init__(self, record: bool = False) -> None:
        super().__init__()
        self.live: dict[int, int] = {}
        self.current = 0
        self.peak = 0
        self.record = record
        self.timeline: list[tuple[str, str, tuple[int, ...], int, int]] = []

    def _freed(self, ptr: int) -> None:
        self.current -= self.live.pop(ptr, 0)

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        self.track(func, args, kwargs, out)
        return out

    def track(self, func: Any, args: Any, kwargs: Any, out: Any) -> int:
        """Count the new storages among ``out`` (not inputs, views or already counted); returns their bytes."""
        from torch.utils._pytree import tree_leaves

        added = 0
        given = {t.untyped_storage().data_ptr() for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        for t in tree_leaves(out):
            if not isinstance(t, torch.Tensor) or t.device.type == "meta":
                continue
            storage = t.untyped_storage()
            ptr, size = storage.data_ptr(), storage.nbytes()
            if size and ptr not in given and ptr not in self.live:
                self.live[ptr] = size
                self.current += size
                added += size
                self.peak = max(self.peak, self.current)
                weakref.finalize(storage, self._freed, ptr)
                if self.record:
                    name = str(func.overloadpacket).replace("aten.", "")
                    self.timeline.append((name, str(t.dtype).replace("torch.", ""), tuple(t.shape), size, self.current))
        return added


def tensor_peak_bytes(fn: Callable[[], Any], *, inference_mode: bool = True) -> int:
    """Most bytes held at once by tensors that one call of ``fn`` creates (its output included); the call
    runs once untracked first, so lazy initialisation is not counted. Deterministic (see
    :class:`LiveTensorPeak`)."""
    guard = torch.inference_mode() if inference_mode else nullcontext()
    with guard:
        fn()
        tracker = LiveTensorPeak()
        with tracker:
            out = fn()
        del out
    return tracker.peak


# -- CPU: process resident set -----------------------------------------------------------------------


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark for this process (Linux >= 4.0); False if not possible."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _ru_maxrss_bytes() -> int | None:
    try:
        import resource
    except ImportError:  # not on Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024  # bytes on macOS, KiB on Linux


def _measure_cpu(fn: Callable[[], Any], dev: torch.device) -> tuple[Any, MemoryReport]:
    gc.collect()
    notes = [
        "CPU: resident set size of the whole process (Python, torch, weights, inputs), not of the block "
        "alone; rss_peak_delta_bytes is the peak minus the resident size just before the call",
        "CUDA allocator and device-memory fields not measured on CPU",
    ]
    before = _status_kib("VmRSS")
    if before is not None and _reset_peak_rss():
        method = "linux VmHWM after clear_refs"
        result = fn()
        peak = _status_kib("VmHWM")
    else:
        method = "resource.getrusage ru_maxrss (lifetime peak)"
        notes.append("peak RSS could not be reset; the delta is 0 unless the call raised the lifetime peak")
        before_peak = _ru_maxrss_bytes()
        result = fn()
        peak = _ru_maxrss_bytes()
        if before is None:
            before = before_peak
    delta = None if (peak is None or before is None) else max(0, peak - before)
    if peak is None:
        notes.append("process RSS not measurable on this platform")
    report = MemoryReport(
        device=str(dev),
        rss_before_bytes=before,
        rss_peak_bytes=peak,
        rss_peak_delta_bytes=delta,
        rss_method=method if peak is not None else None,
        notes=tuple(notes),
    )
    return result, report


# -- CUDA ------------------------------------------------------------------------------------------


def _nvml_memory(index: int) -> tuple[int | None, int | None, str | None]:
    try:
        nvml, handle = nvml_handle(index)
        info = nvml.nvmlDeviceGetMemoryInfo(handle)
        return int(info.used), int(info.total), None
    except Exception as exc:  # NVML is optional
        return None, None, f"NVML device memory not measured: {type(exc).__name__}: {exc}"


def _measure_cuda(fn: Callable[[], Any], dev: torch.device) -> tuple[Any, MemoryReport]:
    index = dev.index if dev.index is not None else torch.cuda.current_device()
    torch.cuda.synchronize(index)
    torch.cuda.reset_peak_memory_stats(index)
    allocated_before = torch.cuda.memory_allocated(index)
    result = fn()
    torch.cuda.synchronize(index)
    peak_alloc = int(torch.cuda.max_memory_allocated(index))
    peak_reserved = int(torch.cuda.max_memory_reserved(index))
    used, total, nvml_note = _nvml_memory(index)
    notes = [
        "peak_allocated includes tensors alive before the call (weights, inputs); "
        "peak_allocated_delta is the call's own working memory",
        "device_used is NVML's whole-GPU used memory after the call (all processes, context, cache)",
        "process RSS not measured on CUDA",
    ]
    if nvml_note:
        notes.append(nvml_note)
    report = MemoryReport(
        device=str(dev),
        peak_allocated_bytes=peak_alloc,
        peak_allocated_delta_bytes=max(0, peak_alloc - int(allocated_before)),
        peak_reserved_bytes=peak_reserved,
        device_used_bytes=used,
        device_total_bytes=total,
        notes=tuple(notes),
    )
    return result, report


def measure_memory(
    fn: Callable[[], Any], *, device: str | torch.device, inference_mode: bool = True
) -> MemoryReport:
    """Run ``fn`` once on ``device`` and report its memory (see the module docstring).

    ``inference_mode`` as in :func:`~attnbench.measuring.timing.time_callable`. Out-of-memory errors
    propagate: wrap the call in :func:`run_guarded` to turn them into ``"OOM"``.
    """
    dev = resolve_device(device)
    guard = torch.inference_mode() if inference_mode else nullcontext()
    with guard:
        if dev.type == "cuda":
            with torch.cuda.device(dev):
                _, report = _measure_cuda(fn, dev)
        else:
            _, report = _measure_cpu(fn, dev)
    return report
