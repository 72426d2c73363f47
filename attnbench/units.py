"""Numbers for people, one rule everywhere. Pure Python (no pandas), so that light layers (the performance gate)
can use it.

* counts of work (FLOP, MAC, FLOP/s): SI prefixes (k, M, G, T = 10^3 ... 10^12), chosen by magnitude, with
  four significant figures kept (30,999,535,616 FLOPs is "31.00 GFLOP", never "31 GFLOP" beside "30.68 GFLOP");
* bytes: binary prefixes (KiB, MiB, GiB, TiB = 2^10 ... 2^40), never MB or GB;
* yes/no for booleans, n/a for a missing value.
"""

from __future__ import annotations

import math

SI = ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))
BINARY = ((2**40, "TiB"), (2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB"))


def four_figures(v: float) -> str:
    """Four significant figures, trailing zeros kept (31.00, 1.500, 612.0, 1.920); from 10^4 on, whole units."""
    if not math.isfinite(v):
        return "n/a"
    if abs(v) >= 1e4:  # whole units: 12345, not 1.235e+04
        return f"{v:.0f}"
    text = f"{v:#.4g}"
    return text[:-1] if text.endswith(".") else text


_four = four_figures


def human(value: float | int | None, unit: str = "") -> str:
    """1234567 -> '1.235 M' with the unit after it (SI prefixes; bytes: see :func:`human_bytes`); None -> 'n/a'."""
    if value is None:
        return "n/a"
    if unit == "B":
        return human_bytes(value)
    v = float(value)
    for scale, prefix in SI:
        if abs(v) >= scale:
            return f"{_four(v / scale)} {prefix}{unit}"
    if float(v).is_integer():
        return f"{int(v)} {unit}".rstrip()
    return f"{_four(v)} {unit}".rstrip()


def human_bytes(value: float | int | None) -> str:
    """629407744 -> '600.2 MiB'; None -> 'n/a'."""
    if value is None:
        return "n/a"
    v = float(value)
    for scale, prefix in BINARY:
        if abs(v) >= scale:
            return f"{_four(v / scale)} {prefix}"
    return f"{int(v)} B" if v.is_integer() else f"{_four(v)} B"


def yes_no(value: bool | None) -> str:
    return "n/a" if value is None else ("yes" if value else "no")
