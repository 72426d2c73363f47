"""ECO-Lite (Zolfaghari et al., ECCV 2018) as BANet builds on it (Zhou, Xu, Yang; BANet Table I, Fig. 2).

What is built, for a video [B, 3, N, H, W] (224 x 224 in the paper):

0. Optional frame attention (``frame_attention=true``): BANet's ``fa`` block in front (Sec. III-B, Fig. 2),
   keeping T = round(fa_keep_ratio x N) of the N sampled frames (BANet keeps 50%). Without it, T = N.
1. 2D part, per frame (the T frames folded into the batch): BN-Inception from conv1 to inception-3c (BANet
   Sec. III-A: "the first part of BN-Inception (from conv1_x to inception3c)"), every convolution followed by
   batch norm and ReLU, convolutions without bias (the batch norm's shift makes a bias redundant; the Caffe
   BN-Inception that ECO loads carries one, 1 x C_out more per convolution):

   ===================  ===================================================  =====================
   conv1                7x7 / 2, 3 -> 64                                      112 x 112 x 64
   pool1                max 3x3 / 2 (ceil mode)                               56 x 56 x 64
   conv2                1x1, 64 -> 64 (conv2_3x3_reduce), 3x3, 64 -> 192        56 x 56 x 192
   pool2                max 3x3 / 2 (ceil mode)                               28 x 28 x 192
   inception-3a         1x1 64 | 1x1 64 > 3x3 64 | 1x1 64 > 3x3 96 > 3x3 96 |   28 x 28 x 256
                        avg 3x3 > 1x1 32
   inception-3b         1x1 64 | 1x1 64 > 3x3 96 | 1x1 64 > 3x3 96 > 3x3 96 |   28 x 28 x 320
                        avg 3x3 > 1x1 64
   inception-3c (part)  1x1 320 -> 64 (double_3x3_reduce), 3x3 64 -> 96          28 x 28 x 96
                        (double_3x3_1)
   ===================  ===================================================  =====================

   BN-Inception's full inception-3c is a stride-2 reduction block (3x3 branch 128 > 160 / 2, double-3x3
   branch 64 > 96 > 96 / 2, max-pool pass-through) whose output is 14 x 14 x 576. ECO feeds its 3D part from
   inside that block, at the first 3x3 of the double-3x3 branch, before any stride: 28 x 28 x 96, which is
   BANet Table I's inception(3c) row ("28 x 28 x 96"). So only those two layers of inception-3c are built;
   the others feed inception-4a, which only the full ECO (not ECO-Lite) uses.
2. The per-frame maps are stacked to M [B, 96, T, 28, 28] (Sec. III-A: "C = 96 ... H = W = 28").
3. Attention ``attn`` (``nl`` or ``cs``): one block on M, between the 2D and the 3D part (Sec. III-A: "We use
   only one cascaded self-attention block after feature map stacking"; Table VI: "ECO (with 1 NL)", "ECO
   (with 1 CS)").
4. 3D part: 3D-ResNet-18 conv3_x to conv5_x as Table I prints it: two basic blocks per stage (3x3x3 convs,
   batch norm, ReLU), 128, 256, 512 channels; conv4_x and conv5_x stride 2 in T, H and W (Table I:
   28 x 28 x N -> 14 x 14 x N/2 -> 7 x 7 x N/4). Shortcuts are identities, or a 1x1x1 convolution with batch
   norm where the width or stride changes (Hara et al.'s type B) -- including the first block, 96 -> 128.
   (ECO's released model differs in detail: its conv3_x is three convolutions fed from the 96 channels with
   one residual, and its down-sampling shortcuts are 3x3x3; we follow Table I.)
5. Global average pooling over T x 7 x 7 and a fully connected layer 512 -> ``num_classes`` (default 101,
   UCF101, the dataset of BANet Table III's speed comparison). Dropout before it is omitted (no parameters,
   no work in inference).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from attnbench.blocks.registry import Option, get_block
from attnbench.errors import UsageError
from attnbench.networks.registry import (
    NetworkPreset,
    NetworkSpec,
    Resolved,
    Site,
    bn_params,
    conv_out,
    conv_params,
    linear_params,
    num_classes_option,
    pool_out_ceil,
    register_network,
)
from attnbench.shapes import VideoShape

# inception widths: 1x1 | 3x3 reduce, 3x3 | double-3x3 reduce, double-3x3 | pool projection (BN-Inception)
INCEPTION_3A = (64, 64, 64, 64, 96, 32)
INCEPTION_3B = (64, 64, 96, 64, 96, 64)
INCEPTION_3C_USED = (64, 96)  # double_3x3_reduce, double_3x3_1 (stride 1)
FEATURES_2D = INCEPTION_3C_USED[1]  # 96
STAGES_3D = ((128, 1), (256, 2), (512, 2))  # conv3_x, conv4_x, conv5_x: (channels, stride)
BLOCKS_PER_STAGE = 2

# ---------------------------------------------------------------------------------------------------------
# Modules


class ConvBN2d(nn.Sequential):
    """Convolution (no bias), batch norm, ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, padding: int = 0) -> None:
        super().__init__(nn.Conv2d(cin, cout, kernel, stride, padding, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


def _convbn2d_params(cin: int, cout: int, kernel: int) -> int:
    return conv_params(cin, cout, kernel) + bn_params(cout)


class Inception(nn.Module):
    """BN-Inception's stride-1 inception block (3a, 3b): four branches concatenated along channels."""

    def __init__(self, cin: int, widths: tuple[int, ...]) -> None:
        super().__init__()
        b1, r3, c3, rd, cd, pp = widths
        self.branch1x1 = ConvBN2d(cin, b1, 1)
        self.branch3x3 = nn.Sequential(ConvBN2d(cin, r3, 1), ConvBN2d(r3, c3, 3, padding=1))
        self.branch_double = nn.Sequential(ConvBN2d(cin, rd, 1), ConvBN2d(rd, cd, 3, padding=1), ConvBN2d(cd, cd, 3, padding=1))
        self.branch_pool = nn.Sequential(nn.AvgPool2d(3, 1, 1), ConvBN2d(cin, pp, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1x1(x), self.branch3x3(x), self.branch_double(x), self.branch_pool(x)], dim=1)


def inception_out(widths: tuple[int, ...]) -> int:
    b1, _, c3, _, cd, pp = widths
    return b1 + c3 + cd + pp


def _inception_params(cin: int, widths: tuple[int, ...]) -> int:
    b1, r3, c3, rd, cd, pp = widths
    return (
        _convbn2d_params(cin, b1, 1)
        + _convbn2d_params(cin, r3, 1) + _convbn2d_params(r3, c3, 3)
        + _convbn2d_params(cin, rd, 1) + _convbn2d_params(rd, cd, 3) + _convbn2d_params(cd, cd, 3)
        + _convbn2d_params(cin, pp, 1)
    )


class BNInceptionTo3c(nn.Sequential):
    """BN-Inception from conv1 to inception-3c's double_3x3_1: [N, 3, 224, 224] -> [N, 96, 28, 28]."""

    def __init__(self) -> None:
        c3a = inception_out(INCEPTION_3A)
        c3b = inception_out(INCEPTION_3B)
        rd, cd = INCEPTION_3C_USED
        super().__init__(
            ConvBN2d(3, 64, 7, 2, 3),  # conv1
            nn.MaxPool2d(3, 2, ceil_mode=True),  # pool1
            ConvBN2d(64, 64, 1),  # conv2_3x3_reduce
            ConvBN2d(64, 192, 3, padding=1),  # conv2_3x3
            nn.MaxPool2d(3, 2, ceil_mode=True),  # pool2
            Inception(192, INCEPTION_3A),
            Inception(c3a, INCEPTION_3B),
            ConvBN2d(c3b, rd, 1),  # inception_3c_double_3x3_reduce
            ConvBN2d(rd, cd, 3, padding=1),  # inception_3c_double_3x3_1
        )


def bn_inception_to_3c_params() -> int:
    c3a = inception_out(INCEPTION_3A)
    rd, cd = INCEPTION_3C_USED
    return (
        _convbn2d_params(3, 64, 7)
        + _convbn2d_params(64, 64, 1)
        + _convbn2d_params(64, 192, 3)
        + _inception_params(192, INCEPTION_3A)
        + _inception_params(c3a, INCEPTION_3B)
        + _convbn2d_params(inception_out(INCEPTION_3B), rd, 1)
        + _convbn2d_params(rd, cd, 3)
    )


def size_after_2d(size: int) -> int:
    """Frame side after the 2D part (conv1 / 2, two ceil-mode pools / 2): 224 -> 28."""
    n = conv_out(size, 7, 2, 3)
    n = pool_out_ceil(n, 3, 2)
    return pool_out_ceil(n, 3, 2)


class BasicBlock3d(nn.Module):
    """3D ResNet basic block: two 3x3x3 convolutions with batch norm; type-B shortcut where the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm3d(cout)
        self.conv2 = nn.Conv3d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm3d(cout)
        self.relu = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv3d(cin, cout, 1, stride, bias=False), nn.BatchNorm3d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.relu(y + self.shortcut(x))


def _basic3d_params(cin: int, cout: int, stride: int) -> int:
    total = conv_params(cin, cout, 3, dims=3) + bn_params(cout) + conv_params(cout, cout, 3, dims=3) + bn_params(cout)
    if stride != 1 or cin != cout:
        total += conv_params(cin, cout, 1, dims=3) + bn_params(cout)
    return total


def _blocks_3d() -> list[tuple[int, int, int]]:
    out, cin = [], FEATURES_2D
    for cout, stride in STAGES_3D:
        for i in range(BLOCKS_PER_STAGE):
            out.append((cin, cout, stride if i == 0 else 1))
            cin = cout
    return out


class EcoLite(nn.Module):
    """ECO-Lite with optional frame attention in front and one attention block after the 2D part."""

    def __init__(self, num_classes: int, frame_attention: nn.Module | None = None, attention: nn.Module | None = None) -> None:
        super().__init__()
        self.frame_attention = frame_attention
        self.features2d = BNInceptionTo3c()
        self.attention = attention if attention is not None else nn.Identity()
        self.features3d = nn.Sequential(*(BasicBlock3d(*b) for b in _blocks_3d()))
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.fc = nn.Linear(STAGES_3D[-1][0], num_classes)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        if self.frame_attention is not None:
            video = self.frame_attention(video)  # [B, 3, N, H, W] -> [B, 3, T, H, W]
        b, c, t, h, w = video.shape
        frames = video.transpose(1, 2).reshape(b * t, c, h, w)
        f = self.features2d(frames)  # [B T, 96, 28, 28]
        m = f.reshape(b, t, *f.shape[1:]).transpose(1, 2)  # stacked: [B, 96, T, 28, 28]
        m = self.attention(m)
        y = self.pool(self.features3d(m)).flatten(1)
        return self.fc(y)


# ---------------------------------------------------------------------------------------------------------
# Spec


def _fa_options(r: Resolved) -> dict[str, Any]:
    n = r.net
    return get_block("fa").resolve_options(
        {"pool": n["fa_pool"], "hidden1": n["fa_hidden1"], "hidden2": n["fa_hidden2"], "keep_ratio": n["fa_keep_ratio"]}
    )


def frames_kept(r: Resolved) -> int:
    """T, the frames the 2D part sees: all N, or round(keep_ratio x N) behind frame attention."""
    if not r.net["frame_attention"]:
        return r.frames
    from attnbench.blocks.banet import kept_frames

    return kept_frames(r.frames, r.net["fa_keep_ratio"])


def _fits(size: int) -> bool:
    """Whether conv1's output survives both 3x3 / 2 poolings."""
    n = conv_out(size, 7, 2, 3)
    return n >= 3 and pool_out_ceil(n, 3, 2) >= 3


MIN_SIZE = next(s for s in range(1, 64) if _fits(s))


def _check(r: Resolved) -> None:
    if r.net["frame_attention"]:
        get_block("fa").validate(r.input_shape, _fa_options(r))
    if r.size < MIN_SIZE:
        raise UsageError(f"eco-lite needs frames of at least {MIN_SIZE} x {MIN_SIZE} (conv1 / 2 and two 3x3 / 2 poolings), got {r.size}")


def _sites(r: Resolved) -> list[Site]:
    s = size_after_2d(r.size)
    shape = VideoShape(r.batch, FEATURES_2D, frames_kept(r), s, s)
    return [Site("after 2D part (stacked inception-3c features)", shape, dict(r.attn_options), position="after2d")]


def _construct(r: Resolved, sites: list[Site]) -> nn.Module:
    fa = get_block("fa").build(r.input_shape, **_fa_options(r)) if r.net["frame_attention"] else None
    attention = None
    if sites:
        (site,) = sites
        attention = get_block(r.attn).build(site.shape, **site.options)
    return EcoLite(r.net["num_classes"], fa, attention)


def _base_params(r: Resolved) -> int:
    total = bn_inception_to_3c_params()
    total += sum(_basic3d_params(*b) for b in _blocks_3d())
    total += linear_params(STAGES_3D[-1][0], r.net["num_classes"])
    if r.net["frame_attention"]:
        total += get_block("fa").params(r.input_shape, **_fa_options(r))
    return total


_SRC = "BANet Sec. III-A, Table I (ECO-Lite): 2D BN-Inception to inception-3c, 3D-ResNet-18 conv3_x-conv5_x"

register_network(
    NetworkSpec(
        name="eco-lite",
        title="ECO-Lite (BN-Inception to 3c + 3D-ResNet-18 conv3_x-conv5_x), BANet's backbone",
        paper="Zolfaghari et al. ECO, ECCV 2018; as used by BANet (Zhou, Xu, Yang)",
        attn_choices=("none", "nl", "cs"),
        presets=(
            NetworkPreset("16f", 16, 224, "BANet Table III / VI: ECO-Lite(16F) and ECO with 1 NL / 1 CS, 16 frames 224x224 (VPS on UCF101)"),
            NetworkPreset("8f", 8, 224, "BANet Table III: 8 frames 224x224 (BANet-Lite(8F) without frame attention)"),
            NetworkPreset("4f", 4, 224, "BANet Table III: 4 frames 224x224 (BANet-Lite(4F) without frame attention)"),
            NetworkPreset("banet-lite-16f", 32, 224, "BANet-Lite(16F), Table III: frame attention keeps 16 of N=32 frames (M/N = 50%)", {"frame_attention": True}),
            NetworkPreset("banet-lite-8f", 16, 224, "BANet-Lite(8F), Table III: frame attention keeps 8 of N=16 frames", {"frame_attention": True}),
        ),
        construct=_construct,
        base_params=_base_params,
        sites=_sites,
        check=_check,
        options=(
            num_classes_option(101, "101, UCF101 as in BANet Table III"),
            Option("frame_attention", bool, False, "BANet's frame attention (fa) in front: N input frames, T kept"),
            Option("fa_keep_ratio", float, 0.5, "frame attention: share of the N frames kept (BANet: 50%)"),
            Option("fa_pool", int, 56, "frame attention: difference maps max-pooled to pool x pool (BANet: 56)", minimum=1),
            Option("fa_hidden1", int, 512, "frame attention: first MLP width (not in the paper)", minimum=1),
            Option("fa_hidden2", int, 128, "frame attention: second MLP width (not in the paper)", minimum=1),
        ),
        placements={
            "nl": "one block on the stacked 2D features [B, 96, T, 28, 28], before conv3_x (BANet Table VI: 'ECO (with 1 NL)')",
            "cs": "one block on the stacked 2D features [B, 96, T, 28, 28], before conv3_x (BANet Sec. III-A: "
            "'We use only one cascaded self-attention block after feature map stacking')",
        },
    )
)
