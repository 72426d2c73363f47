"""ECO-Lite and ECO as released by their authors (Zolfaghari et al., ECCV 2018), beside BANet's Table I reading
(``eco-lite``, ``eco``).

``eco-lite-released``: what differs from ``eco-lite`` (:mod:`attnbench.networks.eco`), for a video
[B, 3, T, H, W]:

=======================  =======================================================================  ======
what                     structure                                                                source
=======================  =======================================================================  ======
2D part                  BN-Inception conv1 .. inception-3c's double_3x3_1, as ``eco-lite``, but   (a) (b)
                         every convolution with a bias (1 x C_out more each)
conv3_x                  no res3a_1: res3a_2, 3x3x3 96 -> 128 on the stacked maps, then             (a) (b)
                         BN-ReLU, res3b_1 (3x3x3, BN-ReLU), res3b_2 (3x3x3); res3b = res3b_2 +
                         res3a_2's output (before its batch norm); BN-ReLU
conv4_x, conv5_x         res_a_1 3x3x3 / 2 (BN-ReLU), res_a_2 3x3x3; the shortcut res_a_down is a   (a) (b)
                         3x3x3 / 2 convolution **without** batch norm from the stage's input;
                         sum, BN-ReLU; res_b_1 (BN-ReLU), res_b_2, plus the pre-norm sum of the
                         a block; BN-ReLU. 256 and 512 channels
residual stream          the sums are carried before their batch norm; each block reads the        (a) (b)
                         normalised, rectified sum (a pre-activation layout)
biases                   every 3D convolution too (the loader builds ``Conv3d`` with               (a) (b)
                         ``conv_bias=True``; Caffe's default ``bias_term``)
head                     average pooling over T/4 x 7 x 7 (here adaptive: the whole map) and a      (a) (b)
                         fully connected layer 512 -> ``num_classes`` (default 101); dropout omitted
attention                ``nl`` / ``cs``: one block on the stacked inception-3c features             (c)
                         [B, 96, T, 28, 28] before res3a_2, as ``eco-lite`` places it
=======================  =======================================================================  ======

(a) the released PyTorch model: mzolfaghari/ECO-pytorch (March 2019) as kept in the fork vnigade/ECO-pytorch,
``tf_model_zoo/ECO/ECO.yaml`` with ``tf_model_zoo/ECO/pytorch_load.py`` and ``layer_factory.py`` (an earlier
zhang-can/ECO-pytorch ``ECO.yaml``, of June 2018, still had a res3a_1 and identity shortcuts); (b) the released
Caffe model, mzolfaghari/ECO-efficient-video-understanding ``models_ECO_Lite/ucf101/deploy.prototxt``
(``res3a_2n``, ``res4a_down``, ``res5a_down``: 3x3x3, stride 2, no batch norm); (c) BANet Sec. III-A, Table VI.

Parameters at 101 classes (any frame count: no layer depends on T): 37,350,469. Derived from (a) by walking
the yaml's layers in order, tracking each blob's channels (Concat sums them, Eltwise keeps them) and adding
C_out x C_in x k^2 (k^3 for Conv3d) + C_out per convolution, 2 x C per BN / BN3d and 512 x 101 + 101 for the
InnerProduct: 681,568 for the 2D part (680,064 without the 1,504 biases), 36,617,088 for the res* layers,
51,813 for the classifier.

``eco-released``: the released full ECO (``tf_model_zoo/ECOfull/ECOfull.yaml``; Caffe
``models_ECO_Full/ucf101/deploy.prototxt``): ``eco-lite-released`` plus the 2D-Net branch of ``eco`` (inception-3c's
other layers, 4a..5b, per-frame average pooling, mean over the frames) with biases, its 1024 features
concatenated before the 3D net's 512 and a fully connected layer 1536 -> ``num_classes``; plain only (the class
:class:`EcoReleased` takes an attention block at the same site, but no paper places one). The same walk over
ECOfull.yaml gives 47,042,565 parameters at 101 classes: 10,270,240 for conv1 .. inception-5b, the same
36,617,088 for res*, 155,237 for the classifier. At 224 x 224 the exact counter gives 64.4 G multiply-adds at 16
frames and 32.2 G at 8 (the "64" and "32" GFLOPs W3 Table 1 cites for ECO), against 68.1 G and 34.1 G for
``eco``, whose 3D part is BANet Table I's (two basic blocks in conv3_x, 1x1x1 shortcuts).
"""

from __future__ import annotations

import torch
from torch import nn

from attnbench.networks.bn_inception import (
    C_2D,
    FEATURES_3C,
    bn_inception_to_3c_params,
    from3c_params,
)
from attnbench.networks.eco import (
    PLACEMENTS,
    Eco,
    EcoLite,
    check_full_size,
    check_min_size,
    one_attention,
    stacked_site,
)
from attnbench.networks.registry import (
    NetworkPreset,
    NetworkSpec,
    Resolved,
    Site,
    bn_params,
    conv_params,
    linear_params,
    num_classes_option,
    register_network,
)

WIDTH_3A = 128  # res3a_2, res3b_*
STAGES = ((256, 2), (512, 2))  # res4*, res5*: channels, stride of res_a_1 and res_a_down
FEATURES_3D = STAGES[-1][0]


def _conv3(cin: int, cout: int, stride: int = 1) -> nn.Conv3d:
    return nn.Conv3d(cin, cout, 3, stride, 1, bias=True)


def _conv3_params(cin: int, cout: int) -> int:
    return conv_params(cin, cout, 3, bias=True, dims=3)


class Branch(nn.Sequential):
    """res_x_1 (3x3x3, batch norm, ReLU) then res_x_2 (3x3x3, no norm: the sum it joins is normalised)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__(_conv3(cin, cout, stride), nn.BatchNorm3d(cout), nn.ReLU(), _conv3(cout, cout))


def _branch_params(cin: int, cout: int) -> int:
    return _conv3_params(cin, cout) + bn_params(cout) + _conv3_params(cout, cout)


class Stage(nn.Module):
    """conv4_x or conv5_x: a down-sampling block with a 3x3x3 / 2 shortcut, then an identity block."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.branch_a = Branch(cin, cout, stride)
        self.down = _conv3(cin, cout, stride)
        self.bn_a = nn.BatchNorm3d(cout)
        self.branch_b = Branch(cout, cout, 1)
        self.bn_b = nn.BatchNorm3d(cout)
        self.relu = nn.ReLU()

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        s = self.branch_a(h) + self.down(h)
        s = self.branch_b(self.relu(self.bn_a(s))) + s
        return self.relu(self.bn_b(s))


def _stage_params(cin: int, cout: int) -> int:
    return _branch_params(cin, cout) + _conv3_params(cin, cout) + bn_params(cout) + _branch_params(cout, cout) + bn_params(cout)


class Net3dReleased(nn.Module):
    """The released 3D net: [B, 96, T, 28, 28] -> [B, 512, T/4, 7, 7]."""

    def __init__(self) -> None:
        super().__init__()
        self.conv3a = _conv3(FEATURES_3C, WIDTH_3A)  # res3a_2
        self.bn3a = nn.BatchNorm3d(WIDTH_3A)
        self.branch3b = Branch(WIDTH_3A, WIDTH_3A, 1)  # res3b_1, res3b_2
        self.bn3b = nn.BatchNorm3d(WIDTH_3A)
        self.relu = nn.ReLU()
        stages, cin = [], WIDTH_3A
        for cout, stride in STAGES:
            stages.append(Stage(cin, cout, stride))
            cin = cout
        self.stages = nn.Sequential(*stages)

    def forward(self, m: torch.Tensor) -> torch.Tensor:
        s = self.conv3a(m)
        s = self.branch3b(self.relu(self.bn3a(s))) + s
        return self.stages(self.relu(self.bn3b(s)))


def net3d_released_params() -> int:
    total = _conv3_params(FEATURES_3C, WIDTH_3A) + bn_params(WIDTH_3A) + _branch_params(WIDTH_3A, WIDTH_3A) + bn_params(WIDTH_3A)
    cin = WIDTH_3A
    for cout, _ in STAGES:
        total += _stage_params(cin, cout)
        cin = cout
    return total


class EcoLiteReleased(EcoLite):
    """The released ECO-Lite with one optional attention block on the stacked 2D features."""

    def __init__(self, num_classes: int, attention: nn.Module | None = None) -> None:
        super().__init__(num_classes, None, attention, features3d=Net3dReleased(), bias=True)


class EcoReleased(Eco):
    """The released full ECO: ECO-Lite as released plus the 2D-Net branch (with biases), fused before the
    classifier as ``eco`` fuses them."""

    def __init__(self, num_classes: int, attention: nn.Module | None = None) -> None:
        super().__init__(num_classes, None, attention, features3d=Net3dReleased(), bias=True)


def _construct(r: Resolved, sites: list[Site]) -> nn.Module:
    return EcoLiteReleased(r.net["num_classes"], one_attention(r, sites))


def _base_params(r: Resolved) -> int:
    return bn_inception_to_3c_params(bias=True) + net3d_released_params() + linear_params(FEATURES_3D, r.net["num_classes"])


def _check(r: Resolved) -> None:
    check_min_size("eco-lite-released", r)


def _construct_full(r: Resolved, sites: list[Site]) -> nn.Module:
    return EcoReleased(r.net["num_classes"], one_attention(r, sites))


def _base_params_full(r: Resolved) -> int:
    return (bn_inception_to_3c_params(bias=True) + net3d_released_params() + from3c_params(bias=True)
            + linear_params(C_2D + FEATURES_3D, r.net["num_classes"]))


def _check_full(r: Resolved) -> None:
    check_full_size("eco-released", r)


register_network(
    NetworkSpec(
        name="eco-lite-released",
        title="ECO-Lite as released (no res3a_1, 3x3x3 down-sampling shortcuts, biases on every convolution)",
        paper="Zolfaghari et al. ECO, ECCV 2018: released models (ECO-pytorch ECO.yaml, Caffe ECO_Lite deploy.prototxt)",
        attn_choices=("none", "nl", "cs"),
        presets=(
            NetworkPreset("16f", 16, 224, "released UCF101 ECO-Lite deploy.prototxt: 16 segments of 224x224 (r2Dto3D); "
                          "BANet Table III: ECO-Lite(16F), 33.1 VPS"),
            NetworkPreset("8f", 8, 224, "8 frames 224x224, as eco-lite's 8f"),
            NetworkPreset("4f", 4, 224, "4 frames 224x224, as eco-lite's 4f"),
        ),
        construct=_construct,
        base_params=_base_params,
        sites=stacked_site,
        check=_check,
        options=(num_classes_option(101, "101, UCF101 as the released deploy.prototxt"),),
        placements=PLACEMENTS,
    )
)

register_network(
    NetworkSpec(
        name="eco-released",
        title="ECO (full) as released: eco-lite-released + BN-Inception 3c..5b per frame, fused before the classifier",
        paper="Zolfaghari et al. ECO, ECCV 2018: released models (ECO-pytorch ECOfull.yaml, Caffe ECO_Full deploy.prototxt)",
        attn_choices=("none",),  # a reference count (W3 Table 1's ECO); no paper puts a block in it
        presets=(
            NetworkPreset("16f", 16, 224, "released UCF101 ECO Full deploy.prototxt: 16 segments of 224x224 (r2Dto3D); "
                          "W3 Table 1: ECO, 16 frames, 64 GFLOPs"),
            NetworkPreset("8f", 8, 224, "8 frames 224x224; W3 Table 1: ECO, 8 frames, 32 GFLOPs"),
        ),
        construct=_construct_full,
        base_params=_base_params_full,
        sites=stacked_site,
        check=_check_full,
        options=(num_classes_option(101, "101, UCF101 as the released deploy.prototxt"),),
    )
)
