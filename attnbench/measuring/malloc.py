"""glibc's malloc settings while CPU work is timed.

PyTorch's CPU tensors come from malloc, which by default maps every block over ~32 MiB afresh and unmaps
it when freed; each call of e.g. a non-local block then pays ~10^4 page faults, whose cost in the kernel
varies by tens of percent over minutes on a virtual machine. :func:`cpu_malloc` with ``mode="cached"``
keeps freed memory and serves large blocks from the heap (``mallopt``: no ``mmap`` for large blocks, no
trimming) for as long as the context lasts, much as PyTorch's caching allocator does on CUDA, and
restores glibc's defaults afterwards. Growth in what a call allocates still shows in memory
measurements (tensor bytes are tracked op by op, not read from the process).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

MODES = ("cached", "system")

_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # mallopt parameters (glibc's malloc.h)
_GLIBC_MMAP_MAX, _GLIBC_TRIM_THRESHOLD = 65536, 128 * 1024  # their glibc defaults


@contextmanager
def cpu_malloc(mode: str) -> Iterator[str]:
    """Within the context, malloc as ``mode`` says (``cached`` or ``system``: glibc left alone); yields
    the mode in effect, which names why when ``cached`` could not be set (no glibc, ``mallopt`` failed)."""
    if mode != "cached":
        yield "system"
        return
    try:
        import ctypes
        import ctypes.util

        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        yield "system (mallopt unavailable)"
        return
    ok = mallopt(_M_MMAP_MAX, 0) == 1 and mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1
    try:
        yield "cached" if ok else "system (mallopt failed)"
    finally:
        mallopt(_M_MMAP_MAX, _GLIBC_MMAP_MAX)
        mallopt(_M_TRIM_THRESHOLD, _GLIBC_TRIM_THRESHOLD)
        trim = getattr(libc, "malloc_trim", None)
        if trim is not None:
            trim(0)  # give the kept memory back
