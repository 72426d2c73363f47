"""Which cases a baseline covers, their stable keys, and their exact parameters and FLOPs.

A case is a block at a preset (``cs@banet``) or at a custom shape (``cs@1x64x8x14x14``, plus the options
that differ from the block's defaults). Counting runs the exact counter on the meta device
(:func:`attnbench.cases.flops_report`); nothing is timed here."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from attnbench import cases
from attnbench.blocks.registry import all_blocks, get_block
from attnbench.errors import UsageError, unknown
from attnbench.gate.schema import SIZES
from attnbench.text import clean


@dataclass(frozen=True)
class Item:
    """One baseline entry: a block case, its stable key and the preset its options came from."""

    key: str
    case: cases.Case
    base_preset: str


def entry_key(case: cases.Case) -> str:
    """``cs@banet`` for a preset; ``cs@1x64x8x14x14`` (plus ``[opt=value,...]`` for options that differ
    from the block's defaults) for a custom shape."""
    if case.preset is not None:
        return f"{case.spec.name}@{case.preset.name}"
    defaults = case.spec.resolve_options()
    changed = [f"{k}={v}" for k, v in sorted(case.options.items()) if defaults.get(k) != v]
    return f"{case.spec.name}@{case.shape}" + (f"[{','.join(changed)}]" if changed else "")


def parse_list(text: str | None) -> list[str]:
    return [p.strip() for p in (text or "").split(",") if p.strip()]


def select(modules: Sequence[str] | None, presets: str | None, sizes: Mapping[str, int | None] | None) -> list[Item]:
    """The cases a snapshot covers. ``presets``: ``all``, ``default`` (each block's first) or a comma
    list of preset names (default: ``all``, or ``default`` when sizes are given). Sizes replace the
    presets' shapes."""
    sizes = {k: v for k, v in (sizes or {}).items() if v is not None}
    specs = [get_block(m) for m in modules] if modules else all_blocks()
    mode = (presets or ("default" if sizes else "all")).strip()
    wanted = None if mode in ("all", "default") else parse_list(mode)
    if wanted is not None:
        known = {p.name for s in specs for p in s.presets}
        for name in wanted:
            if name not in known:
                raise unknown("preset", name, known)
    items: dict[str, Item] = {}
    for spec in specs:
        names = [p.name for p in spec.presets]
        if mode == "default":
            names = names[:1]
        elif wanted is not None:
            names = [n for n in names if n in wanted]
            if not names and modules:
                raise UsageError(f"block {spec.name} has none of the presets {', '.join(wanted)}; "
                                 f"its presets: {', '.join(p.name for p in spec.presets)}")
        for name in names:
            case = cases.resolve(spec.name, name, sizes)
            key = entry_key(case)
            items.setdefault(key, Item(key, case, name))
    if not items:
        raise UsageError("the selection is empty")
    return list(items.values())


def resolve_entry(entry: Mapping[str, Any]) -> cases.Case:
    """The case a baseline entry describes, as the code builds it today (a preset entry by its preset
    name, so that a changed preset shows up; a custom one by its stored shape and options)."""
    if entry.get("preset"):
        return cases.resolve(entry["module"], entry["preset"])
    sizes = dict(zip(SIZES, entry["input_shape"]))
    return cases.resolve(entry["module"], entry.get("base_preset"), sizes, entry.get("options") or {})


# What counting a case at a size torch cannot represent (or the closed forms cannot evaluate) raises.
_COUNT_ERRORS = (RuntimeError, TypeError, ValueError, OverflowError, MemoryError, RecursionError, ZeroDivisionError)


def static_record(case: cases.Case, key: str | None = None) -> dict[str, Any]:
    """Counted parameters and exact FLOPs (per op-category cells) of a case; meta device, no memory.
    A case that cannot be counted (e.g. sizes beyond what torch can index) is a usage error, one line."""
    try:
        report = cases.flops_report(case, ["exact"])
    except UsageError:
        raise
    except _COUNT_ERRORS as e:
        what = clean(key or entry_key(case))
        raise UsageError(f"cannot count the parameters and FLOPs of {what} at input shape {case.shape.as_list()}: "
                         f"{type(e).__name__}: {clean((str(e).strip().splitlines() or [''])[0])[:200]}") from None
    if report.exact is not None:
        cost, unhandled, source = report.exact.cost, dict(report.exact.unhandled), "exact counter"
    else:  # a shape past torch's tensor limits: the closed forms (equal to the exact count wherever both run)
        cost, unhandled = report.analytic, {}
        source = f"closed form ({getattr(report, 'exact_skipped', None) or 'the exact counter could not run'})"
    return {
        "params": report.params_counted,
        "flops": {"total": cost.flops, "macs": cost.macs, "by_category": cost.by_category(), "cells": cost.to_dict(),
                  "counted_by": source},
        "unhandled_ops": unhandled,
    }
