"""Reconciliation: per op category, the closed form against each counter, and the reason for every gap.

Each external counter's number (already converted to FLOPs) is compared with attnbench's exact breakdown,
whose cells separate multiply-accumulates from single operations. A gap is explained by the first rule
that reproduces the counter's number exactly from those cells; a gap no rule reproduces is reported as
unexplained, never hidden.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from attnbench.flops.conventions import CONVENTIONS
from attnbench.flops.cost import CATEGORIES, Cost
from attnbench.flops.counters import PRODUCTS, ExternalCount

ROW_CATEGORIES: tuple[str, ...] = ("convolution", PRODUCTS, "normalisation", "pooling", "softmax", "elementwise")

_SINGLE_OPS = {
    "convolution": "bias adds",
    PRODUCTS: "bias adds",
    "normalisation": "scale and shift",
    "pooling": "adds/compares",
    "softmax": "max, subtract, exp, sum, divide",
    "elementwise": "activations, adds, multiplies",
}


def _cells(cost: Cost, row: str) -> tuple[int, int]:
    cats = ("linear", "matmul") if row == PRODUCTS else (row,)
    return sum(cost.get(c, "mac") for c in cats), sum(cost.get(c, "op") for c in cats)


def explain(row: str, exact: Cost, value: int | None, ops_in_row: list[str]) -> str:
    """Why ``value`` (a counter's FLOPs for one row) differs from the exact count, or that it agrees."""
    mac, op = _cells(exact, row)
    ours = 2 * mac + op
    if value is None:
        return "no per-category breakdown from this counter"
    if value == ours:
        return "agrees"
    if value == 0 and ours > 0:
        seen = ", ".join(ops_in_row) or "these ops"
        return f"not counted: {seen} ({ours:,} FLOPs)"
    if mac and value == 2 * mac:
        return f"multiply-adds only; {op:,} FLOPs of {_SINGLE_OPS[row]} not counted"
    if value == 2 * (mac + op):
        return f"{_SINGLE_OPS[row]} counted as MACs, so the x2 conversion doubles them (+{op:,} FLOPs)"
    if not mac and op and value * 2 == op:
        return f"counts half of our per-element work for {_SINGLE_OPS[row]} (different per-element convention)"
    if not mac and op and value == 2 * op:
        return f"counts {_SINGLE_OPS[row]} as MACs (x2 after conversion)"
    if ours == 0:
        return f"counter reports {value:,} FLOPs where the exact counter sees none (unexplained)"
    return f"unexplained: {value / ours:.4g} x ours"


# Counters whose number each convention model in :mod:`attnbench.flops.conventions` predicts (in MACs; x2 to
# compare with the counter's converted FLOPs). A model that reproduces the counter's number exactly explains
# the whole gap; one that does not leaves the gap reported as unexplained.
MODELS = {"torch": "macs", "fvcore": "fvcore", "ptflops": "ptflops", "ptflops-aten": "ptflops-aten"}


@dataclass
class ReconRow:
    category: str
    analytic: int | None  # None: the block declares no closed form
    exact: int
    counters: dict[str, int | None]
    reasons: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        return {"category": self.category, "analytic_flops": self.analytic, "exact_flops": self.exact,
                "counters_flops": self.counters, "reasons": self.reasons}


def reconcile(
    analytic: Cost | None, exact: Cost, per_op: dict[str, Cost], externals: list[ExternalCount], log: Any = None
) -> list[ReconRow]:
    """Rows per category plus a total row; FLOPs throughout (multiply-add = 2). ``analytic`` is None for a block
    that declares no closed form (its cells are then None)."""
    ops_by_row: dict[str, list[str]] = {r: [] for r in ROW_CATEGORIES}
    for name, cost in per_op.items():
        for cat in CATEGORIES:
            if cost.category_flops(cat):
                row = PRODUCTS if cat in ("linear", "matmul") else cat
                ops_by_row[row].append(name)
    rows: list[ReconRow] = []
    for row in ROW_CATEGORIES:
        a_mac, a_op = _cells(analytic, row) if analytic is not None else (0, 0)
        e_mac, e_op = _cells(exact, row)
        values: dict[str, int | None] = {}
        reasons: dict[str, str] = {}
        for ext in externals:
            if ext.flops is None or ext.by_category is None:
                values[ext.counter] = None
                reasons[ext.counter] = ext.skipped or "no per-category breakdown from this counter"
                continue
            v = ext.by_category.get(row, 0)
            values[ext.counter] = v
            reasons[ext.counter] = explain(row, exact, v, sorted(ops_by_row[row]))
        if 2 * a_mac + a_op or 2 * e_mac + e_op or any(values.values()):
            rows.append(ReconRow(row, 2 * a_mac + a_op if analytic is not None else None, 2 * e_mac + e_op, values, reasons))
    total_values: dict[str, int | None] = {}
    total_reasons: dict[str, str] = {}
    for ext in externals:
        total_values[ext.counter] = ext.flops
        if ext.flops is None:
            total_reasons[ext.counter] = ext.skipped or "no result"
            continue
        other = ext.by_category.get("other", 0) if ext.by_category else 0
        model = CONVENTIONS.get(MODELS.get(ext.counter, ""))
        predicted = 2 * model(exact, per_op, log) if model else None
        if ext.flops == exact.flops:
            total_reasons[ext.counter] = "agrees"
        elif ext.flops == 2 * exact.macs:
            total_reasons[ext.counter] = f"multiply-adds only; {exact.flops - 2 * exact.macs:,} FLOPs of single ops not counted"
        elif predicted is not None and predicted == ext.flops:
            total_reasons[ext.counter] = (f"{ext.flops - exact.flops:+,} FLOPs, reproduced exactly by the "
                                          f"'{model.name}' convention ({model.summary}), x2"
                                          + (f"; missed: {'; '.join(ext.missed[:4])}" if ext.missed else ""))
        else:
            gap = ext.flops - exact.flops
            parts = [f"{gap:+,} FLOPs ({ext.flops / exact.flops:.4g} x ours)" if exact.flops else f"{gap:+,} FLOPs"]
            if other:
                parts.append(f"{other:,} FLOPs on ops outside our categories")
            if ext.missed:
                parts.append("missed: " + "; ".join(ext.missed[:4]) + (" ..." if len(ext.missed) > 4 else ""))
            total_reasons[ext.counter] = ", ".join(parts)
    rows.append(ReconRow("total", analytic.flops if analytic is not None else None, exact.flops, total_values, total_reasons))
    return rows
