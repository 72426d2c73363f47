"""attnbench's Python API, which the command line calls too: resolve a block at a shape, count it (closed
forms, the exact counter, other counters), time it. The functions users call on their own modules --
:func:`count`, :func:`measure`, :func:`compare`, :func:`register_block` -- are exported from ``attnbench``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from attnbench.blocks.registry import BlockSpec, Option, Preset, all_blocks, get_block, register_block  # noqa: F401
from attnbench.errors import UsageError, unknown  # noqa: F401  (UsageError re-exported for the CLI)
from attnbench.flops import counters as ext
from attnbench.flops.cost import Cost
from attnbench.flops.conventions import count_detailed
from attnbench.defaults import COUNTERS, SCHEMA
from attnbench.flops.count import CountResult, meta_inputs, param_count
from attnbench.flops.count import count as count_exact
from attnbench.flops.reconcile import ReconRow, reconcile
from attnbench.shapes import VideoShape

UNITS = {
    "flops": "FLOPs: a multiply-add counts 2, any other arithmetic op 1",
    "macs": "MACs: multiply-accumulates of convolutions, linear layers and matrix products, each 1",
    "params": "learnable parameters (count)",
}
REAL_TENSOR_BUDGET_BYTES = 2 * 2**30  # fvcore and ptflops (pytorch backend) run on real CPU tensors


@dataclass(frozen=True)
class Case:
    """A block at one input shape with resolved options."""

    spec: BlockSpec
    shape: VideoShape
    options: Mapping[str, Any]
    preset: Preset | None  # None: the shape or options differ from the preset's (a custom case)
    base: str = ""  # the preset the case starts from (its name even when custom)

    @property
    def label(self) -> str:
        return f"{self.spec.name}@{self.preset.name}" if self.preset else f"{self.spec.name}@{self.shape}"

    def input_shapes(self) -> list[tuple[int, ...]]:
        return self.spec.input_shapes(self.shape, self.options)

    def build(self, device: str = "meta", shape: VideoShape | None = None) -> torch.nn.Module:
        with torch.device(device):
            return self.spec.build(shape or self.shape, **self.options)

    def cost(self, shape: VideoShape | None = None) -> tuple[Cost, str]:
        """Forward FLOPs at ``shape`` (default: the case's) and where they come from: the block's closed form
        (``"closed form"``) or, for a block that declares none, the exact counter on the meta device
        (``"counted"``)."""
        shape = shape or self.shape
        if self.spec.cost is not None:
            return self.spec.cost(shape, **self.options), "closed form"
        module = self.build("meta", shape)
        return count_exact(module, meta_inputs(self.spec.input_shapes(shape, self.options))).cost, "counted"

    def params(self) -> tuple[int, str]:
        """Parameters: the closed form, or counted on the meta device for a block that declares none."""
        if self.spec.params is not None:
            return self.spec.params(self.shape, **self.options), "closed form"
        return param_count(self.build("meta")), "counted"


def resolve(
    module: str,
    preset: str | None = None,
    sizes: Mapping[str, int | None] | None = None,
    options: Mapping[str, Any] | None = None,
) -> Case:
    """The block ``module`` at ``preset`` (default: its first) with sizes and options overridden."""
    spec = get_block(module)
    p = spec.preset(preset)
    shape = p.shape.replace(**(sizes or {}))
    opts = spec.resolve_options(options, base=p.options)
    spec.validate(shape, opts)
    kernel = {o.name for o in spec.options if o.kernel}
    custom = shape != p.shape or any(k not in kernel and (k not in p.options or p.options[k] != v)
                                     for k, v in (options or {}).items())
    return Case(spec, shape, opts, None if custom else p, p.name)


def preset_cases(modules: Sequence[str] | None = None) -> list[Case]:
    """Every preset of the given blocks (all blocks when None)."""
    specs = [get_block(m) for m in modules] if modules else all_blocks()
    return [resolve(s.name, p.name) for s in specs for p in s.presets]


def parse_counters(text: str) -> list[str]:
    """``"exact,fvcore"`` -> ["exact", "fvcore"], checked; ``ptflops_aten`` is ``ptflops-aten``; the exact
    counter always runs (first)."""
    chosen = [c.strip().replace("_", "-") for c in text.split(",") if c.strip()]
    for name in chosen:
        if name not in COUNTERS:
            raise unknown("counter", name, COUNTERS)
    return list(dict.fromkeys(["exact", *chosen]))


def parse_options(pairs: Sequence[str]) -> dict[str, str]:
    """``["order=TW-HW-TH", "ratio=4"]`` -> dict; values are converted later by the block's options."""
    out: dict[str, str] = {}
    for pair in pairs:
        if "=" not in pair:
            raise UsageError(f"block option '{pair}' must be KEY=VALUE")
        key, value = pair.split("=", 1)
        out[key.strip()] = value.strip()
    return out


def _cost_dict(cost: Cost) -> dict[str, Any]:
    return {"flops": cost.flops, "macs": cost.macs, "by_category_flops": cost.by_category()}


@dataclass
class FlopsReport:
    case: Case
    analytic: Cost | None  # None: the block declares no closed form
    exact: CountResult | None  # None: the shape is past torch's tensor limits (see exact_skipped)
    params_analytic: int | None
    params_counted: int
    terms: dict[str, Any]
    externals: list[ext.ExternalCount]
    rows: list[ReconRow]
    exact_skipped: str | None = None
    training: CountResult | None = None  # forward + backward, when asked for

    @property
    def cost(self) -> Cost:
        """The exact count, or the closed form where the exact counter could not run."""
        if self.exact is not None:
            return self.exact.cost
        assert self.analytic is not None  # a shape past torch's limits is counted by closed forms only
        return self.analytic

    def to_dict(self) -> dict[str, Any]:
        c = self.case
        largest = c.spec.largest_intermediate(c.shape, **c.options) if c.spec.largest_intermediate else None
        counted: dict[str, Any] = {
            "exact": {"flops": None, "macs": None, "by_category_flops": None, "cells": None, "per_op_flops": None,
                      "by_module": None, "unhandled_ops": None, "equals_analytic": None, "skipped": self.exact_skipped}
        } if self.exact is None else {
            "exact": {
                **_cost_dict(self.exact.cost),
                "cells": self.exact.cost.to_dict(),
                "per_op_flops": {k: v.flops for k, v in sorted(self.exact.per_op.items())},
                "by_module": by_module_dict(self.exact),
                "unhandled_ops": dict(self.exact.unhandled),
                "equals_analytic": None if self.analytic is None else self.exact.cost == self.analytic,
            }
        }
        if self.training is not None:
            counted["exact"]["training_step"] = training_dict(self.training)
        for e in self.externals:
            counted[e.counter] = e.to_dict()
        return {
            "schema": SCHEMA,
            "kind": "block",
            "module": c.spec.name,
            "title": c.spec.title,
            "paper": c.spec.paper,
            "preset": c.base,
            "custom": c.preset is None,
            "preset_source": c.spec.preset(c.base).source,
            "input_shape": c.shape.as_list(),
            "input_shapes": [list(s) for s in c.input_shapes()],
            "options": dict(c.options),
            "closed_forms": self.analytic is not None,
            "params": self.params_counted,
            "params_analytic": self.params_analytic,
            "analytic": None if self.analytic is None else {**_cost_dict(self.analytic), **self.terms},
            "counted": counted,
            "reconciliation": [r.to_dict() for r in self.rows],
            "predicted_largest_intermediate": (
                {"what": largest[0], "elements": largest[1], "bytes": 4 * largest[1], "dtype": "fp32"}
                if largest else None
            ),
            "units": UNITS,
        }


def by_module_dict(result: CountResult) -> dict[str, dict[str, int]] | None:
    """FLOPs and MACs per submodule (qualified name; "" is the whole block), inclusive of children."""
    tree = getattr(result, "by_module", None)
    if not tree:
        return None
    return {name: {"flops": cost.flops, "macs": cost.macs} for name, cost in tree.items()}


def training_dict(result: CountResult) -> dict[str, Any]:
    """One training step (forward in train mode, then backward) counted on the meta device."""
    forward, backward = result.forward, result.backward
    return {"flops": result.cost.flops, "macs": result.cost.macs, "forward_flops": forward.flops,
            "backward_flops": backward.flops, "backward_by_category_flops": backward.by_category(),
            "by_module": by_module_dict(result), "unhandled_ops": dict(result.unhandled)}


def _guarded(name: str, run: Any) -> ext.ExternalCount:
    """An external counter that fails is reported as skipped with its error's first line, never raised."""
    try:
        return run()
    except Exception as err:  # noqa: BLE001 - third-party counters fail in many ways
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        return ext.ExternalCount(name, "n/a", skipped=f"{name} failed: {type(err).__name__}: {first[:160]}")


def too_big_for_tensors(err: BaseException) -> bool:
    """Whether ``err`` is torch refusing a shape its tensors cannot describe (a size past 2^63 elements or
    bytes), as opposed to a bug."""
    text = str(err)
    return isinstance(err, OverflowError) or (
        isinstance(err, (RuntimeError, TypeError, ValueError))
        and any(s in text for s in ("overflow", "Overflow", "too large", "out of range")))


def _externals(build_meta: Any, build_real: Any, shapes: Sequence[Sequence[int]], exact: CountResult,
               counters: Sequence[str]) -> list[ext.ExternalCount]:
    """The chosen external counters (never ``exact``) on one module; each failure is a skipped entry."""
    for name in counters:
        if name not in COUNTERS:
            raise unknown("counter", name, COUNTERS)

    def real_module() -> torch.nn.Module:
        torch.manual_seed(0)
        return build_real()

    runners = {
        "torch": lambda: ext.count_torch(build_meta(), meta_inputs(shapes)),
        "fvcore": lambda: ext.count_fvcore(
            real_module, lambda: meta_inputs(shapes, "cpu"), 4 * exact.output_elements, REAL_TENSOR_BUDGET_BYTES
        ),
        "ptflops": lambda: ext.count_ptflops(
            real_module(), meta_inputs(shapes, "cpu"), "pytorch", exact.per_op,
            activation_bytes=4 * exact.output_elements, budget_bytes=REAL_TENSOR_BUDGET_BYTES,
        ),
        "ptflops-aten": lambda: ext.count_ptflops(build_meta(), meta_inputs(shapes), "aten", exact.per_op),
    }
    return [_guarded(name, runners[name]) for name in COUNTERS if name in counters and name in runners]


def flops_report(case: Case, counters: Sequence[str] = COUNTERS, backward: bool = False) -> FlopsReport:
    """Closed forms, the exact counter (meta device) and the chosen external counters for one case; with
    ``backward`` also one training step (forward + backward) from the exact counter. A block that declares no
    closed form is counted only (``analytic`` is None). A shape too large for torch's tensors (even on the
    meta device, sizes are 64-bit) is counted by the closed forms alone; the report says so (``exact`` is None
    and ``exact_skipped`` gives the limit)."""
    counters = [c.replace("_", "-") for c in counters]
    for name in counters:
        if name not in COUNTERS:
            raise unknown("counter", name, COUNTERS)
    declared = case.spec.closed_forms()
    analytic = case.spec.cost(case.shape, **case.options) if declared else None
    terms = case.spec.terms(case.shape, **case.options) if case.spec.terms else {}
    params_analytic = case.spec.params(case.shape, **case.options) if declared else None
    shapes = case.input_shapes()
    try:
        module = case.build("meta")
        exact, log = count_detailed(module, meta_inputs(shapes))
        params_counted = param_count(module)
        training = count_exact(case.build("meta"), meta_inputs(shapes), backward=True) if backward else None
    except Exception as err:  # noqa: BLE001 - only torch's size limit is caught; anything else is raised
        if not too_big_for_tensors(err) or analytic is None or params_analytic is None:
            raise
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        why = (f"the exact counter cannot run at input {case.shape}: torch's tensor sizes are 64-bit "
               f"({type(err).__name__}: {first[:120]}); FLOPs and parameters are the closed forms")
        return FlopsReport(case, analytic, None, params_analytic, params_analytic, terms, [], [], exact_skipped=why)
    externals = _externals(lambda: module, lambda: case.build("cpu"), shapes, exact,
                           [c for c in counters if c != "exact"])
    rows = reconcile(analytic, exact.cost, exact.per_op, externals, log)
    return FlopsReport(case, analytic, exact, params_analytic, params_counted, terms, externals, rows,
                       training=training)


# ---------------------------------------------------------------------------------------------------------
# Networks


@dataclass(frozen=True)
class NetworkCase:
    """A paper network with an attention choice, at one input."""

    spec: Any  # attnbench.networks.registry.NetworkSpec
    attn: str
    preset: str | None
    kwargs: Mapping[str, Any]  # frames, size, batch and options, as given to the spec

    @property
    def label(self) -> str:
        return f"{self.spec.name}+{self.attn}@{self.preset or 'custom'}"

    def input_shapes(self) -> list[tuple[int, ...]]:
        return self.spec.input_shapes(attn=self.attn, preset=self.preset, **self.kwargs)

    def build(self, device: str = "meta") -> torch.nn.Module:
        with torch.device(device):
            return self.spec.build(self.attn, preset=self.preset, **self.kwargs)

    def params(self) -> int:
        return self.spec.params(self.attn, preset=self.preset, **self.kwargs)

    def sites(self) -> list[Any]:
        return self.spec.attention_sites(self.attn, preset=self.preset, **self.kwargs)


def resolve_network(
    name: str, attn: str = "none", preset: str | None = None, frames: int | None = None, size: int | None = None,
    batch: int = 1, options: Mapping[str, Any] | None = None,
) -> NetworkCase:
    from attnbench.networks.registry import get_network

    spec = get_network(name)
    kwargs: dict[str, Any] = dict(options or {})
    if frames is not None:
        kwargs["frames"] = frames
    if size is not None:
        kwargs["size"] = size
    kwargs["batch"] = batch
    spec.preset(preset)
    spec.resolve(attn, preset=preset, **kwargs)  # validates names, sizes and options now
    return NetworkCase(spec, attn, preset, kwargs)


def network_report(case: NetworkCase, counters: Sequence[str] = ("exact",)) -> dict[str, Any]:
    """Parameters (closed form and counted) and exact FLOPs of a whole network on the meta device, with the
    chosen external counters beside them. A network has no closed form for its whole FLOPs: an input past
    torch's 64-bit tensor sizes is a usage error."""
    counters = [c.replace("_", "-") for c in counters]
    try:
        module = case.build("meta")
        exact = count_exact(module, meta_inputs(case.input_shapes()))
    except Exception as err:  # noqa: BLE001 - only torch's size limit is turned into a usage error
        if not too_big_for_tensors(err):
            raise
        raise UsageError(f"{case.label}: input {case.kwargs} is past torch's 64-bit tensor sizes; the exact counter "
                         f"cannot count it and networks have no whole-network closed form") from None
    sites = case.sites()
    block_cost = Cost()
    if case.attn != "none":
        block = get_block(case.attn)
        for s in sites:
            block_cost = block_cost + block.cost(s.shape, **s.options)
    externals = _externals(lambda: module, lambda: case.build("cpu"), case.input_shapes(), exact,
                           [c for c in counters if c != "exact"])
    counted: dict[str, Any] = {"exact": {**_cost_dict(exact.cost), "unhandled_ops": dict(exact.unhandled)}}
    for e in externals:
        counted[e.counter] = e.to_dict()
    return {
        "schema": SCHEMA,
        "kind": "network",
        "network": case.spec.name,
        "attn": case.attn,
        "preset": case.preset or case.spec.default_preset.name,
        "input_shape": list(case.input_shapes()[0]),
        "input_shapes": [list(s) for s in case.input_shapes()],
        "params": param_count(module),
        "params_analytic": case.params(),
        "attention_sites": [{"where": s.where, "shape": s.shape.as_list()} for s in sites],
        "counted": counted,
        "attention_flops_analytic": block_cost.flops,
        "units": UNITS,
    }


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


def count(module: torch.nn.Module, inputs_or_shapes: Any, *, backward: bool = False, label: str | None = None) -> Count:
    """Count ``module`` on the given inputs (tensors or shapes) on the meta device: no memory is allocated and
    ``module`` itself is not changed (a copy is moved to meta). Forward only (eval mode, no grad) by default;
    with ``backward=True`` one training step (forward in train mode, then backward of the output)."""
    shapes = _shapes(inputs_or_shapes)
    meta = _on_meta(module)
    result = count_exact(meta, meta_inputs(shapes), backward=backward) if backward else count_exact(meta, meta_inputs(shapes))
    return Count(
        label=label or type(module).__name__, input_shapes=shapes, flops=result.cost.flops, macs=result.cost.macs,
        by_category_flops=result.cost.by_category(), by_module=by_module_dict(result) or {},
        params=param_count(meta), unhandled_ops=dict(result.unhandled),
        forward_flops=result.forward.flops if backward else result.cost.flops,
        backward_flops=result.backward.flops if backward else None,
    )


@dataclass
class Timing:
    """What :func:`measure` found: the timing summary (median and IQR in seconds, raw samples), the memory
    of one call in bytes, the device fingerprint, and the full results row (as ``attnbench speed`` writes)."""

    label: str
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
    name = label or type(module).__name__
    counted = count(module, shapes, label=name)
    per_item = [(1, *s[1:]) for s in shapes]

    def build() -> torch.nn.Module:
        return module.to(dev.placement(dev.resolve_device(device)))

    target = bench.Target("block", name, "custom", tuple(per_item), counted.flops // batch, build,
                          by_category={k: v // batch for k, v in counted.by_category_flops.items()})
    settings = bench.Settings(device=device, dtype=dtype, batch=batch, min_reps=reps, target_s=target_s,
                              max_warmup_s=warmup_s)
    fingerprint = dev.fingerprint(device)
    row = bench.measure_target(target, settings, fingerprint)
    timing = row.get("timing") or {}
    memory = row.get("memory") or {}
    return Timing(
        label=name, status=row["status"],
        median_s=timing["median_ms"] / 1e3 if "median_ms" in timing else None,
        iqr_s=timing["iqr_ms"] / 1e3 if "iqr_ms" in timing else None,
        samples_s=[v / 1e3 for v in timing.get("samples_ms", [])],
        peak_memory_bytes=memory.get("working_bytes"), flops=row["flops"], fingerprint=fingerprint, row=row,
    )


def compare(results: Sequence[Count | Timing | FlopsReport]) -> Any:
    """One table (a pandas DataFrame, one row per result) across blocks: FLOPs, MACs and parameters of counts,
    median latency, IQR, memory and achieved GFLOP/s of timings. Column names carry their units."""
    import pandas as pd

    rows: dict[str, dict[str, Any]] = {}  # one row per label: a count and a timing of one block share it
    for r in results:
        if isinstance(r, FlopsReport):
            r = Count(label=r.case.label, input_shapes=r.case.input_shapes(), flops=r.cost.flops, macs=r.cost.macs,
                      by_category_flops=r.cost.by_category(), by_module={}, params=r.params_counted,
                      unhandled_ops=dict(r.exact.unhandled) if r.exact else {}, forward_flops=r.cost.flops)
        if isinstance(r, Count):
            rows.setdefault(r.label, {"block": r.label}).update({
                "input": " ".join("x".join(map(str, s)) for s in r.input_shapes),
                "GFLOPs": r.flops / 1e9, "GMACs": r.macs / 1e9, "params (M)": r.params / 1e6,
                "unhandled ops": ", ".join(sorted(r.unhandled_ops)) or "-"})
        elif isinstance(r, Timing):
            ok = r.median_s is not None
            rows.setdefault(r.label, {"block": r.label}).update({
                "status": r.status,
                "median ms": r.median_s * 1e3 if ok else None,
                "IQR ms": r.iqr_s * 1e3 if r.iqr_s is not None else None,
                "peak MiB": r.peak_memory_bytes / 2**20 if r.peak_memory_bytes is not None else None,
                "GFLOP/s": r.flops / r.median_s / 1e9 if ok and r.median_s else None,
                "device": r.fingerprint.get("gpu_name") or r.fingerprint.get("cpu_model")})
        else:
            raise UsageError(f"compare takes count(), measure() or flops_report() results, got {type(r).__name__}")
    return pd.DataFrame(list(rows.values()))
