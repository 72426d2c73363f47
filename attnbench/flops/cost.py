"""The unit of account: a cost broken down by op category and by kind of work.

Every count in attnbench is kept as two integers per op category:

* ``mac``: multiply-accumulates (one multiply and one add), the work of convolutions, linear layers
  and matrix products;
* ``op``: single arithmetic operations (an add, a compare, an exp, a divide ...).

From these, FLOPs = 2 x mac + op (a multiply-add counts as 2) and MACs = mac (a multiply-add counts as
1; single operations are not MACs). Other counting conventions (see ``conventions``) are linear
combinations of the same cells, so one breakdown serves all of them.

The primitives below are pure integer functions of shapes; both the closed-form block formulas and the
op-level counter are built from them, so that the two agree by construction where the maths agrees, and
the tests check that they do.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from math import prod

CATEGORIES: tuple[str, ...] = (
    "convolution",
    "linear",
    "matmul",
    "normalisation",
    "pooling",
    "softmax",
    "elementwise",
)
KINDS: tuple[str, ...] = ("mac", "op")

# Work per element for the ops that are not multiply-accumulates (the convention of attnbench's exact
# counter; written once here and used by formulas and counter alike).
SOFTMAX_OPS_PER_ELEMENT = 5  # max, subtract, exp, sum, divide
BATCHNORM_OPS_PER_ELEMENT = 2  # inference: folded scale (multiply) and shift (add)
ELEMENTWISE_OPS_PER_ELEMENT = 1  # add, mul, relu, sigmoid, clamp ...: one op per output element


@dataclass(frozen=True)
class Cost:
    """Integer work, keyed by (category, kind). Add costs with ``+``; scale with ``*``."""

    cells: Mapping[tuple[str, str], int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        clean: dict[tuple[str, str], int] = {}
        for (category, kind), value in self.cells.items():
            if category not in CATEGORIES or kind not in KINDS:
                raise ValueError(f"unknown cost cell {(category, kind)}")
            if value:
                clean[(category, kind)] = int(value)
        object.__setattr__(self, "cells", clean)

    def __add__(self, other: "Cost") -> "Cost":
        merged = dict(self.cells)
        for key, value in other.cells.items():
            merged[key] = merged.get(key, 0) + value
        return Cost(merged)

    def __mul__(self, times: int) -> "Cost":
        return Cost({k: v * int(times) for k, v in self.cells.items()})

    __rmul__ = __mul__

    def __iter__(self) -> Iterator[tuple[tuple[str, str], int]]:
        return iter(sorted(self.cells.items()))

    def get(self, category: str, kind: str) -> int:
        return self.cells.get((category, kind), 0)

    @property
    def macs(self) -> int:
        """Multiply-accumulates (convolution, linear, matmul), each counted once."""
        return sum(v for (_, kind), v in self.cells.items() if kind == "mac")

    @property
    def flops(self) -> int:
        """FLOPs: 2 per multiply-accumulate plus 1 per single operation."""
        return 2 * self.macs + sum(v for (_, kind), v in self.cells.items() if kind == "op")

    def category_flops(self, category: str) -> int:
        return 2 * self.get(category, "mac") + self.get(category, "op")

    def by_category(self) -> dict[str, int]:
        """FLOPs per category, every category present (zero where none)."""
        return {c: self.category_flops(c) for c in CATEGORIES}

    def to_dict(self) -> dict[str, dict[str, int]]:
        return {c: {k: self.get(c, k) for k in KINDS} for c in CATEGORIES}

    @staticmethod
    def total(costs: Iterable["Cost"]) -> "Cost":
        out = Cost()
        for c in costs:
            out = out + c
        return out


ZERO = Cost()


def conv(out_elems: int, in_channels_per_group: int, kernel: Iterable[int], bias: bool) -> Cost:
    """Convolution: one MAC per output element, input channel of its group and kernel tap; bias is one add
    per output element."""
    macs = out_elems * in_channels_per_group * prod(kernel)
    return Cost({("convolution", "mac"): macs, ("convolution", "op"): out_elems if bias else 0})


def conv_transpose(
    in_elems: int, out_channels_per_group: int, kernel: Iterable[int], out_elems: int, bias: bool
) -> Cost:
    """Transposed convolution: every input element is multiplied by every tap of its group's kernels."""
    macs = in_elems * out_channels_per_group * prod(kernel)
    return Cost({("convolution", "mac"): macs, ("convolution", "op"): out_elems if bias else 0})


def linear(rows: int, in_features: int, out_features: int, bias: bool) -> Cost:
    """A fully connected layer applied to ``rows`` vectors."""
    return Cost(
        {
            ("linear", "mac"): rows * in_features * out_features,
            ("linear", "op"): rows * out_features if bias else 0,
        }
    )


def matmul(batch: int, m: int, k: int, n: int) -> Cost:
    """``batch`` products of an m x k by a k x n matrix (activations times activations)."""
    return Cost({("matmul", "mac"): batch * m * k * n})


def softmax(elements: int) -> Cost:
    return Cost({("softmax", "op"): SOFTMAX_OPS_PER_ELEMENT * elements})


def batchnorm(elements: int) -> Cost:
    """Batch norm in inference: statistics folded into one multiply and one add per element."""
    return Cost({("normalisation", "op"): BATCHNORM_OPS_PER_ELEMENT * elements})


def pool(out_elems: int, window: int) -> Cost:
    """Pooling or reduction: one op (add or compare) per input element in each output's window."""
    return Cost({("pooling", "op"): out_elems * window})


def reduce(in_elems: int) -> Cost:
    """A reduction (mean, sum, max) over some dimensions: one op per input element."""
    return Cost({("pooling", "op"): in_elems})


def eltwise(elements: int, ops_per_element: int = ELEMENTWISE_OPS_PER_ELEMENT) -> Cost:
    """Element-wise work (add, multiply, activation): one op per output element per op."""
    return Cost({("elementwise", "op"): elements * ops_per_element})


def adaptive_window_sum(in_size: int, out_size: int) -> int:
    """Sum over outputs of the window lengths of a 1-D adaptive pool (PyTorch's start/end rule)."""
    total = 0
    for i in range(out_size):
        start = (i * in_size) // out_size
        end = -((-(i + 1) * in_size) // out_size)
        total += end - start
    return total
