"""A figure printed in a paper: its value and unit as printed, where it is printed, and what it is about."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Figure:
    """One printed number (a fact typed from the paper).

    ``subject`` says what the number is about in attnbench's terms (network, attention, preset, quantity ...);
    it is read by :mod:`attnbench.papers.reproduce`, which computes our value for it."""

    key: str  # stable identifier, "<paper>.<table>.<what>"
    paper: str  # banet, sta, eam, w3, stpa
    table: str  # "Table 4", "Sec. III-C" ...
    item: str  # what it is, in words
    value: float  # as printed
    unit: str  # as printed: "GFLOPs", "M", "%", "MB" ...
    subject: Mapping[str, Any] = field(default_factory=dict)
    decimals: int | None = None  # digits printed after the point, where the float drops them (46.30 -> 2)

    @property
    def printed_decimals(self) -> int:
        """Digits after the decimal point as printed: ``decimals``, else read from the value (33 -> 0, 65.0 -> 1)."""
        if self.decimals is not None:
            return self.decimals
        if isinstance(self.value, int):
            return 0
        text = repr(float(self.value))
        return 0 if "e" in text else len(text.split(".")[1])
