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
