"""W3, What-Where-When video attention (Perez-Rua, Martinez, Zhu, Toisoul, Escorcia, Xiang, ECCV 2020).

The input feature map is F [B, C, T, H, W]. Two sub-modules are applied one after the other (Eq. 1-2):
F^c = M^c (x) F, broadcast over H and W, then F^s = M^s (x) F^c, broadcast over C.

``w3-ct``: channel-temporal attention, 'what' and 'when' (Sec. 3.1, Eq. 3-4).
  d_avg-c, d_max-c = mean and max of F over H, W                              [B, T, C] each
  M^c-frm = sigmoid(MLP(d_avg-c) + MLP(d_max-c))                              Eq. 3, shared MLP
            MLP = Linear(C, C // r) -> ReLU -> Linear(C // r, C), both with bias
  M^c = sigmoid(conv1d_2(ReLU(conv1d_1(M^c-frm))))  along T, per clip           Eq. 4
  F^c = M^c (x) F

``w3-st``: spatio-temporal attention, 'where' and 'when' (Sec. 3.2, Eq. 5-6), on F^c.
  d_avg-s, d_max-s = mean and max of F^c over C                               [B, 1, T, H, W] each
  M^s-frm = sigmoid(conv2d_7x7([d_avg-s, d_max-s]))  2 -> 1 channels, per frame Eq. 5
  M^s = sigmoid(conv3d_2(ReLU(conv3d_1(M^s-frm))))  3x3x3, 1 -> h -> 1 ch.     Eq. 6
  F^s = M^s (x) F^c

``w3``: both in sequence, plus (option ``refine``) the attention-guided feature refinement head
(AFR, Sec. 3.4, Eq. 7-8, Fig. 2): the spatio-temporal masks M^s of the N network stages are adaptive-average
pooled to this stage's H x W, concatenated along channels ([B, N, T, H, W]), passed through a 1x1 convolution
N -> C with a ReLU (Fig. 2 caption) and added to the feature map: y = F^s + ReLU(conv_1x1(M^ms)).

Choices the paper leaves open, and the defaults here:

* ``ratio`` r of the MLP bottleneck (C // r hidden units): not printed; default 16, CBAM's value, the
  module W3 builds on (ref. [56]).
* ``ct_kernel`` K_c-vid: the paper sets 3 (Sec. 3.1); odd sizes only, so that "same" padding keeps T.
* ``ct_mix``: how the two 1-D temporal convolutions mix channels. The paper reasons "about the temporally
  evolving characteristics of each channel dimension" and "per-channel temporal relationships", so the default
  is ``depthwise`` (groups = C: C x K weights per layer). ``full`` (C -> C) is there for comparison; at
  C = 2048 it costs 2 x 3 x 2048^2 = 25M parameters per block, far beyond the "marginal" overhead of Table 1.
* ``ct_dilation`` of both temporal convolutions: not printed; default 1. The paper's "composed temporal
  attention span of 6 frames" for two K = 3 layers does not follow from any single dilation (two layers
  of K = 3 span 1 + 2 x (K - 1) x d = 5 frames at d = 1, 9 at d = 2); we keep d = 1.
* ``st_hidden``: channels between the two 3x3x3 convolutions of theta_s-vid. The paper applies a "3D CNN on
  the stacked single-channel per-frame ... spatial attention maps" and prints no width; default 1.
* Not options: a ReLU between the two layers of theta_c-vid and of theta_s-vid (two linear convolutions
  in a row would collapse into one); every convolution and linear layer has a bias; no batch norm.

The refinement head runs at inference: its output y_i is the final feature map fed to the classifier (Fig. 2)
and the feature that MFR mimics (Eq. 9), and Table 5 ablates it ("w/o AFR") as part of the model. So
``refine`` defaults to on. In the paper's network the head sits once, at the last stage: with ``refine`` on,
this block plays the last-stage W3 block and takes the N - 1 earlier stages' masks M^s as extra forward
inputs, [B, 1, T, H 2^k, W 2^k] for k = N - 1 ... 1 (ResNet stages halve H and W), ``stages`` = N = 4 for
ResNet-50. Its own mask is already H x W, so it is not pooled (AAP to the same size is the identity).
The res2-res4 presets switch ``refine`` off, the res5 presets keep it on. Mature feature-guided
regularisation (MFR, Eq. 9) is a training loss only and has no forward cost here.

Placement (Sec. 3.3): W3 is applied at every residual block of TSM-ResNet-50, on each stage's features; TSM
keeps T, so the presets are the stage outputs at 8 and 16 frames of 224 x 224 input.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from attnbench.blocks.eam import linear_stack_memory
from attnbench.blocks.registry import BlockSpec, Option, Preset, register_block
from attnbench.errors import UsageError
from attnbench.flops import cost as C
from attnbench.flops.cost import Cost
from attnbench.flops.memory import Peak, Phase, Precision, peak, permuted, reshape_copies
from attnbench.shapes import VideoShape

SPATIAL_KERNEL = 7  # theta_s-frm: 7 x 7 (Sec. 3.2)
VIDEO_KERNEL = 3  # theta_s-vid: 3 x 3 x 3 (Sec. 3.2)
CT_KERNELS = (1, 3, 5, 7)
CT_MIXES = ("depthwise", "full")
MAX_STAGES = 5

# ---------------------------------------------------------------------------------------------------------
# Modules


class ChannelTemporalAttention(nn.Module):
    """theta_c-frm (shared MLP, Eq. 3) and theta_c-vid (two 1-D temporal convolutions, Eq. 4)."""

    def __init__(
        self, channels: int, ratio: int = 16, ct_kernel: int = 3, ct_mix: str = "depthwise", ct_dilation: int = 1
    ) -> None:
        super().__init__()
        hidden = channels // ratio
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(), nn.Linear(hidden, channels))
        groups = channels if ct_mix == "depthwise" else 1
        pad = ct_dilation * (ct_kernel - 1) // 2
        self.temporal = nn.Sequential(
            nn.Conv1d(channels, channels, ct_kernel, padding=pad, dilation=ct_dilation, groups=groups),
            nn.ReLU(),
            nn.Conv1d(channels, channels, ct_kernel, padding=pad, dilation=ct_dilation, groups=groups),
        )

    def frame_mask(self, x: torch.Tensor) -> torch.Tensor:
        """Eq. 3: M^c-frm [B, T, C] from F [B, C, T, H, W]."""
        b, c, t = x.shape[:3]
        d_avg = x.mean(dim=(3, 4)).transpose(1, 2).reshape(b * t, c)  # [B*T, C]
        d_max = x.amax(dim=(3, 4)).transpose(1, 2).reshape(b * t, c)
        both = self.mlp(torch.cat([d_avg, d_max], dim=0))  # the shared MLP on both descriptors
        return torch.sigmoid(both[: b * t] + both[b * t :]).reshape(b, t, c)

    def mask(self, x: torch.Tensor) -> torch.Tensor:
        """Eq. 4: M^c [B, C, T, 1, 1]."""
        frm = self.frame_mask(x).transpose(1, 2)  # [B, C, T]: convolve along T
        return torch.sigmoid(self.temporal(frm)).unsqueeze(-1).unsqueeze(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.mask(x)


class SpatioTemporalAttention(nn.Module):
    """theta_s-frm (7x7 conv per frame, Eq. 5) and theta_s-vid (two 3x3x3 convolutions, Eq. 6)."""

    def __init__(self, st_hidden: int = 1) -> None:
        super().__init__()
        k, p = SPATIAL_KERNEL, SPATIAL_KERNEL // 2
        self.frame = nn.Conv3d(2, 1, (1, k, k), padding=(0, p, p))  # a 2-D conv applied to every frame
        self.video = nn.Sequential(
            nn.Conv3d(1, st_hidden, VIDEO_KERNEL, padding=VIDEO_KERNEL // 2),
            nn.ReLU(),
            nn.Conv3d(st_hidden, 1, VIDEO_KERNEL, padding=VIDEO_KERNEL // 2),
        )

    def frame_mask(self, x: torch.Tensor) -> torch.Tensor:
        """Eq. 5: M^s-frm [B, 1, T, H, W]."""
        d = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return torch.sigmoid(self.frame(d))

    def mask(self, x: torch.Tensor) -> torch.Tensor:
        """Eq. 6: M^s [B, 1, T, H, W]."""
        return torch.sigmoid(self.video(self.frame_mask(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.mask(x)


class AttentionRefinement(nn.Module):
    """theta_ref (Eq. 7-8): AAP of every stage's M^s to H x W, concatenation, 1x1 conv N -> C, ReLU, add."""

    def __init__(self, channels: int, stages: int = 4) -> None:
        super().__init__()
        self.stages = stages
        self.conv = nn.Conv3d(stages, channels, 1)

    def forward(self, y: torch.Tensor, own_mask: torch.Tensor, earlier: tuple[torch.Tensor, ...]) -> torch.Tensor:
        if len(earlier) != self.stages - 1:
            raise UsageError(f"w3 refine with stages={self.stages} takes {self.stages - 1} earlier masks, got {len(earlier)}")
        size = tuple(own_mask.shape[2:])
        pooled = [F.adaptive_avg_pool3d(m, size) for m in earlier]  # Eq. 7: AAP to the last stage's size
        multi = torch.cat([*pooled, own_mask], dim=1)  # [B, N, T, H, W]
        return y + F.relu(self.conv(multi))  # Eq. 8


class W3(nn.Module):
    """W3 on [B, C, T, H, W]: channel-temporal, then spatio-temporal attention, then optionally AFR."""

    def __init__(
        self,
        channels: int,
        ratio: int = 16,
        ct_kernel: int = 3,
        ct_mix: str = "depthwise",
        ct_dilation: int = 1,
        st_hidden: int = 1,
        refine: bool = True,
        stages: int = 4,
    ) -> None:
        super().__init__()
        self.channel = ChannelTemporalAttention(channels, ratio, ct_kernel, ct_mix, ct_dilation)
        self.spatial = SpatioTemporalAttention(st_hidden)
        self.refine = AttentionRefinement(channels, stages) if refine else None

    def forward(self, x: torch.Tensor, *earlier_masks: torch.Tensor) -> torch.Tensor:
        f_c = self.channel(x)  # Eq. 2, first step
        m_s = self.spatial.mask(f_c)
        f_s = f_c * m_s  # Eq. 2, second step
        if self.refine is None:
            return f_s
        return self.refine(f_s, m_s, earlier_masks)


# ---------------------------------------------------------------------------------------------------------
# Closed forms


def _hidden(shape: VideoShape, ratio: int) -> int:
    return shape.C // ratio


def ct_cost(
    shape: VideoShape, ratio: int = 16, ct_kernel: int = 3, ct_mix: str = "depthwise", ct_dilation: int = 1
) -> Cost:
    b, c, t = shape.B, shape.C, shape.T
    hid = _hidden(shape, ratio)
    n = shape.numel
    rows = 2 * b * t  # avg and max descriptor of every frame through the shared MLP
    total = C.reduce(n) * 2  # d_avg-c, d_max-c
    total = total + C.linear(rows, c, hid, True) + C.eltwise(rows * hid) + C.linear(rows, hid, c, True)
    total = total + C.eltwise(b * t * c) * 2  # sum of the two, sigmoid (Eq. 3)
    per_group = 1 if ct_mix == "depthwise" else c
    total = total + C.conv(b * c * t, per_group, (ct_kernel,), True) * 2 + C.eltwise(b * c * t)  # convs, ReLU
    total = total + C.eltwise(b * c * t)  # sigmoid (Eq. 4)
    return total + C.eltwise(n)  # F^c = M^c (x) F


def st_cost(shape: VideoShape, st_hidden: int = 1) -> Cost:
    b, n = shape.B, shape.numel
    pos = b * shape.thw
    total = C.reduce(n) * 2  # d_avg-s, d_max-s
    total = total + C.conv(pos, 2, (SPATIAL_KERNEL, SPATIAL_KERNEL), True) + C.eltwise(pos)  # Eq. 5
    total = total + C.conv(pos * st_hidden, 1, (VIDEO_KERNEL,) * 3, True) + C.eltwise(pos * st_hidden)
    total = total + C.conv(pos, st_hidden, (VIDEO_KERNEL,) * 3, True) + C.eltwise(pos)  # Eq. 6
    return total + C.eltwise(n)  # F^s = M^s (x) F^c


def _earlier_sizes(shape: VideoShape, stages: int) -> list[tuple[int, int]]:
    """Spatial sizes of the N - 1 earlier stages' masks, first stage first (each stage halves H and W)."""
    return [(shape.H * 2**k, shape.W * 2**k) for k in range(stages - 1, 0, -1)]


def refine_cost(shape: VideoShape, stages: int = 4) -> Cost:
    b, t, h, w = shape.B, shape.T, shape.H, shape.W
    total = Cost()
    for hj, wj in _earlier_sizes(shape, stages):
        total = total + C.pool(b, C.adaptive_window_sum(t, t) * C.adaptive_window_sum(hj, h) * C.adaptive_window_sum(wj, w))
    total = total + C.conv(shape.numel, stages, (1, 1, 1), True)
    return total + C.eltwise(shape.numel) * 2  # ReLU, add (Eq. 8)


def w3_cost(
    shape: VideoShape,
    ratio: int = 16,
    ct_kernel: int = 3,
    ct_mix: str = "depthwise",
    ct_dilation: int = 1,
    st_hidden: int = 1,
    refine: bool = True,
    stages: int = 4,
) -> Cost:
    total = ct_cost(shape, ratio, ct_kernel, ct_mix, ct_dilation) + st_cost(shape, st_hidden)
    return total + refine_cost(shape, stages) if refine else total


def _ct_parts(c: int, hid: int, ct_kernel: int, ct_mix: str) -> tuple[int, int]:
    frm = (c * hid + hid) + (hid * c + c)
    per_group = 1 if ct_mix == "depthwise" else c
    vid = 2 * (c * per_group * ct_kernel + c)
    return frm, vid


def _st_parts(st_hidden: int) -> tuple[int, int]:
    frm = 2 * SPATIAL_KERNEL**2 + 1
    vid = (st_hidden * VIDEO_KERNEL**3 + st_hidden) + (st_hidden * VIDEO_KERNEL**3 + 1)
    return frm, vid


def ct_params(
    shape: VideoShape, ratio: int = 16, ct_kernel: int = 3, ct_mix: str = "depthwise", ct_dilation: int = 1
) -> int:
    return sum(_ct_parts(shape.C, _hidden(shape, ratio), ct_kernel, ct_mix))


def st_params(shape: VideoShape, st_hidden: int = 1) -> int:
    return sum(_st_parts(st_hidden))


def refine_params(shape: VideoShape, stages: int = 4) -> int:
    return stages * shape.C + shape.C


def w3_params(
    shape: VideoShape,
    ratio: int = 16,
    ct_kernel: int = 3,
    ct_mix: str = "depthwise",
    ct_dilation: int = 1,
    st_hidden: int = 1,
    refine: bool = True,
    stages: int = 4,
) -> int:
    total = ct_params(shape, ratio, ct_kernel, ct_mix, ct_dilation) + st_params(shape, st_hidden)
    return total + refine_params(shape, stages) if refine else total


# ---------------------------------------------------------------------------------------------------------
# Checks, inputs, terms


def _ct_check(shape: VideoShape, ratio: int = 16, ct_kernel: int = 3, ct_mix: str = "depthwise", ct_dilation: int = 1) -> None:
    if shape.C // ratio < 1:
        raise UsageError(
            f"w3 MLP hidden width C // ratio must be >= 1: ratio must be in 1..{shape.C} for C={shape.C}, got {ratio}"
        )


def _w3_check(
    shape: VideoShape,
    ratio: int = 16,
    ct_kernel: int = 3,
    ct_mix: str = "depthwise",
    ct_dilation: int = 1,
    st_hidden: int = 1,
    refine: bool = True,
    stages: int = 4,
) -> None:
    _ct_check(shape, ratio, ct_kernel, ct_mix, ct_dilation)
    if refine and not 1 <= stages <= MAX_STAGES:
        raise UsageError(f"w3 option stages must be in 1..{MAX_STAGES} (ResNet-50: 4), got {stages}")


def w3_inputs(shape: VideoShape, refine: bool = True, stages: int = 4, **_: Any) -> list[tuple[int, ...]]:
    """The feature map, then (with ``refine``) the earlier stages' masks M^s, first stage first."""
    shapes: list[tuple[int, ...]] = [tuple(shape.as_list())]
    if refine:
        shapes += [(shape.B, 1, shape.T, hj, wj) for hj, wj in _earlier_sizes(shape, stages)]
    return shapes


def ct_terms(
    shape: VideoShape, ratio: int = 16, ct_kernel: int = 3, ct_mix: str = "depthwise", ct_dilation: int = 1
) -> dict[str, Any]:
    frm, vid = _ct_parts(shape.C, _hidden(shape, ratio), ct_kernel, ct_mix)
    return {
        "hidden_channels": _hidden(shape, ratio),
        "params_theta_c_frm": frm,
        "params_theta_c_vid": vid,
        "mask_c_elements": shape.B * shape.T * shape.C,
        "temporal_span_frames": 1 + 2 * (ct_kernel - 1) * ct_dilation,
        "temporal_span_paper": "6 frames for K_c-vid = 3 (Sec. 3.1); two K = 3 layers at d = 1 span 5",
        "flops_channel_temporal": ct_cost(shape, ratio, ct_kernel, ct_mix, ct_dilation).flops,
    }


def st_terms(shape: VideoShape, st_hidden: int = 1) -> dict[str, Any]:
    frm, vid = _st_parts(st_hidden)
    return {
        "params_theta_s_frm": frm,
        "params_theta_s_vid": vid,
        "mask_s_elements": shape.B * shape.thw,
        "flops_spatio_temporal": st_cost(shape, st_hidden).flops,
    }


def w3_terms(
    shape: VideoShape,
    ratio: int = 16,
    ct_kernel: int = 3,
    ct_mix: str = "depthwise",
    ct_dilation: int = 1,
    st_hidden: int = 1,
    refine: bool = True,
    stages: int = 4,
) -> dict[str, Any]:
    out = ct_terms(shape, ratio, ct_kernel, ct_mix, ct_dilation) | st_terms(shape, st_hidden)
    out["mask_elements_full"] = shape.numel
    out["mask_elements_factorised"] = shape.B * shape.T * (shape.C + shape.H * shape.W)
    out["mask_formula"] = "T x C x H x W -> T (C + HW)  (Sec. 3, factorisation of M)"
    out["params_theta_ref"] = refine_params(shape, stages) if refine else 0
    out["flops_refine"] = refine_cost(shape, stages).flops if refine else 0
    out["refine_stages"] = stages if refine else 0
    return out


def _largest(shape: VideoShape, refine: bool = True, stages: int = 4, **_: Any) -> tuple[str, int]:
    candidates = [("feature map F^c, B x C x T x H x W", shape.numel)]
    if refine and stages > 1:
        hj, wj = _earlier_sizes(shape, stages)[0]
        candidates.append(("first-stage mask M^s, B x 1 x T x H1 x W1", shape.B * shape.T * hj * wj))
    return max(candidates, key=lambda kv: kv[1])


# ---------------------------------------------------------------------------------------------------------
# Memory (see attnbench.flops.memory)


def _ct_mask_memory(
    shape: VideoShape, p: Precision, held: list[tuple[str, int]], ratio: int, ct_kernel: int, ct_mix: str
) -> tuple[list[Phase], tuple[str, int]]:
    """Phases of :meth:`ChannelTemporalAttention.mask` with ``held`` alive, and M^c [B, C, T]. The two
    descriptors (locals) stay alive through the shared MLP and Eq. 3's sigmoid; laying them out as
    [B*T, C] copies only when the reshape cannot be a view (B > 1). M^c-frm is the first input of the
    ``nn.Sequential`` of Eq. 4, so it is alive through both temporal convolutions."""
    b, c, t, lo, act = shape.B, shape.C, shape.T, p.low, p.act
    bt = b * t
    d_avg, d_max = ("d_avg-c", bt * c * act), ("d_max-c", bt * c * act)
    phases: list[Phase] = []
    dims, strides = permuted((b, c, t), (0, 2, 1))
    if reshape_copies(dims, strides, (bt, c)):
        phases.append(("d_avg-c layout copy", held + [("mean over H, W", bt * c * act), d_avg]))
        phases.append(("d_max-c layout copy", held + [d_avg, ("max over H, W", bt * c * act), d_max]))
    descriptors = held + [d_avg, d_max]
    stacked = ("[d_avg-c; d_max-c]", 2 * bt * c * act)
    widths = (c, _hidden(shape, ratio), c)
    mlp, both = linear_stack_memory("shared MLP", 2 * bt, widths, p, True, descriptors + [stacked], True)
    phases += [("descriptor concatenation", descriptors + [stacked])] + mlp
    frm = ("M^c-frm", bt * c * lo)
    phases.append(("Eq. 3 sigmoid", descriptors + [both, ("MLP(d_avg-c) + MLP(d_max-c)", bt * c * lo), frm]))
    per_group = 1 if ct_mix == "depthwise" else c
    casts = [("temporal conv kernel and bias cast", (c * per_group * ct_kernel + c) * lo)] if p.autocast else []
    conv1, relu = ("temporal conv 1 output", b * c * t * lo), ("temporal ReLU output", b * c * t * lo)
    conv2, mask = ("temporal conv 2 output", b * c * t * lo), ("M^c", b * c * t * lo)
    phases += [
        ("temporal conv 1", held + [frm] + casts + [conv1]),
        ("temporal ReLU", held + [frm, conv1, relu]),
        ("temporal conv 2", held + [frm, relu] + casts + [conv2]),
        ("Eq. 4 sigmoid", held + [frm, conv2, mask]),
    ]
    return phases, mask


def _st_mask_memory(
    shape: VideoShape, p: Precision, held: list[tuple[str, int]], st_hidden: int
) -> tuple[list[Phase], tuple[str, int]]:
    """Phases of :meth:`SpatioTemporalAttention.mask` with ``held`` alive, and M^s [B, 1, T, H, W]. The
    concatenated descriptors (a local) are alive through Eq. 5; M^s-frm is the first input of the
    ``nn.Sequential`` of Eq. 6, alive through both 3x3x3 convolutions."""
    pos, lo, act = shape.B * shape.thw, p.low, p.act
    stacked = ("[d_avg-s, d_max-s]", 2 * pos * act)
    phases: list[Phase] = [("channel pooling", held + [("d_avg-s", pos * act), ("d_max-s", pos * act), stacked])]
    casts = [("theta_s-frm kernel cast", (2 * SPATIAL_KERNEL**2 + 1) * lo), ("descriptors cast", 2 * pos * lo)]
    conv, frm = ("theta_s-frm output", pos * lo), ("M^s-frm", pos * lo)
    phases += [
        ("Eq. 5 conv", held + [stacked] + (casts if p.autocast else []) + [conv]),
        ("Eq. 5 sigmoid", held + [stacked, conv, frm]),
    ]
    taps = VIDEO_KERNEL**3
    cast1 = [("theta_s-vid conv 1 kernel cast", (st_hidden * taps + st_hidden) * lo)] if p.autocast else []
    cast2 = [("theta_s-vid conv 2 kernel cast", (st_hidden * taps + 1) * lo)] if p.autocast else []
    conv1, relu = ("theta_s-vid conv 1 output", pos * st_hidden * lo), ("theta_s-vid ReLU output", pos * st_hidden * lo)
    conv2, mask = ("theta_s-vid conv 2 output", pos * lo), ("M^s", pos * lo)
    phases += [
        ("theta_s-vid conv 1", held + [frm] + cast1 + [conv1]),
        ("theta_s-vid ReLU", held + [frm, conv1, relu]),
        ("theta_s-vid conv 2", held + [frm, relu] + cast2 + [conv2]),
        ("Eq. 6 sigmoid", held + [conv2, mask]),
    ]
    return phases, mask


def ct_memory(
    shape: VideoShape, p: Precision, ratio: int = 16, ct_kernel: int = 3, ct_mix: str = "depthwise", ct_dilation: int = 1
) -> Peak:
    """Peak working memory of one call (see :mod:`attnbench.flops.memory`): F^c (activation dtype) and
    M^c; everything before it is C x T-sized."""
    phases, mask = _ct_mask_memory(shape, p, [], ratio, ct_kernel, ct_mix)
    phases.append(("F^c = M^c (x) F", [mask, ("F^c (output)", shape.numel * p.act)]))
    return peak(phases)


def st_memory(shape: VideoShape, p: Precision, st_hidden: int = 1) -> Peak:
    """Peak working memory of one call (see :mod:`attnbench.flops.memory`): F^s (activation dtype) and
    M^s; everything before it is T x H x W-sized."""
    phases, mask = _st_mask_memory(shape, p, [], st_hidden)
    phases.append(("F^s = M^s (x) F", [mask, ("F^s (output)", shape.numel * p.act)]))
    return peak(phases)


def w3_memory(
    shape: VideoShape,
    p: Precision,
    ratio: int = 16,
    ct_kernel: int = 3,
    ct_mix: str = "depthwise",
    ct_dilation: int = 1,
    st_hidden: int = 1,
    refine: bool = True,
    stages: int = 4,
) -> Peak:
    """Peak working memory of one call (see :mod:`attnbench.flops.memory`). F^c and M^s are locals of the
    forward, alive to its end. Without ``refine`` the peak is F^c and F^s (two maps, activation dtype);
    with it, the head's 1x1 convolution output and its ReLU (run's dtype; the convolution output is the
    argument of the ReLU), then the ReLU and the sum, are alive beside them: four maps. Under autocast
    the concatenation of fp32 earlier masks with the bf16 own mask promotes to fp32 (one cast of M^s)."""
    n, pos, lo, act = shape.numel, shape.B * shape.thw, p.low, p.act
    phases, m_c = _ct_mask_memory(shape, p, [], ratio, ct_kernel, ct_mix)
    f_c = ("F^c", n * act)
    phases.append(("F^c = M^c (x) F", [m_c, f_c]))
    st, m_s = _st_mask_memory(shape, p, [f_c], st_hidden)
    f_s = ("F^s", n * act)
    phases += st + [("F^s = M^s (x) F^c", [f_c, m_s, f_s])]
    if not refine:
        return peak(phases)
    held = [f_c, m_s, f_s] + [(f"earlier mask {j + 1} pooled", pos * act) for j in range(stages - 1)]
    promoted = p.autocast and stages > 1
    cast = [("M^s cast to fp32 for the concatenation", pos * act)] if promoted else []
    multi = ("M^ms (concatenated masks)", stages * pos * (act if promoted else lo))
    phases.append(("mask concatenation", held + cast + [multi]))
    casts = [("theta_ref kernel and bias cast", (stages * shape.C + shape.C) * lo)] if p.autocast else []
    casts += [("M^ms cast", stages * pos * lo)] if promoted else []
    conv, relu = ("theta_ref conv output", n * lo), ("ReLU output", n * lo)
    phases += [
        ("theta_ref conv", held + [multi] + casts + [conv]),
        ("theta_ref ReLU", held + [multi, conv, relu]),
        ("refinement add", held + [multi, relu, ("F^s + ReLU(...) (output)", n * act)]),
    ]
    return peak(phases)


# ---------------------------------------------------------------------------------------------------------
# Registration

PAPER = "Perez-Rua et al., Knowing What, Where and When to Look (W3), ECCV 2020"

# TSM-ResNet-50 stage outputs at 224 x 224 input; TSM keeps T (Sec. 3.3: W3 at every residual block).
_STAGES = (("res2", 256, 56), ("res3", 512, 28), ("res4", 1024, 14), ("res5", 2048, 7))
_ORDER = ("res4", "res2", "res3", "res5")  # res4 first: the stage of the nl block's W3 Table 6 preset


def _presets(with_refine: bool) -> tuple[Preset, ...]:
    by_stage = {name: (c, hw) for name, c, hw in _STAGES}
    out = []
    for frames in (8, 16):
        for stage in _ORDER:
            c, hw = by_stage[stage]
            source = f"W3 Sec. 3.3, Table 1: W3 at every residual block of TSM-R50; {stage} output {c}ch {hw}x{hw}, {frames} frames, 224x224"
            options: dict[str, Any] = {}
            if with_refine:
                last = stage == "res5"
                options = {"refine": last}
                source += "; AFR head (Eq. 7-8, Fig. 2) at the last stage, N=4 stage masks" if last else "; AFR head off (it sits at res5 only)"
            out.append(Preset(f"tsm-r50-{stage}-{frames}f", VideoShape(1, c, frames, hw, hw), source, options))
    return tuple(out)


_CT_OPTIONS = (
    Option("ratio", int, 16, "MLP bottleneck: C // ratio hidden units (not printed in W3; 16 as in CBAM)", minimum=1),
    Option("ct_kernel", int, 3, "K_c-vid, kernel of the two 1-D temporal convs (paper: 3)", CT_KERNELS),
    Option("ct_mix", str, "depthwise", "temporal convs per channel (depthwise, default) or C -> C (full)", CT_MIXES),
    Option("ct_dilation", int, 1, "dilation of both 1-D temporal convs (not printed; default 1)", minimum=1),
)
_ST_OPTIONS = (
    Option("st_hidden", int, 1, "channels between the two 3x3x3 convs of theta_s-vid (not printed; default 1)", minimum=1),
)
_REFINE_OPTIONS = (
    Option("refine", bool, True, "attention-guided feature refinement head, Eq. 7-8 (inference-time; last stage only)"),
    Option("stages", int, 4, f"N stage masks the refinement concatenates (ResNet-50: 4; 1..{MAX_STAGES}); N-1 are extra inputs", minimum=1,
           maximum=MAX_STAGES),
)

register_block(
    BlockSpec(
        name="w3",
        title="W3 video attention (channel-temporal + spatio-temporal, optional AFR head)",
        paper=PAPER,
        build=lambda shape, **o: W3(shape.C, **o),
        cost=w3_cost,
        params=w3_params,
        terms=w3_terms,
        inputs=w3_inputs,
        check=_w3_check,
        largest_intermediate=_largest,
        memory=w3_memory,
        options=_CT_OPTIONS + _ST_OPTIONS + _REFINE_OPTIONS,
        presets=_presets(with_refine=True),
    )
)

register_block(
    BlockSpec(
        name="w3-ct",
        title="W3 channel-temporal attention (Eq. 3-4) alone",
        paper=PAPER,
        build=lambda shape, **o: ChannelTemporalAttention(shape.C, **o),
        cost=ct_cost,
        params=ct_params,
        terms=ct_terms,
        check=_ct_check,
        memory=ct_memory,
        options=_CT_OPTIONS,
        presets=_presets(with_refine=False),
    )
)

register_block(
    BlockSpec(
        name="w3-st",
        title="W3 spatio-temporal attention (Eq. 5-6) alone",
        paper=PAPER,
        build=lambda shape, **o: SpatioTemporalAttention(**o),
        cost=st_cost,
        params=st_params,
        terms=st_terms,
        memory=st_memory,
        options=_ST_OPTIONS,
        presets=_presets(with_refine=False),
    )
)
