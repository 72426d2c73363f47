"""Counting conventions: the number each way of counting gives, computed from one exact breakdown.

Papers print "FLOPs" or "GFLOPs" that are often multiply-adds, sometimes only the convolutions' ones, and
usually whatever a counting tool printed. Every convention below is a function of attnbench's exact
breakdown -- the :class:`~attnbench.flops.cost.Cost` cells (``mac`` = multiply-accumulates, ``op`` = single
operations) and, where a tool counts per op, the per-op costs -- so one count of a network serves all of
them. Each convention names its unit: **FLOPs** (a multiply-add counts 2) or **MACs** (a multiply-add
counts 1; tools that report MACs also add some single operations into the same total, as listed).

Tools decide what to count by how an op is called: thop only sees ``nn.Module`` types it registered,
ptflops sees registered modules plus a list of patched functions, fvcore sees traced ATen ops. The same
arithmetic run through ``x.mean()`` instead of ``nn.AdaptiveAvgPool3d``, or ``x * y`` instead of
``torch.mul``, is counted by one and not by another. So the tool conventions take, besides the cells, an
:class:`OpLog`: every ATen op of the forward pass with its cost, the innermost ``nn.Module`` it ran in, and
the elements of its first input and of its output (:func:`count_detailed` returns both in one pass on the
``meta`` device). Given the log, the thop, ptflops and fvcore functions reproduce what the tool prints on
our modules; without it they fall back to the per-op costs, with the differences listed under each.

========================  =====  ==========================================================================
convention                unit   counts
========================  =====  ==========================================================================
``flops``                 FLOPs  2 per multiply-add + 1 per single op (every op attnbench counts)
``macs``                  MACs   multiply-adds of convolutions, linear layers and matrix products; nothing
                                 else
``conv-only-macs``        MACs   multiply-adds of convolutions only (some papers count only these)
``thop``                  MACs   thop 0.1.1 ``profile``: see :func:`thop`
``fvcore``                MACs   fvcore 0.1.5 ``FlopCountAnalysis`` (it calls them flops): see :func:`fvcore`
``fvcore+means``          MACs   fvcore, plus 1 per element read by an averaging reduction: see
                                 :func:`fvcore_means` (a reading of EAM Table 4, not a tool)
``ptflops``               MACs   ptflops 0.7.5, pytorch backend, real tensors: see :func:`ptflops`
``ptflops-aten``          MACs   ptflops 0.7.5, aten backend: see :func:`ptflops_aten`
========================  =====  ==========================================================================

Evidence: the tools' own sources, read (not copied): thop ``thop/profile.py`` (``register_hooks``, the
module-type -> hook table; ``profile``, which hooks every module and sums the hooked modules' totals) and
``thop/vision/basic_hooks.py`` / ``calc_func.py`` (``count_convNd`` -> ``calculate_conv2d_flops``,
``count_linear``, ``count_normalization`` -> ``calculate_norm``, ``count_softmax``, ``count_avgpool``,
``count_adap_avgpool``, ``zero_ops``, ``count_relu`` -> ``calculate_relu_flops`` = 0); fvcore
``fvcore/nn/flop_count.py`` (``_DEFAULT_SUPPORTED_OPS``) and ``fvcore/nn/jit_handles.py``
(``conv_flop_count``, ``addmm_flop_jit``, ``linear_flop_jit``, ``bmm_flop_jit``, ``matmul_flop_jit``,
``batchnorm_flop_jit``, ``norm_flop_counter``, ``elementwise_flop_counter``); ptflops
``ptflops/pytorch_ops.py`` (``MODULES_MAPPING``, ``FUNCTIONAL_MAPPING``, ``TENSOR_OPS_MAPPING`` and their
hooks), ``ptflops/pytorch_engine.py`` (``patch_functional``: ``F.linear`` is *not* patched;
``patch_tensor_ops``) and ``ptflops/aten_ops.py`` (``ATEN_OPS_MAPPING``). ``tests/flops/test_conventions.py``
checks the fvcore and ptflops functions against the installed tools, number for number.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from math import prod
from typing import Any

import torch
from torch import nn

from attnbench.flops.cost import Cost
from attnbench.flops.count import CountResult, ExactCounter, _first_tensor, count

# ---------------------------------------------------------------------------------------------------------
# ATen op names (as the exact counter names them) grouped the way the tools group them

BATCH_NORM_OPS = frozenset({"native_batch_norm", "_native_batch_norm_legit_no_training", "_native_batch_norm_legit"})
NORM_OPS = BATCH_NORM_OPS | {"native_layer_norm", "native_group_norm"}
WINDOW_MAX_POOLS = frozenset({"max_pool1d", "max_pool2d_with_indices", "max_pool3d_with_indices", "max_pool2d", "max_pool3d"})
WINDOW_AVG_POOLS = frozenset({"avg_pool1d", "avg_pool2d", "avg_pool3d"})
ADAPTIVE_AVG_POOLS = frozenset({"_adaptive_avg_pool2d", "_adaptive_avg_pool3d", "adaptive_avg_pool1d"})
ADAPTIVE_MAX_POOLS = frozenset({"adaptive_max_pool1d", "adaptive_max_pool2d", "adaptive_max_pool3d"})
POOL_OPS = WINDOW_MAX_POOLS | WINDOW_AVG_POOLS | ADAPTIVE_AVG_POOLS | ADAPTIVE_MAX_POOLS
REDUCTION_OPS = frozenset({"mean", "sum", "amax", "amin", "max", "min"})  # a global pool may arrive as one
RELU_LIKE_OPS = frozenset({"relu", "relu_", "gelu", "elu", "elu_", "leaky_relu", "leaky_relu_", "hardtanh", "hardtanh_", "silu", "silu_", "_prelu_kernel"})

_CONV_MODULES = (nn.modules.conv._ConvNd,)
_PTFLOPS_NORM_MODULES = (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm, nn.GroupNorm, nn.LayerNorm)
_THOP_NORM_MODULES = (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm, nn.LayerNorm)
_AVG_POOL_MODULES = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)
_ADAPTIVE_AVG_MODULES = (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)
_PTFLOPS_POOL_MODULES = (
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d, *_ADAPTIVE_AVG_MODULES,
)
_PTFLOPS_ACTIVATION_MODULES = (nn.ReLU, nn.PReLU, nn.ELU, nn.LeakyReLU, nn.ReLU6, nn.GELU)


# ---------------------------------------------------------------------------------------------------------
# The op log


@dataclass
class OpRecord:
    """One (ATen op, innermost module type) pair, summed over its calls."""

    calls: int = 0
    cost: Cost = field(default_factory=Cost)
    in_elems: int = 0  # elements of the op's first tensor argument
    out_elems: int = 0  # elements of the op's first output tensor
    # ``convolution``: output elements x input channels per group x kernel taps (the forward-convolution
    # formula applied to the output; equal to the MACs except for transposed convolutions);
    # ``_softmax``: rows (elements / length of the softmax dimension);
    # batch / layer / group norm: input elements of the calls with an affine weight. 0 for other ops.
    aux: int = 0


@dataclass
class OpLog:
    """Every ATen op a forward pass ran, keyed by (op name, innermost ``nn.Module`` type or None)."""

    records: dict[tuple[str, type | None], OpRecord] = field(default_factory=dict)

    def add(self, op: str, module: type | None, cost: Cost, in_elems: int, out_elems: int, aux: int = 0) -> None:
        rec = self.records.setdefault((op, module), OpRecord())
        rec.calls += 1
        rec.cost = rec.cost + cost
        rec.in_elems += in_elems
        rec.out_elems += out_elems
        rec.aux += aux

    def select(self, ops: Iterable[str] | None = None, under: tuple[type, ...] | None = None,
               not_under: tuple[type, ...] | None = None) -> list[OpRecord]:
        """Records of the given ops (all when None) run directly inside a module of the ``under`` types
        (any when None) and not inside one of the ``not_under`` types."""
        names = None if ops is None else frozenset(ops)
        out = []
        for (op, module), rec in self.records.items():
            if names is not None and op not in names:
                continue
            inside = module is not None
            if under is not None and not (inside and issubclass(module, under)):
                continue
            if not_under is not None and inside and issubclass(module, not_under):
                continue
            out.append(rec)
        return out


def _cell(records: Iterable[OpRecord], category: str | None, kind: str) -> int:
    total = 0
    for r in records:
        for (cat, k), v in r.cost:
            if k == kind and (category is None or cat == category):
                total += v
    return total


class _LoggingCounter(ExactCounter):
    """The exact counter, also logging every op with its module and element counts."""

    def __init__(self) -> None:
        super().__init__()
        self.log = OpLog()

    def __torch_dispatch__(self, func: Any, types: Any, args: Sequence[Any] = (), kwargs: Any = None) -> Any:
        name = str(func.overloadpacket).replace("aten.", "")
        before = self.per_op.get(name, Cost())
        out = super().__torch_dispatch__(func, types, args, kwargs)
        after = self.per_op.get(name, Cost())
        delta = Cost({k: after.get(*k) - before.get(*k) for k in {**before.cells, **after.cells}})
        first_in = next((a for a in list(args) + list((kwargs or {}).values()) if isinstance(a, torch.Tensor)), None)
        try:
            out_elems = _first_tensor(out).numel()
        except TypeError:
            out_elems = 0
        module = type(self._module_stack[-1]) if self._module_stack else None
        self.log.add(name, module, delta, first_in.numel() if first_in is not None else 0, out_elems,
                     _aux(name, args, out_elems))
        return out


def _aux(name: str, args: Sequence[Any], out_elems: int) -> int:
    if name == "convolution":
        x, w, groups = args[0], args[1], int(args[8])
        return out_elems * (x.shape[1] // groups) * prod(w.shape[2:])
    if name == "_softmax":
        x, dim = args[0], int(args[1])
        return x.numel() // max(x.shape[dim], 1) if x.dim() else 1
    weight_at = 2 if name == "native_layer_norm" else 1 if name in NORM_OPS else None
    if weight_at is not None and len(args) > weight_at and isinstance(args[weight_at], torch.Tensor):
        return args[0].numel()
    return 0


def count_detailed(module: nn.Module, inputs: Sequence[torch.Tensor]) -> tuple[CountResult, OpLog]:
    """:func:`attnbench.flops.count.count` plus the :class:`OpLog`, in one forward pass (eval, no grad)."""
    counter = _LoggingCounter()
    return count(module, inputs, counter), counter.log


# ---------------------------------------------------------------------------------------------------------
# Conventions


def _per_op_cells(per_op: Mapping[str, Cost] | None, ops: Iterable[str], category: str | None, kind: str) -> int:
    if not per_op:
        return 0
    total = 0
    for op in ops:
        cost = per_op.get(op)
        if cost is None:
            continue
        for (cat, k), v in cost:
            if k == kind and (category is None or cat == category):
                total += v
    return total


def flops(cost: Cost, per_op: Mapping[str, Cost] | None = None, log: OpLog | None = None) -> int:
    """FLOPs: 2 per multiply-add + 1 per single operation, every op attnbench counts (``Cost.flops``).

    ==============================  ==========================================
    op category                     counted
    ==============================  ==========================================
    convolution, linear, matmul     2 per multiply-add, 1 per bias add
    normalisation (batch norm)      2 per element (folded scale and shift)
    pooling, reductions             1 per element in each window
    softmax                         5 per element
    element-wise                    1 per output element
    ==============================  ==========================================
    """
    return cost.flops


def macs(cost: Cost, per_op: Mapping[str, Cost] | None = None, log: OpLog | None = None) -> int:
    """MACs: multiply-accumulates of convolutions, linear layers and matrix products, 1 each (``Cost.macs``).

    ==============================  =====================================
    op category                     counted
    ==============================  =====================================
    convolution, linear, matmul     1 per multiply-add (no bias adds)
    everything else                 0
    ==============================  =====================================
    """
    return cost.macs


def conv_only_macs(cost: Cost, per_op: Mapping[str, Cost] | None = None, log: OpLog | None = None) -> int:
    """MACs of convolutions only (STA's Table IV counts convolution multiplies; so do some network tables).

    ==============================  =====================================
    op category                     counted
    ==============================  =====================================
    convolution                     1 per multiply-add (no bias adds)
    everything else                 0
    ==============================  =====================================
    """
    return cost.get("convolution", "mac")


def thop(cost: Cost, per_op: Mapping[str, Cost] | None = None, log: OpLog | None = None) -> int:
    """thop (``thop.profile``, 0.1.1): MACs, counted by forward hooks on registered ``nn.Module`` types only.

    ===================================  =========================================================================
    op (how it is called)                thop counts (``thop/vision/basic_hooks.py``, ``calc_func.py``)
    ===================================  =========================================================================
    ``nn.Conv1d/2d/3d``                  output elements x C_in/groups x kernel taps; no bias (``count_convNd``)
    ``nn.ConvTranspose1d/2d/3d``         the same formula on the *output* (C_in = the input's channels)
    ``nn.Linear``                        in_features x output elements; no bias (``count_linear``)
    ``nn.BatchNorm*``, ``nn.LayerNorm``,  2 per input element, x2 when affine (4 for PyTorch's default BN)
    ``nn.InstanceNorm*``                 (``count_normalization``)
    ``nn.Softmax`` module                (3 n - 1) per row of n (``count_softmax``); ``F.softmax``: 0
    ``nn.AvgPool*``                      1 per output element (``count_avgpool``)
    ``nn.AdaptiveAvgPool*``              (input/output size ratio + 1) per output element (``count_adap_avgpool``)
    ``nn.ReLU``, ``nn.ReLU6``,            0 (``zero_ops``; ``count_relu`` returns 0)
    ``nn.LeakyReLU``, ``nn.MaxPool*``,
    ``nn.AdaptiveMaxPool*``,
    ``nn.Dropout``
    ``nn.PReLU``                         1 per element
    ``nn.Upsample``                      1 per output element (nearest), more for (bi)linear
    anything else: functional calls      0 (not a hooked module: ``F.conv3d``, ``torch.bmm``, ``x.mean()``,
    (``F.*``, ``torch.*``), tensor       ``x * y``, ``torch.sigmoid``, ``nn.Sigmoid`` ...)
    operators, unregistered modules
    ===================================  =========================================================================

    With ``log``: exactly the table, by the module each op ran in (checked against thop 0.1.1 on every
    attnbench block and network, run once outside the test suite: thop is not a dependency). Without it (cells and ``per_op`` only):
    all convolution MACs (transposed ones counted on the input, as we count them, and functional ones
    included), linear MACs, 4 per batch-norm element, adaptive average pools counted as their window sums
    (one less per output element than thop), average pools as their window sums (thop: 1 per output), and
    nothing for softmax, max pools, reductions and element-wise ops.
    """
    if log is None:
        bn = _per_op_cells(per_op, BATCH_NORM_OPS, None, "op") if per_op else cost.get("normalisation", "op")
        avg = _per_op_cells(per_op, WINDOW_AVG_POOLS | ADAPTIVE_AVG_POOLS, None, "op")
        return cost.get("convolution", "mac") + cost.get("linear", "mac") + 2 * bn + avg
    total = 0
    for (op, module), rec in log.records.items():
        if module is None:
            continue
        if op == "convolution" and issubclass(module, _CONV_MODULES):
            total += rec.aux  # output elements x C_in/groups x taps, transposed or not
        elif issubclass(module, nn.Linear):
            total += _cell([rec], None, "mac")  # addmm / mm inside nn.Linear: in_features x outputs
        elif issubclass(module, _THOP_NORM_MODULES) and op in NORM_OPS:
            total += 2 * rec.in_elems + 2 * rec.aux  # 2 per element, doubled where affine
        elif issubclass(module, _AVG_POOL_MODULES) and op in WINDOW_AVG_POOLS:
            total += rec.out_elems
        elif issubclass(module, _ADAPTIVE_AVG_MODULES) and op in ADAPTIVE_AVG_POOLS | REDUCTION_OPS:
            total += rec.in_elems + rec.out_elems  # (in/out ratio + 1) per output element
        elif issubclass(module, nn.Softmax) and op == "_softmax":
            total += 3 * rec.out_elems - rec.aux  # (3 n - 1) per row of n
        elif issubclass(module, nn.PReLU):
            total += rec.in_elems
        elif issubclass(module, nn.Upsample):
            total += rec.out_elems
    return total




def fvcore(cost: Cost, per_op: Mapping[str, Cost] | None = None, log: OpLog | None = None) -> int:
    """fvcore ``FlopCountAnalysis`` (0.1.5): MACs (fvcore calls them flops), by handles on traced ATen ops.

    ====================================  ======================================================================
    traced op                             fvcore counts (``fvcore/nn/jit_handles.py``)
    ====================================  ======================================================================
    ``aten::_convolution`` (any conv,     batch x weight elements x output positions (input positions when
    module or functional)                 transposed): the multiply-adds; no bias (``conv_flop_count``)
    ``aten::linear``, ``aten::addmm``     the multiply-adds; no bias (``linear_flop_jit``, ``addmm_flop_jit``)
    ``aten::mm``, ``aten::matmul``,        the multiply-adds (``matmul_flop_jit``, ``bmm_flop_jit``,
    ``aten::bmm``, ``aten::einsum``       ``einsum_flop_jit``); ``baddbmm`` has no handle: 0
    ``aten::batch_norm`` (inference)      1 per input element, 2 when affine (``batchnorm_flop_jit``)
    ``aten::group_norm``/``layer_norm``   5 per element when affine, else 4 (``norm_flop_counter``)
    ``aten::instance_norm``               5 / 4 per element likewise
    ``aten::adaptive_avg_pool2d``         1 per input element (``elementwise_flop_counter(1, 0)``); the 3-D
                                          pool has no handle: 0
    ``aten::upsample_nearest2d``          1 per output element; ``upsample_bilinear2d``: 4 per output element
    everything else                       0 (softmax, max/avg pools, means, activations, element-wise ops;
                                          reported as unsupported)
    ====================================  ======================================================================

    The exact counter's batch norm is 2 per element, fvcore's affine batch norm too. ``aten::batch_norm``
    appears in fvcore's trace for ``nn.BatchNorm*`` and ``F.batch_norm`` alike. With ``log`` the
    adaptive 2-D pool is its input elements; without it, its window sum (the same unless windows overlap).
    Layer, group and instance norms are counted by attnbench's exact counter (5 per element, +1 with a
    weight, +1 with a bias) but not modelled here: none of attnbench's blocks uses them, and on a user's
    block with one a gap to fvcore is reported as unexplained rather than guessed.
    """
    total = cost.macs - _per_op_cells(per_op, ("baddbmm",), None, "mac")
    if log is None:
        total += _per_op_cells(per_op, BATCH_NORM_OPS, None, "op") if per_op is not None else cost.get("normalisation", "op")
        return total + _per_op_cells(per_op, ("_adaptive_avg_pool2d",), None, "op")
    for (op, module), rec in log.records.items():
        if op in BATCH_NORM_OPS:
            instance = module is not None and issubclass(module, nn.modules.instancenorm._InstanceNorm)
            total += (4 if instance else 1) * rec.in_elems + rec.aux  # aten::instance_norm / aten::batch_norm
        elif op in ("native_layer_norm", "native_group_norm"):
            total += 4 * rec.in_elems + rec.aux
        elif op == "_adaptive_avg_pool2d" or (op in REDUCTION_OPS and module is not None and issubclass(module, nn.AdaptiveAvgPool2d)):
            total += rec.in_elems  # an AdaptiveAvgPool2d to 1 x 1 reaches the dispatcher as a mean, traced as the pool
        elif op == "upsample_nearest2d":
            total += rec.out_elems
        elif op == "upsample_bilinear2d":
            total += 4 * rec.out_elems
    return total


AVERAGING_OPS = frozenset({"mean", "_adaptive_avg_pool2d", "_adaptive_avg_pool3d", "adaptive_avg_pool1d"})


def fvcore_means(cost: Cost, per_op: Mapping[str, Cost] | None = None, log: OpLog | None = None) -> int:
    """fvcore plus one op per element that a mean or an adaptive average pool reads (MACs unit).

    fvcore counts ``aten::adaptive_avg_pool2d`` at one op per input element but not the 3-D pool or
    ``x.mean(dims)``, which is how the attention blocks of 3D CNNs pool (SE's squeeze, ECA, EAM-S / EAM-T).
    This reading extends fvcore's 2-D rule to every averaging reduction; max reductions stay uncounted, as
    fvcore leaves max pools uncounted. It is the reading under which EAM Table 4's attention increments are
    met at the printed precision (see :mod:`attnbench.papers.reproduce`); no tool is known to print it.
    """
    total = fvcore(cost, per_op, log)
    if log is None:
        return total + _per_op_cells(per_op, AVERAGING_OPS - {"_adaptive_avg_pool2d"}, None, "op")
    for (op, module), rec in log.records.items():
        if op not in AVERAGING_OPS or op == "_adaptive_avg_pool2d":
            continue  # fvcore counted the 2-D pool already
        if op == "mean" and module is not None and issubclass(module, nn.AdaptiveAvgPool2d):
            continue  # fvcore traced it as adaptive_avg_pool2d and counted it
        total += rec.in_elems
    return total


def ptflops(cost: Cost, per_op: Mapping[str, Cost] | None = None, log: OpLog | None = None) -> int:
    """ptflops ``get_model_complexity_info`` (0.7.5), pytorch backend, on real tensors: MACs plus some ops.

    ptflops adds up forward hooks on the module types of ``MODULES_MAPPING`` and, while it runs, the functions
    of ``FUNCTIONAL_MAPPING`` / ``TENSOR_OPS_MAPPING`` that ``patch_functional`` / ``patch_tensor_ops``
    replace by counting wrappers. A hooked module whose ``forward`` calls a patched function is counted twice.

    ===================================  =====================================================================
    op (how it is called)                ptflops counts (``ptflops/pytorch_ops.py``)
    ===================================  =====================================================================
    ``nn.Conv1d/2d/3d``                  multiply-adds + 1 per output element for the bias
                                         (``conv_flops_counter_hook``)
    ``nn.ConvTranspose*``                multiply-adds on the input positions + bias per output element
    ``nn.Linear``                        (in x out + out if bias) per row (``linear_flops_counter_hook``);
                                         ``F.linear`` is not patched (commented out in ``patch_functional``)
    ``nn.BatchNorm*``, ``nn.GroupNorm``,  1 per input element, 2 when ``module.affine``
    ``nn.InstanceNorm*``, ``nn.LayerNorm`` (``bn_flops_counter_hook``; LayerNorm has no ``affine``: 1)
    ``nn.ReLU``/``PReLU``/``ELU``/         2 per element: the hook's 1 per output element
    ``LeakyReLU``/``ReLU6``/``GELU``     (``relu_flops_counter_hook``) + the patched ``F.relu`` it calls
    ``F.relu``, ``F.gelu``, ``F.elu`` ..   1 per input element (``_numel_functional_flops_hook``)
    ``nn.*Pool*`` (max, avg, adaptive)   2 per *input* element: the hook (``pool_flops_counter_hook``) + the
                                         patched ``F.*pool*`` it calls
    ``F.*pool*`` called directly         1 per input element
    ``F.softmax`` (also via nn.Softmax)  1 per input element
    ``torch.matmul/mm/bmm``              multiply-adds (``_matmul_tensor_flops_hook``)
    ``torch.addmm/baddbmm``              multiply-adds + the added tensor's elements
    ``torch.mul/add``, ``x.mul/add``      1 per (broadcast) output element; the operators ``x * y``, ``x + y``
                                         are not patched: 0
    ``F.interpolate``                    1 per output element; ``nn.Upsample``: 2 (hook + ``F.interpolate``)
    everything else                      0 (``torch.sigmoid``, ``nn.Sigmoid``, ``x.mean()``, ``x.amax()``,
                                         ``torch.relu``, functional convolutions, unregistered modules' own
                                         arithmetic)
    ===================================  =====================================================================

    Two things of ptflops' own are not modelled: it divides the hooked modules' total (not the patched
    functions') by the batch size of the first positional input (its "per image" mean; this function counts
    the whole batch, the same at batch 1); and run on ``meta`` tensors it counts an ``nn.Linear`` with bias a
    second time (the meta kernel of ``addmm`` decomposes into the patched ``torch.mm``) -- this function
    models real tensors.

    attnbench's blocks use the operators for element-wise work, so ``mul``/``add`` count 0 here; an ``addmm``
    or ``bmm`` outside ``nn.Linear`` is taken as ``torch.addmm`` / ``torch.bmm``, a ReLU outside an
    activation module as ``F.relu``. With ``log``: exact by the module each op ran in (checked against
    ptflops on every block and network). Without it: all convolutions (functional ones included) with bias
    adds, linear MACs and bias adds, matmul MACs, batch norm 2 per element, ReLUs and pools 2 per element of
    our counts (modules assumed; pools as their window sums, equal to ptflops' input elements only for
    non-overlapping windows), softmax 1 per element.
    """
    if log is None:
        total = cost.get("convolution", "mac") + cost.get("convolution", "op")
        total += cost.get("linear", "mac") + cost.get("linear", "op") + cost.get("matmul", "mac")
        total += _per_op_cells(per_op, BATCH_NORM_OPS, None, "op") if per_op is not None else cost.get("normalisation", "op")
        total += 2 * _per_op_cells(per_op, RELU_LIKE_OPS, None, "op")
        total += 2 * _per_op_cells(per_op, POOL_OPS, None, "op")
        total += _per_op_cells(per_op, ("_softmax",), None, "op") // 5
        total += _per_op_cells(per_op, ("addmm", "baddbmm"), "elementwise", "op")
        return total
    total = 0
    for (op, module), rec in log.records.items():
        in_linear = module is not None and issubclass(module, nn.Linear)
        if op == "convolution":
            if module is not None and issubclass(module, _CONV_MODULES):
                total += _cell([rec], None, "mac") + _cell([rec], None, "op")
        elif in_linear:
            total += _cell([rec], None, "mac") + _cell([rec], None, "op")
        elif op in ("mm", "bmm", "matmul"):
            total += _cell([rec], None, "mac")
        elif op in ("addmm", "baddbmm"):
            total += _cell([rec], None, "mac") + _cell([rec], None, "op")
        elif op in NORM_OPS:
            if module is not None and issubclass(module, _PTFLOPS_NORM_MODULES):
                # 1 per element, 2 where ``module.affine``; LayerNorm has ``elementwise_affine`` instead, so 1
                total += rec.in_elems + (0 if issubclass(module, nn.LayerNorm) else rec.aux)
        elif op in RELU_LIKE_OPS:
            # F.relu & co. (patched): 1 per input element; nn.ReLU & co.: its hook's 1 per output element *and*
            # the patched F.relu its forward calls, so 2
            hooked = module is not None and issubclass(module, _PTFLOPS_ACTIVATION_MODULES)
            total += (2 if hooked else 1) * rec.in_elems
        elif op in POOL_OPS or (op in REDUCTION_OPS and module is not None and issubclass(module, _PTFLOPS_POOL_MODULES)):
            # F.*pool* (patched): 1 per input element; nn.*Pool*: hook + the patched F.*pool* it calls, so 2 (a
            # global adaptive pool reaches the dispatcher as a mean)
            hooked = module is not None and issubclass(module, _PTFLOPS_POOL_MODULES)
            total += (2 if hooked else 1) * rec.in_elems
        elif op == "_softmax":
            total += rec.in_elems
        elif op in ("upsample_nearest1d", "upsample_nearest2d", "upsample_nearest3d", "upsample_bilinear2d",
                    "upsample_linear1d", "upsample_trilinear3d"):
            # F.interpolate (patched): 1 per output element; nn.Upsample: its hook + the F.interpolate it calls
            hooked = module is not None and issubclass(module, nn.Upsample)
            total += (2 if hooked else 1) * rec.out_elems
    return total


def ptflops_aten(cost: Cost, per_op: Mapping[str, Cost] | None = None, log: OpLog | None = None) -> int:
    """ptflops 0.7.5, aten backend (``ATEN_OPS_MAPPING``): MACs of five ATen ops, bias adds included.

    ======================================  ==================================================================
    ATen op                                 ptflops-aten counts (``ptflops/aten_ops.py``)
    ======================================  ==================================================================
    ``aten.convolution``                    multiply-adds + 1 per output element when there is a bias
                                            (``conv_flop``; module or functional, transposed on the input)
    ``aten.addmm``                          multiply-adds + 1 per output element for the bias (``addmm_flop``)
    ``aten.mm``, ``aten.matmul``,            multiply-adds (``matmul_flop``, ``bmm_flop``)
    ``aten.bmm``
    everything else                         0 (``baddbmm``, norms, pools, softmax, activations, element-wise)
    ======================================  ==================================================================

    From the cells: all MACs but ``baddbmm``'s, the convolutions' bias adds and ``addmm``'s bias adds (the
    latter are the "linear" ops inside ``nn.Linear``, "elementwise" ops elsewhere). Exact with or without
    ``log``.
    """
    total = cost.macs - _per_op_cells(per_op, ("baddbmm",), None, "mac") + cost.get("convolution", "op")
    if per_op is not None:
        total += _per_op_cells(per_op, ("addmm",), None, "op")
    else:
        total += cost.get("linear", "op")
    return total


@dataclass(frozen=True)
class Convention:
    name: str
    unit: str  # "FLOPs" or "MACs"
    summary: str
    fn: Callable[[Cost, Mapping[str, Cost] | None, OpLog | None], int]

    def __call__(self, cost: Cost, per_op: Mapping[str, Cost] | None = None, log: OpLog | None = None) -> int:
        return self.fn(cost, per_op, log)


CONVENTIONS: dict[str, Convention] = {
    c.name: c
    for c in (
        Convention("flops", "FLOPs", "2 per multiply-add + 1 per single op (every op counted)", flops),
        Convention("macs", "MACs", "multiply-adds of conv, linear and matrix products only", macs),
        Convention("conv-only-macs", "MACs", "multiply-adds of convolutions only", conv_only_macs),
        Convention("thop", "MACs", "thop: conv/linear MACs (no bias), BN 4/element, avg pools; hooked nn modules only", thop),
        Convention("fvcore", "MACs", "fvcore: conv/linear/matmul MACs (no bias), BN 2/element, adaptive_avg_pool2d inputs", fvcore),
        Convention("fvcore+means", "MACs", "fvcore, plus 1 per element read by a mean or a 3-D/1-D adaptive average pool", fvcore_means),
        Convention("ptflops", "MACs", "ptflops (pytorch): MACs + biases, BN 2/element, ReLU, pool inputs, softmax; modules and patched functions", ptflops),
        Convention("ptflops-aten", "MACs", "ptflops (aten): conv/mm/addmm/bmm MACs + conv and addmm biases", ptflops_aten),
    )
}


def value(name: str, cost: Cost, per_op: Mapping[str, Cost] | None = None, log: OpLog | None = None) -> int:
    """The count under convention ``name``, in that convention's unit (``CONVENTIONS[name].unit``)."""
    from attnbench.errors import unknown

    if name not in CONVENTIONS:
        raise unknown("counting convention", name, CONVENTIONS)
    return CONVENTIONS[name](cost, per_op, log)


def all_values(cost: Cost, per_op: Mapping[str, Cost] | None = None, log: OpLog | None = None) -> dict[str, int]:
    """Every convention's count, each in its own unit."""
    return {name: c(cost, per_op, log) for name, c in CONVENTIONS.items()}


__all__ = [
    "CONVENTIONS", "Convention", "OpLog", "OpRecord", "all_values", "conv_only_macs", "count_detailed",
    "flops", "fvcore", "fvcore_means", "macs", "ptflops", "ptflops_aten", "thop", "value",
]
