"""attnbench's own op-level counter, on PyTorch's dispatch machinery.

Every ATen op that a forward (and, on request, backward) pass runs reaches :class:`ExactCounter` (a
``TorchDispatchMode``), which looks its handle up in ``HANDLES`` and adds the op's
:class:`~attnbench.flops.cost.Cost`. Handles are pure functions of shapes, built from the same primitives as
the closed forms. Ops known to do no arithmetic (views, copies, indexing, random fills) are listed in
``FREE_OPS``; ops tagged ``pointwise`` by PyTorch (and their in-place / ``out=`` forms) cost one op per
output element; any other op is recorded in ``unhandled`` so that nothing is dropped silently (a handle may
also decline a call it cannot count from shapes alone, e.g. variable-length flash attention, which is then
recorded in ``unhandled`` too).

Convention (see :mod:`attnbench.flops.cost`): FLOPs count a multiply-add as 2 and any other arithmetic op as
1; MACs count the multiply-accumulates of convolutions, linear layers and matrix products only. Per op:

=====================================  =====================================================================
ops                                    counted
=====================================  =====================================================================
convolution (any dims, groups,         MACs: output elements x C_in/groups x taps (transposed: input
transposed), ``convolution_backward``  elements x C_out/groups x taps); bias 1 per output. Backward: the
                                       forward MACs for each of grad_input / grad_weight; grad_bias 1 per
                                       output-gradient element
mm, bmm, addmm, baddbmm, addbmm, mv,   MACs of the product; ``beta``/``alpha``: 1 per output for the add
addmv, dot, _addmm_activation ...      (beta != 0), 1 more for beta not in {0, 1}, 1 for alpha != 1
                                       (+1 for the fused activation). einsum, matmul, linear, tensordot
                                       reach the counter as these
softmax, _safe_softmax, log_softmax    5 per element; backward 4 per element
layer / group / instance norm, batch   5 per element (mean, centre, square-accumulate, normalise) + 1
norm in training, RMS norm (3)         weight + 1 bias; batch norm in eval: 2 (folded scale and shift);
                                       backward: see :func:`attnbench.flops.cost.norm_backward`
pointwise (tagged) and activations     1 per output element (gelu, silu, mish, hardswish, sigmoid, exp,
                                       where, clamp, masked_fill ... and their backward functions);
                                       addcmul / addcdiv 2 (+1 for value != 1), lerp 3, glu 2, dropout 2
reductions, scans                      1 per input element (sum, mean, amax, prod, argmax, cumsum ...);
                                       var / std 4, logsumexp 4, p-norms 2 (3 for other p)
pools                                  outputs x window (max / avg / fractional); adaptive: the window sums;
                                       backward: avg as forward, max 1 per output-gradient element
interpolation                          nearest free; linear 3, bilinear 7, trilinear 15, bicubic 31 per
                                       output (2 n - 1 for n neighbours); backward 2 n per output gradient
scaled dot-product attention (math,    the materialised attention (two products, softmax, mask add);
flash, efficient, cuDNN, CPU flash)    fused backward: 5 products + 4 per score + 2 per output element
scatter-add, index_add, index_put      1 per accumulated element; plain scatter / index_put / embedding
(accumulate), embedding backward       are free
=====================================  =====================================================================

Left unhandled on purpose (they stay in ``unhandled`` when they run): losses (``mse_loss``, ``nll_loss``
...), ``_cdist_forward``, ``logcumsumexp``, antialiased interpolation, ``grid_sampler_*_backward``,
``_embedding_bag``, ``_transformer_encoder_layer_fwd``, variable-length (``cum_seq``) flash / efficient
attention, sort-based statistics (``median``, ``kthvalue``, ``mode``).

The category of an op comes from the op, except inside ``nn.Linear`` (everything there is "linear") and
inside normalisation modules. :func:`count` runs under ``torch.no_grad()`` in eval mode by default, where
PyTorch passes the decomposed ops (``addmm``, ``bmm``, ``convolution``, ``_softmax`` ...) to the mode, and
works on the ``meta`` device: no memory is allocated for activations. With ``backward=True`` it counts one
training step (see :func:`count`).

**Per module.** Every op is attributed to the innermost module (by qualified name in
``root.named_modules()``) running it: in the forward, the innermost module whose ``forward`` is on the call
stack; in the backward, the module whose forward created the autograd node being executed
(``torch._C._current_autograd_node()``; nodes are claimed, innermost module first, when each module's
forward returns, by walking back from its outputs to the nodes that existed before it started). Gradient
accumulation of a tensor used more than once (a residual fan-out, a shared module called twice), which the
autograd engine runs after a node's function, is attributed to the lowest common ancestor of the modules
that consumed the tensor. ``CountResult.by_module`` is then inclusive along the module tree. This differs
from ``torch.utils.flop_counter.FlopCounterMode`` (``torch.utils.module_tracker.ModuleTracker``), which
credits a backward op to every module "entered" at that time: a module is entered when the gradient of its
output is ready and left only when the gradients of all its inputs are complete, so a module whose input
is also consumed elsewhere (theta / phi / g reading the same x, a residual shortcut) or does not require
grad stays entered while its siblings' backward runs, and their ops are credited to it as well.
"""

from __future__ import annotations

import functools
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from math import prod
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from attnbench.flops import cost as C
from attnbench.flops.cost import Cost

aten = torch.ops.aten


# ---------------------------------------------------------------------------------------------------------
# Arguments by schema name


class OpArgs:
    """An op's arguments bound to its schema: ``a[i]`` by position, ``a["name"]`` / ``a.get("name")`` by
    name, defaults filled in (so that a handle reads ``attn_mask`` whether it came positionally or as a
    keyword)."""

    __slots__ = ("names", "values")

    def __init__(self, names: tuple[str, ...], values: list[Any]) -> None:
        self.names = names
        self.values = values

    def __getitem__(self, key: int | str) -> Any:
        if isinstance(key, int):
            return self.values[key]
        return self.values[self.names.index(key)]

    def get(self, name: str, default: Any = None) -> Any:
        try:
            value = self.values[self.names.index(name)]
        except ValueError:
            return default
        return default if value is None else value

    def __len__(self) -> int:
        return len(self.values)


@functools.cache
def _schema(func: Any) -> tuple[tuple[str, bool, bool, Any], ...]:
    return tuple(
        (a.name, a.kwarg_only, a.has_default_value(), a.default_value if a.has_default_value() else None)
        for a in func._schema.arguments
    )


def _bind(func: Any, args: Sequence[Any], kwargs: dict[str, Any]) -> OpArgs:
    names, values = [], []
    for i, (name, kwarg_only, has_default, default) in enumerate(_schema(func)):
        if not kwarg_only and i < len(args):
            value = args[i]
        elif name in kwargs:
            value = kwargs[name]
        else:
            value = default if has_default else None
        names.append(name)
        values.append(value)
    return OpArgs(tuple(names), values)


Handle = Callable[[OpArgs, Any], "Cost | None"]


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


def _out_numel(out: Any) -> int:
    return _first_tensor(out).numel()


def _input(a: OpArgs) -> torch.Tensor:
    """The op's main tensor argument (``self`` or ``input``)."""
    x = a.get("self")
    return x if x is not None else a.get("input")


# ---------------------------------------------------------------------------------------------------------
# Products


def _coefficient_ops(a: OpArgs, out_elems: int) -> Cost:
    """``beta * self + alpha * (product)``: 1 per output element for the add (beta != 0), 1 for a scale by beta
    not in {0, 1}, 1 for a scale by alpha != 1. The default beta = alpha = 1 is the one add."""
    beta, alpha = a.get("beta", 1), a.get("alpha", 1)
    ops = int(beta != 0) + int(beta not in (0, 1)) + int(alpha != 1)
    return C.eltwise(out_elems * ops)


def _mm(a: OpArgs, out: Any) -> Cost:
    x, y = a[0], a[1]
    return C.matmul(1, x.shape[0], x.shape[1], y.shape[1])


def _addmm(a: OpArgs, out: Any) -> Cost:
    x, y = a["mat1"], a["mat2"]
    return C.matmul(1, x.shape[0], x.shape[1], y.shape[1]) + _coefficient_ops(a, _out_numel(out))


def _addmm_activation(a: OpArgs, out: Any) -> Cost:
    return _addmm(a, out) + C.eltwise(_out_numel(out))


def _bmm(a: OpArgs, out: Any) -> Cost:
    x, y = a[0], a[1]
    return C.matmul(x.shape[0], x.shape[1], x.shape[2], y.shape[2])


def _baddbmm(a: OpArgs, out: Any) -> Cost:
    x, y = a["batch1"], a["batch2"]
    return C.matmul(x.shape[0], x.shape[1], x.shape[2], y.shape[2]) + _coefficient_ops(a, _out_numel(out))


def _mv(a: OpArgs, out: Any) -> Cost:
    m = a[0]
    return C.matmul(1, m.shape[0], m.shape[1], 1)


def _addmv(a: OpArgs, out: Any) -> Cost:
    m = a["mat"]
    return C.matmul(1, m.shape[0], m.shape[1], 1) + _coefficient_ops(a, _out_numel(out))


def _dot(a: OpArgs, out: Any) -> Cost:
    return C.matmul(1, 1, a[0].numel(), 1)


def _scaled_mm(a: OpArgs, out: Any) -> Cost:
    """A scaled (fp8) product: the MACs, 1 per output for the scales, 1 for a bias."""
    x, y = a[0], a[1]
    n = _out_numel(out)
    return C.matmul(1, x.shape[0], x.shape[1], y.shape[1]) + C.eltwise(n * (1 + int(a.get("bias") is not None)))


# ---------------------------------------------------------------------------------------------------------
# Convolutions


def _conv_forward_macs(x: torch.Tensor, w: torch.Tensor, out_elems: int, transposed: bool) -> int:
    taps = prod(w.shape[2:])
    if transposed:  # weight (C_in, C_out / groups, *kernel)
        return x.numel() * w.shape[1] * taps
    return out_elems * w.shape[1] * taps  # weight (C_out, C_in / groups, *kernel)


def _convolution(a: OpArgs, out: Any, transposed: bool | None = None) -> Cost:
    x, w, bias = _input(a), a["weight"], a.get("bias")
    if transposed is None:
        transposed = bool(a.get("transposed", False))
    y = _first_tensor(out)
    kernel = tuple(w.shape[2:])
    if transposed:
        return C.conv_transpose(x.numel(), w.shape[1], kernel, y.numel(), bias is not None)
    return C.conv(y.numel(), w.shape[1], kernel, bias is not None)


def _convolution_backward(a: OpArgs, out: Any) -> Cost:
    g, x, w = a["grad_output"], a["input"], a["weight"]
    mask = list(a["output_mask"])
    macs = _conv_forward_macs(x, w, g.numel(), bool(a["transposed"]))
    return C.conv_backward(macs, g.numel(), mask[0], mask[1], mask[2])


# ---------------------------------------------------------------------------------------------------------
# Softmax, normalisation


def _softmax(a: OpArgs, out: Any) -> Cost:
    return C.softmax(_out_numel(out))


def _softmax_backward(a: OpArgs, out: Any) -> Cost:
    return C.softmax_backward(_out_numel(out))


def _batchnorm(a: OpArgs, out: Any) -> Cost:
    """Batch norm: in eval (running statistics) folded into a scale and a shift, 2 per element; in training
    (``training=True``, also instance norm, which runs as batch norm over N x C channels) its statistics are
    computed: :func:`attnbench.flops.cost.norm`."""
    if a.get("training", False):
        return C.norm(_input(a).numel(), a.get("weight") is not None, a.get("bias") is not None)
    return C.batchnorm(_out_numel(out))


def _norm_with_stats(a: OpArgs, out: Any) -> Cost:
    """layer norm, group norm."""
    return C.norm(_input(a).numel(), a.get("weight") is not None, a.get("bias") is not None)


def _rms_norm(a: OpArgs, out: Any) -> Cost:
    return C.norm(_input(a).numel(), a.get("weight") is not None, False, centred=False)


def _norm_backward(a: OpArgs, out: Any, statistics: str | None = None, centred: bool = True) -> Cost:
    x = a["input"]
    mask = list(a.get("output_mask", (True, True, True)))
    mask += [False] * (3 - len(mask))
    weight = a.get("weight") is not None
    stats = bool(a.get(statistics, False)) if statistics else True
    return C.norm_backward(x.numel(), mask[0], mask[1] and weight, mask[2] and weight, weight, stats, centred)


def _cudnn_batchnorm_backward(a: OpArgs, out: Any) -> Cost:
    return C.norm_backward(a["input"].numel(), True, True, True, True)


# ---------------------------------------------------------------------------------------------------------
# Reductions, scans, statistics


def _reduce(a: OpArgs, out: Any) -> Cost:
    return C.reduce(a[0].numel())


def _variance(a: OpArgs, out: Any) -> Cost:
    return C.variance(a[0].numel())


def _logsumexp(a: OpArgs, out: Any) -> Cost:
    return C.logsumexp(a[0].numel())


def _vector_norm(a: OpArgs, out: Any) -> Cost:
    p = a.get("ord", a.get("p", 2))
    return C.vector_norm(a[0].numel(), float(p))


# ---------------------------------------------------------------------------------------------------------
# Pooling


def _window_pool(a: OpArgs, out: Any, dims: int) -> Cost:
    """max / avg / fractional max pool with an explicit kernel: output elements x kernel volume."""
    kernel = a["kernel_size"]
    kernel = [kernel] * dims if isinstance(kernel, int) else list(kernel)
    if len(kernel) == 1:
        kernel = kernel * dims
    return C.pool(_out_numel(out), prod(kernel))


def _window_pool_backward(a: OpArgs, out: Any, dims: int) -> Cost:
    """avg pool backward: each output gradient spread over its window, as the forward."""
    kernel = a["kernel_size"]
    kernel = [kernel] * dims if isinstance(kernel, int) else list(kernel)
    if len(kernel) == 1:
        kernel = kernel * dims
    return C.pool(a["grad_output"].numel(), prod(kernel))


def _adaptive_windows(x: torch.Tensor, y: torch.Tensor, dims: int) -> Cost:
    spatial_in, spatial_out = x.shape[-dims:], y.shape[-dims:]
    lead = y.numel() // max(prod(spatial_out), 1)
    windows = prod(C.adaptive_window_sum(i, o) for i, o in zip(spatial_in, spatial_out))
    return C.pool(lead, windows)


def _adaptive_pool(a: OpArgs, out: Any, dims: int) -> Cost:
    return _adaptive_windows(a[0], _first_tensor(out), dims)


def _adaptive_pool_backward(a: OpArgs, out: Any, dims: int) -> Cost:
    return _adaptive_windows(a["self"], a["grad_output"], dims)


def _max_pool_backward(a: OpArgs, out: Any) -> Cost:
    """max-pool backward: each output gradient added to its argmax, 1 per output-gradient element."""
    return C.accumulate(a["grad_output"].numel(), "pooling")


# ---------------------------------------------------------------------------------------------------------
# Interpolation


def _interpolate(a: OpArgs, out: Any, neighbours: int) -> Cost:
    return C.interpolate(_out_numel(out), neighbours)


def _interpolate_backward(a: OpArgs, out: Any, neighbours: int) -> Cost:
    return C.interpolate_backward(a["grad_output"].numel(), neighbours)


_GRID_NEIGHBOURS = {0: 4, 1: 0, 2: 16}  # bilinear, nearest, bicubic (2-D); 3-D: 8, 0


def _grid_sampler(a: OpArgs, out: Any, dims: int) -> Cost | None:
    mode = int(a["interpolation_mode"])
    neighbours = {0: 2**dims, 1: 0, 2: 4**dims}.get(mode)
    if neighbours is None:
        return None
    return C.interpolate(_out_numel(out), neighbours) if neighbours else Cost()


# ---------------------------------------------------------------------------------------------------------
# Element-wise compositions and activations that are not tagged pointwise


def _eltwise(a: OpArgs, out: Any, per: int = 1) -> Cost:
    return C.eltwise(_out_numel(out) * per)


def _addcmul(a: OpArgs, out: Any) -> Cost:
    """self + value * t1 * t2 (or / t2): multiply (divide), add, and a multiply by value != 1."""
    return C.eltwise(_out_numel(out) * (2 + int(a.get("value", 1) != 1)))


def _prelu_backward(a: OpArgs, out: Any) -> Cost:
    """grad_input (g or a g) and the per-element weight gradient (g x): 2 per element."""
    return C.eltwise(2 * a["self"].numel())


def _native_dropout(a: OpArgs, out: Any) -> Cost:
    """Training dropout: the mask scaled by 1 / (1 - p) and the multiply, 2 per element (as PyTorch's
    decomposition: ``bernoulli_``, ``div_``, ``mul``); drawing the mask is not arithmetic. Free in eval."""
    train = a.get("train", True)
    if not train or a["p"] == 0:
        return Cost()
    return C.eltwise(2 * _out_numel(out))


def _native_dropout_backward(a: OpArgs, out: Any) -> Cost:
    return C.eltwise(2 * _out_numel(out))  # grad x mask x scale


# ---------------------------------------------------------------------------------------------------------
# Scatter-style accumulation


def _indexed_elems(x: torch.Tensor, indices: Sequence[Any]) -> int:
    shapes = [tuple(i.shape) for i in indices if isinstance(i, torch.Tensor)]
    indexed = prod(torch.broadcast_shapes(*shapes)) if shapes else 1
    rest = prod(x.shape[len(indices):]) * prod(s for s, i in zip(x.shape, indices) if i is None)
    return indexed * rest


def _index_put(a: OpArgs, out: Any) -> Cost:
    """index_put: free (a write) unless ``accumulate``: then 1 add per indexed element."""
    if not a.get("accumulate", False):
        return Cost()
    return C.accumulate(_indexed_elems(a["self"], a["indices"]))


def _scatter(a: OpArgs, out: Any) -> Cost:
    """scatter: free (a write) without ``reduce``; with one, 1 op per index element."""
    if a.get("reduce") is None:
        return Cost()
    return C.accumulate(a["index"].numel())


def _scatter_add(a: OpArgs, out: Any) -> Cost:
    return C.accumulate(a["index"].numel())


def _index_add(a: OpArgs, out: Any) -> Cost:
    source = a["source"]
    return C.accumulate(source.numel() * (1 + int(a.get("alpha", 1) != 1)))


def _index_reduce(a: OpArgs, out: Any) -> Cost:
    return C.accumulate(a["source"].numel())


def _accumulate_first(a: OpArgs, out: Any) -> Cost:
    """Backward of a gather-like op (embedding, padding, unfold) or col2im: 1 add per element of the
    first (gradient / column) argument."""
    return C.accumulate(a[0].numel())


# ---------------------------------------------------------------------------------------------------------
# Attention


def _mask_kind(mask: Any) -> bool:
    """Whether a mask is additive (a float bias: 1 add per score); a boolean mask selects (free)."""
    return isinstance(mask, torch.Tensor) and mask.dtype != torch.bool and mask.numel() > 0


def _sdpa(a: OpArgs, out: Any) -> Cost:
    """Scaled dot-product attention, any backend: q [..., L, E], k [..., S, E], v [..., S, Ev], counted as the
    materialised computation it fuses (:func:`attnbench.flops.cost.attention`)."""
    q, k, v = a["query"], a["key"], a["value"]
    mask = a.get("attn_mask", a.get("attn_bias"))
    dropout = (a.get("dropout_p", 0.0) or 0.0) > 0
    return C.attention(prod(q.shape[:-2]), q.shape[-2], q.shape[-1], k.shape[-2], v.shape[-1], _mask_kind(mask), dropout)


def _sdpa_backward(a: OpArgs, out: Any) -> Cost:
    """Backward of a fused attention op ([..., L, E] layout): :func:`attnbench.flops.cost.attention_backward`."""
    q, k, v = a["query"], a["key"], a["value"]
    mask = a.get("attn_mask", a.get("attn_bias"))
    dropout = (a.get("dropout_p", 0.0) or 0.0) > 0
    return C.attention_backward(prod(q.shape[:-2]), q.shape[-2], q.shape[-1], k.shape[-2], v.shape[-1],
                                _mask_kind(mask), dropout)


def _bshe(a: OpArgs, out: Any, varlen_arg: str, backward: bool) -> Cost | None:
    """The low-level flash / memory-efficient kernels: q [B, L, H, E] (batch, length, heads, dim). With
    cumulative sequence lengths (variable-length batches) the work depends on their values: not counted."""
    if a.get(varlen_arg) is not None:
        return None
    q, k, v = a["query"], a["key"], a["value"]
    batch, length, dim, keys, dim_v = q.shape[0] * q.shape[2], q.shape[1], q.shape[3], k.shape[1], v.shape[3]
    mask = _mask_kind(a.get("bias"))
    dropout = (a.get("dropout_p", 0.0) or 0.0) > 0
    fn = C.attention_backward if backward else C.attention
    return fn(batch, length, dim, keys, dim_v, mask, dropout)


def _native_mha(a: OpArgs, out: Any) -> Cost:
    """``nn.MultiheadAttention``'s inference fast path: q, k, v projections and the output projection
    (matmul MACs + bias adds, as the slow path's functional ``linear`` calls count), the rescale of q
    (1 per element), the attention, and the head average of the weights when returned."""
    q, k = a["query"], a["key"]
    e, heads = int(a["embed_dim"]), int(a["num_head"])
    batch, length, keys = q.shape[0], q.shape[1], k.shape[1]
    proj = C.matmul(1, batch * length, e, e) * 2 + C.matmul(1, batch * keys, e, e) * 2
    total = proj + C.eltwise(2 * batch * length * e + 2 * batch * keys * e + batch * length * e)
    total = total + C.attention(batch * heads, length, e // heads, keys, e // heads, a.get("mask") is not None)
    if a.get("need_weights", True) and a.get("average_attn_weights", True):
        total = total + C.reduce(batch * heads * length * keys)
    return total


# ---------------------------------------------------------------------------------------------------------
# The table


def _with(fn: Callable[..., Cost | None], **kw: Any) -> Handle:
    return functools.partial(fn, **kw)


def _ops(*names: str) -> list[Any]:
    """The ATen packets of these names that this PyTorch build has."""
    return [getattr(aten, n) for n in names if hasattr(aten, n)]


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
}


def _register(handle: Handle, *names: str) -> None:
    for packet in _ops(*names):
        HANDLES[packet] = handle


# products
_register(_mm, "_int_mm")
_register(_addmm_activation, "_addmm_activation")
_register(_baddbmm, "addbmm")
_register(_mv, "mv")
_register(_addmv, "addmv")
_register(_dot, "dot", "vdot")
_register(_scaled_mm, "_scaled_mm")
# convolutions
_register(_convolution, "_convolution", "convolution_overrideable", "mkldnn_convolution")
_register(_with(_convolution, transposed=False), "cudnn_convolution", "_slow_conv2d_forward", "slow_conv3d_forward",
          "_conv_depthwise2d", "conv_depthwise3d", "slow_conv_dilated2d", "slow_conv_dilated3d")
_register(_with(_convolution, transposed=True), "cudnn_convolution_transpose", "slow_conv_transpose2d",
          "slow_conv_transpose3d")
_register(_convolution_backward, "convolution_backward", "convolution_backward_overrideable")
# softmax
_register(_softmax, "_log_softmax")
_register(_softmax_backward, "_softmax_backward_data", "_log_softmax_backward_data")
# normalisation
_register(_batchnorm, "_native_batch_norm_legit", "_native_batch_norm_legit_functional", "cudnn_batch_norm",
          "miopen_batch_norm")
_register(_norm_with_stats, "native_layer_norm", "native_group_norm")
_register(_rms_norm, "_fused_rms_norm")
_register(_norm_backward, "native_layer_norm_backward", "native_group_norm_backward")
_register(_with(_norm_backward, statistics="train"), "native_batch_norm_backward")
_register(_with(_norm_backward, statistics="update"), "batch_norm_backward")
_register(_cudnn_batchnorm_backward, "cudnn_batch_norm_backward", "miopen_batch_norm_backward")
_register(_with(_norm_backward, centred=False), "_fused_rms_norm_backward")
# reductions, scans, statistics
_register(_reduce, "prod", "nansum", "argmax", "argmin", "any", "all", "count_nonzero", "cumsum", "cumprod",
          "cummax", "cummin", "aminmax")
_register(_variance, "var", "std", "var_mean", "std_mean")
_register(_logsumexp, "logsumexp")
_register(_vector_norm, "linalg_vector_norm", "norm", "native_norm", "frobenius_norm")
# pooling
for _dims, _names in ((1, ("max_pool1d", "max_pool1d_with_indices", "avg_pool1d")),
                      (2, ("max_pool2d", "max_pool2d_with_indices", "avg_pool2d", "fractional_max_pool2d")),
                      (3, ("max_pool3d", "max_pool3d_with_indices", "avg_pool3d", "fractional_max_pool3d"))):
    _register(_with(_window_pool, dims=_dims), *_names)
_register(_with(_window_pool_backward, dims=2), "avg_pool2d_backward")
_register(_with(_window_pool_backward, dims=3), "avg_pool3d_backward")
_register(_with(_adaptive_pool, dims=2), "_adaptive_avg_pool2d", "adaptive_max_pool2d")
_register(_with(_adaptive_pool, dims=3), "_adaptive_avg_pool3d", "adaptive_max_pool3d")
_register(_with(_adaptive_pool_backward, dims=2), "_adaptive_avg_pool2d_backward")
_register(_with(_adaptive_pool_backward, dims=3), "_adaptive_avg_pool3d_backward")
_register(_max_pool_backward, "max_pool2d_with_indices_backward", "max_pool3d_with_indices_backward",
          "adaptive_max_pool2d_backward", "adaptive_max_pool3d_backward", "fractional_max_pool2d_backward",
          "fractional_max_pool3d_backward")
# interpolation
_register(_with(_interpolate, neighbours=2), "upsample_linear1d")
_register(_with(_interpolate, neighbours=4), "upsample_bilinear2d")
_register(_with(_interpolate, neighbours=8), "upsample_trilinear3d")
_register(_with(_interpolate, neighbours=16), "upsample_bicubic2d")
_register(_with(_interpolate_backward, neighbours=1), "upsample_nearest1d_backward", "upsample_nearest2d_backward",
          "upsample_nearest3d_backward", "_upsample_nearest_exact1d_backward", "_upsample_nearest_exact2d_backward",
          "_upsample_nearest_exact3d_backward")
_register(_with(_interpolate_backward, neighbours=2), "upsample_linear1d_backward")
_register(_with(_interpolate_backward, neighbours=4), "upsample_bilinear2d_backward")
_register(_with(_interpolate_backward, neighbours=8), "upsample_trilinear3d_backward")
_register(_with(_interpolate_backward, neighbours=16), "upsample_bicubic2d_backward")
_register(_with(_grid_sampler, dims=2), "grid_sampler_2d", "cudnn_grid_sampler")
_register(_with(_grid_sampler, dims=3), "grid_sampler_3d")
# activations not tagged pointwise and their backward functions: 1 per output element
_register(_eltwise, "hardswish", "hardswish_", "log_sigmoid_forward", "_prelu_kernel", "rrelu_with_noise",
          "rrelu_with_noise_", "hardswish_backward", "hardsigmoid_backward", "elu_backward", "softplus_backward",
          "leaky_relu_backward", "hardtanh_backward", "log_sigmoid_backward", "hardshrink_backward",
          "softshrink_backward", "mish_backward", "rrelu_with_noise_backward", "glu_backward", "threshold_backward")
_register(_with(_eltwise, per=2), "glu")  # a * sigmoid(b): sigmoid and multiply per output
_register(_with(_eltwise, per=3), "lerp", "lerp_")  # start + w (end - start)
_register(_addcmul, "addcmul", "addcmul_", "addcdiv", "addcdiv_")
_register(_prelu_backward, "_prelu_kernel_backward")
_register(_native_dropout, "native_dropout")
_register(_native_dropout_backward, "native_dropout_backward")
# scatter-style accumulation
_register(_index_put, "index_put", "index_put_", "_index_put_impl_", "_unsafe_index_put")
_register(_scatter, "scatter", "scatter_")
_register(_scatter_add, "scatter_add", "scatter_add_", "scatter_reduce", "scatter_reduce_")
_register(_index_add, "index_add", "index_add_")
_register(_index_reduce, "index_reduce", "index_reduce_")
_register(_accumulate_first, "embedding_dense_backward", "col2im", "unfold_backward", "reflection_pad1d_backward",
          "reflection_pad2d_backward", "reflection_pad3d_backward", "replication_pad1d_backward",
          "replication_pad2d_backward", "replication_pad3d_backward")
# attention
_register(_sdpa, "scaled_dot_product_attention", "_scaled_dot_product_flash_attention",
          "_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_efficient_attention",
          "_scaled_dot_product_cudnn_attention", "_scaled_dot_product_attention_math",
          "_scaled_dot_product_attention_math_for_mps", "_scaled_dot_product_fused_attention_overrideable")
_register(_sdpa_backward, "_scaled_dot_product_flash_attention_backward",
          "_scaled_dot_product_flash_attention_for_cpu_backward", "_scaled_dot_product_efficient_attention_backward",
          "_scaled_dot_product_cudnn_attention_backward", "_scaled_dot_product_fused_attention_overrideable_backward")
_register(_with(_bshe, varlen_arg="cum_seq_q", backward=False), "_flash_attention_forward")
_register(_with(_bshe, varlen_arg="cum_seq_q", backward=True), "_flash_attention_backward")
_register(_with(_bshe, varlen_arg="cu_seqlens_q", backward=False), "_efficient_attention_forward")
_register(_with(_bshe, varlen_arg="cu_seqlens_q", backward=True), "_efficient_attention_backward")
_register(_native_mha, "_native_multi_head_attention")

# Ops that move, copy, index, allocate or draw random numbers but do no arithmetic.
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
        *_ops(
            "_upsample_nearest_exact1d", "_upsample_nearest_exact2d", "_upsample_nearest_exact3d",
            "embedding", "im2col", "pixel_shuffle", "pixel_unshuffle", "channel_shuffle", "native_channel_shuffle",
            "reflection_pad1d", "reflection_pad2d", "reflection_pad3d", "replication_pad1d", "replication_pad2d",
            "replication_pad3d", "tril", "triu", "tril_", "triu_", "diagonal", "diag_embed", "diag",
            "max_unpool2d", "max_unpool3d", "select_scatter", "slice_scatter", "diagonal_scatter",
            "as_strided_scatter", "index_copy", "index_copy_", "index_fill", "index_fill_", "masked_scatter",
            "masked_scatter_", "masked_select", "nonzero", "take", "repeat_interleave", "_unsafe_index",
            "slice_backward", "select_backward", "diagonal_backward", "new_empty_strided", "empty_permuted",
            "eye", "linspace", "logspace", "rand", "rand_like", "randn", "randn_like", "randint", "randint_like",
            "randperm", "bernoulli", "bernoulli_", "uniform_", "normal_", "exponential_", "random_",
            "geometric_", "cauchy_", "log_normal_", "view_as_real", "view_as_complex", "_conj", "conj",
            "resolve_conj", "resolve_neg", "_neg_view", "set_", "resize_", "resize_as_", "detach_", "squeeze_",
            "unsqueeze_", "transpose_", "t_", "as_strided_", "alias_copy", "as_strided_copy", "detach_copy",
            "diagonal_copy", "expand_copy", "permute_copy", "select_copy", "slice_copy", "squeeze_copy",
            "t_copy", "transpose_copy", "unbind_copy", "unfold_copy", "unsqueeze_copy", "view_copy",
            "split_copy", "split_with_sizes_copy", "_reshape_copy", "unsafe_split", "unsafe_split_with_sizes",
            "unsafe_chunk", "fill", "copy", "_copy_from", "_copy_from_and_resize", "_assert_async",
            "_assert_tensor_metadata", "_functional_assert_async", "_pin_memory", "lift",
        ),
    }
)

_LINEAR_MODULES = (nn.Linear,)
_NORM_MODULES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)
if hasattr(nn, "RMSNorm"):
    _NORM_MODULES = (*_NORM_MODULES, nn.RMSNorm)


@functools.cache
def _is_pointwise(func: Any) -> bool:
    """Tagged ``pointwise``, or the in-place / ``out=`` form of an op that is (``masked_fill_``,
    ``add.out`` ... do not all carry the tag themselves)."""
    if torch.Tag.pointwise in func.tags:
        return True
    name = func.overloadpacket.__name__
    overload = func._overloadname
    base_name = name[:-1] if name.endswith("_") and not name.startswith("__") else name
    for suffix, repl in (("_out", ""), ("out", "default"), ("grad_input", "default")):
        if overload.endswith(suffix):
            overload = overload[: -len(suffix)] + repl if overload != suffix else repl
            break
    if (base_name, overload) == (name, func._overloadname) or not hasattr(aten, base_name):
        return False
    base = getattr(getattr(aten, base_name), overload or "default", None)
    return base is not None and torch.Tag.pointwise in base.tags


def _times_one(packet: Any, args: Sequence[Any]) -> bool:
    """A multiplication by the number 1 does no arithmetic (PyTorch's math attention path scales q and k by
    sqrt(scale), which is 1 for attnbench's blocks, and a fused kernel skips it)."""
    return packet is aten.mul and len(args) == 2 and not isinstance(args[1], torch.Tensor) and args[1] == 1


# ---------------------------------------------------------------------------------------------------------
# The counter


_OWNER = "attnbench.module"  # autograd-node metadata: qualified name of the module whose forward made it
_DONE = "attnbench.done"  # set once the node's function has run (what follows is gradient accumulation)
_ACCUMULATE = "attnbench.accumulate"  # module names of the accumulations the engine runs next
PHASES = ("forward", "backward")


def _category_target(module: nn.Module | None) -> str | None:
    if isinstance(module, _LINEAR_MODULES):
        return "linear"
    if isinstance(module, _NORM_MODULES):
        return "normalisation"
    return None


def _recategorised(cost: Cost, target: str | None) -> Cost:
    if target is None:
        return cost
    cells: dict[tuple[str, str], int] = {}
    for (_, kind), value in cost:
        cells[(target, kind)] = cells.get((target, kind), 0) + value
    return Cost(cells)


def _common_ancestor(names: Sequence[str]) -> str:
    parts = [n.split(".") if n else [] for n in names]
    common: list[str] = []
    for level in zip(*parts):
        if any(p != level[0] for p in level):
            break
        common.append(level[0])
    return ".".join(common)


def _ancestors(name: str) -> list[str]:
    """``a.b.c`` -> ``a.b.c``, ``a.b``, ``a``, ``""``."""
    if not name:
        return [""]
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(len(parts), 0, -1)] + [""]


@dataclass
class CountResult:
    """What the exact counter saw.

    * ``cost``: the total (the forward; forward + backward when the backward was counted);
    * ``per_op``: the total per ATen op (both phases); ``op_calls``: calls per op (both phases);
    * ``unhandled``: calls per op that no handle could count (both phases), never silently zero;
    * ``output_elements``: elements written by counted ops of the *forward* (an upper bound on activation
      memory);
    * ``forward`` / ``backward``: the cost of each phase (``backward`` is None when not counted);
    * ``per_op_forward`` / ``per_op_backward``: per op and phase (``per_op_backward`` empty when not counted);
    * ``by_module``: inclusive cost per module, keyed by qualified name from ``named_modules()`` (root
      ``""``, equal to ``cost``), every module present (zero ``Cost()`` when it did no work); a module
      called several times adds up, a shared module appears once under its first name;
      ``by_module_forward`` / ``by_module_backward`` the same per phase (the latter empty when not counted);
    * ``by_module_op``: inclusive cost per module and op (ops with no cost left out).
    """

    cost: Cost
    per_op: dict[str, Cost] = field(default_factory=dict)
    op_calls: Counter = field(default_factory=Counter)
    unhandled: Counter = field(default_factory=Counter)
    output_elements: int = 0  # elements written by counted ops: an upper bound on activation memory
    forward: Cost | None = None  # defaults to ``cost``
    backward: Cost | None = None  # None: the backward was not counted
    per_op_forward: dict[str, Cost] = field(default_factory=dict)
    per_op_backward: dict[str, Cost] = field(default_factory=dict)
    by_module: dict[str, Cost] = field(default_factory=dict)
    by_module_forward: dict[str, Cost] = field(default_factory=dict)
    by_module_backward: dict[str, Cost] = field(default_factory=dict)
    by_module_op: dict[str, dict[str, Cost]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.forward is None:
            self.forward = self.cost


def _like(x: torch.Tensor) -> torch.Tensor | None:
    """A new ``meta`` tensor shaped, typed and laid out as ``x`` when ``x`` is dense (contiguous or channels
    last), without ``torch.empty_like``, whose meta path imports sympy; None otherwise."""
    dense = x.is_contiguous() or (x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)) or (
        x.dim() == 5 and x.is_contiguous(memory_format=torch.channels_last_3d))
    return torch.empty_strided(x.shape, x.stride(), dtype=x.dtype, device="meta") if dense else None


def _meta_batch_norm(func: Any, args: Sequence[Any], kwargs: Any) -> Any:
    """Inference batch norm on ``meta`` tensors, answered here: torch's meta kernel for it is a Python
    decomposition that takes about half of a 3D ResNet's count. The result is what that kernel returns -- the
    output shaped as the input, the mean and the inverse deviation per channel -- and the op is still
    counted by its handle. None: run the op itself (other ops, other devices, training mode)."""
    if kwargs:
        return None
    x = args[0]
    if not isinstance(x, torch.Tensor) or x.device.type != "meta" or x.dim() < 2:
        return None
    if func.overloadpacket.__name__ == "native_batch_norm" and (len(args) < 6 or args[5] is not False):
        return None  # training mode: the running statistics are updated, let the kernel do it
    stats = args[3] if len(args) > 3 and isinstance(args[3], torch.Tensor) else x
    out = _like(x)
    if out is None:
        return None
    return out, *(torch.empty((x.shape[1],), dtype=stats.dtype, device="meta") for _ in range(2))


def _meta_pointwise(func: Any, args: Sequence[Any], kwargs: Any) -> Any:
    """A pointwise op on ``meta`` tensors that all have one shape, dtype and layout, answered here: torch's
    meta kernels for them are Python references (``torch._refs``) that spend a millisecond each working out
    broadcasting and type promotion there is none of. The output is shaped, typed and laid out as the
    inputs (an in-place op returns its first argument). None: run the op itself."""
    if set(kwargs) - {"alpha"} or kwargs.get("alpha", 1) != 1:
        return None
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    if not tensors or not isinstance(args[0], torch.Tensor):
        return None
    first = args[0]
    if first.device.type != "meta" or not first.is_floating_point():
        return None
    if any(not isinstance(a, torch.Tensor) and not isinstance(a, (int, float)) for a in args[1:]):
        return None
    if any(isinstance(a, (int, float)) for a in args[1:]) and func.overloadpacket.__name__ not in _SCALAR_SAFE:
        return None
    for t in tensors[1:]:
        if t.shape != first.shape or t.dtype != first.dtype or t.stride() != first.stride() or t.device != first.device:
            return None
    if func._schema.name.endswith("_"):
        return first  # in place: the result is the first argument
    if any(arg.is_out for arg in func._schema.arguments):
        return None
    return _like(first)


def _standard_order(x: torch.Tensor) -> bool:
    """Whether ``x``'s strides fall axis by axis (ignoring size-1 axes), as a contiguous tensor's do: then
    torch lays a convolution's output out contiguously, whatever gaps ``x`` has."""
    strides = [st for n, st in zip(x.shape, x.stride()) if n != 1]
    return all(a > b for a, b in zip(strides, strides[1:]))


def _contiguous_conv_output(x: torch.Tensor) -> bool:
    """Whether torch's meta kernel lays a convolution of ``x`` out contiguously: when ``x``'s strides fall axis
    by axis, and for any input of a 3-D convolution (its kernel keeps a channels-last layout only for 4-D
    inputs, ``suggest_memory_format(x) == torch.channels_last``, off CUDA)."""
    return _standard_order(x) or x.dim() == 5


def _meta_convolution(func: Any, args: Sequence[Any], kwargs: Any) -> Any:
    """A plain (not transposed) convolution of ``meta`` tensors, answered here where its output is contiguous
    (:func:`_contiguous_conv_output`): torch's meta kernel is Python whose shape checks import sympy on first
    use. Output: [N, C_out, (L + 2p - d(k - 1) - 1) // s + 1 per spatial axis], contiguous, in the input's
    dtype. None: run the op itself."""
    if func is not torch.ops.aten.convolution.default or kwargs or len(args) != 9:
        return None
    x, w, _, stride, padding, dilation, transposed, _, groups = args
    if transposed or not isinstance(x, torch.Tensor) or not isinstance(w, torch.Tensor):
        return None
    if x.device.type != "meta" or not w.is_contiguous() or x.dim() != w.dim() or x.dim() < 3 or not _contiguous_conv_output(x):
        return None
    spatial = x.dim() - 2
    if not all(isinstance(v, (list, tuple)) and len(v) == spatial for v in (stride, padding, dilation)):
        return None
    if x.shape[1] != w.shape[1] * groups:
        return None  # let torch raise its own error
    sizes = [(n + 2 * p - d * (k - 1) - 1) // st + 1
             for n, k, st, p, d in zip(x.shape[2:], w.shape[2:], stride, padding, dilation)]
    if any(n <= 0 for n in sizes):
        return None
    return torch.empty((x.shape[0], w.shape[0], *sizes), dtype=x.dtype, device="meta")


def _meta_softmax(func: Any, args: Sequence[Any], kwargs: Any) -> Any:
    """``_softmax`` of a contiguous ``meta`` tensor without up-casting: a tensor like its input (torch's meta
    kernel imports sympy for its dtype checks). None: run the op itself."""
    if kwargs or len(args) != 3 or args[2] is not False:
        return None
    x = args[0]
    if isinstance(x, torch.Tensor) and x.device.type == "meta" and x.is_contiguous() and x.is_floating_point():
        return _like(x)
    return None


def _meta_bmm(func: Any, args: Sequence[Any], kwargs: Any) -> Any:
    """``bmm`` of two ``meta`` tensors [b, n, m] x [b, m, p] of one dtype, answered here (torch's meta kernel
    imports sympy for its checks): a new contiguous [b, n, p]. None: run the op itself."""
    if func is not torch.ops.aten.bmm.default or kwargs or len(args) != 2:
        return None
    a, b = args
    if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)) or a.device.type != "meta" or b.device.type != "meta":
        return None
    if a.dim() != 3 or b.dim() != 3 or a.shape[0] != b.shape[0] or a.shape[2] != b.shape[1] or a.dtype != b.dtype:
        return None
    return torch.empty((a.shape[0], a.shape[1], b.shape[2]), dtype=a.dtype, device="meta")


# pointwise ops whose output has their floating-point inputs' dtype (comparisons, which give bool, are not here)
_SAME_DTYPE_POINTWISE = frozenset({
    "relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_", "exp", "exp_", "neg", "abs", "sqrt", "rsqrt", "reciprocal",
    "add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_", "hardtanh", "hardtanh_", "hardsigmoid", "hardswish",
    "leaky_relu", "leaky_relu_", "silu", "silu_", "clamp", "clamp_", "elu", "elu_", "pow", "maximum", "minimum",
})
# of those, the ones whose output keeps the tensor's dtype when a Python scalar is the other operand
_SCALAR_SAFE = frozenset({"add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_", "hardtanh", "hardtanh_",
                          "leaky_relu", "leaky_relu_", "clamp", "clamp_", "pow", "elu", "elu_"})


_META_SHORTCUTS: dict[str, Any] = {
    "native_batch_norm": _meta_batch_norm,
    "_native_batch_norm_legit_no_training": _meta_batch_norm,
    "convolution": _meta_convolution,
    "bmm": _meta_bmm,
    "_softmax": _meta_softmax,
    **{name: _meta_pointwise for name in _SAME_DTYPE_POINTWISE},
}


def _meta_shortcut(func: Any, args: Sequence[Any], kwargs: Any) -> Any:
    """The op's result on ``meta`` tensors worked out here where torch's own meta kernel is slow Python or
    imports sympy or ``torch._dynamo`` (see each shortcut); None: run the op itself. Each shortcut returns what
    torch's kernel returns -- shapes, dtypes and strides -- and the op is counted by its handle as ever."""
    shortcut = _META_SHORTCUTS.get(func.overloadpacket.__name__)
    return shortcut(func, args, kwargs) if shortcut is not None else None


class ExactCounter(TorchDispatchMode):
    """Counts every ATen op of the code run under it (see module docstring).

    ``phase`` ("forward" or "backward") says where costs go; :meth:`bind_root` names the modules for the
    per-module attribution (without a root every op goes to ``""``)."""

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        # torch wraps a mode's __torch_dispatch__ in torch._disable_dynamo unless this says False, and the
        # wrapper imports torch._dynamo (over a second, with sympy) on the first op; this mode never runs
        # under torch.compile, so there is nothing for it to disable
        return False

    def __init__(self) -> None:
        super().__init__()
        self.cost = Cost()
        self.per_op: dict[str, Cost] = {}
        self.op_calls: Counter = Counter()
        self.unhandled: Counter = Counter()
        self.output_elements = 0
        self.phase = "forward"
        self.phase_cost: dict[str, Cost] = {p: Cost() for p in PHASES}
        self.phase_per_op: dict[str, dict[str, Cost]] = {p: {} for p in PHASES}
        # (phase, module name) -> op -> exclusive cost
        self.own: dict[tuple[str, str], dict[str, Cost]] = {}
        self._module_stack: list[nn.Module] = []
        self._watermarks: list[int] = []
        self._hooks: list[Any] = []
        self._names: dict[int, str] = {}
        self._modules: dict[str, nn.Module] = {}
        self._param_owner: dict[int, str] = {}
        self._track_autograd = False
        self._node_hooks: list[Any] = []

    # -- module names -------------------------------------------------------------------------------------

    def bind_root(self, root: nn.Module) -> None:
        self._names = {id(m): name for name, m in root.named_modules()}
        self._modules = dict(root.named_modules())
        self._param_owner = {}
        for name, p in root.named_parameters():
            self._param_owner[id(p)] = name.rpartition(".")[0]

    def module_names(self) -> list[str]:
        return list(self._modules) if self._modules else [""]

    def _innermost_name(self, stack: Sequence[nn.Module]) -> str:
        for module in reversed(stack):
            name = self._names.get(id(module))
            if name is not None:
                return name
        return ""

    # -- forward hooks ------------------------------------------------------------------------------------

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
        self._watermarks.append(torch._C._autograd._get_sequence_nr() if self._track_autograd else 0)

    def _pop(self, module: nn.Module, inputs: Any, output: Any) -> None:
        if self._module_stack and self._module_stack[-1] is module:
            self._module_stack.pop()
            watermark = self._watermarks.pop()
            if self._track_autograd and torch.is_grad_enabled():
                self._claim(module, output, watermark)

    def _claim(self, module: nn.Module, output: Any, watermark: int) -> None:
        """Mark the autograd nodes this module call created (those reachable from its outputs with a sequence
        number from ``watermark`` on, not yet claimed by an inner module) as its own."""
        name = self._innermost_name([*self._module_stack, module])
        target = _category_target(module)
        todo = [t.grad_fn for t in tree_leaves(output) if isinstance(t, torch.Tensor) and t.grad_fn is not None]
        seen: set[Any] = set()
        while todo:
            node = todo.pop()
            if node is None or node in seen:
                continue
            seen.add(node)
            if hasattr(node, "variable"):  # AccumulateGrad of a leaf: the parameter's module
                if _OWNER not in node.metadata:
                    owner = self._param_owner.get(id(node.variable), "")
                    node.metadata[_OWNER] = (owner, _category_target(self._modules.get(owner)))
                continue
            if node._sequence_nr() < watermark:
                continue
            if _OWNER not in node.metadata:
                node.metadata[_OWNER] = (name, target)
            todo.extend(n for n, _ in node.next_functions)

    # -- backward bookkeeping -----------------------------------------------------------------------------

    def prepare_backward(self, outputs: Sequence[torch.Tensor]) -> None:
        """Before the backward: find every tensor whose gradient the engine will sum from several
        contributions, and hook the nodes that deliver them, so that the sums are attributed to the lowest
        common ancestor of the consuming modules (see module docstring)."""
        consumers: dict[Any, list[Any]] = {}
        nodes: list[Any] = []
        todo = [t.grad_fn for t in outputs if t.grad_fn is not None]
        seen: set[Any] = set()
        while todo:
            node = todo.pop()
            if node is None or node in seen:
                continue
            seen.add(node)
            nodes.append(node)
            for nxt, _ in node.next_functions:
                if nxt is not None:
                    consumers.setdefault(nxt, []).append(node)
                    todo.append(nxt)
        fan_in = {t: c for t, c in consumers.items() if len(c) > 1}
        if not fan_in:
            return
        owner = {t: _common_ancestor([self._owner(n)[0] for n in c]) for t, c in fan_in.items()}
        arrivals: Counter = Counter()

        def hook(node: Any, grad_inputs: Sequence[Any], grad_outputs: Sequence[Any]) -> None:
            queue: deque[str] = deque()
            for (nxt, _), grad in zip(node.next_functions, grad_inputs):
                if nxt is None or grad is None or nxt not in fan_in:
                    continue
                arrivals[nxt] += 1
                if arrivals[nxt] > 1:
                    queue.append(owner[nxt])
            node.metadata[_DONE] = True
            node.metadata[_ACCUMULATE] = queue

        for node in nodes:
            if any(nxt in fan_in for nxt, _ in node.next_functions if nxt is not None):
                self._node_hooks.append(node.register_hook(functools.partial(hook, node)))

    def finish_backward(self) -> None:
        for h in self._node_hooks:
            h.remove()
        self._node_hooks = []

    @staticmethod
    def _owner(node: Any) -> tuple[str, str | None]:
        return node.metadata.get(_OWNER, ("", None)) if node is not None else ("", None)

    def _attribution(self) -> tuple[str, str | None]:
        """(module name, category target) of the op being dispatched."""
        if self.phase == "forward" or self._module_stack:  # (a recomputation in the backward runs modules)
            name = self._innermost_name(self._module_stack)
            return name, _category_target(self._module_stack[-1] if self._module_stack else None)
        node = torch._C._current_autograd_node()
        if node is None:
            return "", None
        meta = node.metadata
        if meta.get(_DONE):
            queue = meta.get(_ACCUMULATE)
            if queue:
                name = queue.popleft()
                return name, _category_target(self._modules.get(name))
        return self._owner(node)

    # -- dispatch -----------------------------------------------------------------------------------------

    def __torch_dispatch__(self, func: Any, types: Any, args: Sequence[Any] = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        out = _meta_shortcut(func, args, kwargs)
        if out is None:
            out = func(*args, **kwargs)
        packet = func.overloadpacket
        name = str(packet).replace("aten.", "")
        self.op_calls[name] += 1
        handle = HANDLES.get(func) or HANDLES.get(packet)
        if handle is not None:
            op_cost = handle(_bind(func, args, kwargs), out)
            if op_cost is None:
                self.unhandled[name] += 1
                return out
        elif packet in FREE_OPS or _times_one(packet, args):
            return out
        elif _is_pointwise(func):
            op_cost = C.eltwise(_out_numel(out))
        else:
            self.unhandled[name] += 1
            return out
        if self.phase == "forward":
            try:
                self.output_elements += _out_numel(out)
            except TypeError:
                pass
        module_name, target = self._attribution()
        op_cost = _recategorised(op_cost, target)
        self.cost = self.cost + op_cost
        self.per_op[name] = self.per_op.get(name, Cost()) + op_cost
        self.phase_cost[self.phase] = self.phase_cost[self.phase] + op_cost
        phase_ops = self.phase_per_op[self.phase]
        phase_ops[name] = phase_ops.get(name, Cost()) + op_cost
        own = self.own.setdefault((self.phase, module_name), {})
        own[name] = own.get(name, Cost()) + op_cost
        return out

    # -- results ------------------------------------------------------------------------------------------

    def by_module(self, phases: Sequence[str] = PHASES) -> dict[str, Cost]:
        """Inclusive cost per module name (every module present)."""
        totals = {n: Cost() for n in self.module_names()}
        for (phase, name), ops in self.own.items():
            if phase not in phases:
                continue
            cost = Cost.total(ops.values())
            for ancestor in _ancestors(name):
                totals[ancestor] = totals.get(ancestor, Cost()) + cost
        return totals

    def by_module_op(self) -> dict[str, dict[str, Cost]]:
        totals: dict[str, dict[str, Cost]] = {n: {} for n in self.module_names()}
        for (_, name), ops in self.own.items():
            for ancestor in _ancestors(name):
                row = totals.setdefault(ancestor, {})
                for op, cost in ops.items():
                    if cost.cells:
                        row[op] = row.get(op, Cost()) + cost
        return totals

    def result(self, backward: bool = False) -> CountResult:
        return CountResult(
            self.cost, self.per_op, self.op_calls, self.unhandled, self.output_elements,
            forward=self.phase_cost["forward"],
            backward=self.phase_cost["backward"] if backward else None,
            per_op_forward=self.phase_per_op["forward"],
            per_op_backward=self.phase_per_op["backward"] if backward else {},
            by_module=self.by_module(),
            by_module_forward=self.by_module(("forward",)),
            by_module_backward=self.by_module(("backward",)) if backward else {},
            by_module_op=self.by_module_op(),
        )


def meta_inputs(shapes: Sequence[Sequence[int]], device: str = "meta", seed: int = 0) -> list[torch.Tensor]:
    """Forward arguments of the given shapes; random (seeded) on a real device, empty on ``meta``."""
    if device == "meta":
        return [torch.empty(*s, device="meta") for s in shapes]
    gen = torch.Generator(device="cpu").manual_seed(seed)
    return [torch.randn(*s, generator=gen).to(device) for s in shapes]


def count(
    module: nn.Module,
    inputs: Sequence[torch.Tensor],
    counter: ExactCounter | None = None,
    *,
    backward: bool = False,
    input_grad: bool = False,
) -> CountResult:
    """Run ``module(*inputs)`` once under the exact counter; ``counter`` may be a subclass that records more
    (see :func:`attnbench.flops.conventions.count_detailed`).

    By default: eval mode, no grad, the forward only. With ``backward=True``: one training step -- train
    mode, grad enabled, the parameters requiring grad as they are set (frozen ones stay frozen), the inputs
    not requiring grad (``input_grad=True`` makes floating-point inputs require grad, as for a layer inside
    a network, adding the input-gradient work of the first ops); then a gradient of ones of each output's
    shape is backpropagated and the backward ops counted in their own phase. The module's mode, its
    parameters' ``.grad`` and its buffers (batch-norm running statistics) are restored afterwards.
    """
    counter = counter if counter is not None else ExactCounter()
    counter.bind_root(module)
    was_training = module.training
    if not backward:
        module.eval()
        try:
            with torch.no_grad(), counter:
                module(*inputs)
        finally:
            module.train(was_training)
        return counter.result()

    def prepare(x: Any) -> Any:
        if not isinstance(x, torch.Tensor):
            return x
        x = x.detach()
        return x.requires_grad_(True) if input_grad and (x.is_floating_point() or x.is_complex()) else x

    params = list(module.parameters())
    grads = [p.grad for p in params]
    buffers = [(b, b.detach().clone()) for b in module.buffers()]
    module.train()
    counter._track_autograd = True
    try:
        with torch.enable_grad():
            with counter:
                out = module(*[prepare(x) for x in inputs])
            outs = [t for t in tree_leaves(out) if isinstance(t, torch.Tensor) and t.requires_grad]
            if not outs:
                raise ValueError("backward=True: no output requires grad (every parameter frozen and input_grad "
                                 "False), there is nothing to backpropagate")
            ones = [torch.ones_like(t) for t in outs]
            counter.prepare_backward(outs)
            counter.phase = "backward"
            try:
                with counter:
                    torch.autograd.backward(outs, ones)
            finally:
                counter.finish_backward()
    finally:
        counter._track_autograd = False
        module.train(was_training)
        for p, g in zip(params, grads):
            p.grad = g
        with torch.no_grad():
            for b, saved in buffers:
                b.copy_(saved)
    return counter.result(backward=True)


def param_count(module: nn.Module) -> int:
    """Learnable parameters (buffers such as batch-norm statistics are not parameters)."""
    return sum(p.numel() for p in module.parameters())
