"""BANet (Zhou, Xu, Yang): frame attention before, cascaded self-attention after feature extraction.

``cs`` -- cascaded self-attention (Sec. III-C, Fig. 4-6). A 1x1x1 convolution reduces C to C' = C // reduction;
then three 2D self-attention blocks run in cascade. The HW block splits the map by T and attends within each
H x W slice (Fig. 6); TW splits by H, TH splits by W. Each 2D block has theta, phi, g projections (1x1x1,
C' -> C'), the slice-wise correlation matrix, a row softmax, the weighted sum and an output projection
(1x1x1, C' -> C') with a residual. A final 1x1x1 convolution restores C channels, added to the input.
The paper does not print the projections' widths; the defaults above keep C_in = C' inside every 2D block,
which is what Eq. (3)-(6) write as C_in.

``impl`` chooses the attention kernel of every 2D block, as for the non-local block: ``naive`` materialises
each slice's L x L map, ``sdpa`` calls ``F.scaled_dot_product_attention`` (scale 1, fused kernels only on
CUDA); the FLOPs are the same, the memory is not.

Correlation FLOPs (Eq. 6): F_CS = C_in (T(HW)^2 + H(TW)^2 + W(TH)^2) x 2, and with the non-local block of the
same C_in (Eq. 5), R = F_CS / F_3D = 1/T + 1/H + 1/W (Eq. 7; 13.4% at T=16, H=W=28).

``fa`` -- frame attention (Sec. III-B, Eq. 1-2). RGB frames [B, 3, N, H, W] are turned to grey (fixed
ITU-R BT.601 weights, a parameter-free 1x1x1 convolution), adjacent frames are subtracted (N-1 difference
maps, frame i+1 minus frame i), each map is max-pooled to ``pool`` x ``pool`` (56 in the paper), a 3-layer
MLP with ReLU after every layer scores it (d_i), d_i is clamped to [0, 7] and passed through
F(x) = sigma'(x - 3), the sigmoid's derivative shifted right by 3. Frame scores follow Eq. (2). The printed
middle case, F(clamp(d_i) + F(clamp(d_{i+1}))), has a misplaced parenthesis and an index off by one: frame i
(1 < i < N) lies between difference maps d_{i-1} (frames i-1, i) and d_i (frames i, i+1), and the end cases
use the one adjacent map twice (x 2), so we read it as y_i = F(clamp(d_{i-1})) + F(clamp(d_i)). MLP widths
are not printed in the paper; ``hidden1``/``hidden2`` default to 512/128.

``diff``: the paper says "we compute the difference between adjacent frames" and max-pools the "frame
difference images", without saying whether the difference is signed. Max-pooling a signed difference keeps
only brightening: a frame that darkens everywhere pools to (nearly) nothing and scores like a still frame,
while the same change the other way round scores high. The module's purpose is to find frames that "differ
either greatly or little from their adjacent frames" (cuts, "fast-moving lens", near-duplicates), which is a
magnitude, so the default is ``abs``: |frame i+1 - frame i|, one more op per difference pixel. ``signed``
is the literal reading (the difference as it is, max-pooled).

Frames kept: M = floor(keep_ratio x N + 1/2) (round half up; at least 1, at most N), computed exactly on the
ratio as written (``0.3`` is 3/10, so 0.3 x 5 = 1.5 keeps 2), the top-M frames by y in temporal order. BANet
keeps M/N = 50%, at even N (8 to 40 frames), where no rounding happens; at odd N half up keeps (N+1)/2 (N = 3,
5, 7 keep 2, 3, 4, where Python's round, half to even, kept 2, 2, 4).
"""

from __future__ import annotations

import math
from fractions import Fraction
from itertools import permutations
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from attnbench.blocks.nonlocal_block import IMPLS, attend, attend_cost, attend_memory
from attnbench.blocks.registry import BlockSpec, Option, Preset, register_block
from attnbench.errors import UsageError
from attnbench.flops import cost as C
from attnbench.flops.cost import Cost
from attnbench.flops.memory import FP32, Peak, Phase, Precision, peak, permuted, reshape_copies
from attnbench.shapes import VideoShape

# ---------------------------------------------------------------------------------------------------------
# Cascaded self-attention (cs)

ORDERS = tuple("-".join(p) for p in permutations(("HW", "TW", "TH")))
TABLE_V_ORDERS = ("HW-TW-TH", "TW-HW-TH", "TH-TW-HW")

# For each 2D block: the axis (of [B, C, T, H, W]) it splits by, and the two it attends over.
_SPLIT_AXIS = {"HW": 2, "TW": 3, "TH": 4}


class SliceAttention2D(nn.Module):
    """One 2D self-attention block of BANet (Fig. 6): attention within slices of one split axis."""

    def __init__(self, channels: int, kind: str, impl: str = "naive") -> None:
        super().__init__()
        self.kind = kind
        self.impl = impl
        self.theta = nn.Conv3d(channels, channels, 1)
        self.phi = nn.Conv3d(channels, channels, 1)
        self.g = nn.Conv3d(channels, channels, 1)
        self.out = nn.Conv3d(channels, channels, 1)

    def _to_slices(self, x: torch.Tensor) -> torch.Tensor:
        axis = _SPLIT_AXIS[self.kind]
        rest = [d for d in (2, 3, 4) if d != axis]
        y = x.permute(0, axis, 1, *rest)  # [B, S, C, a, b]
        b, s, c = y.shape[:3]
        return y.reshape(b * s, c, -1)

    def _from_slices(self, y: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        axis = _SPLIT_AXIS[self.kind]
        rest = [d for d in (2, 3, 4) if d != axis]
        b, c = like.shape[:2]
        sizes = [like.shape[axis]] + [like.shape[d] for d in rest]
        y = y.reshape(b, sizes[0], c, sizes[1], sizes[2])
        order = [0, 2, 0, 0, 0]
        order[axis] = 1
        order[rest[0]] = 3
        order[rest[1]] = 4
        return y.permute(*order)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self._to_slices(self.theta(x))
        k = self._to_slices(self.phi(x))
        v = self._to_slices(self.g(x))
        y = self._from_slices(attend(q, k, v, self.impl), x)
        return x + self.out(y)


def _slice_geometry(shape: VideoShape, kind: str) -> tuple[int, int]:
    """(number of slices per clip, positions per slice) of a 2D block."""
    t, h, w = shape.T, shape.H, shape.W
    return {"HW": (t, h * w), "TW": (h, t * w), "TH": (w, t * h)}[kind]


class CascadedSelfAttention(nn.Module):
    """BANet's cascaded self-attention module on [B, C, T, H, W] (see module docstring)."""

    def __init__(self, channels: int, reduction: int = 2, order: str = "HW-TW-TH", impl: str = "naive") -> None:
        super().__init__()
        inner = max(channels // reduction, 1)
        self.reduce = nn.Conv3d(channels, inner, 1)
        self.blocks = nn.Sequential(*(SliceAttention2D(inner, kind, impl) for kind in order.split("-")))
        self.expand = nn.Conv3d(inner, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.expand(self.blocks(self.reduce(x)))


def _cs_inner(shape: VideoShape, reduction: int) -> int:
    return max(shape.C // reduction, 1)


def cs_cost(shape: VideoShape, reduction: int = 2, order: str = "HW-TW-TH", impl: str = "naive") -> Cost:
    b, n = shape.B, shape.thw
    ci = _cs_inner(shape, reduction)
    total = C.conv(b * ci * n, shape.C, (1, 1, 1), True)
    for kind in order.split("-"):
        slices, positions = _slice_geometry(shape, kind)
        total = total + C.conv(b * ci * n, ci, (1, 1, 1), True) * 4
        total = total + attend_cost(b * slices, ci, positions, positions)
        total = total + C.eltwise(b * ci * n)
    total = total + C.conv(b * shape.C * n, ci, (1, 1, 1), True)
    return total + C.eltwise(b * shape.C * n)


def cs_params(shape: VideoShape, reduction: int = 2, order: str = "HW-TW-TH", impl: str = "naive") -> int:
    c, ci = shape.C, _cs_inner(shape, reduction)
    return (c * ci + ci) + 3 * 4 * (ci * ci + ci) + (ci * c + c)


def cs_ratio(shape: VideoShape) -> Fraction:
    """R = F_CS / F_3D from Eq. (5) and (6), exactly (C_in and the factor 2 cancel)."""
    t, h, w = shape.T, shape.H, shape.W
    f_cs = t * (h * w) ** 2 + h * (t * w) ** 2 + w * (t * h) ** 2
    return Fraction(f_cs, (t * h * w) ** 2)


def cs_terms(shape: VideoShape, reduction: int = 2, order: str = "HW-TW-TH", impl: str = "naive") -> dict[str, Any]:
    ci = _cs_inner(shape, reduction)
    t, h, w = shape.T, shape.H, shape.W
    f_cs = ci * (t * (h * w) ** 2 + h * (t * w) ** 2 + w * (t * h) ** 2) * 2
    f_3d = ci * (t * h * w) ** 2 * 2
    ratio = Fraction(f_cs, f_3d)
    closed = Fraction(1, t) + Fraction(1, h) + Fraction(1, w)
    return {
        "affinity_flops": shape.B * f_cs,
        "affinity_flops_formula": "B x C_in (T(HW)^2 + H(TW)^2 + W(TH)^2) x 2  (BANet Eq. 6)",
        "nl_affinity_flops": shape.B * f_3d,
        "c_in": ci,
        "ratio": float(ratio),
        "ratio_exact": f"{ratio.numerator}/{ratio.denominator}",
        "ratio_closed_form": float(closed),
        "ratio_identity_holds": ratio == closed,
    }


def cs_largest(shape: VideoShape, reduction: int = 2, order: str = "HW-TW-TH", impl: str = "naive") -> tuple[str, int]:
    """The largest tensor the call creates, in elements: the largest 2D block's maps (naive), or with sdpa
    the input-sized output of the final projection."""
    if impl == "sdpa":
        return ("expansion output B x C x THW", shape.numel)
    sizes = [(k, s * p * p) for k, (s, p) in ((k, _slice_geometry(shape, k)) for k in order.split("-"))]
    kind, per_clip = max(sizes, key=lambda kv: kv[1])
    return (f"{kind} attention maps B x slices x L x L", shape.B * per_clip)


def _slices_copy(shape: VideoShape, ci: int, kind: str) -> bool:
    """Whether :meth:`SliceAttention2D._to_slices` copies (its reshape of the permuted map is not a view)."""
    axis = _SPLIT_AXIS[kind]
    rest = [d for d in (2, 3, 4) if d != axis]
    dims, strides = permuted((shape.B, ci, shape.T, shape.H, shape.W), (0, axis, 1, *rest))
    return reshape_copies(dims, strides, (dims[0] * dims[1], ci, dims[3] * dims[4]))


def cs_memory(shape: VideoShape, p: Precision, reduction: int = 2, order: str = "HW-TW-TH", impl: str = "naive") -> Peak:
    """Peak working memory of one call (see :mod:`attnbench.flops.memory`). The reduced map R stays alive
    through the whole cascade (the argument of the ``nn.Sequential`` call), and each 2D block's input while
    that block runs. Inside a block q, k, v, the attention output, the projection and the residual sum are
    alive together at its end; the slice layout copies q, k and v only when the reshape cannot be a view
    (it can for the HW and TH blocks at batch 1)."""
    b, n, lo = shape.B, shape.thw, p.low
    ci = _cs_inner(shape, reduction)
    xn, qn = b * shape.C * n, b * ci * n * lo
    phases: list[Phase] = [("reduction", ([("x cast for the reduction", xn * lo)] if p.autocast else []) + [("R = reduce(x)", qn)])]
    for j, kind in enumerate(order.split("-")):
        held = [("R = reduce(x)", qn)] + ([(f"input of {kind}", qn)] if j else [])
        if _slices_copy(shape, ci, kind):
            phases.append((f"{kind}: slice layout of v", held + [("q", qn), ("k", qn), ("g(h) before the slice copy", qn), ("v", qn)]))
        slices, positions = _slice_geometry(shape, kind)
        qkv = [(f"{kind} q", qn), (f"{kind} k", qn), (f"{kind} v", qn)]
        phases += [(f"{kind}: {name}", ts) for name, ts in attend_memory(b * slices, ci, positions, positions, p, held + qkv, impl)]
        o = (f"{kind} attention output", qn)
        phases.append((f"{kind}: residual add", held + qkv + [o, (f"{kind} output projection", qn), (f"{kind} h + ...", qn)]))
    last = order.split("-")[-1]
    phases.append(("expansion", [("R = reduce(x)", qn), (f"output of {last}", qn), ("expansion output", xn * lo)]))
    phases.append(("residual add", [("expansion output", xn * lo), ("x + ... (output)", xn * (FP32 if p.autocast else lo))]))
    return peak(phases)


register_block(
    BlockSpec(
        name="cs",
        title="Cascaded self-attention (HW, TW, TH 2D blocks)",
        paper="BANet",
        build=lambda shape, **o: CascadedSelfAttention(shape.C, **o),
        cost=cs_cost,
        params=cs_params,
        terms=cs_terms,
        largest_intermediate=cs_largest,
        memory=cs_memory,
        options=(
            Option("reduction", int, 2, "C' = C // reduction channels inside the 2D blocks", minimum=1),
            Option("order", str, "HW-TW-TH", "cascade order (Table V: " + ", ".join(TABLE_V_ORDERS) + ")", ORDERS),
            Option("impl", str, "naive", "attention kernel: naive (materialise the maps) or sdpa (fused)", IMPLS, kernel=True),
        ),
        presets=(
            Preset("banet", VideoShape(1, 96, 16, 28, 28), "BANet Sec. III-A and Eq. 7: C=96, T=16, H=W=28"),
            Preset("banet-tw-hw-th", VideoShape(1, 96, 16, 28, 28), "BANet Table V, second order", {"order": "TW-HW-TH"}),
            Preset("banet-th-tw-hw", VideoShape(1, 96, 16, 28, 28), "BANet Table V, third order", {"order": "TH-TW-HW"}),
            Preset("banet-8f", VideoShape(1, 96, 8, 28, 28), "BANet(8F): 8 frames kept"),
        ),
    )
)

# ---------------------------------------------------------------------------------------------------------
# Frame attention (fa)

GREY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R BT.601 luma
DIFFS = ("abs", "signed")


class FrameAttention(nn.Module):
    """BANet's frame attention: scores N RGB frames and keeps the top ``keep_ratio`` in temporal order."""

    def __init__(self, pool: int = 56, hidden1: int = 512, hidden2: int = 128, keep_ratio: float = 0.5,
                 diff: str = "abs") -> None:
        super().__init__()
        if diff not in DIFFS:
            raise UsageError(f"fa diff must be one of {', '.join(DIFFS)}, got {diff!r}")
        self.pool = pool
        self.keep_ratio = keep_ratio
        self.diff = diff
        self.register_buffer("grey", torch.tensor(GREY_WEIGHTS).view(1, 3, 1, 1, 1), persistent=False)
        self.mlp = nn.Sequential(
            nn.Linear(pool * pool, hidden1), nn.ReLU(),
            nn.Linear(hidden1, hidden2), nn.ReLU(),
            nn.Linear(hidden2, 1), nn.ReLU(),
        )
        self.last_scores: torch.Tensor | None = None

    @staticmethod
    def shifted_sigmoid_derivative(x: torch.Tensor) -> torch.Tensor:
        """F(x) = sigma'(x - 3) = s (1 - s), s = sigma(x - 3)."""
        s = torch.sigmoid(x - 3)
        return s * (1 - s)

    @staticmethod
    def frame_scores(f: torch.Tensor) -> torch.Tensor:
        """Eq. (2) as read (module docstring): y [B, N] from f = F(clamp(d)) [B, N-1] of the difference maps:
        y_1 = 2 f_1, y_i = f_{i-1} + f_i, y_N = 2 f_{N-1}."""
        return torch.cat([f[:, :1] * 2, f[:, :-1] + f[:, 1:], f[:, -1:] * 2], dim=1)

    def scores(self, frames: torch.Tensor) -> torch.Tensor:
        """Eq. (1)-(2): frame scores y [B, N] from RGB frames [B, 3, N, H, W]."""
        grey = F.conv3d(frames, self.grey)[:, 0]  # [B, N, H, W]
        diff = grey[:, 1:] - grey[:, :-1]  # [B, N-1, H, W]
        if self.diff == "abs":
            diff = diff.abs()
        pooled = F.adaptive_max_pool2d(diff, self.pool)  # [B, N-1, p, p]
        d = self.mlp(pooled.flatten(2)).squeeze(-1)  # [B, N-1], Eq. (1)
        return self.frame_scores(self.shifted_sigmoid_derivative(d.clamp(0, 7)))

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        keep = kept_frames(int(frames.shape[2]), self.keep_ratio)
        y = self.scores(frames)
        self.last_scores = y
        idx = torch.topk(y, keep, dim=1).indices.sort(dim=1).values  # [B, keep], temporal order
        b, c, _, h, w = frames.shape
        index = idx.view(b, 1, keep, 1, 1).expand(b, c, keep, h, w)
        return torch.gather(frames, 2, index)


def kept_frames(n: int, keep_ratio: float) -> int:
    """M = floor(keep_ratio x N + 1/2), round half up, in exact arithmetic on the ratio as written (its
    shortest decimal form, so 0.3 is 3/10), clipped to [1, N] (see the module docstring)."""
    x = Fraction(repr(float(keep_ratio))) * n
    return max(1, min(n, math.floor(x + Fraction(1, 2))))


def _fa_check(shape: VideoShape, pool: int, hidden1: int, hidden2: int, keep_ratio: float, diff: str = "abs") -> None:
    if shape.C != 3:
        raise UsageError(f"fa takes RGB frames: C must be 3, got {shape.C}")
    if shape.T < 2:
        raise UsageError(f"fa needs at least 2 frames (T >= 2) to take differences, got T={shape.T}")
    if shape.H < pool or shape.W < pool:
        raise UsageError(f"fa max-pools frames down to {pool}x{pool}: H and W must be >= {pool}, got {shape.H}x{shape.W}")
    if not 0 < keep_ratio <= 1:
        raise UsageError(f"fa keep_ratio must be in (0, 1], got {keep_ratio}")


def fa_cost(shape: VideoShape, pool: int = 56, hidden1: int = 512, hidden2: int = 128, keep_ratio: float = 0.5,
            diff: str = "abs") -> Cost:
    b, n, h, w = shape.B, shape.T, shape.H, shape.W
    maps = b * (n - 1)
    total = C.conv(b * n * h * w, 3, (1, 1, 1), False)
    total = total + C.eltwise(maps * h * w, 2 if diff == "abs" else 1)  # subtract (and abs)
    total = total + C.pool(maps, C.adaptive_window_sum(h, pool) * C.adaptive_window_sum(w, pool))
    for fin, fout in ((pool * pool, hidden1), (hidden1, hidden2), (hidden2, 1)):
        total = total + C.linear(maps, fin, fout, True) + C.eltwise(maps * fout)
    total = total + C.eltwise(maps, 5)  # clamp, x - 3, sigmoid, 1 - s, s (1 - s)
    return total + C.eltwise(b * 2) + C.eltwise(b * (n - 2))  # Eq. (2): two doublings, N-2 sums


def fa_params(shape: VideoShape, pool: int = 56, hidden1: int = 512, hidden2: int = 128, keep_ratio: float = 0.5,
              diff: str = "abs") -> int:
    return pool * pool * hidden1 + hidden1 + hidden1 * hidden2 + hidden2 + hidden2 + 1


def fa_terms(shape: VideoShape, pool: int = 56, hidden1: int = 512, hidden2: int = 128, keep_ratio: float = 0.5,
             diff: str = "abs") -> dict[str, Any]:
    keep = kept_frames(shape.T, keep_ratio)
    return {"frames_in": shape.T, "frames_kept": keep, "output_shape": [shape.B, 3, keep, shape.H, shape.W]}


def fa_memory(shape: VideoShape, p: Precision, pool: int = 56, hidden1: int = 512, hidden2: int = 128,
              keep_ratio: float = 0.5, diff: str = "abs") -> Peak:
    """Peak working memory of one call (see :mod:`attnbench.flops.memory`). The grey frames, their
    differences and the pooled maps are locals of ``scores``, alive until the frame scores are made; max
    pooling also writes int64 indices, dropped at once. At the presets the peak is those four (pure);
    under autocast it is the frames' bf16 cast beside the grey frames (N = 32), or the first MLP layer's
    bf16 weight (p^2 x hidden1) beside the grey frames, differences and pooled maps (N = 16). The gathered
    output is in the frames' dtype (fp32 under autocast: gather does not cast)."""
    b, n, hw, lo = shape.B, shape.T, shape.H * shape.W, p.low
    maps, keep = b * (n - 1), kept_frames(n, keep_ratio)
    casts = [("grey kernel cast", 3 * lo), ("frames cast", shape.numel * lo)] if p.autocast else []
    grey, dmap = ("grey frames", b * n * hw * lo), ("difference maps", maps * hw * lo)
    pooled = ("pooled maps", maps * pool * pool * lo)
    phases: list[Phase] = [("grey conversion", casts + [grey]), ("differences", [grey, dmap])]
    if diff == "abs":  # |d| is written beside d, which goes when the name is rebound
        phases.append(("absolute differences", [grey, ("signed differences", maps * hw * lo), dmap]))
    phases.append(("max pooling", [grey, dmap, pooled, ("max pooling indices (int64)", maps * pool * pool * 8)]))
    held = [grey, dmap, pooled]  # pooled, flattened (a view), is also the MLP's input
    feeding: list[tuple[str, int]] = []
    for i, (fin, fout) in enumerate(((pool * pool, hidden1), (hidden1, hidden2), (hidden2, 1)), start=1):
        casts = [(f"MLP layer {i} weight and bias cast", (fin * fout + fout) * lo)] if p.autocast else []
        out, relu = (f"MLP layer {i} output", maps * fout * lo), (f"MLP ReLU {i}", maps * fout * lo)
        phases += [(f"MLP layer {i}", held + feeding + casts + [out]), (f"MLP ReLU {i}", held + [out, relu])]
        feeding = [relu]
    d = ("d", maps * lo)
    step = [d, ("clamp(d)", maps * lo), ("s", maps * lo), ("1 - s", maps * lo), ("F", maps * lo)]
    phases.append(("F(clamp(d))", held + step))
    y = ("frame scores y", b * n * lo)
    ends = [("F_1 x 2", b * lo), ("F_i + F_{i+1}", b * (n - 2) * lo), ("F_N x 2", b * lo)]
    phases.append(("Eq. 2", held + [d, ("F", maps * lo)] + ends + [y]))
    idx = ("kept indices (int64)", b * keep * 8)
    top = [("top-k indices (int64)", b * keep * 8), idx, ("sort order (int64)", b * keep * 8)]
    phases.append(("top-k and sort", [y] + top))
    phases.append(("gather (output)", [y, idx, ("kept frames (output)", b * shape.C * keep * hw * p.act)]))
    return peak(phases)


register_block(
    BlockSpec(
        name="fa",
        title="Frame attention (before feature extraction)",
        paper="BANet",
        build=lambda shape, **o: FrameAttention(**o),
        cost=fa_cost,
        params=fa_params,
        terms=fa_terms,
        check=_fa_check,
        memory=fa_memory,
        options=(
            Option("pool", int, 56, "difference maps are max-pooled to pool x pool (paper: 56)", minimum=1),
            Option("hidden1", int, 512, "first MLP width (not given in the paper)", minimum=1),
            Option("hidden2", int, 128, "second MLP width (not given in the paper)", minimum=1),
            Option("keep_ratio", float, 0.5, "share of frames kept (paper: M/N = 50%); M = floor(ratio x N + 1/2)"),
            Option("diff", str, "abs", "difference maps |frame i+1 - frame i| (abs) or as they are (signed); "
                   "the paper does not say", DIFFS),
        ),
        presets=(
            Preset("banet-16f", VideoShape(1, 3, 32, 224, 224), "BANet(16F): 16 of N=32 frames kept (M/N = 50%), 224x224"),
            Preset("banet-8f", VideoShape(1, 3, 16, 224, 224), "BANet(8F): 8 of N=16 frames kept, 224x224"),
        ),
    )
)
