"""attnbench's own op-level counter, on PyTorch's dispatch machinery.

Every ATen op that a forward pass runs reaches :class:`ExactCounter` (a ``TorchDispatchMode``), which looks
its handle up in ``HANDLES`` and adds the op's :class:`~attnbench.flops.cost.Cost`. Handles are pure
functions of shapes, built from the same primitives as the closed forms. Ops known to do no arithmetic
(views, copies, indexing) are listed in ``FREE_OPS``; any other op is recorded in ``unhandled`` so that
nothing is dropped silently.

The category of an op comes from the op, except inside ``nn.Linear`` (everything there is "linear") and
inside normalisation modules. Counting runs under ``torch.no_grad()`` in eval mode, where PyTorch passes
the decomposed ops (``addmm``, ``bmm``, ``convolution``, ``_softmax`` ...) to the mode, and works on the
``meta`` device: no memory is allocated for activations.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from math import prod
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from attnbench.flops import cost as C
from attnbench.flops.cost import Cost

aten = torch.ops.aten

Handle = Callable[[Sequence[Any], Any], Cost]


def _numel(t: Any) -> int:
    return t.numel() if isinstance(t, torch.Tensor) else 0


def _first_tensor(out: Any) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)):
        for item in out:
            if isinstance(item, torch.Tensor):
                return item
    raise TypeError("op returned no tensor")


def _convolution(args: Sequence[Any], out: Any) -> Cost:
    x, w, bias = args[0], args[1], args[2]
    transposed = bool(args[6])
    y = _first_tensor(out)
    kernel = tuple(w.shape[2:])
    if transposed:
        # weight: (C_in, C_out / groups, *kernel)
        return C.conv_transpose(x.numel(), w.shape[1], kernel, y.numel(), bias is not None)
    return C.conv(y.numel(), w.shape[1], kernel, bias is not None)


def _mm(args: Sequence[Any], out: Any) -> Cost:
    a, b = args[0], args[1]
    return C.matmul(1, a.shape[0], a.shape[1], b.shape[1])


def _addmm(args: Sequence[Any], out: Any) -> Cost:
    a, b = args[1], args[2]
    return C.matmul(1, a.shape[0], a.shape[1], b.shape[1]) + C.eltwise(_first_tensor(out).numel())


def _bmm(args: Sequence[Any], out: Any) -> Cost:
    a, b = args[0], args[1]
    return C.matmul(a.shape[0], a.shape[1], a.shape[2], b.shape[2])


def _baddbmm(args: Sequence[Any], out: Any) -> Cost:
    a, b = args[1], args[2]
    return C.matmul(a.shape[0], a.shape[1], a.shape[2], b.shape[2]) + C.eltwise(_first_tensor(out).numel())


def _softmax(args: Sequence[Any], out: Any) -> Cost:
    return C.softmax(_first_tensor(out).numel())


def _batchnorm(args: Sequence[Any], out: Any) -> Cost:
    return C.batchnorm(_first_tensor(out).numel())


def _reduce(args: Sequence[Any], out: Any) -> Cost:
    return C.reduce(args[0].numel())


def _window_pool(args: Sequence[Any], out: Any) -> Cost:
    """max_pool / avg_pool with an explicit kernel: out elements x kernel volume."""
    y = _first_tensor(out)
    spatial = y.dim() - 2 if y.dim() >= 3 else 1
    kernel = args[1]
    if isinstance(kernel, int):
        kernel = [kernel] * spatial
    if len(kernel) == 1:
        kernel = list(kernel) * spatial
    return C.pool(y.numel(), prod(kernel))


def _adaptive_pool(args: Sequence[Any], out: Any) -> Cost:
    x = args[0]
    y = _first_tensor(out)
    spatial_in = x.shape[-(y.dim() - 2) :] if y.dim() > 2 else x.shape[-1:]
    spatial_out = y.shape[-len(spatial_in) :]
    lead = prod(y.shape[: y.dim() - len(spatial_in)])
    windows = prod(C.adaptive_window_sum(i, o) for i, o in zip(spatial_in, spatial_out))
    return C.pool(lead, windows)


def _sdpa(args: Sequence[Any], out: Any) -> Cost:
    """Scaled dot-product attention, any backend: q [..., L, E], k [..., S, E], v [..., S, Ev]. The same
    work as the materialised computation it fuses: the L x E x S product, a softmax over L x S and the
    L x S x Ev product (plus one add per score for an additive mask). The multiply by ``scale`` is not
    counted: attnbench's blocks use scale 1, where a fused kernel skips it and a naive one never does it."""
    q, k, v = args[0], args[1], args[2]
    batch = prod(q.shape[:-2])
    length, dim, keys, dim_v = q.shape[-2], q.shape[-1], k.shape[-2], v.shape[-1]
    total = C.matmul(batch, length, dim, keys) + C.softmax(batch * length * keys) + C.matmul(batch, length, keys, dim_v)
    mask = args[3] if len(args) > 3 and isinstance(args[3], torch.Tensor) else None
    if mask is not None and mask.dtype != torch.bool:
        total = total + C.eltwise(batch * length * keys)
    return total


def _pointwise(args: Sequence[Any], out: Any) -> Cost:
    return C.eltwise(_first_tensor(out).numel())


HANDLES: dict[Any, Handle] = {
    aten.convolution: _convolution,
    aten.mm: _mm,
    aten.addmm: _addmm,
    aten.bmm: _bmm,
    aten.baddbmm: _baddbmm,
    aten._softmax: _softmax,
    aten._safe_softmax: _softmax,
    aten.native_batch_norm: _batchnorm,
    aten._native_batch_norm_legit_no_training: _batchnorm,
    aten.mean: _reduce,
    aten.sum: _reduce,
    aten.amax: _reduce,
    aten.amin: _reduce,
    aten.max.dim: _reduce,
    aten.max.default: _reduce,
    aten.min.dim: _reduce,
    aten.min.default: _reduce,
    aten.max_pool1d: _window_pool,
    aten.max_pool2d_with_indices: _window_pool,
    aten.max_pool3d_with_indices: _window_pool,
    aten.avg_pool1d: _window_pool,
    aten.avg_pool2d: _window_pool,
    aten.avg_pool3d: _window_pool,
    aten._adaptive_avg_pool2d: _adaptive_pool,
    aten._adaptive_avg_pool3d: _adaptive_pool,
    aten.adaptive_max_pool2d: _adaptive_pool,
    aten.adaptive_max_pool3d: _adaptive_pool,
}
for _name in ("scaled_dot_product_attention", "_scaled_dot_product_flash_attention",
              "_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_efficient_attention",
              "_scaled_dot_product_cudnn_attention", "_scaled_dot_product_attention_math"):
    if hasattr(aten, _name):
        HANDLES[getattr(aten, _name)] = _sdpa

# Ops that move, copy, index or allocate but do no arithmetic.
FREE_OPS: frozenset[Any] = frozenset(
    {
        aten.view, aten._unsafe_view, aten.reshape, aten.t, aten.transpose, aten.permute,
        aten.expand, aten.squeeze, aten.unsqueeze, aten.slice, aten.select, aten.split,
        aten.split_with_sizes, aten.unbind, aten.cat, aten.stack, aten.clone, aten.copy_,
        aten._to_copy, aten.contiguous, aten.empty, aten.empty_like, aten.zeros, aten.zeros_like,
        aten.ones, aten.ones_like, aten.full, aten.full_like, aten.fill_, aten.zero_, aten.detach,
        aten.alias, aten.lift_fresh, aten.index_select, aten.index, aten.gather, aten.topk,
        aten.sort, aten.flip, aten.roll, aten.narrow, aten.as_strided, aten.new_empty,
        aten.new_zeros, aten.constant_pad_nd, aten.arange, aten.flatten, aten.unflatten,
        aten.repeat, aten.chunk, aten._reshape_alias, aten.empty_strided, aten.scalar_tensor,
        aten.lift_fresh_copy, aten.upsample_nearest1d, aten.upsample_nearest2d,
        aten.upsample_nearest3d, aten.sym_size, aten.sym_numel, aten.sym_stride, aten.is_same_size,
        aten._local_scalar_dense, aten.new_full, aten.new_ones, aten.unfold, aten.pad,
    }
)

_LINEAR_MODULES = (nn.Linear,)
_NORM_MODULES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


@dataclass
class CountResult:
    """What the exact counter saw: total cost, cost per ATen op, and ops it could not count."""

    cost: Cost
    per_op: dict[str, Cost] = field(default_factory=dict)
    op_calls: Counter = field(default_factory=Counter)
    unhandled: Counter = field(default_factory=Counter)
    output_elements: int = 0  # elements written by counted ops: an upper bound on activation memory


class ExactCounter(TorchDispatchMode):
    """Counts every ATen op of the code run under it (see module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.cost = Cost()
        self.per_op: dict[str, Cost] = {}
        self.op_calls: Counter = Counter()
        self.unhandled: Counter = Counter()
        self.output_elements = 0
        self._module_stack: list[nn.Module] = []
        self._hooks: list[Any] = []

    def __enter__(self) -> "ExactCounter":
        self._hooks = [
            nn.modules.module.register_module_forward_pre_hook(self._push),
            nn.modules.module.register_module_forward_hook(self._pop),
        ]
        return super().__enter__()

    def __exit__(self, *exc: Any) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks = []
        super().__exit__(*exc)

    def _push(self, module: nn.Module, inputs: Any) -> None:
        self._module_stack.append(module)

    def _pop(self, module: nn.Module, inputs: Any, output: Any) -> None:
        if self._module_stack and self._module_stack[-1] is module:
            self._module_stack.pop()

    def _recategorise(self, cost: Cost) -> Cost:
        if not self._module_stack:
            return cost
        inner = self._module_stack[-1]
        if isinstance(inner, _LINEAR_MODULES):
            target = "linear"
        elif isinstance(inner, _NORM_MODULES):
            target = "normalisation"
        else:
            return cost
        cells: dict[tuple[str, str], int] = {}
        for (_, kind), value in cost:
            cells[(target, kind)] = cells.get((target, kind), 0) + value
        return Cost(cells)

    def __torch_dispatch__(self, func: Any, types: Any, args: Sequence[Any] = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        packet = func.overloadpacket
        name = str(packet).replace("aten.", "")
        self.op_calls[name] += 1
        handle = HANDLES.get(func) or HANDLES.get(packet)
        if handle is not None:
            op_cost = handle(list(args) + list(kwargs.values()), out)
        elif packet in FREE_OPS:
            return out
        elif _times_one(packet, args):
            return out
        elif torch.Tag.pointwise in func.tags:
            op_cost = _pointwise(args, out)
        else:
            self.unhandled[name] += 1
            return out
        self.output_elements += _first_tensor(out).numel()
        op_cost = self._recategorise(op_cost)
        self.cost = self.cost + op_cost
        self.per_op[name] = self.per_op.get(name, Cost()) + op_cost
        return out


def _times_one(packet: Any, args: Sequence[Any]) -> bool:
    """A multiplication by the number 1 does no arithmetic (PyTorch's math attention path scales q and k by
    sqrt(scale), which is 1 for attnbench's blocks, and a fused kernel skips it)."""
    return packet is aten.mul and len(args) == 2 and not isinstance(args[1], torch.Tensor) and args[1] == 1


def meta_inputs(shapes: Sequence[Sequence[int]], device: str = "meta", seed: int = 0) -> list[torch.Tensor]:
    """Forward arguments of the given shapes; random (seeded) on a real device, empty on ``meta``."""
    if device == "meta":
        return [torch.empty(*s, device="meta") for s in shapes]
    gen = torch.Generator(device="cpu").manual_seed(seed)
    return [torch.randn(*s, generator=gen).to(device) for s in shapes]


def count(module: nn.Module, inputs: Sequence[torch.Tensor], counter: ExactCounter | None = None) -> CountResult:
    """Run ``module(*inputs)`` once under the exact counter (eval mode, no grad); ``counter`` may be a
    subclass that records more (see :func:`attnbench.flops.conventions.count_detailed`)."""
    was_training = module.training
    module.eval()
    counter = counter if counter is not None else ExactCounter()
    try:
        with torch.no_grad(), counter:
            module(*inputs)
    finally:
        module.train(was_training)
    return CountResult(counter.cost, counter.per_op, counter.op_calls, counter.unhandled, counter.output_elements)


def param_count(module: nn.Module) -> int:
    """Learnable parameters (buffers such as batch-norm statistics are not parameters)."""
    return sum(p.numel() for p in module.parameters())
