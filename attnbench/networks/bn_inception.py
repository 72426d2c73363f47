"""BN-Inception (Ioffe & Szegedy 2015), the 2D network of ECO: layers, widths and closed-form parameter counts.

ECO and ECO-Lite (:mod:`attnbench.networks.eco`, :mod:`attnbench.networks.eco_released`) share the stem from
conv1 to inception-3b and the two layers of inception-3c that feed the 3D network; the full ECO adds the rest
of the network (inception-3c's other branches, 4a..4e, 5a, 5b) as its 2D-Net branch. Widths are those of the
released ECO models (ECO-pytorch ``tf_model_zoo/ECOfull/ECOfull.yaml``; Caffe
``models_ECO_Full/ucf101/deploy.prototxt``), which are BN-Inception's.

Every convolution is followed by batch norm and ReLU. ``bias``: whether the convolutions carry a bias (the
released Caffe / PyTorch models do; attnbench's BANet networks do not, the batch norm's shift making it
redundant). Pooling follows Caffe: max pooling in ceil mode, 3 x 3 average pooling with padding 1.

This module registers no network.
"""

from __future__ import annotations

import torch
from torch import nn

from attnbench.networks.registry import bn_params, conv_out, conv_params, pool_out_ceil

# Stride-1 inception blocks: 1x1 | 3x3 reduce, 3x3 | double-3x3 reduce, double-3x3 | pool projection
INCEPTION_3A = (64, 64, 64, 64, 96, 32)
INCEPTION_3B = (64, 64, 96, 64, 96, 64)
INCEPTION_4A = (224, 64, 96, 96, 128, 128)
INCEPTION_4B = (192, 96, 128, 96, 128, 128)
INCEPTION_4C = (160, 128, 160, 128, 160, 128)
INCEPTION_4D = (96, 128, 192, 160, 192, 128)
INCEPTION_5A = (352, 192, 320, 160, 224, 128)
INCEPTION_5B = (352, 192, 320, 192, 224, 128)  # its pool branch max-pools (5a and the others average)
# Stride-2 reduction blocks: 3x3 reduce, 3x3 / 2 | double-3x3 reduce, double-3x3 (second / 2) | max pool / 2
INCEPTION_3C = (128, 160, 64, 96)
INCEPTION_4E = (128, 192, 192, 256)
INCEPTION_3C_USED = INCEPTION_3C[2:]  # (64, 96): double_3x3_reduce and double_3x3_1, which feed ECO's 3D net
FEATURES_3C = INCEPTION_3C_USED[1]  # 96 channels at 28 x 28
C_3B = 320  # inception-3b's output channels
C_2D = 1024  # inception-5b's output channels: the 2D-Net branch's features


class ConvBN2d(nn.Sequential):
    """Convolution, batch norm, ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, padding: int = 0, bias: bool = False) -> None:
        super().__init__(nn.Conv2d(cin, cout, kernel, stride, padding, bias=bias), nn.BatchNorm2d(cout), nn.ReLU())


def convbn2d_params(cin: int, cout: int, kernel: int, bias: bool = False) -> int:
    return conv_params(cin, cout, kernel, bias=bias) + bn_params(cout)


class Inception(nn.Module):
    """A stride-1 inception block: four branches concatenated along channels."""

    def __init__(self, cin: int, widths: tuple[int, ...], bias: bool = False, pool: str = "avg") -> None:
        super().__init__()
        b1, r3, c3, rd, cd, pp = widths
        self.branch1x1 = ConvBN2d(cin, b1, 1, bias=bias)
        self.branch3x3 = nn.Sequential(ConvBN2d(cin, r3, 1, bias=bias), ConvBN2d(r3, c3, 3, padding=1, bias=bias))
        self.branch_double = nn.Sequential(ConvBN2d(cin, rd, 1, bias=bias), ConvBN2d(rd, cd, 3, padding=1, bias=bias),
                                           ConvBN2d(cd, cd, 3, padding=1, bias=bias))
        pooling = nn.AvgPool2d(3, 1, 1) if pool == "avg" else nn.MaxPool2d(3, 1, 1)
        self.branch_pool = nn.Sequential(pooling, ConvBN2d(cin, pp, 1, bias=bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1x1(x), self.branch3x3(x), self.branch_double(x), self.branch_pool(x)], dim=1)


def inception_out(widths: tuple[int, ...]) -> int:
    b1, _, c3, _, cd, pp = widths
    return b1 + c3 + cd + pp


def inception_params(cin: int, widths: tuple[int, ...], bias: bool = False) -> int:
    b1, r3, c3, rd, cd, pp = widths
    return (
        convbn2d_params(cin, b1, 1, bias)
        + convbn2d_params(cin, r3, 1, bias) + convbn2d_params(r3, c3, 3, bias)
        + convbn2d_params(cin, rd, 1, bias) + convbn2d_params(rd, cd, 3, bias) + convbn2d_params(cd, cd, 3, bias)
        + convbn2d_params(cin, pp, 1, bias)
    )


def reduction_out(cin: int, widths: tuple[int, ...]) -> int:
    """Channels out of a reduction block: its two convolution branches and the pooled input."""
    _, c3, _, cd = widths
    return c3 + cd + cin


def reduction_params(cin: int, widths: tuple[int, ...], bias: bool = False) -> int:
    r3, c3, rd, cd = widths
    return (convbn2d_params(cin, r3, 1, bias) + convbn2d_params(r3, c3, 3, bias)
            + convbn2d_params(cin, rd, 1, bias) + convbn2d_params(rd, cd, 3, bias) + convbn2d_params(cd, cd, 3, bias))


def reduction_fits(n: int) -> bool:
    """Whether a reduction block's branches agree on an n x n input: the 3x3 / 2 convolutions (padding 1) give
    ceil(n / 2), the ceil-mode 3x3 / 2 max pool (no padding) gives ceil((n - 1) / 2): equal for even n
    (28 -> 14 and 14 -> 7 at 224 x 224). Caffe's BN-Inception has the same constraint."""
    return n >= 2 and conv_out(n, 3, 2, 1) == pool_out_ceil(n, 3, 2)


class Stem(nn.Sequential):
    """BN-Inception from conv1 to inception-3b: [N, 3, 224, 224] -> [N, 320, 28, 28]."""

    def __init__(self, bias: bool = False) -> None:
        super().__init__(
            ConvBN2d(3, 64, 7, 2, 3, bias=bias),  # conv1
            nn.MaxPool2d(3, 2, ceil_mode=True),  # pool1
            ConvBN2d(64, 64, 1, bias=bias),  # conv2_3x3_reduce
            ConvBN2d(64, 192, 3, padding=1, bias=bias),  # conv2_3x3
            nn.MaxPool2d(3, 2, ceil_mode=True),  # pool2
            Inception(192, INCEPTION_3A, bias),
            Inception(inception_out(INCEPTION_3A), INCEPTION_3B, bias),
        )


def stem_params(bias: bool = False) -> int:
    return (convbn2d_params(3, 64, 7, bias) + convbn2d_params(64, 64, 1, bias) + convbn2d_params(64, 192, 3, bias)
            + inception_params(192, INCEPTION_3A, bias) + inception_params(inception_out(INCEPTION_3A), INCEPTION_3B, bias))


class Double3c(nn.Sequential):
    """Inception-3c's double_3x3_reduce and double_3x3_1 (stride 1): [N, 320, 28, 28] -> [N, 96, 28, 28]."""

    def __init__(self, bias: bool = False) -> None:
        rd, cd = INCEPTION_3C_USED
        super().__init__(ConvBN2d(C_3B, rd, 1, bias=bias), ConvBN2d(rd, cd, 3, padding=1, bias=bias))


def double3c_params(bias: bool = False) -> int:
    rd, cd = INCEPTION_3C_USED
    return convbn2d_params(C_3B, rd, 1, bias) + convbn2d_params(rd, cd, 3, bias)


class BNInceptionTo3c(nn.Module):
    """BN-Inception from conv1 to inception-3c's double_3x3_1, ECO-Lite's 2D net: [N, 3, 224, 224] ->
    [N, 96, 28, 28]. ``stem`` ends at inception-3b (the full ECO's 2D-Net branch also starts there)."""

    def __init__(self, bias: bool = False) -> None:
        super().__init__()
        self.stem = Stem(bias)
        self.double3c = Double3c(bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.double3c(self.stem(x))


def bn_inception_to_3c_params(bias: bool = False) -> int:
    return stem_params(bias) + double3c_params(bias)


def size_after_stem(size: int) -> int:
    """Frame side after conv1 / 2 and two ceil-mode 3x3 / 2 poolings: 224 -> 28."""
    n = conv_out(size, 7, 2, 3)
    n = pool_out_ceil(n, 3, 2)
    return pool_out_ceil(n, 3, 2)


def stem_fits(size: int) -> bool:
    """Whether conv1's output survives both 3x3 / 2 poolings."""
    n = conv_out(size, 7, 2, 3)
    return n >= 3 and pool_out_ceil(n, 3, 2) >= 3


MIN_SIZE = next(s for s in range(1, 64) if stem_fits(s))


class From3c(nn.Module):
    """BN-Inception from inception-3c on, run per frame: the rest of inception-3c (the 3x3 branch, the double-3x3
    branch's strided second convolution, the max-pool pass-through), 4a..4e and 5a, 5b, then global average
    pooling: (inception-3b's [N, 320, 28, 28], inception-3c's double_3x3_1 [N, 96, 28, 28]) -> [N, 1024]."""

    def __init__(self, bias: bool = False) -> None:
        super().__init__()
        r3, c3, _, cd = INCEPTION_3C
        self.branch3x3_3c = nn.Sequential(ConvBN2d(C_3B, r3, 1, bias=bias), ConvBN2d(r3, c3, 3, 2, 1, bias=bias))
        self.double_3c = ConvBN2d(cd, cd, 3, 2, 1, bias=bias)  # double_3x3_2, on double_3x3_1's output
        self.pool_3c = nn.MaxPool2d(3, 2, ceil_mode=True)
        c = reduction_out(C_3B, INCEPTION_3C)  # 576
        blocks: list[nn.Module] = []
        for widths in (INCEPTION_4A, INCEPTION_4B, INCEPTION_4C, INCEPTION_4D):
            blocks.append(Inception(c, widths, bias))
            c = inception_out(widths)
        blocks.append(Reduction(c, INCEPTION_4E, bias))
        c = reduction_out(c, INCEPTION_4E)  # 1056
        blocks.append(Inception(c, INCEPTION_5A, bias))
        blocks.append(Inception(inception_out(INCEPTION_5A), INCEPTION_5B, bias, pool="max"))
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x3b: torch.Tensor, double3c: torch.Tensor) -> torch.Tensor:
        y = torch.cat([self.branch3x3_3c(x3b), self.double_3c(double3c), self.pool_3c(x3b)], dim=1)  # [N, 576, 14, 14]
        return self.pool(self.blocks(y)).flatten(1)


class Reduction(nn.Module):
    """A stride-2 reduction block (inception-4e): 3x3 / 2 branch, double-3x3 branch ending / 2, max pool / 2."""

    def __init__(self, cin: int, widths: tuple[int, ...], bias: bool = False) -> None:
        super().__init__()
        r3, c3, rd, cd = widths
        self.branch3x3 = nn.Sequential(ConvBN2d(cin, r3, 1, bias=bias), ConvBN2d(r3, c3, 3, 2, 1, bias=bias))
        self.branch_double = nn.Sequential(ConvBN2d(cin, rd, 1, bias=bias), ConvBN2d(rd, cd, 3, padding=1, bias=bias),
                                           ConvBN2d(cd, cd, 3, 2, 1, bias=bias))
        self.branch_pool = nn.MaxPool2d(3, 2, ceil_mode=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch3x3(x), self.branch_double(x), self.branch_pool(x)], dim=1)


def from3c_params(bias: bool = False) -> int:
    """Parameters of :class:`From3c`: inception-3c's three layers not in ECO-Lite, then 4a..5b."""
    r3, c3, _, cd = INCEPTION_3C
    total = convbn2d_params(C_3B, r3, 1, bias) + convbn2d_params(r3, c3, 3, bias) + convbn2d_params(cd, cd, 3, bias)
    c = reduction_out(C_3B, INCEPTION_3C)
    for widths in (INCEPTION_4A, INCEPTION_4B, INCEPTION_4C, INCEPTION_4D):
        total += inception_params(c, widths, bias)
        c = inception_out(widths)
    total += reduction_params(c, INCEPTION_4E, bias)
    c = reduction_out(c, INCEPTION_4E)
    total += inception_params(c, INCEPTION_5A, bias)
    total += inception_params(inception_out(INCEPTION_5A), INCEPTION_5B, bias)
    return total


def from3c_fits(size: int) -> bool:
    """Whether frames of side ``size`` pass the two reduction blocks (inception-3c at 28, 4e at 14 for 224)."""
    n = size_after_stem(size)
    return stem_fits(size) and reduction_fits(n) and reduction_fits(conv_out(n, 3, 2, 1))
