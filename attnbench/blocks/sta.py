"""STA (Li, Liu, Zhang, Zhang, Song, Sebe): spatio-temporal attention, and the STC block it compares against.

``sta`` -- the STA module (Sec. III-C, Fig. 2, Eq. 5-7) on X [B, c, l, h, w]:

* Conv1 = Conv3d(c -> 1, kernel (1, h, w), bias). Eq. (2) gives the temporal squeeze P_t exactly this
  weight, c x h x w numbers A_t = {a_j in R^{h x w}}, summed over channels and space for every frame. The
  channel squeeze S_s (Deconv's job in Fig. 3(b)) is merged into Conv1, as Sec. III-B-3 and III-C-1 say
  ("we move the operation S_s, squeezing channel dimension, from Deconv to Conv1"), so Conv1 leaves one
  value per frame: [B, 1, l]. Eq. (4)'s c x l x h x w x c squeeze P_s is the unmerged form and is not built
  (it alone would be O(c^2), against Table IV's O(c)).
* Deconv = ConvTranspose1d(1 -> 1, kernel 3, step 1, bias): E_t expands l -> l + 2 (Sec. IV-D-3: "we choose
  1 and 3 for step size and kernel size").
* ReLU (psi).
* Conv2 = Conv1d(1 -> c, kernel 4, no bias) on the Deconv output padded by one zero at its end, so
  (l + 2) + 1 - 4 + 1 = l: S_t o E_s restores the temporal length l and the c channels together.
* Sigmoid (delta), then y_{i,j} = w_{i,j} x_{i,j} (Eq. 7), w broadcast over h and w.

Five layers, as Table IV counts (Conv1, Deconv, ReLU, Conv2, Sigmoid). Why these kernel sizes and biases:
Table IV prints # PARAM = c (h w + 4) + 5 and # MULT = c l (h w + 4) + 3 l. With every layer's
multiplies = its weights x the positions it is applied at, the two formulas pin the design down:
Conv1 c h w weights at l frames (c l h w mults) + 1 bias; Deconv 3 weights at l input frames (3 l mults)
+ 1 bias; Conv2 4 c weights at l output frames (4 c l mults), no bias. Params c h w + 1 + 4 + 4 c =
c (h w + 4) + 5 and mults c l h w + 3 l + 4 c l = c l (h w + 4) + 3 l, exactly. The look-alike with a
kernel-3 Conv2 (l + 2 -> l with no padding) plus a c-bias also has 4 c params but only 3 c l mults, one
c l short of the table, so the table's "+4" is a kernel of 4, which needs one frame of padding on one side
(padding both sides would give l + 1). The paper prints no padding; we pad the end. Conv1's kernel covers
the whole h x w map, so a built module takes one (h, w); any B, c, l, h, w >= 1 is valid.

``stc`` -- the Spatio-Temporal Channel Correlation block (Diba et al., ECCV 2018, the STA paper's [16]), in
the form whose parameters are Table IV's c^2 (l^2 + l + 2) / r with no biases:

* temporal branch: mean over h, w -> [c, l], flattened to c l; FC c l -> c l / r, ReLU, FC c l / r -> c,
  Sigmoid (c^2 l^2 / r + c^2 l / r weights);
* channel branch: mean over l of that [c, l] map (equal to the global mean over l, h, w, since every frame
  has the same h w positions) -> c; FC c -> c / r, ReLU, FC c / r -> c, Sigmoid (2 c^2 / r weights);
* the two per-channel gates are multiplied, and the product scales the input: y = x (a_t a_s).

Ten layers, as Table IV counts (pool, FC, ReLU, FC, Sigmoid per branch). ``ratio`` is Table IV's r; it
must divide c (so that both hidden widths c l / r and c / r are whole). Its default 16 is SE's ratio (the
STC block extends SE); the STA paper prints no value for r. How the combined gate is applied is our choice
(the STA paper does not say; multiplying the two c-vectors first is the cheapest form).

Table IV's # MULT for STC, c (l + 3) + c^2 (l^2 + l + 2) / r, against what this block does per clip:

* c^2 (l^2 + l + 2) / r is exactly the four FC layers' MACs (the counter's "linear" mac cell);
* c (l + 3) is not itemised in the paper. In this block the work on the pooled vectors is c l + 3 c: the
  channel branch's mean over the l frames of the [c, l] map (c l adds), two sigmoids (2 c) and the product
  of the two gates (c). That is our reading, it is not the paper's word, and it mixes adds and
  non-linearities into a "multiplication" count;
* the formula leaves out the two c l h w-sized steps, the spatial pooling (c l h w adds) and the gating
  multiply (c l h w multiplies), and the hidden ReLUs (c l / r + c / r). ``terms`` reports all of these,
  and the counted total, so the gap is visible. (STA's formula likewise counts only convolution
  multiplies, not Eq. 7's c l h w gating multiplies nor the activations.)

Presets. The paper's text gives c = 1024, l = 8, h = w = 7 for "ResNeXt-101(64f) layer4". In Hara et al.'s
3D ResNeXt-101 (the model STA is fine-tuned from) on 64 x 112 x 112 clips, conv1 has stride (1, 2, 2), the
max-pool stride 2 and layer2-4 stride 2 each, so T, H, W go 64 -> 64 -> 32 -> 32 -> 16 -> 8 -> 4 and
112 -> 56 -> 28 -> 28 -> 14 -> 7 -> 4. The paper's 8 x 7 x 7 with 1024 channels is therefore layer4's input
(layer3's output; also the width of layer4's first bottleneck before its strided grouped conv), not
layer4's output (2048 x 4 x 4 x 4). We keep the paper's shape as the default preset, add the layer4 output
as a derived preset, and take the 16-frame shape (ResNeXt-101(16f), Table X) at the same place: layer4's
input, 1024 x 2 x 7 x 7 (16 -> 16 -> 8 -> 8 -> 4 -> 2 frames).
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
from attnbench.flops.memory import Peak, Phase, Precision, peak
from attnbench.shapes import VideoShape

DECONV_KERNEL = 3  # Sec. IV-D-3: kernel size 3, step size 1
CONV2_KERNEL = 4  # Table IV's "+4": c (h w + 4) params, c l (h w + 4) mults


# ---------------------------------------------------------------------------------------------------------
# Where the presets come from: Hara et al.'s 3D ResNeXt-101 on 112 x 112 clips


def _down(n: int, kernel: int, stride: int, padding: int) -> int:
    return (n + 2 * padding - kernel) // stride + 1


def resnext101_layer_input(frames: int, size: int, layer: int) -> tuple[int, int, int]:
    """(T, H, W) entering ``layer`` (1-4; 5 means layer4's output) of Hara et al.'s 3D ResNeXt-101.

    conv1: kernel 7, stride (1, 2, 2), padding 3; max-pool: kernel 3, stride 2, padding 1; layer1 stride 1;
    layer2, layer3, layer4: stride 2 in their first block's 3 x 3 x 3 grouped conv (padding 1)."""
    t, s = frames, _down(size, 7, 2, 3)
    t, s = _down(t, 3, 2, 1), _down(s, 3, 2, 1)
    for _ in range(2, layer):  # layer2 .. layer(layer - 1) halve T, H, W
        t, s = _down(t, 3, 2, 1), _down(s, 3, 2, 1)
    return t, s, s


def _shape_at(channels: int, frames: int, layer: int) -> VideoShape:
    t, h, w = resnext101_layer_input(frames, 112, layer)
    return VideoShape(1, channels, t, h, w)


PRESETS = (
    Preset(
        "resnext101-64f-layer4",
        _shape_at(1024, 64, 4),
        "STA Sec. IV-C (Table IV text): ResNeXt-101(64f) layer4, c=1024, l=8, h=w=7 "
        "(= layer4's input in Hara et al.'s 3D ResNeXt-101 at 64x112x112)",
    ),
    Preset(
        "resnext101-16f-layer4",
        _shape_at(1024, 16, 4),
        "STA Table X, ResNeXt-101(16f) at 16x112x112: layer4's input by Hara et al.'s strides, 1024x2x7x7",
    ),
    Preset(
        "resnext101-64f-layer4-out",
        VideoShape(1, 2048, *resnext101_layer_input(64, 112, 5)),
        "derived, not printed: layer4's output of ResNeXt-101(64f) at 64x112x112, 2048x4x4x4",
    ),
)


# ---------------------------------------------------------------------------------------------------------
# STA


class STAModule(nn.Module):
    """STA on [B, c, l, h, w] for one (h, w) (see module docstring)."""

    def __init__(self, channels: int, height: int, width: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(channels, 1, (1, height, width))
        self.deconv = nn.ConvTranspose1d(1, 1, DECONV_KERNEL, stride=1)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv1d(1, channels, CONV2_KERNEL, bias=False)
        self.sigmoid = nn.Sigmoid()

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        """W [B, c, l]: one weight per frame and channel."""
        b, _, l = x.shape[:3]
        z = self.conv1(x).reshape(b, 1, l)  # P (with S_s merged): one value per frame
        z = self.relu(self.deconv(z))  # E_t: l -> l + 2
        z = F.pad(z, (0, CONV2_KERNEL - DECONV_KERNEL))  # l + 3, so that kernel 4 gives l
        return self.sigmoid(self.conv2(z))  # S_t o E_s: [B, c, l]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weights(x)
        return x * w[..., None, None]


def sta_conv_macs_per_clip(shape: VideoShape) -> int:
    """Convolution multiplies of one clip, layer by layer: Conv1 + Deconv + Conv2."""
    c, l, hw = shape.C, shape.T, shape.H * shape.W
    return c * l * hw + DECONV_KERNEL * l + CONV2_KERNEL * c * l


def sta_cost(shape: VideoShape) -> Cost:
    b, c, l = shape.B, shape.C, shape.T
    lx = l + DECONV_KERNEL - 1
    total = C.conv(b * l, c, (1, shape.H, shape.W), True)
    total = total + C.conv_transpose(b * l, 1, (DECONV_KERNEL,), b * lx, True)
    total = total + C.eltwise(b * lx)  # ReLU
    total = total + C.conv(b * c * l, 1, (CONV2_KERNEL,), False)
    total = total + C.eltwise(b * c * l)  # Sigmoid
    return total + C.eltwise(shape.numel)  # Eq. 7


def sta_params(shape: VideoShape) -> int:
    c = shape.C
    return (c * shape.H * shape.W + 1) + (DECONV_KERNEL + 1) + CONV2_KERNEL * c


def sta_terms(shape: VideoShape) -> dict[str, Any]:
    """Table IV's STA formulas (per clip) next to the layer-by-layer counts."""
    c, l, h, w = shape.C, shape.T, shape.H, shape.W
    per_clip = sta_conv_macs_per_clip(shape)
    return {
        "table_iv_params": c * (h * w + 4) + 5,
        "table_iv_params_formula": "c x (h x w + 4) + 5  (STA Table IV)",
        "table_iv_mults": c * l * (h * w + 4) + 3 * l,
        "table_iv_mults_formula": "c x l x (h x w + 4) + 3 x l  (STA Table IV, per clip)",
        "conv_macs_per_clip": per_clip,
        "conv_macs": shape.B * per_clip,
        "gating_mults": shape.numel,
        "layers": 5,
        "deconv_length": l + DECONV_KERNEL - 1,
        "params_conv1": c * h * w + 1,
        "params_deconv": DECONV_KERNEL + 1,
        "params_conv2": CONV2_KERNEL * c,
    }


def sta_largest(shape: VideoShape) -> tuple[str, int]:
    return ("gated output B x c x l x h x w", shape.numel)


def sta_memory(shape: VideoShape, p: Precision) -> Peak:
    """Peak working memory of one call (see :mod:`attnbench.flops.memory`): the gated output (activation
    dtype) and the weights W [B, c, l]; under autocast Conv1 also casts the whole input to bf16, which is
    smaller than the fp32 output. Everything between Conv1 and Conv2 is a few values per frame."""
    b, c, l, lo = shape.B, shape.C, shape.T, p.low
    lx = l + DECONV_KERNEL - 1
    casts = [("Conv1 kernel cast", (c * shape.H * shape.W + 1) * lo), ("x cast for Conv1", shape.numel * lo)]
    z = ("Conv1 output", b * l * lo)
    phases: list[Phase] = [("Conv1", (casts if p.autocast else []) + [z])]
    deconv = ("Deconv output", b * lx * lo)
    casts = [("Deconv kernel cast", (DECONV_KERNEL + 1) * lo)] if p.autocast else []
    phases.append(("Deconv", [z] + casts + [deconv]))
    relu = ("ReLU output", b * lx * lo)
    phases.append(("ReLU", [z, deconv, relu]))
    pad = ("padded", b * (lx + CONV2_KERNEL - DECONV_KERNEL) * lo)
    phases.append(("pad", [relu, pad]))
    conv2 = ("Conv2 output", b * c * l * lo)
    casts = [("Conv2 kernel cast", CONV2_KERNEL * c * lo)] if p.autocast else []
    phases.append(("Conv2", [pad] + casts + [conv2]))
    w = ("W = sigmoid(Conv2)", b * c * l * lo)
    phases.append(("sigmoid", [pad, conv2, w]))
    phases.append(("gating", [w, ("x * W (output)", shape.numel * p.act)]))
    return peak(phases)


register_block(
    BlockSpec(
        name="sta",
        title="Spatio-temporal attention (Conv1, Deconv, Conv2)",
        paper="STA (Li et al.)",
        build=lambda shape: STAModule(shape.C, shape.H, shape.W),
        cost=sta_cost,
        params=sta_params,
        terms=sta_terms,
        largest_intermediate=sta_largest,
        memory=sta_memory,
        presets=PRESETS,
    )
)


# ---------------------------------------------------------------------------------------------------------
# STC


class STCBlock(nn.Module):
    """Spatio-temporal channel correlation block on [B, c, l, h, w] (see module docstring)."""

    def __init__(self, channels: int, frames: int, ratio: int = 16) -> None:
        super().__init__()
        cl = channels * frames
        self.temporal = nn.Sequential(
            nn.Linear(cl, cl // ratio, bias=False), nn.ReLU(),
            nn.Linear(cl // ratio, channels, bias=False), nn.Sigmoid(),
        )
        self.channel = nn.Sequential(
            nn.Linear(channels, channels // ratio, bias=False), nn.ReLU(),
            nn.Linear(channels // ratio, channels, bias=False), nn.Sigmoid(),
        )

    def gates(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(a_t, a_s), each [B, c]."""
        pooled = x.mean(dim=(3, 4))  # [B, c, l]
        a_t = self.temporal(pooled.flatten(1))
        a_s = self.channel(pooled.mean(dim=2))
        return a_t, a_s

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a_t, a_s = self.gates(x)
        return x * (a_t * a_s)[..., None, None, None]


def _stc_check(shape: VideoShape, ratio: int) -> None:
    if shape.C % ratio:
        raise UsageError(
            f"stc needs r to divide C (FC widths C*T/r and C/r): got C={shape.C}, T={shape.T}, r={ratio}"
        )


def _stc_fc_macs_per_clip(c: int, l: int, r: int) -> int:
    return c * l * (c * l // r) + (c * l // r) * c + c * (c // r) + (c // r) * c


def stc_cost(shape: VideoShape, ratio: int = 16) -> Cost:
    b, c, l, r = shape.B, shape.C, shape.T, ratio
    total = C.reduce(shape.numel)  # spatial mean -> [B, c, l]
    total = total + C.linear(b, c * l, c * l // r, False) + C.eltwise(b * (c * l // r))
    total = total + C.linear(b, c * l // r, c, False) + C.eltwise(b * c)
    total = total + C.reduce(b * c * l)  # mean over l -> [B, c]
    total = total + C.linear(b, c, c // r, False) + C.eltwise(b * (c // r))
    total = total + C.linear(b, c // r, c, False) + C.eltwise(b * c)
    return total + C.eltwise(b * c) + C.eltwise(shape.numel)  # a_t a_s, then the gating


def stc_params(shape: VideoShape, ratio: int = 16) -> int:
    return _stc_fc_macs_per_clip(shape.C, shape.T, ratio)  # every weight is used once per clip


def stc_terms(shape: VideoShape, ratio: int = 16) -> dict[str, Any]:
    """Table IV's STC formulas (per clip) next to what the block counts (see module docstring)."""
    c, l, r = shape.C, shape.T, ratio
    chw = c * l * shape.H * shape.W
    fc = _stc_fc_macs_per_clip(c, l, r)
    small = c * l + 2 * c + c  # mean over l, two sigmoids, gate product
    omitted = chw + chw + (c * l // r) + (c // r)  # spatial pooling, gating, hidden ReLUs
    table_mults = c * (l + 3) + c * c * (l * l + l + 2) // r
    return {
        "table_iv_params": c * c * (l * l + l + 2) // r,
        "table_iv_params_formula": "c^2 x (l^2 + l + 2) / r  (STA Table IV)",
        "table_iv_mults": table_mults,
        "table_iv_mults_formula": "c x (l + 3) + c^2 x (l^2 + l + 2) / r  (STA Table IV, per clip)",
        "fc_macs_per_clip": fc,
        "table_iv_small_term": c * (l + 3),
        "counted_small_term_per_clip": small,
        "small_term_reading": "c*l adds (mean over l) + 2c sigmoids + c gate products",
        "omitted_by_table_iv_per_clip": omitted,
        "omitted_by_table_iv": "spatial pooling c*l*h*w adds, gating c*l*h*w mults, ReLUs c*l/r + c/r",
        "counted_work_per_clip": fc + small + omitted,
        "counted_mults_per_clip": fc + c + chw,
        "layers": 10,
        "r": r,
    }


def stc_largest(shape: VideoShape, ratio: int = 16) -> tuple[str, int]:
    return ("gated output B x c x l x h x w", shape.numel)


def stc_memory(shape: VideoShape, p: Precision, ratio: int = 16) -> Peak:
    """Peak working memory of one call (see :mod:`attnbench.flops.memory`): the gated output (activation
    dtype) with the two gates and their product. Under autocast the peak is usually the temporal branch's
    first FC instead: it casts its c l x c l / r weight to bf16, larger than the output at every preset."""
    b, c, l, r = shape.B, shape.C, shape.T, ratio
    pooled = ("spatial mean [B, c, l]", b * c * l * p.act)
    phases: list[Phase] = [("spatial pooling", [pooled])]
    temporal, a_t = linear_stack_memory("temporal FC", b, (c * l, c * l // r, c), p, False, [pooled], True, "sigmoid")
    mean = ("mean over l", b * c * p.act)
    channel, a_s = linear_stack_memory("channel FC", b, (c, c // r, c), p, False, [pooled, a_t, mean], True, "sigmoid")
    phases += temporal + [("mean over l", [pooled, a_t, mean])] + channel
    gate = ("a_t a_s", b * c * p.low)
    phases.append(("gate product", [a_t, a_s, gate]))
    phases.append(("gating", [a_t, a_s, gate, ("x (a_t a_s) (output)", shape.numel * p.act)]))
    return peak(phases)


register_block(
    BlockSpec(
        name="stc",
        title="Spatio-temporal channel correlation (STA's STC baseline)",
        paper="Diba et al. 2018; compared in STA Table IV",
        build=lambda shape, ratio=16: STCBlock(shape.C, shape.T, ratio),
        cost=stc_cost,
        params=stc_params,
        terms=stc_terms,
        check=_stc_check,
        largest_intermediate=stc_largest,
        memory=stc_memory,
        options=(Option("ratio", int, 16, "reduction ratio r of both branches' first FC (Table IV's r)", minimum=1),),
        presets=PRESETS,
    )
)
