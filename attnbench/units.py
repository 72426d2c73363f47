"""Numbers for people: a value with an SI prefix and its unit. Pure Python (no pandas), so that light layers
(the performance gate) can use it."""

from __future__ import annotations


def human(value: float | int | None, unit: str = "") -> str:
    """1234567 -> '1.235 M' with the unit after it; None -> 'n/a'."""
    if value is None:
        return "n/a"
    v = float(value)
    for scale, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= scale:
            return f"{v / scale:.4g} {prefix}{unit}"
    return f"{v:.4g} {unit}".rstrip()
