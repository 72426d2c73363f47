"""Typed entry points the CLI calls: resolve a block at a shape, count it, compare with other counters."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from attnbench.blocks.registry import BlockSpec, Preset, all_blocks, get_block
from attnbench.errors import UsageError, unknown  # noqa: F401  (UsageError re-exported for the CLI)
from attnbench.flops import counters as ext
from attnbench.flops.cost import Cost
from attnbench.flops.conventions import count_detailed
from attnbench.flops.count import CountResult, count, meta_inputs, param_count
from attnbench.flops.reconcile import ReconRow, reconcile
from attnbench.shapes import VideoShape

COUNTERS: tuple[str, ...] = ("exact", "torch", "fvcore", "ptflops", "ptflops-aten")
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
    preset: Preset | None

    @property
    def label(self) -> str:
        return f"{self.spec.name}@{self.preset.name}" if self.preset else f"{self.spec.name}@{self.shape}"

    def input_shapes(self) -> list[tuple[int, ...]]:
        return self.spec.input_shapes(self.shape, self.options)

    def build(self, device: str = "meta") -> torch.nn.Module:
        with torch.device(device):
            return self.spec.build(self.shape, **self.options)


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
    return Case(spec, shape, opts, None if custom else p)


def preset_cases(modules: Sequence[str] | None = None) -> list[Case]:
    """Every preset of the given blocks (all blocks when None)."""
    specs = [get_block(m) for m in modules] if modules else all_blocks()
    return [resolve(s.name, p.name) for s in specs for p in s.presets]


def parse_options(pairs: Sequence[str]) -> dict[str, str]:
    """``["order=TW-HW-TH", "ratio=4"]`` -> dict; values are converted later by the block's options."""
    out: dict[str, str] = {}
    for pair in pairs:
        if "=" not in pair:
            raise UsageError(f"block option '{pair}' must be KEY=VALUE")
        key, value = pair.split("=", 1)
        out[key.strip()] = value.strip()
    return out


@dataclass
class FlopsReport:
    case: Case
    analytic: Cost
    exact: CountResult | None  # None: the shape is past torch's tensor limits (see exact_skipped)
    params_analytic: int
    params_counted: int
    terms: dict[str, Any]
    externals: list[ext.ExternalCount]
    rows: list[ReconRow]
    exact_skipped: str | None = None

    @property
    def cost(self) -> Cost:
        """The exact count, or the closed form where the exact counter could not run."""
        return self.exact.cost if self.exact is not None else self.analytic

    def to_dict(self) -> dict[str, Any]:
        c = self.case
        largest = c.spec.largest_intermediate(c.shape, **c.options) if c.spec.largest_intermediate else None
        counted: dict[str, Any] = {
            "exact": {"flops": None, "macs": None, "by_category_flops": None, "cells": None, "per_op_flops": None,
                      "unhandled_ops": None, "equals_analytic": None, "skipped": self.exact_skipped}
        } if self.exact is None else {
            "exact": {
                "flops": self.exact.cost.flops,
                "macs": self.exact.cost.macs,
                "by_category_flops": self.exact.cost.by_category(),
                "cells": self.exact.cost.to_dict(),
                "per_op_flops": {k: v.flops for k, v in sorted(self.exact.per_op.items())},
                "unhandled_ops": dict(self.exact.unhandled),
                "equals_analytic": self.exact.cost == self.analytic,
            }
        }
        for e in self.externals:
            counted[e.counter.replace("-", "_")] = e.to_dict()
        return {
            "module": c.spec.name,
            "title": c.spec.title,
            "paper": c.spec.paper,
            "preset": c.preset.name if c.preset else None,
            "preset_source": c.preset.source if c.preset else None,
            "input_shape": c.shape.as_list(),
            "input_shapes": [list(s) for s in c.input_shapes()],
            "options": dict(c.options),
            "params": self.params_counted,
            "params_analytic": self.params_analytic,
            "analytic": {
                "flops": self.analytic.flops,
                "macs": self.analytic.macs,
                "by_category_flops": self.analytic.by_category(),
                **self.terms,
            },
            "counted": counted,
            "reconciliation": [r.to_dict() for r in self.rows],
            "largest_intermediate": (
                {"what": largest[0], "elements": largest[1], "bytes_fp32": 4 * largest[1]} if largest else None
            ),
            "units": UNITS,
        }


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


def flops_report(case: Case, counters: Sequence[str] = COUNTERS) -> FlopsReport:
    """Closed forms, the exact counter (meta device) and the chosen external counters for one case. A shape
    too large for torch's tensors (even on the meta device, sizes are 64-bit) is counted by the closed forms
    alone; the report says so (``exact`` is None and ``exact_skipped`` gives the limit)."""
    for name in counters:
        if name not in COUNTERS:
            raise unknown("counter", name, COUNTERS)
    analytic = case.spec.cost(case.shape, **case.options)
    terms = case.spec.terms(case.shape, **case.options) if case.spec.terms else {}
    params_analytic = case.spec.params(case.shape, **case.options)
    shapes = case.input_shapes()
    try:
        module = case.build("meta")
        exact, log = count_detailed(module, meta_inputs(shapes))
        params_counted = param_count(module)
    except Exception as err:  # noqa: BLE001 - only torch's size limit is caught; anything else is raised
        if not too_big_for_tensors(err):
            raise
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        why = (f"the exact counter cannot run at input {case.shape}: torch's tensor sizes are 64-bit "
               f"({type(err).__name__}: {first[:120]}); FLOPs and parameters are the closed forms")
        return FlopsReport(case, analytic, None, params_analytic, params_analytic, terms, [], [], exact_skipped=why)

    def real_module() -> torch.nn.Module:
        torch.manual_seed(0)
        return case.build("cpu")

    runners = {
        "torch": lambda: ext.count_torch(module, meta_inputs(shapes)),
        "fvcore": lambda: ext.count_fvcore(
            real_module, lambda: meta_inputs(shapes, "cpu"), 4 * exact.output_elements, REAL_TENSOR_BUDGET_BYTES
        ),
        "ptflops": lambda: ext.count_ptflops(
            real_module(), meta_inputs(shapes, "cpu"), "pytorch", exact.per_op,
            activation_bytes=4 * exact.output_elements, budget_bytes=REAL_TENSOR_BUDGET_BYTES,
        ),
        "ptflops-aten": lambda: ext.count_ptflops(module, meta_inputs(shapes), "aten", exact.per_op),
    }
    externals = [_guarded(name, runners[name]) for name in COUNTERS if name in counters and name in runners]
    rows = reconcile(analytic, exact.cost, exact.per_op, externals, log)
    return FlopsReport(case, analytic, exact, params_analytic, params_counted, terms, externals, rows)


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


def network_report(case: NetworkCase) -> dict[str, Any]:
    """Parameters (closed form and counted) and exact FLOPs of a whole network on the meta device. A network
    has no closed form for its whole FLOPs: an input past torch's 64-bit tensor sizes is a usage error."""
    try:
        module = case.build("meta")
        exact = count(module, meta_inputs(case.input_shapes()))
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
    return {
        "network": case.spec.name,
        "attn": case.attn,
        "preset": case.preset or case.spec.default_preset.name,
        "input_shape": list(case.input_shapes()[0]),
        "params": param_count(module),
        "params_analytic": case.params(),
        "attention_sites": [{"where": s.where, "shape": s.shape.as_list()} for s in sites],
        "counted": {"exact": {"flops": exact.cost.flops, "macs": exact.cost.macs,
                              "by_category_flops": exact.cost.by_category(),
                              "unhandled_ops": dict(exact.unhandled)}},
        "attention_flops_analytic": block_cost.flops,
        "units": UNITS,
    }
