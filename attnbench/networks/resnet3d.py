"""3D ResNet-50 and 3D ResNeXt-101 (Hara, Kataoka, Satoh, CVPR 2018), the backbones of EAM and STA.

Topology (Hara et al.'s 3D-ResNets, all convolutions without bias, each followed by batch norm):

* conv1: 7x7x7, 3 -> 64, stride (1, 2, 2), padding 3; batch norm, ReLU; max-pool 3x3x3, stride 2, padding 1;
* res2-res5: bottleneck blocks, [3, 4, 6, 3] (ResNet-50) or [3, 4, 23, 3] (ResNeXt-101). A block is
  1x1x1 C_in -> D, 3x3x3 D -> D (stride on this convolution, groups = cardinality), 1x1x1 D -> C_out, each
  with batch norm, ReLU after the first two and after the residual add. res3-res5 stride 2 in T, H and W.
  The shortcut is the identity, or (type B) a strided 1x1x1 convolution with batch norm in each stage's
  first block.

  ============  ==========================  ==========================
  stage         ResNet-50: D -> C_out       ResNeXt-101 (32 groups)
  ============  ==========================  ==========================
  res2          64 -> 256                   128 -> 256
  res3          128 -> 512                  256 -> 512
  res4          256 -> 1024                 512 -> 1024
  res5          512 -> 2048                 1024 -> 2048
  ============  ==========================  ==========================

* global average pooling, fully connected C_out -> ``num_classes``. Default 51 (HMDB-51): EAM Table 4 and
  STA Table III report HMDB-51 models, and with 51 classes the closed form gives EAM Table 4's 46.30M
  (ResNet-50) and 47.62M (ResNeXt-101) exactly to the printed digits.

On 16 x 112 x 112 clips T, H, W go 16, 112 -> conv1 16, 56 -> pool 8, 28 -> res3 4, 14 -> res4 2, 7 ->
res5 1, 4; on 64 frames T is 64 -> 32 -> 16 -> 8 -> 4.

Attention placements (``attn``):

* ``se``, ``eca``, ``cbam``, ``eam`` (and its Table 2 ablations ``eam-s``, ``eam-t``): one block per stage,
  res2 to res5 (4 blocks, on 256, 512, 1024, 2048 channels). EAM Sec. 4.4: "the SE, ECA, CBAM, and EAM
  modules respectively were embedded into all the stages of these models"; Table 3 compares EAM in res2,
  res3, res4 and "all res". Table 4's parameter counts pin down one block per stage at the stage's output
  width: SE (ratio 16) on 256, 512, 1024 and 2048 channels adds 2 (256^2 + 512^2 + 1024^2 + 2048^2) / 16 =
  0.70M, which is Table 4's 46.30M -> 46.99M (ResNet-50) and 47.62M -> 48.32M (ResNeXt-101); SE in every
  bottleneck would add 2.5M (ResNet-50) or more. Where in the stage:

  - ``se``, ``eca``, ``cbam``: at the bottom of the residual branch of the stage's last bottleneck, after its
    last batch norm and before the add, as each paper puts its module in a residual block (SE: Hu et al.
    Fig. 3, the SE-ResNet module; CBAM: Woo et al. Fig. 3, CBAM in a ResBlock; ECA: Wang et al.'s
    ``models/eca_resnet.py``, ``eca`` after ``bn3``, before ``out += residual``). None has an identity
    path of its own; the block's shortcut is it. There the module sees the stage's output shape, so the
    parameters and FLOPs are those of a module after the stage (the ReLU after the add runs on the same
    tensor either way).
  - ``eam``, ``eam-s``, ``eam-t``: after the stage, on its output. EAM has its own identity path (Eq. 3,
    V^ = V + V'', "the final refined output, which is passed into the next 3D CNN module"), Sec. 4.3 adds
    it to "different stages ..., that is, res2, res3, res4, and after each layer", and Fig. 2's caption says
    only "The EAM block is applied to the 3D ResNet"; on a residual branch its V + V'' would add a second
    identity beside the shortcut. See :mod:`attnbench.blocks.eam`.
* ``sta``: at the bottom of every bottleneck of res5 (3 blocks), on the residual branch after the last
  batch norm and before the add. STA Fig. 4: "We add our STA module at the bottom of the blocks"; Sec. IV-A:
  "we simply prefer to place our STA module at their later convolutional layers"; Table VIII compares the
  early layers ("stage conv2") with the later layers ("stage conv5"), the latter being the reported model.
  The block there sees [B, 2048, T/16, 4, 4] at 112 x 112. (STA's Table IV example "layer4: c = 1024,
  l = 8, h = w = 7" is the input of res5, not its blocks' bottom.)
* ``nl``: the 5-block configuration of Wang et al. (Non-local Neural Networks, CVPR 2018, Sec. 4.1: "5 blocks
  (3 to res4 and 2 to res3, to every other residual block)"), at the indices Wang et al.'s code gives
  (facebookresearch/video-nonlocal-net, ``lib/models/resnet_helper.py``, ``res_stage_nonlocal``: a block
  after residual block ``idx`` when ``idx % nonlocal_mod == nonlocal_mod - 1``, with ``NONLOCAL.LAYER_MOD =
  2`` in ``lib/core/config.py``): after blocks 1 and 3 of res3 and 1, 3 and 5 of res4 (0-based) in
  ResNet-50. For depth 101 ``lib/models/resnet_video.py`` keeps res3's modulus 2 and sets res4's to
  2 x 4 - 1 = 7, so ResNeXt-101's res4 (23 blocks) gets its three blocks after blocks 6, 13 and 20.
  (TSM's code puts them on the even blocks instead: :mod:`attnbench.networks.tsm`.) Every block of a
  stage outputs the same shape, so these indices change no count. Neither EAM nor STA places a non-local
  block in these networks themselves (STA Table I lists Nonlocal-ResNeXt-101(64f) from Wang et al.). The
  block defaults to sub-sampled keys pooled after phi and g (``subsample=after``, TSM's and mmcv's form);
  ``subsample=before`` pools x before phi and g as Wang et al.'s code does, ``subsample=none`` keeps the
  full (THW)^2 affinity and ``use_scale=true`` adds Wang et al.'s 1/sqrt(C_i) (see
  :mod:`attnbench.blocks.nonlocal_block`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from attnbench.blocks.registry import get_block
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

STEM_CHANNELS = 64
STAGE_NAMES = ("res2", "res3", "res4", "res5")


@dataclass(frozen=True)
class Arch:
    layers: tuple[int, ...]
    widths: tuple[int, ...]  # D, the bottleneck's inner width per stage
    outputs: tuple[int, ...]  # C_out per stage
    groups: int
    nl_blocks: dict[int, tuple[int, ...]]  # stage index (res3 = 1, res4 = 2) -> 0-based blocks followed by nl


# nl_blocks: Wang et al.'s res_stage_nonlocal, idx % mod == mod - 1 with mod 2 (res3, res4 of depth 50) and
# 7 (res4 of depth 101; resnet_video.py)
ARCHS = {
    "resnet3d-50": Arch((3, 4, 6, 3), (64, 128, 256, 512), (256, 512, 1024, 2048), 1, {1: (1, 3), 2: (1, 3, 5)}),
    "resnext3d-101": Arch((3, 4, 23, 3), (128, 256, 512, 1024), (256, 512, 1024, 2048), 32, {1: (1, 3), 2: (6, 13, 20)}),
}

BRANCH_ATTENTION = ("se", "eca", "cbam")  # bottom of each stage's last block, before the add
STAGE_ATTENTION = ("eam", "eam-s", "eam-t")  # after each stage (EAM's own identity, Eq. 3)
STA_STAGE = 3  # res5

# ---------------------------------------------------------------------------------------------------------
# Modules


class Bottleneck3d(nn.Module):
    """Hara et al.'s 3D bottleneck; ``attention`` (default none) sits at the bottom of the residual branch."""

    def __init__(self, cin: int, width: int, cout: int, stride: int, groups: int, attention: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm3d(width)
        self.conv2 = nn.Conv3d(width, width, 3, stride, 1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm3d(width)
        self.conv3 = nn.Conv3d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm3d(cout)
        self.relu = nn.ReLU()
        self.attention = attention if attention is not None else nn.Identity()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv3d(cin, cout, 1, stride, bias=False), nn.BatchNorm3d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.attention(self.bn3(self.conv3(y)))
        return self.relu(y + self.shortcut(x))


def bottleneck_params(cin: int, width: int, cout: int, stride: int, groups: int) -> int:
    total = conv_params(cin, width, 1, dims=3) + bn_params(width)
    total += conv_params(width, width, 3, groups=groups, dims=3) + bn_params(width)
    total += conv_params(width, cout, 1, dims=3) + bn_params(cout)
    if stride != 1 or cin != cout:
        total += conv_params(cin, cout, 1, dims=3) + bn_params(cout)
    return total


def blocks(arch: Arch) -> list[tuple[int, int, int, int, int, int]]:
    """(stage, block, C_in, D, C_out, stride) of every bottleneck."""
    out, cin = [], STEM_CHANNELS
    for s, (n, width, cout) in enumerate(zip(arch.layers, arch.widths, arch.outputs)):
        for i in range(n):
            out.append((s, i, cin, width, cout, (1 if s == 0 else 2) if i == 0 else 1))
            cin = cout
    return out


class ResNet3d(nn.Module):
    """conv1, max-pool, four stages (``stages[s]`` holds the blocks and any inserted attention), pool, fc."""

    def __init__(self, stages: list[nn.Sequential], num_classes: int, features: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(3, STEM_CHANNELS, 7, (1, 2, 2), 3, bias=False)
        self.bn1 = nn.BatchNorm3d(STEM_CHANNELS)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool3d(3, 2, 1)
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.fc = nn.Linear(features, num_classes)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(video))))
        x = self.stages(x)
        return self.fc(self.pool(x).flatten(1))


# ---------------------------------------------------------------------------------------------------------
# Shapes, sites, closed form


def stage_shapes(frames: int, size: int, batch: int, arch: Arch) -> list[VideoShape]:
    """[B, C_out, T, H, W] at the output of res2 ... res5."""
    t, s = conv_out(frames, 7, 1, 3), conv_out(size, 7, 2, 3)
    t, s = conv_out(t, 3, 2, 1), conv_out(s, 3, 2, 1)
    out = []
    for i, c in enumerate(arch.outputs):
        if i > 0:
            t, s = conv_out(t, 3, 2, 1), conv_out(s, 3, 2, 1)
        out.append(VideoShape(batch, c, t, s, s))
    return out


def _sites_for(arch: Arch):
    def sites(r: Resolved) -> list[Site]:
        shapes = stage_shapes(r.frames, r.size, r.batch, arch)
        opts = dict(r.attn_options)
        if r.attn in BRANCH_ATTENTION:
            return [
                Site(f"{STAGE_NAMES[s]} block {arch.layers[s]} bottom", shapes[s], opts, stage=s, block=arch.layers[s] - 1,
                     position="bottom")
                for s in range(4)
            ]
        if r.attn in STAGE_ATTENTION:
            return [
                Site(f"after {STAGE_NAMES[s]}", shapes[s], opts, stage=s, block=arch.layers[s] - 1, position="after_stage")
                for s in range(4)
            ]
        if r.attn == "sta":
            s = STA_STAGE
            return [
                Site(f"{STAGE_NAMES[s]} block {i + 1} bottom", shapes[s], opts, stage=s, block=i, position="bottom")
                for i in range(arch.layers[s])
            ]
        if r.attn == "nl":
            return [
                Site(f"after {STAGE_NAMES[s]} block {i + 1}", shapes[s], opts, stage=s, block=i, position="after_block")
                for s, idx in arch.nl_blocks.items()
                for i in idx
            ]
        raise AssertionError(r.attn)

    return sites


def _construct_for(arch: Arch):
    def construct(r: Resolved, sites: list[Site]) -> nn.Module:
        block_spec = get_block(r.attn) if sites else None
        at = {(s.stage, s.block, s.position): block_spec.build(s.shape, **s.options) for s in sites}  # type: ignore[union-attr]
        stages: list[list[nn.Module]] = [[] for _ in arch.layers]
        for s, i, cin, width, cout, stride in blocks(arch):
            stages[s].append(Bottleneck3d(cin, width, cout, stride, arch.groups, at.get((s, i, "bottom"))))
            if (s, i, "after_block") in at:
                stages[s].append(at[(s, i, "after_block")])
            if (s, i, "after_stage") in at:
                stages[s].append(at[(s, i, "after_stage")])
        return ResNet3d([nn.Sequential(*m) for m in stages], r.net["num_classes"], arch.outputs[-1])

    return construct


def _base_params_for(arch: Arch):
    def base_params(r: Resolved) -> int:
        total = conv_params(3, STEM_CHANNELS, 7, dims=3) + bn_params(STEM_CHANNELS)
        total += sum(bottleneck_params(cin, width, cout, stride, arch.groups) for _, _, cin, width, cout, stride in blocks(arch))
        return total + linear_params(arch.outputs[-1], r.net["num_classes"])

    return base_params


_PLACEMENTS = {
    "se": "bottom of the last bottleneck of each stage res2-res5, before the add (SE Fig. 3; one per stage: EAM Sec. 4.4, "
          "Table 4 params +0.70M)",
    "eca": "bottom of the last bottleneck of each stage res2-res5, before the add (ECA's eca_resnet.py; EAM Sec. 4.4, Table 4)",
    "cbam": "bottom of the last bottleneck of each stage res2-res5, before the add (CBAM Fig. 3; EAM Sec. 4.4, Table 4)",
    "eam": "after each stage res2-res5, on its output (EAM Eq. 3 has its own identity; Sec. 4.3, Table 3 'all res', Table 4)",
    "eam-s": "after each stage res2-res5, as eam (EAM Table 2 ablation)",
    "eam-t": "after each stage res2-res5, as eam (EAM Table 2 ablation)",
    "sta": "bottom of every res5 bottleneck, before the add (STA Fig. 4 'at the bottom of the blocks'; Table VIII later layers = conv5)",
    "nl": "after blocks 1, 3 of res3 and 1, 3, 5 of res4 (0-based; 6, 13, 20 in ResNeXt-101's res4): 5 blocks, Wang et al. "
          "Sec. 4.1 at the indices of their code (res_stage_nonlocal); keys pooled after phi and g by default",
}
_ATTN = ("none", "se", "eca", "cbam", "eam", "eam-s", "eam-t", "sta", "nl")
_NL_DEFAULTS = {"nl": {"subsample": "after"}}

register_network(
    NetworkSpec(
        name="resnet3d-50",
        title="3D ResNet-50 (Hara et al.), EAM's backbone",
        paper="Hara et al. CVPR 2018; as used by EAM (Table 4)",
        attn_choices=_ATTN,
        presets=(
            NetworkPreset("16f", 16, 112, "EAM Sec. 4.2, Table 4: 3D ResNet-50, 16 x 112 x 112 clips (46.30M params, 10.102 GFLOPs)"),
            NetworkPreset("64f", 64, 112, "64 x 112 x 112 clips, the 64f setting EAM Table 4 and STA use for ResNeXt-101"),
        ),
        construct=_construct_for(ARCHS["resnet3d-50"]),
        base_params=_base_params_for(ARCHS["resnet3d-50"]),
        sites=_sites_for(ARCHS["resnet3d-50"]),
        options=(num_classes_option(51, "51, HMDB-51 as in EAM Table 4"),),
        placements=_PLACEMENTS,
        attn_defaults=_NL_DEFAULTS,
    )
)

register_network(
    NetworkSpec(
        name="resnext3d-101",
        title="3D ResNeXt-101, cardinality 32 (Hara et al.), EAM's and STA's backbone",
        paper="Hara et al. CVPR 2018; as used by EAM (Table 4) and STA (Table III)",
        attn_choices=_ATTN,
        presets=(
            NetworkPreset("16f", 16, 112, "EAM Table 4: ResNeXt-101(16f), 16 x 112 x 112 (47.62M params, 9.616 GFLOPs)"),
            NetworkPreset("64f", 64, 112, "STA Table III and EAM Table 4: ResNeXt-101(64f), 64 x 112 x 112 (47.5M / 47.62M params, 38.5 GFLOPs)"),
        ),
        construct=_construct_for(ARCHS["resnext3d-101"]),
        base_params=_base_params_for(ARCHS["resnext3d-101"]),
        sites=_sites_for(ARCHS["resnext3d-101"]),
        options=(num_classes_option(51, "51, HMDB-51 as in EAM Table 4 and STA Table III"),),
        placements=_PLACEMENTS,
        attn_defaults=_NL_DEFAULTS,
    )
)
