"""Adapters for other FLOP counters, each converted to attnbench FLOPs (multiply-add = 2) and labelled.

| counter          | native unit              | how it counts                                   | sees                      |
|------------------|--------------------------|-------------------------------------------------|---------------------------|
| torch            | FLOPs (2 per mult-add)   | ``torch.utils.flop_counter.FlopCounterMode``    | conv, mm, addmm, bmm (no bias, no other ops) |
| fvcore           | MACs, called "flops"     | jit trace of real tensors, per-op handles        | conv, linear/addmm, matmul/bmm, einsum, norms, a few pools |
| ptflops          | MACs                     | module hooks + patched functionals, real tensors | listed nn modules, F.* and torch.* functions it patches |
| ptflops-aten     | MACs                     | dispatch mode over aten ops                     | mm, matmul, addmm, bmm, convolution (bias adds included) |

Counters that report MACs are multiplied by 2 (``flops = 2 x native``); where a counter also adds single
operations (bias adds, activations) into its MAC total, the doubling over-counts them, and the
reconciliation says so. fvcore and ptflops are optional: imported lazily; when absent the entry says so.
fvcore traces real tensors (it cannot run on ``meta``) and ptflops' pytorch backend is run on real tensors
(see :func:`count_ptflops`), so both are skipped above a memory budget.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

# Op names (in each tool's own spelling) mapped to attnbench categories; "products" = linear + matmul,
# which counters that work on aten ops cannot tell apart.
PRODUCTS = "linear+matmul"
_OP_CATEGORY = {
    "convolution": "convolution", "_convolution": "convolution", "conv": "convolution",
    "mm": PRODUCTS, "addmm": PRODUCTS, "bmm": PRODUCTS, "baddbmm": PRODUCTS, "matmul": PRODUCTS,
    "linear": PRODUCTS, "einsum": PRODUCTS,
    "batch_norm": "normalisation", "group_norm": "normalisation", "layer_norm": "normalisation",
    "instance_norm": "normalisation",
    "adaptive_avg_pool2d": "pooling",
    "upsample_nearest2d": "elementwise", "upsample_bilinear2d": "elementwise",
}


@dataclass
class ExternalCount:
    """One external counter's answer, converted to attnbench FLOPs."""

    counter: str
    native_unit: str
    native: int | None = None
    flops: int | None = None
    by_category: dict[str, int] | None = None  # FLOPs, after conversion
    missed: list[str] = field(default_factory=list)
    skipped: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "flops": self.flops,
            "native": self.native,
            "native_unit": self.native_unit,
            "by_category_flops": self.by_category,
            "missed": self.missed,
            "skipped": self.skipped,
        }


def _category(op_name: str) -> str:
    name = op_name.replace("aten::", "").replace("aten.", "")
    return _OP_CATEGORY.get(name, "other")


def count_torch(module: nn.Module, inputs: Sequence[torch.Tensor]) -> ExternalCount:
    """PyTorch's FlopCounterMode as it is (works on meta tensors)."""
    from torch.utils.flop_counter import FlopCounterMode, flop_registry

    result = ExternalCount("torch", "FLOPs (2 per multiply-add)")
    module.eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        module(*inputs)
    result.native = int(counter.get_total_flops())
    result.flops = result.native
    cats: dict[str, int] = {}
    for op, value in counter.get_flop_counts().get("Global", {}).items():
        cat = _category(str(op))
        cats[cat] = cats.get(cat, 0) + int(value)
    result.by_category = cats
    result.missed = [f"counts only ops with a registered formula ({len(flop_registry)}: conv, mm, addmm, bmm, "
                     "attention kernels); bias adds and all other ops are not counted"]
    return result


def count_fvcore(
    module_factory: Callable[[], nn.Module], inputs_factory: Callable[[], Sequence[torch.Tensor]],
    activation_bytes: int, budget_bytes: int,
) -> ExternalCount:
    """fvcore's FlopCountAnalysis (jit trace on real CPU tensors); MACs, doubled to FLOPs."""
    result = ExternalCount("fvcore", "MACs (fvcore calls them flops)")
    try:
        from fvcore.nn import FlopCountAnalysis
    except ImportError:
        result.skipped = "fvcore not installed (pip install 'attnbench[counters]')"
        return result
    if activation_bytes > budget_bytes:
        result.skipped = (f"fvcore traces real tensors; this shape needs ~{activation_bytes / 2**30:.1f} GiB "
                          f"of activations (> budget {budget_bytes / 2**30:.1f} GiB)")
        return result
    module = module_factory().eval()
    inputs = tuple(inputs_factory())
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        analysis = FlopCountAnalysis(module, inputs)
        analysis.unsupported_ops_warnings(False)
        analysis.uncalled_modules_warnings(False)
        analysis.tracer_warnings("none")
        total = int(analysis.total())
        by_op = dict(analysis.by_operator())
        unsupported = dict(analysis.unsupported_ops())
    result.native = total
    result.flops = 2 * total
    cats: dict[str, int] = {}
    for op, value in by_op.items():
        cat = _category(op)
        cats[cat] = cats.get(cat, 0) + 2 * int(value)
    result.by_category = cats
    result.missed = sorted(f"{op} (x{n})" for op, n in unsupported.items())
    return result


def _ptflops_missed_aten(per_op: dict[str, Any]) -> list[str]:
    from ptflops.aten_ops import ATEN_OPS_MAPPING

    seen = {str(k).replace("aten.", "") for k in ATEN_OPS_MAPPING}
    return sorted(op for op, cost in per_op.items() if cost.flops and op not in seen)


def count_ptflops(
    module: nn.Module, inputs: Sequence[torch.Tensor], backend: str, per_op: dict[str, Any],
    activation_bytes: int = 0, budget_bytes: int | None = None,
) -> ExternalCount:
    """ptflops ``get_model_complexity_info`` with the given backend ('pytorch' or 'aten'); MACs doubled.

    The pytorch backend is run on real CPU tensors, as its users run it: on ``meta`` tensors ``nn.Linear``'s
    ``addmm`` decomposes into the ``torch.mm`` that ptflops patches and is counted twice. Above
    ``budget_bytes`` of activations it is skipped with the reason."""
    result = ExternalCount("ptflops" if backend == "pytorch" else "ptflops-aten", "MACs")
    try:
        from ptflops import get_model_complexity_info
    except ImportError:
        result.skipped = "ptflops not installed (pip install 'attnbench[counters]')"
        return result
    if budget_bytes is not None and activation_bytes > budget_bytes:
        result.skipped = (f"ptflops ({backend}) runs real tensors; this shape needs ~{activation_bytes / 2**30:.1f} GiB "
                          f"of activations (> budget {budget_bytes / 2**30:.1f} GiB)")
        return result
    module.eval()
    args = list(inputs)

    class _Wrap(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, dummy: Any) -> Any:
            return self.inner(*args)

    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        macs, _params = get_model_complexity_info(
            _Wrap(module), tuple(args[0].shape[1:]), as_strings=False, print_per_layer_stat=False,
            input_constructor=lambda _res: {"dummy": None}, backend=backend, verbose=False,
        )
    if macs is None:
        result.skipped = f"ptflops ({backend}) failed: {sink.getvalue().strip().splitlines()[-1:] or 'no output'}"
        return result
    result.native = int(macs)
    result.flops = 2 * int(macs)
    if backend == "aten":
        result.missed = _ptflops_missed_aten(per_op)
    else:
        result.missed = _ptflops_missed_modules(module)
    return result


def _ptflops_missed_modules(module: nn.Module) -> list[str]:
    """Module types whose own forward does arithmetic outside ptflops' hooked modules and patches."""
    from ptflops.pytorch_ops import MODULES_MAPPING

    missed = set()
    for sub in module.modules():
        if type(sub) in MODULES_MAPPING or isinstance(sub, (nn.Sequential, nn.ModuleList, nn.Identity)):
            continue
        missed.add(f"{type(sub).__name__}.forward: tensor operators (x * y, x + y, sigmoid, mean, ...) "
                   "other than the functions ptflops patches")
    return sorted(missed)
