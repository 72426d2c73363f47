"""Closed-form activation memory: the bytes of the tensors one forward call creates that are alive together.

A block declares ``memory(shape, precision, **options) -> Peak`` beside its FLOP formula. The prediction
is of the call's *working* memory: every tensor the call creates (activations, its output, autocast's
casts of weights and inputs) that is alive at the moment the most bytes are; not the inputs and weights
that existed before the call, and not scratch space a kernel allocates inside itself (which the CPU
tracker cannot see; on CUDA the caching allocator sees it). The measured counterpart is
:func:`attnbench.measuring.memory.tensor_peak_bytes` on CPU and ``peak_allocated_delta_bytes`` on CUDA.

The dtypes are the real ones, from :class:`Precision`:

* ``pure``: weights and inputs are converted to the dtype (``module.to(dtype)``), so every activation is
  stored in it (fp32: 4 bytes, bf16/fp16: 2).
* ``autocast``: weights and inputs stay fp32; ``torch.autocast`` casts them per op. Convolutions and matrix
  products write the low-precision dtype. Softmax follows the device's autocast list: on CUDA it is a
  ``fp32_set_opt_dtype`` op (ATen's ``autocast_mode.h``), so a bf16 input gives an **fp32** output; on
  CPU softmax is in no autocast list and keeps its input's dtype. ATen's ``softmax(input, dim, dtype)``
  has a fused path that reads fp16 and writes fp32 on CUDA (``half_to_float``) for fp16 only: a bf16
  input is first converted to an fp32 copy, alive while the kernel runs (:attr:`Precision.softmax_copy`;
  on an H200, nl at the BANet preset under bf16 autocast peaked at 1504 MiB, the map's 10 bytes per
  element: bf16 map, fp32 copy, fp32 output). Element-wise ops between an fp32 and a
  bf16 tensor promote to fp32. A block whose autocast dtype flow is not modelled raises
  :class:`NotModelled`, and the prediction is reported as absent, with that reason.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from attnbench.errors import UsageError

DTYPE_BYTES: dict[str, int] = {"fp32": 4, "fp16": 2, "bf16": 2}
PRECISIONS: tuple[str, ...] = ("pure", "autocast")
FP32 = 4


class NotModelled(Exception):
    """The block's memory is not modelled for this precision (the message says what is missing)."""


@dataclass(frozen=True)
class Precision:
    """How a call stores its activations: the dtype, ``pure`` or ``autocast``, and the device type whose
    autocast rules apply (``cpu`` or ``cuda``)."""

    dtype: str = "fp32"
    mode: str = "pure"
    device_type: str = "cpu"

    def __post_init__(self) -> None:
        if self.dtype not in DTYPE_BYTES:
            raise UsageError(f"unknown dtype '{self.dtype}'; valid choices: {', '.join(DTYPE_BYTES)}")
        if self.mode not in PRECISIONS:
            raise UsageError(f"unknown precision '{self.mode}'; valid choices: {', '.join(PRECISIONS)}")

    @property
    def autocast(self) -> bool:
        """True when autocast actually changes dtypes (fp32 under autocast is plain fp32)."""
        return self.mode == "autocast" and self.dtype != "fp32"

    @property
    def low(self) -> int:
        """Bytes per element of the run's dtype: what convolutions and matrix products write."""
        return DTYPE_BYTES[self.dtype]

    @property
    def act(self) -> int:
        """Bytes per element of an activation that is not the output of a conv or matmul: the dtype in
        pure mode; fp32 under autocast (element-wise ops see the fp32 input and promote)."""
        return FP32 if self.autocast else self.low

    @property
    def softmax(self) -> int:
        """Bytes per element of a softmax output (see the module docstring for the autocast rule)."""
        if self.autocast and self.device_type == "cuda":
            return FP32
        return self.low

    @property
    def softmax_copy(self) -> int:
        """Bytes per element of the copy of a softmax's input that ATen makes before the kernel: fp32 under
        CUDA autocast with bf16 (the fp16-to-fp32 fused path does not cover bf16); else none."""
        if self.autocast and self.device_type == "cuda" and self.dtype != "fp16":
            return FP32
        return 0

    @property
    def label(self) -> str:
        return self.dtype if self.dtype == "fp32" else f"{self.dtype} {self.mode}"


@dataclass(frozen=True)
class Peak:
    """Predicted peak working memory of one call: the bytes, the phase of the call where it is reached, and
    the tensors alive then as ``(what, bytes)``."""

    bytes: int
    phase: str
    tensors: tuple[tuple[str, int], ...]

    def to_dict(self) -> dict[str, object]:
        return {"bytes": self.bytes, "phase": self.phase, "tensors": [{"what": w, "bytes": b} for w, b in self.tensors]}


Phase = tuple[str, Sequence[tuple[str, int]]]


def peak(phases: Iterable[Phase]) -> Peak:
    """The phase with the most bytes alive, among ``(phase, [(tensor, bytes), ...])``; the first wins ties."""
    best: Peak | None = None
    for name, tensors in phases:
        live = tuple((what, int(b)) for what, b in tensors if b)
        total = sum(b for _, b in live)
        if best is None or total > best.bytes:
            best = Peak(total, name, live)
    if best is None:
        raise ValueError("no phases given")
    return best


def shift(p: Peak, extra: Sequence[tuple[str, int]], phase: str | None = None) -> Peak:
    """``p`` with tensors that stay alive around it added (e.g. a block's input-sized residual held while
    an inner step runs)."""
    more = tuple((w, int(b)) for w, b in extra if b)
    return Peak(p.bytes + sum(b for _, b in more), phase or p.phase, more + p.tensors)


# -- layout: does a reshape copy? ---------------------------------------------------------------------


def contiguous_strides(shape: Sequence[int]) -> tuple[int, ...]:
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= max(size, 1)
    return tuple(reversed(strides))


def reshape_copies(shape: Sequence[int], strides: Sequence[int], new_shape: Sequence[int]) -> bool:
    """Whether ``tensor.reshape(new_shape)`` of a tensor with this shape and these strides must copy (it
    cannot be a view). The same rule as ATen's ``computeStride``: every run of dimensions that are
    contiguous with each other must be covered exactly by a run of new dimensions; size-1 dimensions
    never matter."""
    if any(s == 0 for s in shape):
        return False
    view_d = len(new_shape) - 1
    chunk_base = strides[-1] if strides else 1
    tensor_numel = view_numel = 1
    for d in range(len(shape) - 1, -1, -1):
        tensor_numel *= shape[d]
        if d == 0 or (shape[d - 1] != 1 and strides[d - 1] != tensor_numel * chunk_base):
            while view_d >= 0 and (view_numel < tensor_numel or new_shape[view_d] == 1):
                view_numel *= new_shape[view_d]
                view_d -= 1
            if view_numel != tensor_numel:
                return True
            if d > 0:
                chunk_base = strides[d - 1]
                tensor_numel = view_numel = 1
    return view_d != -1


def permuted(shape: Sequence[int], order: Sequence[int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Shape and strides of a contiguous tensor of ``shape`` after ``permute(*order)``."""
    strides = contiguous_strides(shape)
    return tuple(shape[i] for i in order), tuple(strides[i] for i in order)
