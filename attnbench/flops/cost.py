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
# Normalisation that computes its statistics (layer, group, instance norm; batch norm in training): the mean
# (1 add), centring (1 subtract), the variance (square and accumulate: a multiply-add, 2) and normalising
# (1 multiply by the reciprocal standard deviation); then 1 multiply for an affine weight, 1 add for a bias.
# Per-row or per-channel work (the divide by n, eps, rsqrt) is not counted, as for reductions.
NORM_STATS_OPS_PER_ELEMENT = 5
RMS_NORM_OPS_PER_ELEMENT = 3  # square and accumulate (2), normalise (1): no mean, no centring
VARIANCE_OPS_PER_ELEMENT = 4  # var / std / var_mean: mean (1), centre (1), square and accumulate (2)
LOGSUMEXP_OPS_PER_ELEMENT = 4  # max, subtract, exp, sum (the log per output is not counted)
# Softmax backward, per element: y * (g - sum(g * y)): multiply, accumulate, subtract, multiply. Log-softmax
# backward g - exp(y) * sum(g): accumulate, exp, multiply, subtract. Both 4.
SOFTMAX_BACKWARD_OPS_PER_ELEMENT = 4


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

    @classmethod
    def _checked(cls, cells: dict[tuple[str, str], int]) -> "Cost":
        """A Cost from cells that come from Costs (already checked, non-zero integers): the counter adds
        hundreds of thousands of them per network, so the check in ``__post_init__`` is not run again."""
        obj = object.__new__(cls)
        object.__setattr__(obj, "cells", cells)
        return obj

    def __add__(self, other: "Cost") -> "Cost":
        if not other.cells:
            return self
        if not self.cells:
            return other
        merged = dict(self.cells)
        for key, value in other.cells.items():
            total = merged.get(key, 0) + value
            if total:
                merged[key] = total
            else:
                merged.pop(key, None)
        return Cost._checked(merged)

    def __mul__(self, times: int) -> "Cost":
        n = int(times)
        return Cost._checked({k: v * n for k, v in self.cells.items()} if n else {})

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


# ---------------------------------------------------------------------------------------------------------
# Primitives of the op-level counter's wider coverage (transformer blocks, training). Each docstring states
# the convention; FLOPs = 2 x mac + op as everywhere.


def norm(elements: int, weight: bool, bias: bool, centred: bool = True) -> Cost:
    """A normalisation that computes its statistics (layer / group / instance norm, batch norm in training):
    ``NORM_STATS_OPS_PER_ELEMENT`` per input element (``RMS_NORM_OPS_PER_ELEMENT`` for an RMS norm,
    ``centred=False``), plus 1 per element for an affine weight and 1 for a bias."""
    per = (NORM_STATS_OPS_PER_ELEMENT if centred else RMS_NORM_OPS_PER_ELEMENT) + int(weight) + int(bias)
    return Cost({("normalisation", "op"): per * elements})


def norm_backward(
    elements: int, grad_input: bool, grad_weight: bool, grad_bias: bool, weight: bool,
    statistics: bool = True, centred: bool = True,
) -> Cost:
    """Backward of a normalisation, per input element, each requested gradient counted as if computed alone:

    * x_hat recomputed from the saved statistics (subtract, multiply; 1 multiply for an RMS norm), once, when
      the input or weight gradient is wanted;
    * grad_bias: accumulate g (1); grad_weight: multiply g x x_hat and accumulate (2);
    * grad_input with statistics: g w (1 if weight), sum(g w) (1, centred only), sum(g w x_hat) (2),
      x_hat x that mean (1), the subtracts (2 centred, 1 RMS), multiply by rstd (1): 7 (5 RMS) + weight;
    * grad_input without statistics (batch norm in eval): one multiply by the folded scale (1).
    """
    per = 0
    if (grad_input and statistics) or grad_weight:
        per += 2 if centred else 1
    if grad_bias:
        per += 1
    if grad_weight:
        per += 2
    if grad_input:
        per += ((7 if centred else 5) + int(weight)) if statistics else 1
    return Cost({("normalisation", "op"): per * elements})


def softmax_backward(elements: int) -> Cost:
    """Backward of softmax or log-softmax: ``SOFTMAX_BACKWARD_OPS_PER_ELEMENT`` per element."""
    return Cost({("softmax", "op"): SOFTMAX_BACKWARD_OPS_PER_ELEMENT * elements})


def variance(in_elems: int) -> Cost:
    """var / std / var_mean / std_mean: ``VARIANCE_OPS_PER_ELEMENT`` per input element (a reduction)."""
    return Cost({("pooling", "op"): VARIANCE_OPS_PER_ELEMENT * in_elems})


def logsumexp(in_elems: int) -> Cost:
    """logsumexp: ``LOGSUMEXP_OPS_PER_ELEMENT`` per input element (a reduction)."""
    return Cost({("pooling", "op"): LOGSUMEXP_OPS_PER_ELEMENT * in_elems})


def vector_norm(in_elems: int, ord: float) -> Cost:
    """A p-norm over some dimensions, per input element: 2 for p = 2 (square and accumulate), for p = 1
    (abs, add), for +-inf (abs, compare) and for p = 0 (compare, add); 3 for any other p (abs, pow, add). The
    root per output is not counted."""
    per = 2 if ord in (2, 1, 0) or ord in (float("inf"), float("-inf")) else 3
    return Cost({("pooling", "op"): per * in_elems})


def interpolate(out_elems: int, neighbours: int) -> Cost:
    """Linear-family interpolation (and grid sampling): each output is a weighted sum of its ``neighbours``
    input values (2 per dimension for linear, 4 per dimension for cubic): one multiply per neighbour and one
    add fewer, 2 n - 1 per output element. The weights depend only on the output coordinate and are not
    counted."""
    return Cost({("elementwise", "op"): (2 * neighbours - 1) * out_elems})


def interpolate_backward(grad_out_elems: int, neighbours: int) -> Cost:
    """Backward of :func:`interpolate`: each output gradient is multiplied by its ``neighbours`` weights and
    accumulated into them, 2 n per output-gradient element (n = 1 for nearest: one accumulate)."""
    return Cost({("elementwise", "op"): (2 * neighbours if neighbours > 1 else 1) * grad_out_elems})


def accumulate(elements: int, category: str = "elementwise") -> Cost:
    """Scatter-style accumulation (scatter_add, index_add, embedding backward, max-pool backward, padding
    backward, col2im): one add per accumulated element."""
    return Cost({(category, "op"): elements})


def conv_backward(forward_macs: int, grad_out_elems: int, grad_input: bool, grad_weight: bool, grad_bias: bool) -> Cost:
    """Backward of a convolution whose forward costs ``forward_macs`` MACs: the input gradient (a transposed
    convolution of the output gradient) and the weight gradient (a convolution of the input with the output
    gradient) are each ``forward_macs`` MACs; the bias gradient sums the output gradient (1 per element)."""
    macs = forward_macs * (int(grad_input) + int(grad_weight))
    return Cost({("convolution", "mac"): macs, ("convolution", "op"): grad_out_elems if grad_bias else 0})


def attention(batch: int, length: int, dim: int, keys: int, dim_v: int, additive_mask: bool = False,
              dropout: bool = False) -> Cost:
    """Scaled dot-product attention counted as the materialised computation it stands for: the
    length x dim x keys product, a softmax over length x keys scores, the length x keys x dim_v product; one
    add per score for an additive (float) mask, one multiply per score for dropout. A boolean or causal mask
    selects and is not counted; the multiply by ``scale`` is not counted (scale 1 in attnbench's blocks)."""
    scores = batch * length * keys
    total = matmul(batch, length, dim, keys) + softmax(scores) + matmul(batch, length, keys, dim_v)
    return total + eltwise(scores * (int(additive_mask) + int(dropout)))


def attention_backward(batch: int, length: int, dim: int, keys: int, dim_v: int, additive_mask: bool = False,
                       dropout: bool = False) -> Cost:
    """Backward of a fused attention kernel (flash, memory-efficient, cuDNN, flash for CPU), which keeps only
    the output and the log-sum-exp of each row (FlashAttention-2's backward): the scores recomputed
    (length x dim x keys), P = exp(S - lse) (2 per score), dP = dO V^T and dV = P^T dO (length x dim_v x keys
    each), D = rowsum(dO * O) (2 per output element), dS = P (dP - D) (2 per score), dQ = dS K and
    dK = dS^T Q (length x keys x dim each): 5 products, as ``torch.utils.flop_counter`` counts them. An
    additive mask adds 1 per score (to the recomputed scores), dropout 2 (applied to P and to dP)."""
    scores = batch * length * keys
    total = matmul(batch, length, dim, keys) * 3 + matmul(batch, length, dim_v, keys) * 2
    total = total + Cost({("softmax", "op"): 4 * scores + 2 * batch * length * dim_v})
    return total + eltwise(scores * (int(additive_mask) + 2 * int(dropout)))
