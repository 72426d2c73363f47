"""attnbench's Python API, which the command line calls too: resolve a block at a shape, count it (closed
forms, the exact counter, other counters), time it. The functions users call on their own modules --
:func:`count`, :func:`measure`, :func:`compare`, :func:`register_block` -- are exported from ``attnbench``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from attnbench.blocks.registry import BlockSpec, Option, Preset, all_blocks, get_block, register_block  # noqa: F401
from attnbench.cases import (  # noqa: F401  (re-exported: the CLI and users call them through attnbench.api)
    Case,
    FlopsReport,
    NetworkCase,
    REAL_TENSOR_BUDGET_BYTES,
    UNITS,
    by_module_dict,
    flops_report,
    network_report,
    parse_counters,
    parse_options,
    preset_cases,
    resolve,
    resolve_network,
    too_big_for_tensors,
    training_dict,
)
from attnbench.defaults import COUNTERS, SCHEMA  # noqa: F401
from attnbench.errors import UsageError, unknown  # noqa: F401
from attnbench.flops.count import meta_inputs, param_count
from attnbench.text import UNHANDLED, unhandled_text
from attnbench.flops.count import count as count_exact


# ---------------------------------------------------------------------------------------------------------
# The public face for users' own modules: count(), measure(), compare()

Shapes = Sequence[int] | Sequence[Sequence[int]]


def _shapes(inputs_or_shapes: Any) -> list[tuple[int, ...]]:
    """One shape, a list of shapes, a tensor or a list of tensors -> a list of shapes."""
    if isinstance(inputs_or_shapes, torch.Tensor):
        return [tuple(inputs_or_shapes.shape)]
    items = list(inputs_or_shapes)
    if items and all(isinstance(v, int) and not isinstance(v, bool) for v in items):
        return [tuple(items)]
    shapes = []
    for item in items:
        if isinstance(item, torch.Tensor):
            shapes.append(tuple(item.shape))
        elif isinstance(item, Sequence) and all(isinstance(v, int) and not isinstance(v, bool) for v in item):
            shapes.append(tuple(item))
        else:
            raise UsageError(f"inputs must be tensors or shapes (tuples of ints), got {type(item).__name__}")
    if not shapes:
        raise UsageError("give at least one input tensor or shape")
    return shapes


def _on_meta(module: torch.nn.Module) -> torch.nn.Module:
    """The module on the meta device: itself if already there, else a copy (the caller's stays as it was)."""
    import copy

    if all(t.device.type == "meta" for t in [*module.parameters(), *module.buffers()]):
        return module
    return copy.deepcopy(module).to("meta")


@dataclass
class Count:
    """What :func:`count` found. FLOPs count a multiply-add as 2 and any other arithmetic op as 1; MACs count
    the multiply-accumulates of convolutions, linear layers and matrix products."""

    label: str
    input_shapes: list[tuple[int, ...]]
    flops: int
    macs: int
    by_category_flops: dict[str, int]
    by_module: dict[str, dict[str, int]]  # qualified submodule name ("" = the whole module) -> flops, macs
    params: int
    unhandled_ops: dict[str, int]  # ops the counter does not know, by name and calls: never silently zero
    forward_flops: int
    backward_flops: int | None = None  # with backward=True: the backward pass of one training step

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return {"schema": SCHEMA, "kind": "count", **asdict(self), "units": UNITS}


def count(module: torch.nn.Module, inputs_or_shapes: Any, *, backward: bool = False, input_grad: bool = False,
          label: str | None = None) -> Count:
    """Count ``module`` on the given inputs (tensors or shapes) on the meta device: no memory is allocated and
    ``module`` itself is not changed (a copy is moved to meta). Inputs take the dtype of the module's first
    floating-point parameter. Forward only (eval mode, no grad) by default; with ``backward=True`` one
    training step (forward in train mode, then backward of the output; ``input_grad=True`` also counts the
    gradient of the inputs, as for a layer inside a larger network)."""
    shapes = _shapes(inputs_or_shapes)
    meta = _on_meta(module)
    dtype = next((p.dtype for p in meta.parameters() if p.is_floating_point()), torch.float32)
    inputs = [t.to(dtype) for t in meta_inputs(shapes)]
    if backward and not input_grad and not any(p.requires_grad for p in meta.parameters()):
        raise UsageError(f"{label or type(module).__name__} has no parameters that require grad: nothing to "
                         "backpropagate in a training step (count(..., backward=True, input_grad=True) counts the "
                         "inputs' gradient)")
    result = (count_exact(meta, inputs, backward=True, input_grad=input_grad) if backward
              else count_exact(meta, inputs))
    return Count(
        label=label or type(module).__name__, input_shapes=shapes, flops=result.cost.flops, macs=result.cost.macs,
        by_category_flops=result.cost.by_category(), by_module=by_module_dict(result) or {},
        params=param_count(meta), unhandled_ops=dict(result.unhandled),
        forward_flops=result.forward.flops if backward else result.cost.flops,
        backward_flops=result.backward.flops if backward else None,
    )


def formula(module: str, preset: str | None = None, sizes: dict[str, int | None] | None = None,
            options: dict[str, Any] | None = None, *, vary: Sequence[str] = ("B", "C", "T", "H", "W"), checks: int = 10,
            seed: int = 0, max_degree: int = 4) -> Any:
    """The closed form of block ``module`` (a registered name or ``FILE.py:CLASS``): its FLOPs per op category
    and its parameters as polynomials in the sizes ``vary`` with exact rational coefficients, derived from exact
    counts on the meta device and checked on ``checks`` random shapes; the other sizes are held at ``preset``'s
    (or ``sizes``') values. Returns an :class:`attnbench.formula.FormulaReport`: ``.formula`` (the polynomials,
    the domain), ``.comparison`` (with the block's declared closed form, symbolically) and ``.papers`` (the
    papers' printed formulas that apply). FLOPs count a multiply-add as 2."""
    from attnbench.formula import formula_report

    case = resolve(module, preset, sizes, options)
    return formula_report(case, vary, checks=checks, seed=seed, max_degree=max_degree)


@dataclass
class Timing:
    """What :func:`measure` found: the timing summary (median and IQR in seconds, raw samples), the memory
    of one call in bytes, the device fingerprint, and the full results row (as ``attnbench speed`` writes)."""

    label: str
    input_shapes: list[tuple[int, ...]]
    status: str  # "ok", "OOM" or "error: ..."
    median_s: float | None
    iqr_s: float | None
    samples_s: list[float]
    peak_memory_bytes: int | None
    flops: int
    fingerprint: dict[str, Any]
    row: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        d = asdict(self)
        d.pop("row")
        return {"schema": SCHEMA, "kind": "timing", **d}


def measure(module: torch.nn.Module, inputs_or_shapes: Any, *, device: str = "cpu", dtype: str = "fp32",
            reps: int = 10, target_s: float = 1.0, warmup_s: float = 2.0, label: str | None = None) -> Timing:
    """Time ``module`` on random inputs of the given shapes (the first dimension is the batch) on ``device``
    (cpu, cuda, cuda:N), as ``attnbench speed`` does: warm-up, then at least ``reps`` calls and about
    ``target_s`` seconds of them. The module is moved to the device (and dtype). Out of memory is a row
    status, not an exception; an unavailable device is a :class:`~attnbench.errors.DeviceError`."""
    from attnbench import bench
    from attnbench.measuring import device as dev

    shapes = _shapes(inputs_or_shapes)
    dev.resolve_device(device)
    dev.resolve_dtype(dtype)
    if len({s[0] for s in shapes}) != 1:
        raise UsageError("every input's first dimension is the batch: they must agree")
    batch = shapes[0][0]
    if batch < 1:
        raise UsageError(f"the batch (the inputs' first dimension) must be at least 1, got {batch}")
    name = label or type(module).__name__
    per_item = [(1, *s[1:]) for s in shapes]
    counted = count(module, per_item, label=name)  # one clip; the row scales it by the batch

    def build() -> torch.nn.Module:
        return module.to(dev.placement(dev.resolve_device(device)))

    target = bench.Target("block", name, "custom", tuple(per_item), counted.flops, build,
                          by_category=counted.by_category_flops, flops_source="counted",
                          unhandled=counted.unhandled_ops)
    settings = bench.Settings(device=device, dtype=dtype, batch=batch, min_reps=reps, target_s=target_s,
                              max_warmup_s=warmup_s)
    fingerprint = dev.fingerprint(device)
    row = bench.measure_target(target, settings, fingerprint)
    timing = row.get("timing") or {}
    memory = row.get("memory") or {}
    return Timing(
        label=name, input_shapes=shapes, status=row["status"],
        median_s=timing["median_ms"] / 1e3 if "median_ms" in timing else None,
        iqr_s=timing["iqr_ms"] / 1e3 if "iqr_ms" in timing else None,
        samples_s=[v / 1e3 for v in timing.get("samples_ms", [])],
        peak_memory_bytes=memory.get("working_bytes"), flops=row["flops"], fingerprint=fingerprint, row=row,
    )


def compare(results: Sequence[Count | Timing | FlopsReport]) -> Any:
    """One table (a pandas DataFrame, one row per result) across blocks: FLOPs, MACs and parameters of counts,
    median latency, IQR, memory and achieved GFLOP/s of timings. Column names carry their units."""
    import pandas as pd

    rows: dict[tuple[str, str], dict[str, Any]] = {}  # a count and a timing of one block at one input share a row
    for r in results:
        if isinstance(r, FlopsReport):
            r = Count(label=r.case.label, input_shapes=r.case.input_shapes(), flops=r.cost.flops, macs=r.cost.macs,
                      by_category_flops=r.cost.by_category(), by_module={}, params=r.params_counted,
                      unhandled_ops=dict(r.exact.unhandled) if r.exact else {}, forward_flops=r.cost.flops)
        if not isinstance(r, (Count, Timing)):
            raise UsageError(f"compare takes count(), measure() or flops_report() results, got {type(r).__name__}")
        shown = " ".join("x".join(map(str, s)) for s in r.input_shapes)
        row = rows.setdefault((r.label, shown), {"block": r.label, "input": shown})
        if isinstance(r, Count):
            if "GFLOPs" in row:
                raise UsageError(f"compare: two counts of {r.label} at input {shown}; give them different labels")
            row.update({
                "GFLOPs": r.flops / 1e9, "GMACs": r.macs / 1e9, "params (M)": r.params / 1e6,
                UNHANDLED: unhandled_text(r.unhandled_ops)})
        else:
            if "status" in row:
                raise UsageError(f"compare: two timings of {r.label} at input {shown}; give them different labels")
            ok = r.median_s is not None
            row.update({
                "status": r.status,
                "median ms": r.median_s * 1e3 if ok else None,
                "IQR ms": r.iqr_s * 1e3 if r.iqr_s is not None else None,
                "peak MiB": r.peak_memory_bytes / 2**20 if r.peak_memory_bytes is not None else None,
                "GFLOP/s": r.flops / r.median_s / 1e9 if ok and r.median_s else None,
                "device": r.fingerprint.get("gpu_name") or r.fingerprint.get("cpu_model")})
    return pd.DataFrame(list(rows.values()))
