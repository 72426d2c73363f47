"""Verdicts on printed figures: how a row of ``attnbench reproduce`` is judged, and the summary of a run.

A row compares one printed figure with ours. Its **verdict** is one of

================  ==========================================================================================
reproduced        ours holds under the paper's counting convention and attnbench's configuration
reproduced-with   ours holds only under another documented configuration, named in ``configuration``
                  (W3's blocks with ratio 8 and full temporal convolutions, say); never counted as reproduced
indicative        a speed measured on another device (and possibly another precision): shown beside the
                  paper's, never a reproduction
off               ours does not hold under any configuration tried; ``reason`` says by how much and why
not-determinable  there is no value of ours (a speed with no device run on disk, a 0/0 ratio)
================  ==========================================================================================

What "holds" means depends on the row's **basis**:

* ``total`` and ``ratio``: |ours - printed| <= 1% of the printed value;
* ``increment``: an attention row is judged on what the attention adds over the base network, not on the
  total -- an attention that adds 4 MFLOPs to a 10 GFLOP network would pass any 1% test on the total even if
  it cost nothing. The paper's increment is its printed attention figure minus its printed base figure (or
  the printed increment itself, for a figure that is one); ours is the same difference of our counts. It
  holds when |ours - paper's| <= one unit in the last printed digit of the figure (EAM's 10.106 - 10.102:
  +/-0.001 G), or 1% of the paper's increment where that is larger.

Every row also records its **printed precision** (digits after the point) and the paper's **rounding**
(``round``, or ``truncate`` where the paper cuts), and ``at_printed_precision``: whether our value, cut or
rounded the paper's way to its printed digits, is exactly the printed figure.

The counting convention is chosen once per paper (the one under which most of its FLOP rows hold, with
attnbench's configuration), and so is the configuration: each open choice's first entry is attnbench's
default. A figure that holds only under another entry is ``reproduced-with`` that entry.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from attnbench.flops.conventions import CONVENTIONS

TOLERANCE = 0.01  # totals and ratios: |ours - printed| <= 1% of printed
VERDICTS: tuple[str, ...] = ("reproduced", "reproduced-with", "indicative", "off", "not-determinable")
BASES: tuple[str, ...] = ("total", "increment", "ratio")
SHARE_QUANTITIES: tuple[str, ...] = ("params", "flops", "size")  # what the reproduced share counts
_SLACK = 1 + 1e-9  # keeps a boundary case (exactly 1%, exactly one unit) on the holding side despite float rounding


def delta_pct(paper_value: float | None, value: float | None) -> float | None:
    """100 (value - paper_value) / paper_value; None when either is missing or the paper's value is 0."""
    if paper_value is None or value is None or paper_value == 0:
        return None
    return 100.0 * (value - paper_value) / paper_value


def within(paper_value: float | None, value: float | None, tolerance: float = TOLERANCE) -> bool | None:
    """|value - paper_value| <= tolerance x |paper_value|; None when either is missing."""
    if value is None or paper_value is None:
        return None
    return abs(value - paper_value) <= tolerance * abs(paper_value) * _SLACK


def verdict(paper_value: float | None, value: float | None, tolerance: float = TOLERANCE) -> str:
    """A total's verdict under attnbench's configuration: reproduced, off or not-determinable."""
    ok = within(paper_value, value, tolerance)
    return "not-determinable" if ok is None else "reproduced" if ok else "off"


def increment_holds(paper_increment: float, increment: float, decimals: int) -> bool:
    """|ours - paper's| <= max(one unit in the last printed digit, 1% of the paper's increment)."""
    slack = max(10.0 ** -decimals, TOLERANCE * abs(paper_increment))
    return abs(increment - paper_increment) <= slack * _SLACK


def cut(value: float, decimals: int, rounding: str) -> float:
    """``value`` to ``decimals`` digits the paper's way: ``truncate`` (toward zero) or ``round`` (half up)."""
    scale = 10**decimals
    scaled = value * scale
    if rounding == "truncate":
        n = math.floor(abs(scaled) + 1e-9) * (1 if scaled >= 0 else -1)
    else:
        n = math.floor(scaled + 0.5 + 1e-9)
    return n / scale


def at_printed(paper_value: float, value: float | None, decimals: int, rounding: str) -> bool | None:
    """Whether ``value`` cut or rounded to the printed digits is exactly the printed figure."""
    if value is None:
        return None
    return round(cut(value, decimals, rounding) * 10**decimals) == round(paper_value * 10**decimals)


# ---------------------------------------------------------------------------------------------------------
# What a row is made of

Compute = Callable[[str | None, str], float | None]  # (convention or None, configuration) -> value, paper's scale


@dataclass
class Spec:
    """How to get our value for one printed figure, and how to judge it."""

    paper: str
    table: str
    item: str
    paper_value: float
    paper_unit: str
    key: str
    compute: Compute
    unit: Callable[[str | None, str], str]
    kind: str = "flops"  # "flops": depends on the counting convention; "fixed": does not; "speed": measured
    quantity: str = "flops"  # params, flops, size, layers, speed: the share counts params, flops and size
    fixed_convention: str = ""  # what a fixed row counts: "params", "layers", "bytes", "measured VPS ..."
    basis: str = "total"  # total, increment, ratio
    base: Compute | None = None  # increment rows: our base network, same scale
    paper_base: float | None = None  # increment rows: the paper's printed base figure (None: the figure is one)
    decimals: int = 0
    rounding: str = "round"
    family: str | None = None  # the open choice this row depends on
    choices: tuple[str, ...] = ("default",)  # configurations; the first is attnbench's
    paper_value_at: Callable[[str], float] | None = None  # a printed formula evaluated at the configuration
    evaluated_at: str = ""  # "r=16, chosen by attnbench": the paper's formula at a parameter it does not print
    not_determinable: str = ""
    why: Callable[[str | None, str], str] | None = None  # the cause of a gap, with computed numbers
    note: Callable[[str], str] | None = None  # what another configuration implies (reproduced-with rows)
    devices: str = ""  # speed rows: the paper's device and ours, and the precision

    @property
    def default(self) -> str:
        return self.choices[0]

    def printed(self, choice: str) -> float:
        return self.paper_value_at(choice) if self.paper_value_at else self.paper_value

    def value(self, conv: str | None, choice: str) -> float | None:
        try:
            return self.compute(conv, choice)
        except ZeroDivisionError:
            return None

    def increment(self, conv: str | None, choice: str, value: float | None) -> tuple[float | None, float | None]:
        """(paper's increment, ours) for an increment row; (None, None) otherwise."""
        if self.basis != "increment" or value is None:
            return None, None
        if self.paper_base is None:  # the printed figure is itself an increment
            return self.printed(choice), value
        base = self.base(conv, choice) if self.base else None
        return self.printed(choice) - self.paper_base, (None if base is None else value - base)

    def miss(self, conv: str | None, choice: str) -> float:
        """How far ours is from the paper's figure (its increment, for increment rows), relative to it."""
        value = self.value(conv, choice)
        paper, ours = self.increment(conv, choice, value) if self.basis == "increment" else (self.printed(choice), value)
        if paper is None or ours is None:
            return float("inf")
        return abs(ours - paper) / abs(paper) if paper else abs(ours)

    def holds(self, conv: str | None, choice: str) -> bool | None:
        value = self.value(conv, choice)
        if value is None:
            return None
        if self.basis == "increment":
            paper_inc, ours = self.increment(conv, choice, value)
            return None if ours is None or paper_inc is None else increment_holds(paper_inc, ours, self.decimals)
        return within(self.printed(choice), value)


# ---------------------------------------------------------------------------------------------------------
# Judging a paper's rows


def _score(specs: Sequence[Spec], conv: str) -> tuple[int, float]:
    """(minus the rows that hold, median |delta| of the totals in % to 0.01): smaller is better."""
    hits = sum(1 for s in specs if s.holds(conv, s.default))
    spread = []
    for s in specs:
        d = delta_pct(s.printed(s.default), s.value(conv, s.default))
        spread.append(abs(d) if d is not None else float("inf"))
    return (-hits, round(statistics.median(spread), 2) if spread else float("inf"))


def paper_convention(specs: Sequence[Spec]) -> tuple[str | None, list[str]]:
    """The convention under which most of the paper's FLOP rows hold with attnbench's configuration (ties:
    smallest median |delta|, then CONVENTIONS order), and every convention scoring the same."""
    flop_specs = [s for s in specs if s.kind == "flops"]
    if not flop_specs:
        return None, []
    order = list(CONVENTIONS)
    scores = {c: _score(flop_specs, c) for c in order}
    best = min(order, key=lambda c: (scores[c], order.index(c)))
    return best, [c for c in order if scores[c] == scores[best]]


def evaluate(specs: Sequence[Spec]) -> list[dict[str, Any]]:
    """Rows (JSON-able dicts) for one paper's specs."""
    if not specs:
        return []
    conv, tied = paper_convention(specs)
    order = list(CONVENTIONS)
    rows = []
    for s in specs:
        c = conv if s.kind == "flops" else None
        rows.append(_row(s, c, tied if s.kind == "flops" else [], order))
    return rows


def _row(s: Spec, conv: str | None, tied: list[str], order: list[str]) -> dict[str, Any]:
    default = s.default
    value = s.value(conv, default)
    choice = default
    if s.kind == "speed":
        v = "indicative" if value is not None else "not-determinable"
    else:
        ok = s.holds(conv, default)
        v = "not-determinable" if ok is None else "reproduced" if ok else "off"
        if v == "off":
            holding = [other for other in s.choices[1:] if s.holds(conv, other)]
            if holding:  # the configuration that comes closest of those that hold
                v, choice = "reproduced-with", min(holding, key=lambda ch: (s.miss(conv, ch), s.choices.index(ch)))
    shown = s.value(conv, choice)
    pv = s.printed(choice)
    paper_inc, inc = s.increment(conv, choice, shown)
    by_conv: dict[str, float | None] = {}
    best = s.fixed_convention
    if s.kind == "flops":
        by_conv = {c: s.value(c, default) for c in order}
        ranked = [c for c in order if by_conv[c] is not None]
        best = min(ranked, key=lambda c: (abs(delta_pct(pv, by_conv[c]) or 0.0), order.index(c))) if ranked else conv or ""
    tried = [{"configuration": ch, "value": s.value(conv, ch), "holds": s.holds(conv, ch),
              **({"paper_value": s.printed(ch)} if s.paper_value_at else {})} for ch in s.choices] if s.family else []
    row: dict[str, Any] = {
        "paper": s.paper, "table": s.table, "item": s.item, "paper_value": pv, "value": shown,
        "unit": s.unit(conv, choice), "convention": conv or s.fixed_convention,
        "delta_pct": delta_pct(pv, shown), "verdict": v, "reason": "",
        "basis": s.basis, "quantity": s.quantity, "printed_decimals": s.decimals, "rounding": s.rounding,
        "at_printed_precision": None if s.kind == "speed" else at_printed(pv, shown, s.decimals, s.rounding),
        "paper_base": s.paper_base if s.basis == "increment" else None,
        "paper_increment": paper_inc, "increment": inc,
        "configuration": choice if s.family else None,
        "default_configuration": default if s.family else None,
        "evaluated_at": s.evaluated_at or None,
        "devices": s.devices or None,
        "key": s.key, "paper_unit": s.paper_unit, "best_convention": best, "by_convention": by_conv,
        "tried": tried, "conventions_tied": tied,
    }
    row["reason"] = _reason(s, row, conv)
    return row


def _fmt(v: float | None, decimals: int = 0) -> str:
    """4 significant digits, or two digits past the printed ones where the paper prints more."""
    if v is None:
        return "n/a"
    if abs(v) >= 1e6:
        return f"{v:,.0f}"
    return f"{v:.{decimals + 2}f}" if decimals >= 2 else f"{v:.4g}"


def _inc_text(row: dict[str, Any], decimals: int) -> str:
    return (f"increment: ours {row['increment']:+.{decimals + 2}g} vs the paper's {row['paper_increment']:+.{decimals + 2}g} "
            f"(holds within {max(10.0 ** -decimals, TOLERANCE * abs(row['paper_increment'])):.{max(decimals, 1)}g})")


def _reason(s: Spec, row: dict[str, Any], conv: str | None) -> str:
    v = row["verdict"]
    parts: list[str] = []
    if v == "not-determinable":
        return s.not_determinable or "not-determinable: no value"
    if v == "indicative":
        parts.append(f"indicative, not a reproduction: {s.devices}" if s.devices else "indicative: measured on another device")
        if s.why is not None:
            parts.append(s.why(conv, row["configuration"] or s.default))
        return "; ".join(p for p in parts if p)
    if row["basis"] == "increment" and row["increment"] is not None and v != "reproduced-with":
        parts.append(_inc_text(row, s.decimals))
    if v == "off":
        parts.append(f"ours {_fmt(row['value'], s.decimals)} {row['unit']} vs printed {_fmt(row['paper_value'], s.decimals)} {row['paper_unit']} "
                     f"({row['delta_pct']:+.2f}%)" + (f" under {conv}" if conv else ""))
        best = row["best_convention"]
        if conv and best != conv and row["by_convention"].get(best) is not None:
            bv = row["by_convention"][best]
            parts.append(f"closest convention {best}: {_fmt(bv)} ({delta_pct(row['paper_value'], bv):+.2f}%)")
        if s.family and len(s.choices) > 1:
            closest = min(row["tried"], key=lambda t: abs(delta_pct(t.get("paper_value", row["paper_value"]), t["value"]) or float("inf")))
            parts.append(f"none of the {len(s.choices)} configurations tried holds (closest: {closest['configuration']}, "
                         f"{_fmt(closest['value'])})")
        if s.why is not None:
            parts.append(s.why(conv, row["configuration"] or s.default))
    elif v == "reproduced-with":
        dv = s.value(conv, s.default)
        text = f"holds only with {row['configuration']}"
        if row["basis"] == "increment" and row["increment"] is not None:
            text += f" ({_inc_text(row, s.decimals)})"
        _, dinc = s.increment(conv, s.default, dv)
        text += f"; attnbench's configuration ({s.default}) gives {_fmt(dv)}"
        text += f" (increment {dinc:+.4g})" if dinc is not None else f" ({delta_pct(row['paper_value'], dv):+.2f}%)" if dv is not None else ""
        parts.append(text)
        if s.note is not None:
            parts.append(s.note(row["configuration"]))
    if s.evaluated_at:
        parts.append(f"the printed formula evaluated at {s.evaluated_at}")
    return "; ".join(p for p in parts if p)


# ---------------------------------------------------------------------------------------------------------
# Summary


def rounding_evidence(rows: Sequence[dict[str, Any]]) -> dict[str, int]:
    """Of the parameter rows with a value (counts that need no convention), how many our count gives
    exactly at the printed digits when cut (``truncate``) and when rounded (``round``)."""
    params = [r for r in rows if r.get("quantity") == "params" and r.get("value") is not None]
    return {"rows": len(params), **{mode: sum(1 for r in params if at_printed(r["paper_value"], r["value"],
                                                                              r.get("printed_decimals", 0), mode))
                                    for mode in ("truncate", "round")}}


def summary(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Counts per verdict; the reproduced share -- plain ``reproduced`` over the parameter, FLOP and size
    figures only (speed ratios and layer counts excluded) --; and per paper: its verdicts, share,
    convention, configuration, and how its printed digits were cut."""
    counts = {v: sum(1 for r in rows if r["verdict"] == v) for v in VERDICTS}
    counted = [r for r in rows if r.get("quantity", "flops") in SHARE_QUANTITIES]
    by_paper: dict[str, dict[str, Any]] = {}
    for r in rows:
        p = by_paper.setdefault(r["paper"], {"rows": 0, **{v: 0 for v in VERDICTS}, "convention": None,
                                             "counted": 0, "counted_reproduced": 0, "configuration": {}})
        p["rows"] += 1
        p[r["verdict"]] += 1
        if r.get("quantity", "flops") in SHARE_QUANTITIES:
            p["counted"] += 1
            p["counted_reproduced"] += r["verdict"] == "reproduced"
        if r.get("by_convention"):
            p["convention"] = r["convention"]
            p["conventions_tied"] = r.get("conventions_tied", [])
        if r.get("default_configuration"):
            p["configuration"][r["key"]] = r["default_configuration"]
        p["rounding"] = r.get("rounding", "round")
    for name, p in by_paper.items():
        p["share_reproduced"] = p["counted_reproduced"] / p["counted"] if p["counted"] else 0.0
        p["configuration"] = sorted(set(p["configuration"].values()))
        p["rounding_evidence"] = rounding_evidence([r for r in rows if r["paper"] == name])
    reproduced = sum(1 for r in counted if r["verdict"] == "reproduced")
    return {
        "rows": len(rows),
        "verdicts": counts,
        "counted_rows": len(counted),
        "reproduced": reproduced,  # plain reproduced among the counted rows
        "share_reproduced": reproduced / len(counted) if counted else 0.0,
        "tolerance_pct": 100 * TOLERANCE,
        "by_paper": by_paper,
    }
