"""ECO-Lite as BANet builds on it (Zhou, Xu, Yang; BANet Table I, Fig. 2), and the full ECO around the same 3D net
(Zolfaghari, Singh, Brox, "ECO: Efficient Convolutional Network for Online Video Understanding", ECCV 2018).

``eco-lite``, for a video [B, 3, N, H, W] (224 x 224 in the paper):

0. Optional frame attention (``frame_attention=true``): BANet's ``fa`` block in front (Sec. III-B, Fig. 2),
   keeping T = floor(fa_keep_ratio x N + 1/2) of the N sampled frames, halves rounded up (BANet keeps 50%).
   Without it, T = N.
1. 2D part, per frame (the T frames folded into the batch): BN-Inception from conv1 to inception-3c (BANet
   Sec. III-A: "the first part of BN-Inception (from conv1_x to inception3c)"), every convolution followed by
   batch norm and ReLU, convolutions without bias (the batch norm's shift makes a bias redundant; the Caffe
   BN-Inception that ECO loads carries one, 1 x C_out more per convolution; ``eco-lite-released`` keeps them):

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
   one residual, and its down-sampling shortcuts are 3x3x3; we follow Table I. The released model is
   ``eco-lite-released``, :mod:`attnbench.networks.eco_released`.)
5. Global average pooling over T x 7 x 7 and a fully connected layer 512 -> ``num_classes`` (default 101,
   UCF101, the dataset of BANet Table III's speed comparison). Dropout before it is omitted (no parameters,
   no work in inference).

The BANet-Lite presets (``banet-lite-4f``, ``-8f``, ``-16f``, ``-20f``: Table III's BANet-Lite(4F..20F), N = 2 x
the kept frames) turn frame attention on and carry BANet's CS block unless another ``attn`` (``none`` for the
plain network) is asked for: BANet-Lite is ECO-Lite with frame attention and one CS block (BANet Sec. III,
Table III).

``eco``, the full ECO: the same 2D part, stacking, attention site and 3D part as ``eco-lite`` (so that BANet
Table VI's "ECO", "ECO with 1 NL", "ECO with 1 CS" -- Table III's ECO(16F) at 23.2 VPS, not ECO-Lite(16F) at
33.1 -- place their block exactly as ``eco-lite`` does), plus ECO's 2D-Net branch:

=====================================  ==============================================================  =========
what                                   structure                                                       source
=====================================  ==============================================================  =========
2D-Net branch input                    inception-3b's output [B T, 320, 28, 28] and inception-3c's        (a) (b)
                                       double_3x3_1 [B T, 96, 28, 28] (shared with the 3D feed)
inception-3c, rest                     1x1 320 -> 128 > 3x3 / 2 160 | double_3x3_2 3x3 / 2 96 -> 96 |   (a) (b)
                                       max 3x3 / 2 (ceil) on inception-3b: 14 x 14 x 576
inception-4a..4d                       (1x1 | 3x3 reduce > 3x3 | 2x 3x3 | avg > proj): 224|64>96|96>128  (a) (b)
                                       >128|128; 192|96>128|96>128>128|128; 160|128>160|128>160>160|128;
                                       96|128>192|160>192>192|128: 576, 576, 608, 608 channels
inception-4e                           reduction: 1x1 128 > 3x3 / 2 192 | 1x1 192 > 3x3 256 > 3x3 / 2    (a) (b)
                                       256 | max 3x3 / 2 (ceil): 7 x 7 x 1056
inception-5a, 5b                       352|192>320|160>224>224|avg>128; 352|192>320|192>224>224|        (a) (b)
                                       **max** > 128: 7 x 7 x 1024
2D pooling                             average over each frame's 7 x 7 (Caffe ``global_pool2D``: 7x7      (a) (b)
                                       avg; here adaptive, so any valid size), then the mean over the
                                       T frames (``segment_consensus``): [B, 1024]
fusion                                 concatenation [2D 1024, 3D 512] -> [B, 1536] (``gn02_concat``:     (a) (b)
                                       2D first), fully connected 1536 -> ``num_classes``
3D net                                 BANet Table I's (``eco-lite``'s), not the released model's         (c)
                                       (``eco-released``): Table VI's blocks sit where ``eco-lite`` puts
                                       them, and ECO(16F) / ECO-Lite(16F) differ only by the branch
attention                              one block on the stacked 3c features before the 3D net; the        (c)
                                       2D-Net branch sees the features without it
biases, dropout                        none, as ``eco-lite`` (the released model: biases on every          (a)
                                       convolution, dropout 0.5 / 0.3 before the fusion)
frame attention                        optional, as in ``eco-lite``; preset ``banet-16f`` (Table III's      (c)
                                       BANet(16F), 19.9 VPS): 16 of N = 32 frames kept, CS by default
=====================================  ==============================================================  =========

(a) the released PyTorch model, mzolfaghari/ECO-pytorch as forked in vnigade/ECO-pytorch
``tf_model_zoo/ECOfull/ECOfull.yaml`` (its loader ``pytorch_load.py`` builds every convolution with a bias);
(b) the released Caffe model, mzolfaghari/ECO-efficient-video-understanding
``models_ECO_Full/ucf101/deploy.prototxt``; (c) BANet Sec. III, Table I, III, VI. ECO Sec. 3 ("ECO Full")
describes the 2D-Net branch as BN-Inception from inception-4 to the last pooling layer, run on every frame, its
outputs averaged and concatenated with the 3D-Net's.

The reduction blocks need their branches to agree: an even map side at inception-3c and at inception-4e
(28 and 14 at 224 x 224; :func:`attnbench.networks.bn_inception.reduction_fits`), so ``eco`` refuses other
frame sizes. The released Caffe and PyTorch models share that constraint.

Parameters (closed form == counted, 101 classes, any frame count): ``eco-lite`` 33,541,605; ``eco``
43,225,189 = ``eco-lite`` - its classifier (51,813) + the 2D-Net branch (9,580,160) + the 1536 -> 101
classifier (155,237). With biases the same 2D layers give the released ECOfull.yaml's 10,270,240 (conv1 to
inception-5b), which checks the branch's widths against the released file.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from attnbench.blocks.registry import Option, get_block
from attnbench.errors import UsageError
from attnbench.networks.bn_inception import (
    C_2D,
    FEATURES_3C,
    MIN_SIZE,
    BNInceptionTo3c,
    From3c,
    bn_inception_to_3c_params,
    from3c_fits,
    from3c_params,
    size_after_stem,
)
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
    register_network,
)
from attnbench.shapes import VideoShape

FEATURES_2D = FEATURES_3C  # 96: the stacked maps the 3D part (and the attention) sees
STAGES_3D = ((128, 1), (256, 2), (512, 2))  # conv3_x, conv4_x, conv5_x: (channels, stride)
BLOCKS_PER_STAGE = 2
FEATURES_3D = STAGES_3D[-1][0]  # 512

# ---------------------------------------------------------------------------------------------------------
# Modules


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


def net3d_params() -> int:
    """BANet Table I's 3D part, conv3_x to conv5_x (no classifier)."""
    return sum(_basic3d_params(*b) for b in _blocks_3d())


def stack(f: torch.Tensor, b: int) -> torch.Tensor:
    """Per-frame maps [B T, C, H, W] -> the stacked clip [B, C, T, H, W]."""
    return f.reshape(b, -1, *f.shape[1:]).transpose(1, 2)


def frames_of(video: torch.Tensor) -> torch.Tensor:
    """A video [B, 3, T, H, W] -> its frames [B T, 3, H, W]."""
    b, c, t, h, w = video.shape
    return video.transpose(1, 2).reshape(b * t, c, h, w)


class EcoLite(nn.Module):
    """ECO-Lite with optional frame attention in front and one attention block after the 2D part. The 3D part
    is BANet Table I's unless ``features3d`` is given; ``bias`` puts a bias on every 2D convolution (the
    released models, :mod:`attnbench.networks.eco_released`)."""

    def __init__(self, num_classes: int, frame_attention: nn.Module | None = None, attention: nn.Module | None = None,
                 features3d: nn.Module | None = None, bias: bool = False) -> None:
        super().__init__()
        self.frame_attention = frame_attention
        self.features2d = BNInceptionTo3c(bias=bias)
        self.attention = attention if attention is not None else nn.Identity()
        self.features3d = features3d if features3d is not None else nn.Sequential(*(BasicBlock3d(*b) for b in _blocks_3d()))
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.fc = nn.Linear(FEATURES_3D, num_classes)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        if self.frame_attention is not None:
            video = self.frame_attention(video)  # [B, 3, N, H, W] -> [B, 3, T, H, W]
        f = self.features2d(frames_of(video))  # [B T, 96, 28, 28]
        m = self.attention(stack(f, video.shape[0]))  # stacked: [B, 96, T, 28, 28]
        y = self.pool(self.features3d(m)).flatten(1)
        return self.fc(y)


class Eco(nn.Module):
    """The full ECO: ECO-Lite's 2D part, attention and 3D part, plus the 2D-Net branch from inception-3c on; the
    branch's per-frame features averaged over time and the 3D features concatenated before the classifier.
    Optional frame attention in front, as in ECO-Lite (BANet(16F)); ``features3d`` and ``bias`` as in
    :class:`EcoLite`."""

    def __init__(self, num_classes: int, frame_attention: nn.Module | None = None, attention: nn.Module | None = None,
                 features3d: nn.Module | None = None, bias: bool = False) -> None:
        super().__init__()
        self.frame_attention = frame_attention
        self.features2d = BNInceptionTo3c(bias=bias)
        self.attention = attention if attention is not None else nn.Identity()
        self.features3d = features3d if features3d is not None else nn.Sequential(*(BasicBlock3d(*b) for b in _blocks_3d()))
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.branch2d = From3c(bias=bias)
        self.fc = nn.Linear(C_2D + FEATURES_3D, num_classes)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        if self.frame_attention is not None:
            video = self.frame_attention(video)  # [B, 3, N, H, W] -> [B, 3, T, H, W]
        b = video.shape[0]
        x3b = self.features2d.stem(frames_of(video))  # [B T, 320, 28, 28]
        f = self.features2d.double3c(x3b)  # [B T, 96, 28, 28]
        y3d = self.pool(self.features3d(self.attention(stack(f, b)))).flatten(1)  # [B, 512]
        y2d = self.branch2d(x3b, f)  # [B T, 1024]
        y2d = y2d.reshape(b, -1, y2d.shape[1]).mean(dim=1)  # [B, 1024]
        return self.fc(torch.cat([y2d, y3d], dim=1))


# ---------------------------------------------------------------------------------------------------------
# Specs


def _fa_options(r: Resolved) -> dict[str, Any]:
    n = r.net
    return get_block("fa").resolve_options(
        {"pool": n["fa_pool"], "hidden1": n["fa_hidden1"], "hidden2": n["fa_hidden2"], "keep_ratio": n["fa_keep_ratio"]}
    )


def frames_kept(r: Resolved) -> int:
    """T, the frames the 2D part sees: all N, or floor(keep_ratio x N + 1/2) behind frame attention."""
    if not r.net.get("frame_attention"):
        return r.frames
    from attnbench.blocks.banet import kept_frames

    return kept_frames(r.frames, r.net["fa_keep_ratio"])


def check_min_size(name: str, r: Resolved) -> None:
    if r.size < MIN_SIZE:
        raise UsageError(f"{name} needs frames of at least {MIN_SIZE} x {MIN_SIZE} (conv1 / 2 and two 3x3 / 2 poolings), got {r.size}")


def _check_fa(r: Resolved) -> None:
    if r.net["frame_attention"]:
        get_block("fa").validate(r.input_shape, _fa_options(r))


def _check_lite(r: Resolved) -> None:
    _check_fa(r)
    check_min_size("eco-lite", r)


def check_full_size(name: str, r: Resolved) -> None:
    """The full ECO's frame size: through the stem, and even map sides at both reduction blocks."""
    check_min_size(name, r)
    if not from3c_fits(r.size):
        n3c = size_after_stem(r.size)
        n4e = conv_out(n3c, 3, 2, 1)
        near = min((s for s in range(MIN_SIZE, max(2 * r.size, 256)) if from3c_fits(s)), key=lambda s: abs(s - r.size))
        raise UsageError(f"{name}: frames of {r.size} x {r.size} reach inception-3c at {n3c} x {n3c} and inception-4e at "
                         f"{n4e} x {n4e}; their stride-2 branches agree only on an even side at both "
                         f"(224 -> 28 -> 14); the nearest size that fits is {near}")


def _check_full(r: Resolved) -> None:
    _check_fa(r)
    check_full_size("eco", r)


def stacked_site(r: Resolved) -> list[Site]:
    """The one attention site of the ECO networks: the stacked inception-3c features [B, 96, T, 28, 28]."""
    s = size_after_stem(r.size)
    shape = VideoShape(r.batch, FEATURES_2D, frames_kept(r), s, s)
    return [Site("after 2D part (stacked inception-3c features)", shape, dict(r.attn_options), position="after2d")]


def one_attention(r: Resolved, sites: list[Site]) -> nn.Module | None:
    if not sites:
        return None
    (site,) = sites
    return get_block(r.attn).build(site.shape, **site.options)


def _frame_attention(r: Resolved) -> nn.Module | None:
    return get_block("fa").build(r.input_shape, **_fa_options(r)) if r.net["frame_attention"] else None


def _fa_params(r: Resolved) -> int:
    return get_block("fa").params(r.input_shape, **_fa_options(r)) if r.net["frame_attention"] else 0


def _construct_lite(r: Resolved, sites: list[Site]) -> nn.Module:
    return EcoLite(r.net["num_classes"], _frame_attention(r), one_attention(r, sites))


def _base_params_lite(r: Resolved) -> int:
    return bn_inception_to_3c_params() + net3d_params() + linear_params(FEATURES_3D, r.net["num_classes"]) + _fa_params(r)


def _construct_full(r: Resolved, sites: list[Site]) -> nn.Module:
    return Eco(r.net["num_classes"], _frame_attention(r), one_attention(r, sites))


def _base_params_full(r: Resolved) -> int:
    return (bn_inception_to_3c_params() + net3d_params() + from3c_params()
            + linear_params(C_2D + FEATURES_3D, r.net["num_classes"]) + _fa_params(r))


FA_OPTIONS = (
    Option("frame_attention", bool, False, "BANet's frame attention (fa) in front: N input frames, T kept"),
    Option("fa_keep_ratio", float, 0.5, "frame attention: share of the N frames kept (BANet: 50%)"),
    Option("fa_pool", int, 56, "frame attention: difference maps max-pooled to pool x pool (BANet: 56)", minimum=1),
    Option("fa_hidden1", int, 512, "frame attention: first MLP width (not in the paper)", minimum=1),
    Option("fa_hidden2", int, 128, "frame attention: second MLP width (not in the paper)", minimum=1),
)
_WITH_CS = "one CS block after stacking (Sec. III) unless --attn says otherwise"


PLACEMENTS = {
    "nl": "one block on the stacked 2D features [B, 96, T, 28, 28], before conv3_x (BANet Table VI: 'ECO (with 1 NL)')",
    "cs": "one block on the stacked 2D features [B, 96, T, 28, 28], before conv3_x (BANet Sec. III-A: "
    "'We use only one cascaded self-attention block after feature map stacking')",
}

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
            NetworkPreset("banet-lite-16f", 32, 224, "BANet-Lite(16F), Table III: frame attention keeps 16 of N=32 frames "
                          f"(M/N = 50%), {_WITH_CS}", {"frame_attention": True}, attn="cs"),
            NetworkPreset("banet-lite-8f", 16, 224, f"BANet-Lite(8F), Table III: frame attention keeps 8 of N=16 frames, {_WITH_CS}",
                          {"frame_attention": True}, attn="cs"),
            NetworkPreset("banet-lite-4f", 8, 224, f"BANet-Lite(4F), Table III: frame attention keeps 4 of N=8 frames, {_WITH_CS}",
                          {"frame_attention": True}, attn="cs"),
            NetworkPreset("banet-lite-20f", 40, 224, f"BANet-Lite(20F), Table III: frame attention keeps 20 of N=40 frames, "
                          f"{_WITH_CS}", {"frame_attention": True}, attn="cs"),
        ),
        construct=_construct_lite,
        base_params=_base_params_lite,
        sites=stacked_site,
        check=_check_lite,
        options=(num_classes_option(101, "101, UCF101 as in BANet Table III"), *FA_OPTIONS),
        placements=PLACEMENTS,
    )
)

register_network(
    NetworkSpec(
        name="eco",
        title="ECO (full): ECO-Lite's 2D and 3D parts + BN-Inception 3c..5b per frame, fused before the classifier",
        paper="Zolfaghari et al. ECO, ECCV 2018 (ECO Full); 3D part as BANet Table I (Zhou, Xu, Yang)",
        attn_choices=("none", "nl", "cs"),
        presets=(
            NetworkPreset("16f", 16, 224, "BANet Table III / VI: ECO(16F), 23.2 VPS, and ECO with 1 NL / 1 CS, 16 frames 224x224 (UCF101)"),
            NetworkPreset("8f", 8, 224, "8 frames 224x224, as eco-lite's 8f (BANet Table III's 8-frame rows)"),
            NetworkPreset("4f", 4, 224, "4 frames 224x224, as eco-lite's 4f (BANet Table III's 4-frame rows)"),
            NetworkPreset("banet-16f", 32, 224, f"BANet(16F), Table III (19.9 VPS): ECO with frame attention keeping 16 of N=32 "
                          f"frames, {_WITH_CS}", {"frame_attention": True}, attn="cs"),
        ),
        construct=_construct_full,
        base_params=_base_params_full,
        sites=stacked_site,
        check=_check_full,
        options=(num_classes_option(101, "101, UCF101 as in BANet Table III"), *FA_OPTIONS),
        placements=PLACEMENTS,
    )
)
