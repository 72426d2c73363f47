"""Interaction-aware spatio-temporal pyramid attention, STPA (Du, Yuan, Li, Zhao, Li, Hu, ECCV 2018).

The layer aggregates K frames of a multi-scale feature pyramid into one map the size of the pyramid's top
level (the layer the attention replaces), so that the network after it is unchanged.

Equations (Sec. 3.1-3.2), for a pyramid of N levels f_j (j = 1 bottom ... N top), K frames each:

* Eq. 1: every level but the top is down-sampled to the top's spatial size h x w by R (max pooling, the
  paper's choice, Sec. 3.4): f'_j = R(f_j), f'_N = f_N.
* Eq. 2: X_j in R^{KHW x C_j} flattens f'_j (all K frames, all h*w positions); the scores are
  Y_j = W_attn_j X_j^T (+) b_attn_j with W_attn_j in R^{d x C_j}, b in R^d, d = h*w -- one linear map from
  C_j channels to d scores per local feature (``nn.Linear(C_j, d)``, bias included).
* Eq. 3: a = softmax(F(y^1, ..., y^N)) over the K*h*w positions of each of the d rows, F an element-wise
  fusion (``fusion``: max, sum or mul; the paper found mul best, Table 1(c), and made it the default), then
  each row is L2 normalised so that a a^T = 1.
* Eq. 4: M = A X_N in R^{d x C_N}, reshaped to the attention maps M' in R^{C_N x h x w}.

Input layout: the forward takes one tensor per level, each [B, C_j, K, H_j, W_j] (attnbench's NCDHW with
T = K frames) and returns M' as [B, C_N, h, w] (the K frames are aggregated away).

How a ``VideoShape`` describes the pyramid: B is the batch, T = K the number of frames, and C, H, W are the
*bottom* level of the pyramid. Option ``scales`` (N, 1-3, default 3) says how many levels there are; the
levels above the bottom come from the options ``c2``/``size2`` (second level: channels and square size) and
``c3``/``size3`` (third level), used only when ``scales`` reaches them; the last level used is the top. The
defaults are the paper's Inception-ResNet-v2 pyramid (Sec. 4.1): bottom 35x35x320 (the shape), then
17x17x1088 and 8x8x2080. The paper's "1 scale at Block C" is ``scales=1`` with the shape 2080 x 8 x 8.

Choices the paper leaves open (each an option or stated here):

* ``downsample``: R of Eq. 1. The paper uses max pooling (Sec. 3.4) but not its window; we use adaptive
  pooling to the top's size (PyTorch's start/end windows), which covers every input position whatever the
  ratio (35 -> 8 is not an integer one). ``avg`` is the paper's runner-up. A level that already has the top's
  size is passed through (R is the identity there and costs nothing).
* Sizes must not grow up the pyramid (each level at least as large as the next in both dims), since R only
  down-samples and the levels are earlier/later layers of one CNN.
* The fusion folds the levels pairwise bottom to top: N-1 element-wise ops per score.
* The L2 normalisation is computed as a * rsqrt(sum_k a_k^2) (no epsilon: softmax outputs are positive).
* Four scales (Table 1(b), worse in the paper) are not offered.

Loss functions (Sec. 3.3) are plain functions below: :func:`interaction_loss` (Eq. 6),
:func:`attention_loss` (Eq. 7-8) and :func:`total_loss` (Eq. 9). They need the attention matrix A, the top
level's features X and the per-scale softmax(y^j); :meth:`SpatioTemporalPyramidAttention.maps` returns
all of them (the per-scale softmaxes are training-only work and are not part of the counted forward).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from attnbench.blocks.registry import BlockSpec, Option, Preset, register_block
from attnbench.errors import UsageError
from attnbench.flops import cost as C
from attnbench.flops.cost import Cost
from attnbench.flops.memory import Peak, Phase, Precision, peak
from attnbench.shapes import VideoShape

FUSIONS = ("mul", "sum", "max")  # default first: the paper's best (Table 1(c))
DOWNSAMPLES = ("max", "avg")

# Paper weights of the extra losses (Sec. 3.4): beta = gamma = 1e-4.
PAPER_BETA = 1e-4
PAPER_GAMMA = 1e-4


# ---------------------------------------------------------------------------------------------------------
# Pyramid geometry


@dataclass(frozen=True)
class Level:
    """One pyramid level: channels and spatial size (height, width)."""

    channels: int
    height: int
    width: int


def pyramid_levels(
    shape: VideoShape, scales: int = 3, c2: int = 1088, size2: int = 17, c3: int = 2080, size3: int = 8
) -> list[Level]:
    """The pyramid's levels, bottom (the shape's C, H, W) to top, ``scales`` of them."""
    levels = [Level(shape.C, shape.H, shape.W), Level(c2, size2, size2), Level(c3, size3, size3)]
    return levels[:scales]


def _geometry(shape: VideoShape, **opts: Any) -> tuple[list[Level], Level]:
    levels = pyramid_levels(shape, **_level_opts(opts))
    return levels, levels[-1]


def _level_opts(opts: dict[str, Any]) -> dict[str, Any]:
    return {k: opts[k] for k in ("scales", "c2", "size2", "c3", "size3") if k in opts}


# ---------------------------------------------------------------------------------------------------------
# Module


@dataclass
class PyramidMaps:
    """Everything the losses need, from :meth:`SpatioTemporalPyramidAttention.maps`.

    ``output``: M' [B, C_N, h, w]; ``attention``: A [B, d, K*h*w] (rows softmaxed over the K*h*w positions,
    then L2 normalised); ``features``: X_N [B, K*h*w, C_N] (the top level, flattened as in Eq. 4);
    ``scale_attention``: softmax(y^j) [B, d, K*h*w] for every level j, bottom to top (Eq. 7)."""

    output: torch.Tensor
    attention: torch.Tensor
    features: torch.Tensor
    scale_attention: list[torch.Tensor]


class SpatioTemporalPyramidAttention(nn.Module):
    """STPA layer on a list of levels [B, C_j, K, H_j, W_j]; returns [B, C_N, h, w] (module docstring)."""

    def __init__(self, levels: list[Level], fusion: str = "mul", downsample: str = "max") -> None:
        super().__init__()
        if fusion not in FUSIONS:
            raise UsageError(f"fusion must be one of {', '.join(FUSIONS)}, got '{fusion}'")
        if downsample not in DOWNSAMPLES:
            raise UsageError(f"downsample must be one of {', '.join(DOWNSAMPLES)}, got '{downsample}'")
        self.levels = list(levels)
        self.fusion = fusion
        self.downsample = downsample
        top = self.levels[-1]
        self.top_size = (top.height, top.width)
        self.d = top.height * top.width
        # Eq. 2: W_attn_j in R^{d x C_j}, b_attn_j in R^d, one per level.
        self.score = nn.ModuleList(nn.Linear(level.channels, self.d) for level in self.levels)

    def _flatten(self, f: torch.Tensor) -> torch.Tensor:
        """[B, C, K, h, w] -> X [B, K*h*w, C] (rows: local features h_k, frame-major)."""
        b, c = f.shape[:2]
        return f.permute(0, 2, 3, 4, 1).reshape(b, -1, c)

    def _resample(self, f: torch.Tensor) -> torch.Tensor:
        """Eq. 1: R(f_j), adaptive pooling of every frame to the top's size; identity if already there."""
        if tuple(f.shape[-2:]) == self.top_size:
            return f
        b, c, k, hj, wj = f.shape
        flat = f.reshape(b, c * k, hj, wj)
        if self.downsample == "max":
            pooled = F.adaptive_max_pool2d(flat, self.top_size)
        else:
            pooled = F.adaptive_avg_pool2d(flat, self.top_size)
        return pooled.reshape(b, c, k, *self.top_size)

    def _scores(self, levels: tuple[torch.Tensor, ...]) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Eq. 1-2: Y_j^T [B, K*h*w, d] for every level, and the top level's X [B, K*h*w, C_N]."""
        if len(levels) != len(self.levels):
            raise UsageError(f"stpa takes {len(self.levels)} pyramid levels, got {len(levels)}")
        scores = []
        x_top = None
        for j, (f, linear) in enumerate(zip(levels, self.score)):
            x = self._flatten(self._resample(f))
            scores.append(linear(x))
            if j == len(levels) - 1:
                x_top = x
        assert x_top is not None
        return scores, x_top

    def _fuse(self, scores: list[torch.Tensor]) -> torch.Tensor:
        """F of Eq. 3: element-wise max, sum or product, folded pairwise bottom to top."""
        fused = scores[0]
        for y in scores[1:]:
            if self.fusion == "max":
                fused = torch.maximum(fused, y)
            elif self.fusion == "sum":
                fused = fused + y
            else:
                fused = fused * y
        return fused

    @staticmethod
    def _attention(fused: torch.Tensor) -> torch.Tensor:
        """Eq. 3: softmax over the K*h*w positions (dim 1 of [B, K*h*w, d]), then L2 normalisation."""
        a = F.softmax(fused, dim=1)
        return a * torch.rsqrt((a * a).sum(dim=1, keepdim=True))

    def _aggregate(self, a: torch.Tensor, x_top: torch.Tensor) -> torch.Tensor:
        """Eq. 4: M = A X [B, d, C_N], reshaped to M' [B, C_N, h, w]."""
        m = torch.bmm(a.transpose(1, 2), x_top)
        b, _, c = m.shape
        return m.transpose(1, 2).reshape(b, c, *self.top_size)

    def forward(self, *levels: torch.Tensor) -> torch.Tensor:
        scores, x_top = self._scores(levels)
        a = self._attention(self._fuse(scores))
        return self._aggregate(a, x_top)

    def maps(self, *levels: torch.Tensor) -> PyramidMaps:
        """The forward's output with A, X_N and the per-scale softmax(y^j) that the losses need."""
        scores, x_top = self._scores(levels)
        a = self._attention(self._fuse(scores))
        return PyramidMaps(
            output=self._aggregate(a, x_top),
            attention=a.transpose(1, 2),
            features=x_top,
            scale_attention=[F.softmax(y, dim=1).transpose(1, 2) for y in scores],
        )


# ---------------------------------------------------------------------------------------------------------
# Losses (Sec. 3.3)


def _reduce_batch(values: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return values.mean()
    if reduction == "sum":
        return values.sum()
    if reduction == "none":
        return values
    raise ValueError(f"reduction must be mean, sum or none, got '{reduction}'")


def interaction_loss(attention: torch.Tensor, features: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Interaction-aware loss, Eq. 6 (the PCA objective of Eq. 5 made differentiable).

    l = -X((A X X^T A^T) o I) + Y((A A^T) o (1 - I)), with X(.) the sum and Y(.) the sum of squares of the
    elements, o the element-wise product, I the d x d identity and 1 the all-ones matrix. That is
    l = -sum_m ||a_m X||^2 + sum_{m != n} (a_m . a_n)^2: the first term is the variance captured by the
    attention rows (to be maximised, as PCA does), the second pushes the rows (unit L2 norm already) towards
    orthogonality, A A^T = I. Orthonormal rows make the second term zero.

    ``attention``: A [..., d, n]; ``features``: X [..., n, C] (n = K*h*w). Leading (batch) dimensions give
    one loss each, reduced by ``reduction`` (mean, sum or none)."""
    ax = attention @ features  # [..., d, C]
    captured = (ax * ax).sum(dim=(-2, -1))  # trace of A X X^T A^T
    gram = attention @ attention.transpose(-2, -1)  # [..., d, d]
    eye = torch.eye(gram.shape[-1], dtype=gram.dtype, device=gram.device)
    off = gram * (1 - eye)
    return _reduce_batch(-captured + (off * off).sum(dim=(-2, -1)), reduction)


def attention_loss(
    attention: torch.Tensor, scale_attention: list[torch.Tensor] | tuple[torch.Tensor, ...], reduction: str = "mean"
) -> torch.Tensor:
    """Attention loss, Eq. 7-8: keeps each scale's attention away from the fused one.

    delta_{j,m,k} = |a_{m,k} - softmax(y^j)_{m,k}| (Eq. 7: the norm of a scalar difference), and
    l_attn = sqrt(sum_j sum_m sum_k (1 - delta_{j,m,k}^2)) (Eq. 8). Identical maps give the largest value,
    sqrt(J d n); maps that are 1 where the other is 0 and vice versa give zero.

    ``attention``: a [..., d, n] (the fused, L2-normalised A); ``scale_attention``: one softmax(y^j)
    [..., d, n] per pyramid level. Leading dimensions give one loss each, reduced by ``reduction``."""
    if not scale_attention:
        raise ValueError("attention_loss needs at least one scale's attention")
    total = None
    for s in scale_attention:
        delta = attention - s
        part = (1 - delta * delta).sum(dim=(-2, -1))
        total = part if total is None else total + part
    return _reduce_batch(torch.sqrt(total), reduction)


def total_loss(
    classification: torch.Tensor,
    l_interactive: torch.Tensor,
    l_attn: torch.Tensor,
    beta: float = PAPER_BETA,
    gamma: float = PAPER_GAMMA,
) -> torch.Tensor:
    """Eq. 9 without its weight-decay term: L = CE + beta l_interactive + gamma l_attn.

    ``classification`` is the cross-entropy averaged over the K frames' predictions; the weight decay
    lambda sum w^2 (lambda = 4e-5 in the paper) belongs to the optimiser. Defaults beta = gamma = 1e-4
    (Sec. 3.4)."""
    return classification + beta * l_interactive + gamma * l_attn


# ---------------------------------------------------------------------------------------------------------
# Closed forms


def _check(
    shape: VideoShape,
    scales: int = 3,
    c2: int = 1088,
    size2: int = 17,
    c3: int = 2080,
    size3: int = 8,
    fusion: str = "mul",
    downsample: str = "max",
) -> None:
    levels = pyramid_levels(shape, scales, c2, size2, c3, size3)
    for j in range(1, len(levels)):
        below, above = levels[j - 1], levels[j]
        if above.height > below.height or above.width > below.width:
            raise UsageError(
                f"stpa pyramid level {j + 1} ({above.height}x{above.width}) is larger than level {j} "
                f"({below.height}x{below.width}); sizes must not grow towards the top"
            )


def _resample_cost(b: int, k: int, level: Level, top: Level) -> Cost:
    if (level.height, level.width) == (top.height, top.width):
        return Cost()
    windows = C.adaptive_window_sum(level.height, top.height) * C.adaptive_window_sum(level.width, top.width)
    return C.pool(b * level.channels * k, windows)


def _pieces(shape: VideoShape, **opts: Any) -> dict[str, Any]:
    """The forward's cost, piece by piece (the names the paper uses)."""
    levels, top = _geometry(shape, **opts)
    b, k = shape.B, shape.T
    d = top.height * top.width
    n = k * d  # K*h*w positions
    scores = b * n * d  # entries of one Y_j
    per_level = [
        {
            "channels": lv.channels,
            "size": [lv.height, lv.width],
            "downsample_R": _resample_cost(b, k, lv, top),
            "scores_Y": C.linear(b * n, lv.channels, d, True),
            "params_W_b": lv.channels * d + d,
        }
        for lv in levels
    ]
    return {
        "levels": per_level,
        "fusion_F": C.eltwise(scores * (len(levels) - 1)),
        "softmax": C.softmax(scores),
        "l2_normalise": C.eltwise(scores) + C.reduce(scores) + C.eltwise(b * d) + C.eltwise(scores),
        "aggregate_M": C.matmul(b, d, n, top.channels),
        "d": d,
        "positions": n,
    }


def stpa_cost(shape: VideoShape, **opts: Any) -> Cost:
    p = _pieces(shape, **opts)
    total = Cost.total(lv["downsample_R"] + lv["scores_Y"] for lv in p["levels"])
    return total + p["fusion_F"] + p["softmax"] + p["l2_normalise"] + p["aggregate_M"]


def stpa_params(shape: VideoShape, **opts: Any) -> int:
    """sum_j (C_j d + d), d = h*w of the top level; independent of K (Sec. 3.2)."""
    levels, top = _geometry(shape, **opts)
    d = top.height * top.width
    return sum(lv.channels * d + d for lv in levels)


def stpa_terms(shape: VideoShape, **opts: Any) -> dict[str, Any]:
    """Per-level FLOPs of R (Eq. 1) and of the scores Y_j (Eq. 2), W_attn_j/b_attn_j parameters, then the
    fusion F and softmax + L2 normalisation (Eq. 3) and the aggregation M = A X (Eq. 4)."""
    p = _pieces(shape, **opts)
    levels, top = _geometry(shape, **opts)
    out: dict[str, Any] = {
        "K": shape.T,
        "scales": len(levels),
        "d": p["d"],
        "positions_KHW": p["positions"],
        "attention_matrix": [p["d"], p["positions"]],
        "output_shape": [shape.B, top.channels, top.height, top.width],
    }
    for j, lv in enumerate(p["levels"], start=1):
        out[f"level{j}_shape"] = f"{lv['size'][0]}x{lv['size'][1]}x{lv['channels']}"
        out[f"level{j}_downsample_flops"] = lv["downsample_R"].flops
        out[f"level{j}_scores_flops"] = lv["scores_Y"].flops
        out[f"level{j}_params"] = lv["params_W_b"]
    out["fusion_flops"] = p["fusion_F"].flops
    out["softmax_l2_flops"] = (p["softmax"] + p["l2_normalise"]).flops
    out["aggregate_flops"] = p["aggregate_M"].flops
    out["aggregate_flops_formula"] = "B x 2 d (K h w) C_N  (Eq. 4)"
    return out


def stpa_inputs(shape: VideoShape, **opts: Any) -> list[tuple[int, ...]]:
    levels, _ = _geometry(shape, **opts)
    return [(shape.B, lv.channels, shape.T, lv.height, lv.width) for lv in levels]


def stpa_largest(shape: VideoShape, **opts: Any) -> tuple[str, int]:
    """The score / attention matrices B x K*h*w x d (one per level, the same size)."""
    levels, top = _geometry(shape, **opts)
    d = top.height * top.width
    return ("attention scores B x KHW x d", shape.B * shape.T * d * d)


def stpa_memory(shape: VideoShape, p: Precision, **opts: Any) -> Peak:
    """Peak working memory of one call (see :mod:`attnbench.flops.memory`). Each level's X is a view (of
    its input, or of its pooled map: the [B, C, K, h, w] -> [B, K*h*w, C] reshape merges K, h, w, which
    stay contiguous). The loop variable keeps the previous level's pooled map alive while the next level
    is pooled, so at the multi-scale presets the peak is a level's pooling: the scores so far, the previous
    level's pooled map, and this level's pooled map with its int64 max-pooling indices. The score, softmax
    and L2 tensors are B x K*h*w x d each, in the run's dtype (softmax: :attr:`Precision.softmax`, with
    :attr:`Precision.softmax_copy` of its input while it runs); under
    autocast each level's Linear casts its weight, bias and X, and Eq. 4's product casts X_N (with one
    scale, nothing is pooled and the peak is Eq. 4)."""
    levels, top = _geometry(shape, **opts)
    b, k, lo, act, sm = shape.B, shape.T, p.low, p.act, p.softmax
    d = top.height * top.width
    n = k * d
    maxpool = opts.get("downsample", "max") == "max"
    phases: list[Phase] = []
    scores: list[tuple[str, int]] = []
    previous: list[tuple[str, int]] = []  # the previous level's pooled map, alive through the loop variable
    for j, lv in enumerate(levels, start=1):
        pooled: list[tuple[str, int]] = []
        if (lv.height, lv.width) != (top.height, top.width):
            pooled = [(f"R(f_{j})", b * lv.channels * n * act)]
            idx = [(f"R(f_{j}) max indices (int64)", b * lv.channels * n * 8)] if maxpool else []
            phases.append((f"level {j}: R (Eq. 1)", scores + previous + pooled + idx))
        casts = [(f"W_attn_{j}, b_attn_{j} cast", (lv.channels * d + d) * lo),
                 (f"X_{j} cast", b * n * lv.channels * lo)]
        y = (f"Y_{j}", b * n * d * lo)
        phases.append((f"level {j}: scores (Eq. 2)", scores + pooled + (casts if p.autocast else []) + [y]))
        scores.append(y)
        previous = pooled
    entries = b * n * d
    fused: list[tuple[str, int]] = []
    for j in range(2, len(levels) + 1):
        step = (f"F(y^1..y^{j})", entries * lo)
        phases.append((f"fusion {j - 1}", scores + fused[-1:] + [step]))
        fused.append(step)
    held = scores + fused[-1:]
    a, norm = ("softmax", entries * sm), ("sum of squares", b * d * sm)
    copy = [("scores converted to fp32 for softmax", entries * p.softmax_copy)] if p.softmax_copy else []
    phases += [
        ("softmax (Eq. 3)", held + copy + [a]),
        ("L2 sum of squares", held + [a, ("a * a", entries * sm), norm]),
        ("L2 normalisation", held + [a, ("rsqrt", b * d * sm), ("A (normalised)", entries * sm)]),
    ]
    attention = ("A (normalised)", entries * sm)
    casts = [("X_N cast", b * n * top.channels * lo)] if p.autocast else []
    casts += [("A cast", entries * lo)] if p.autocast and sm != lo else []
    phases.append(("M = A X (Eq. 4, output)", scores + [attention] + casts + [("M", b * d * top.channels * lo)]))
    return peak(phases)


def _build(shape: VideoShape, **opts: Any) -> SpatioTemporalPyramidAttention:
    levels, _ = _geometry(shape, **opts)
    return SpatioTemporalPyramidAttention(
        levels, fusion=opts.get("fusion", "mul"), downsample=opts.get("downsample", "max")
    )


_IRV2 = "Du et al. Sec. 4.1: Inception-ResNet-A/B/C outputs 35x35x320, 17x17x1088, 8x8x2080"

register_block(
    BlockSpec(
        name="stpa",
        title="Interaction-aware spatio-temporal pyramid attention",
        paper="Du et al. ECCV 2018 (interaction-aware spatio-temporal pyramid attention)",
        build=_build,
        cost=stpa_cost,
        params=stpa_params,
        terms=stpa_terms,
        inputs=stpa_inputs,
        check=_check,
        largest_intermediate=stpa_largest,
        memory=stpa_memory,
        options=(
            Option("scales", int, 3, "pyramid levels N (shape = bottom level; then c2/size2, c3/size3)", (1, 2, 3)),
            Option("fusion", str, "mul", "fusion F of the level scores (Eq. 3; paper's best: mul)", FUSIONS),
            Option("downsample", str, "max", "R of Eq. 1: adaptive max (paper) or avg pooling", DOWNSAMPLES),
            Option("c2", int, 1088, "channels of the second level", minimum=1),
            Option("size2", int, 17, "height = width of the second level", minimum=1),
            Option("c3", int, 2080, "channels of the third level", minimum=1),
            Option("size3", int, 8, "height = width of the third level", minimum=1),
        ),
        presets=(
            Preset("inception-resnet-v2", VideoShape(1, 320, 25, 35, 35), _IRV2 + "; 3 scales, mul; K=25 test frames (Sec. 3.4)"),
            Preset("inception-resnet-v2-train", VideoShape(1, 320, 3, 35, 35), _IRV2 + "; K=3 training frames (Sec. 3.4)"),
            Preset("inception-resnet-v2-max", VideoShape(1, 320, 25, 35, 35), "Du et al. Table 1(c): element-wise maximum, 3 scales", {"fusion": "max"}),
            Preset("inception-resnet-v2-sum", VideoShape(1, 320, 25, 35, 35), "Du et al. Table 1(c): element-wise sum, 3 scales", {"fusion": "sum"}),
            Preset("inception-resnet-v2-2scales", VideoShape(1, 1088, 25, 17, 17), "Du et al. Table 1(b): 2 scales (17x17x1088, 8x8x2080)", {"scales": 2, "c2": 2080, "size2": 8}),
            Preset("inception-resnet-v2-1scale", VideoShape(1, 2080, 25, 8, 8), "Du et al. Table 1(a)/(b): 1 scale at Block C (8x8x2080)", {"scales": 1}),
            Preset("small", VideoShape(2, 32, 3, 16, 16), "not from the paper: a small 3-level pyramid halving the size per level, K=3 as in training", {"c2": 64, "size2": 8, "c3": 128, "size3": 4}),
        ),
    )
)
