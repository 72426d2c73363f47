"""A block or a network at one input, resolved and counted: the cases every layer above works on.

:func:`resolve` gives a :class:`Case` (a block at a shape with checked options), :func:`resolve_network` a
:class:`NetworkCase`; :func:`flops_report` and :func:`network_report` count them (closed forms, the exact
counter on the meta device, other counters). ``attnbench.api`` re-exports all of this for users."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from attnbench.blocks.registry import BlockSpec, Preset, all_blocks, get_block  # noqa: F401  (BlockSpec: re-exported)
from attnbench.errors import AttnBenchError, UsageError, unknown
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

    def cost(self, shape: VideoShape | None = None) -> tuple[Cost, str, dict[str, int]]:
        """Forward FLOPs at ``shape`` (default: the case's), where they come from, and the ops left uncounted:
        the block's closed form (``"closed form"``, nothing left out) or, for a block that declares none, one
        run of the exact counter on the meta device (``"counted"``; ops it does not know are named)."""
        shape = shape or self.shape
        if self.spec.cost is not None:
            return self.spec.cost(shape, **self.options), "closed form", {}
        with user_code(self.spec):
            module = self.build("meta", shape)
            result = count_exact(module, meta_inputs(self.spec.input_shapes(shape, self.options)))
        return result.cost, "counted", dict(result.unhandled)

    def params(self) -> tuple[int, str]:
        """Parameters: the closed form, or counted on the meta device for a block that declares none."""
        if self.spec.params is not None:
            return self.spec.params(self.shape, **self.options), "closed form"
        with user_code(self.spec):
            return param_count(self.build("meta")), "counted"


@contextmanager
def user_code(spec: BlockSpec) -> Iterator[None]:
    """A user's block (from a file, a plugin or ``register_block``) that fails to build or run is the user's
    error, one line and exit 2; attnbench's own blocks failing are bugs and stay exceptions."""
    from attnbench.blocks.registry import origin

    try:
        yield
    except (AttnBenchError, KeyboardInterrupt):
        raise
    except Exception as err:  # noqa: BLE001 - any failure of the user's code
        if origin(spec.name) == "attnbench":
            raise
        if too_big_for_tensors(err):
            raise
        first = (str(err).strip().splitlines() or [""])[0][:200]
        raise UsageError(f"block {spec.name} failed on the meta device: {type(err).__name__}: {first} (its forward "
                         "takes one video [B, C, T, H, W]; other inputs need a BlockSpec with inputs=)") from None


def _training_step(case: "Case", shapes: Sequence[Sequence[int]]) -> CountResult:
    """Forward + backward of one training step, or a one-line error for a block with nothing to train."""
    module = case.build("meta")
    if not any(p.requires_grad for p in module.parameters()):
        raise UsageError(f"{case.spec.name} has no parameters that require grad: --backward counts a training step")
    return count_exact(module, meta_inputs(shapes), backward=True)


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
            "closed_forms": c.spec.closed_forms(),
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
    spec = case.spec
    analytic = spec.cost(case.shape, **case.options) if spec.cost is not None else None
    terms = spec.terms(case.shape, **case.options) if spec.terms else {}
    params_analytic = spec.params(case.shape, **case.options) if spec.params is not None else None
    shapes = case.input_shapes()
    try:
        with user_code(spec):
            module = case.build("meta")
            exact, log = count_detailed(module, meta_inputs(shapes))
            params_counted = param_count(module)
            training = _training_step(case, shapes) if backward else None
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
    name: str, attn: str | None = None, preset: str | None = None, frames: int | None = None, size: int | None = None,
    batch: int = 1, options: Mapping[str, Any] | None = None,
) -> NetworkCase:
    """``attn=None``: the preset's default attention (``none`` but for presets that name one, e.g. BANet-Lite's
    ``cs``); ``"none"`` asks for the plain network."""
    from attnbench.networks.registry import get_network

    spec = get_network(name)
    if attn is None:
        attn = spec.default_attn(preset)
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
        "custom": "frames" in case.kwargs or "size" in case.kwargs,
        "input_shape": list(case.input_shapes()[0]),
        "input_shapes": [list(s) for s in case.input_shapes()],
        "params": param_count(module),
        "params_analytic": case.params(),
        "attention_sites": [{"where": s.where, "shape": s.shape.as_list()} for s in sites],
        "counted": counted,
        "attention_flops_analytic": block_cost.flops,
        "units": UNITS,
    }
