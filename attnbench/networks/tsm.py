"""TSM-ResNet-50 (Lin, Gan, Han, ICCV 2019), the backbone of W3 (Perez-Rua et al., ECCV 2020).

What is built, for a video [B, 3, T, 224, 224]:

* the T frames are folded into the batch, [B T, 3, 224, 224], and run through a 2D ResNet-50 (conv1 7x7 / 2,
  max-pool 3x3 / 2, bottlenecks [3, 4, 6, 3] with inner widths 64, 128, 256, 512 and outputs 256, 512, 1024,
  2048, stride on the 3x3 convolution of each stage's first block, 1x1 projection shortcuts with batch norm,
  convolutions without bias);
* temporal shift (TSM's residual shift): at the start of every bottleneck's residual branch, before its
  first 1x1 convolution, 1/8 of the channels are shifted one frame back in time and 1/8 one frame forward
  (zero-filled at the clip ends); the shortcut sees the unshifted features. Shifting moves data only: no
  parameters and no arithmetic;
* global average pooling, a fully connected layer 2048 -> ``num_classes`` per frame (default 174,
  Something-Something V1, the dataset of W3 Tables 1 and 6), and TSM's average consensus over the T frames.
  Dropout before the classifier is omitted (no parameters, no work in inference).

Attention blocks take [B, C, T, H, W]; around each one the folded [B T, C, H, W] features are unfolded to 5D
and folded back (a view and a transpose: no arithmetic).

Attention placements (``attn``):

* ``w3``: at every residual block (16 blocks), on the residual branch after the last batch norm, before the
  add. W3 Sec. 3.3: "we apply our attention module at each residual block of the backbone, i.e., performing
  the attention learning on every intermediate feature tensor of each stage." With the block's ``refine``
  option on (its default), the attention-guided feature refinement (Sec. 3.4, Eq. 7-8, Fig. 2) is built once:
  the spatio-temporal masks M^s of the last block of each of the ``stages`` last stages (res2-res5 for
  stages=4) are pooled to res5's size, concatenated, passed through the 1x1 convolution and ReLU of the
  last block's W3 and "added to the final feature maps" (Fig. 2 caption), i.e. to res5's output. The other
  15 blocks run W3 with ``refine=false``.
* ``cbam``: at every residual block, same position (CBAM's own placement, Woo et al. 2018, Fig. 3: CBAM on the
  residual branch before the add). W3 Table 6 compares "+CBAM" on TSM without saying where; W3 Sec. 4.2 calls
  it "simply applying image attention to top-performing action models", so CBAM goes where W3 goes.
* ``nl``: 5 blocks where TSM's own code puts them (mit-han-lab/temporal-shift-module, ``ops/non_local.py``,
  ``make_non_local``: ``NL3DWrapper`` around ``layer2[0]``, ``layer2[2]``, ``layer3[0]``, ``layer3[2]`` and
  ``layer3[4]``, each running a 3D non-local block on the wrapped block's output): after residual blocks 0
  and 2 of res3 (torchvision's layer2) and 0, 2 and 4 of res4 (layer3), 0-based. That is Wang et al.'s count
  (Sec. 4.1: "5 blocks (3 to res4 and 2 to res3, to every other residual block)"), but on the even blocks,
  where Wang et al.'s code (facebookresearch/video-nonlocal-net, ``res_stage_nonlocal``,
  ``idx % 2 == 1``) takes the odd ones (see :mod:`attnbench.networks.resnet3d`). The block is TSM's too:
  ``sub_sample=True`` (``subsample=after``, the default here: the outputs of phi and g are max-pooled), batch
  norm after W_z, no affinity scale. Every res3 (res4) block outputs the same shape, so the FLOPs and
  parameters are those of Wang et al.'s odd-block placement. W3 Table 6's "+NL" row cites Wang et al. [53]
  and gives no placement of its own; TSM (Sec. 5, "TSM + NL") is W3's backbone, so TSM's code decides.
"""

from __future__ import annotations

import torch
from torch import nn

from attnbench.blocks.registry import get_block
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
    register_network,
)
from attnbench.shapes import VideoShape

LAYERS = (3, 4, 6, 3)
WIDTHS = (64, 128, 256, 512)
EXPANSION = 4
STEM_CHANNELS = 64
STAGE_NAMES = ("res2", "res3", "res4", "res5")
SHIFT_DIV = 8  # 1/8 of the channels shifted each way
NL_BLOCKS = {1: (0, 2), 2: (0, 2, 4)}  # res3, res4 -> 0-based block indices (TSM ops/non_local.py make_non_local)
EVERY_BLOCK = ("cbam", "w3")

# ---------------------------------------------------------------------------------------------------------
# Modules


def unfold(x: torch.Tensor, frames: int) -> torch.Tensor:
    """[B T, C, H, W] -> [B, C, T, H, W]."""
    bt, c, h, w = x.shape
    return x.view(bt // frames, frames, c, h, w).transpose(1, 2)


def fold(x: torch.Tensor) -> torch.Tensor:
    """[B, C, T, H, W] -> [B T, C, H, W]."""
    b, c, t, h, w = x.shape
    return x.transpose(1, 2).reshape(b * t, c, h, w)


def temporal_shift(x: torch.Tensor, frames: int, div: int = SHIFT_DIV) -> torch.Tensor:
    """TSM's shift on [B T, C, H, W]: channels [0, C/div) take the next frame's values, [C/div, 2C/div) the
    previous frame's, the rest stay; zeros enter at the clip ends."""
    bt, c, h, w = x.shape
    v = x.view(bt // frames, frames, c, h, w)
    k = c // div
    out = torch.zeros_like(v)
    out[:, :-1, :k] = v[:, 1:, :k]
    out[:, 1:, k : 2 * k] = v[:, :-1, k : 2 * k]
    out[:, :, 2 * k :] = v[:, :, 2 * k :]
    return out.view(bt, c, h, w)


class Folded(nn.Module):
    """Runs a [B, C, T, H, W] attention block on TSM's folded [B T, C, H, W] features."""

    def __init__(self, block: nn.Module, frames: int) -> None:
        super().__init__()
        self.block = block
        self.frames = frames

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fold(self.block(unfold(x, self.frames)))


class FoldedW3(Folded):
    """W3 at a residual block (Eq. 2: F^c = M^c F, F^s = M^s F^c), keeping M^s for the refinement head."""

    def __init__(self, block: nn.Module, frames: int) -> None:
        super().__init__(block, frames)
        self.keep_mask = False  # set for the sites the refinement head reads
        self.mask: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f_c = self.block.channel(unfold(x, self.frames))
        m_s = self.block.spatial.mask(f_c)
        if self.keep_mask:
            self.mask = m_s
        return fold(f_c * m_s)


class ShiftBottleneck(nn.Module):
    """ResNet-50 bottleneck with TSM's residual shift; ``attention`` at the bottom of the residual branch."""

    def __init__(self, cin: int, width: int, stride: int, frames: int, attention: nn.Module | None = None) -> None:
        super().__init__()
        cout = width * EXPANSION
        self.frames = frames
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.attention = attention if attention is not None else nn.Identity()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.bn1(self.conv1(temporal_shift(x, self.frames))))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.attention(self.bn3(self.conv3(y)))
        return self.relu(y + self.shortcut(x))


def bottleneck_params(cin: int, width: int, stride: int) -> int:
    cout = width * EXPANSION
    total = conv_params(cin, width, 1) + bn_params(width)
    total += conv_params(width, width, 3) + bn_params(width)
    total += conv_params(width, cout, 1) + bn_params(cout)
    if stride != 1 or cin != cout:
        total += conv_params(cin, cout, 1) + bn_params(cout)
    return total


def blocks() -> list[tuple[int, int, int, int, int]]:
    """(stage, block, C_in, width, stride) of every bottleneck."""
    out, cin = [], STEM_CHANNELS
    for s, (n, width) in enumerate(zip(LAYERS, WIDTHS)):
        for i in range(n):
            out.append((s, i, cin, width, (1 if s == 0 else 2) if i == 0 else 1))
            cin = width * EXPANSION
    return out


class TSMResNet50(nn.Module):
    def __init__(
        self,
        frames: int,
        stages: list[nn.Sequential],
        num_classes: int,
        refine: Folded | None = None,
        refine_from: tuple[FoldedW3, ...] = (),
    ) -> None:
        super().__init__()
        self.frames = frames
        self.conv1 = nn.Conv2d(3, STEM_CHANNELS, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(STEM_CHANNELS)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(WIDTHS[-1] * EXPANSION, num_classes)
        # W3's refinement: the last site's W3 (holding the head) and the sites whose masks it gathers. Plain
        # attributes in a tuple, not submodules: the modules are registered once, inside their blocks.
        self._refine = (refine, refine_from) if refine is not None else None

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = video.shape
        if t != self.frames:
            raise UsageError(f"this TSM network was built for {self.frames} frames, got {t}")
        x = video.transpose(1, 2).reshape(b * t, c, h, w)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.stages(x)
        if self._refine is not None:
            last, earlier = self._refine
            masks = tuple(s.mask for s in earlier)
            x = fold(last.block.refine(unfold(x, t), last.mask, masks))  # Eq. 8, Fig. 2
            for s in (*earlier, last):
                s.mask = None
        logits = self.fc(self.pool(x).flatten(1))  # per frame
        return logits.view(b, t, -1).mean(dim=1)  # average consensus


# ---------------------------------------------------------------------------------------------------------
# Shapes, sites, closed form


def stage_shapes(frames: int, size: int, batch: int) -> list[VideoShape]:
    """[B, C_out, T, H, W] at the output of res2 ... res5 (TSM keeps T)."""
    s = conv_out(conv_out(size, 7, 2, 3), 3, 2, 1)
    out = []
    for i, width in enumerate(WIDTHS):
        if i > 0:
            s = conv_out(s, 3, 2, 1)
        out.append(VideoShape(batch, width * EXPANSION, frames, s, s))
    return out


def _refine_on(r: Resolved) -> bool:
    return r.attn == "w3" and bool(r.attn_options.get("refine", False))


def _check(r: Resolved) -> None:
    if _refine_on(r):
        n = r.attn_options.get("stages", len(LAYERS))
        if not 1 <= n <= len(LAYERS):
            raise UsageError(f"w3 refine in tsm-r50 gathers masks of 1..{len(LAYERS)} stages (ResNet-50 has 4), got stages={n}")


def _sites(r: Resolved) -> list[Site]:
    shapes = stage_shapes(r.frames, r.size, r.batch)
    opts = dict(r.attn_options)
    if r.attn in EVERY_BLOCK:
        last = (len(LAYERS) - 1, LAYERS[-1] - 1)
        out = []
        for s, i, *_ in blocks():
            site_opts = dict(opts)
            if r.attn == "w3" and "refine" in opts and (s, i) != last:
                site_opts["refine"] = False  # the refinement head sits once, at the last block
            out.append(Site(f"{STAGE_NAMES[s]} block {i + 1} bottom", shapes[s], site_opts, stage=s, block=i, position="bottom"))
        return out
    if r.attn == "nl":
        return [
            Site(f"after {STAGE_NAMES[s]} block {i + 1}", shapes[s], opts, stage=s, block=i, position="after_block")
            for s, idx in NL_BLOCKS.items()
            for i in idx
        ]
    raise AssertionError(r.attn)


def _construct(r: Resolved, sites: list[Site]) -> nn.Module:
    spec = get_block(r.attn) if sites else None
    wrap = FoldedW3 if r.attn == "w3" else Folded
    at = {(s.stage, s.block, s.position): wrap(spec.build(s.shape, **s.options), r.frames) for s in sites}  # type: ignore[union-attr]
    stages: list[list[nn.Module]] = [[] for _ in LAYERS]
    for s, i, cin, width, stride in blocks():
        stages[s].append(ShiftBottleneck(cin, width, stride, r.frames, at.get((s, i, "bottom"))))
        if (s, i, "after_block") in at:
            stages[s].append(at[(s, i, "after_block")])
    refine, earlier = None, ()
    if _refine_on(r):
        n = r.attn_options.get("stages", len(LAYERS))
        last_of_stage = [at[(s, LAYERS[s] - 1, "bottom")] for s in range(len(LAYERS))]
        refine = last_of_stage[-1]
        earlier = tuple(last_of_stage[len(LAYERS) - n : -1])
        for site in (*earlier, refine):
            site.keep_mask = True  # type: ignore[union-attr]
    return TSMResNet50(r.frames, [nn.Sequential(*m) for m in stages], r.net["num_classes"], refine, earlier)  # type: ignore[arg-type]


def _base_params(r: Resolved) -> int:
    total = conv_params(3, STEM_CHANNELS, 7) + bn_params(STEM_CHANNELS)
    total += sum(bottleneck_params(cin, width, stride) for _, _, cin, width, stride in blocks())
    return total + linear_params(WIDTHS[-1] * EXPANSION, r.net["num_classes"])


register_network(
    NetworkSpec(
        name="tsm-r50",
        title="TSM-ResNet-50 (temporal shift, residual), W3's backbone",
        paper="Lin et al. TSM, ICCV 2019; as used by W3 (Tables 1, 6)",
        attn_choices=("none", "cbam", "nl", "w3"),
        presets=(
            NetworkPreset("16f", 16, 224, "W3 Table 6 (TSM 65.0 / +CBAM 66.5 / +NL 115.0 / +W3 67.1 GFLOPs) and Table 1: 16 frames 224x224"),
            NetworkPreset("8f", 8, 224, "W3 Table 1: TSM R50, 8 frames 224x224 (33 GFLOPs; +W3 33.5)"),
        ),
        construct=_construct,
        base_params=_base_params,
        sites=_sites,
        check=_check,
        options=(num_classes_option(174, "174, Something-Something V1 as in W3 Tables 1 and 6"),),
        placements={
            "w3": "bottom of every residual block (16), refinement head once on res5's output (W3 Sec. 3.3-3.4, Fig. 2)",
            "cbam": "bottom of every residual block (16), as CBAM places itself and as W3 places W3",
            "nl": "after blocks 0, 2 of res3 and 0, 2, 4 of res4 (0-based): 5 blocks, TSM's ops/non_local.py make_non_local; "
                  "keys pooled after phi and g (subsample=after) by default, as TSM's block",
        },
        attn_defaults={"nl": {"subsample": "after"}},
    )
)
