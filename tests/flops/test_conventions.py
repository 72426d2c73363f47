"""Counting conventions on tiny hand-computed networks, and against the real fvcore / ptflops (/ thop) tools."""

import contextlib
import io

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attnbench import api
from attnbench.errors import UsageError
from attnbench.flops import conventions as cv
from attnbench.flops import counters as ext
from attnbench.flops.count import meta_inputs


def values(module: nn.Module, shape: tuple[int, ...]) -> dict[str, int]:
    result, log = cv.count_detailed(module.to("meta"), meta_inputs([shape]))
    return cv.all_values(result.cost, result.per_op, log)


class ConvNet(nn.Module):
    """conv (bias) -> batch norm -> ReLU module -> max-pool -> linear (bias), on [1, 2, 5, 5]."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, bias=True)  # -> [1, 3, 3, 3]: 27 outputs
        self.bn = nn.BatchNorm2d(3)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(3)  # -> [1, 3, 1, 1]: 3 outputs, windows of 9
        self.fc = nn.Linear(3, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.relu(self.bn(self.conv(x)))).flatten(1))


def test_conv_net_by_hand() -> None:
    v = values(ConvNet(), (1, 2, 5, 5))
    conv_mac = 27 * 2 * 9  # 27 outputs x 2 input channels x 3x3 taps = 486
    fc_mac = 3 * 4  # 12
    assert v["macs"] == conv_mac + fc_mac == 498
    assert v["conv-only-macs"] == 486
    # 2 x 498 MACs + 27 conv bias adds + 2 x 27 batch norm + 27 ReLU + 3 x 9 pool + 4 fc bias adds
    assert v["flops"] == 2 * 498 + 27 + 54 + 27 + 27 + 4 == 1135
    # thop: conv 486 (no bias), BN 2 x 27 x 2 (affine) = 108, ReLU 0, MaxPool 0, Linear 3 x 4 = 12 (no bias)
    assert v["thop"] == 486 + 108 + 12 == 606
    # fvcore: conv 486, linear 12, batch norm 2 x 27 = 54 (affine, inference); ReLU and pool not counted
    assert v["fvcore"] == 486 + 12 + 54 == 552
    # ptflops: conv 486 + 27 bias, BN 2 x 27, ReLU module 27 + patched F.relu 27, MaxPool module 27 inputs +
    # patched F.max_pool2d 27 inputs, Linear 12 + 4 bias
    assert v["ptflops"] == 513 + 54 + 54 + 54 + 16 == 691
    # ptflops-aten: convolution 486 + 27 bias, addmm 12 + 4 bias
    assert v["ptflops-aten"] == 513 + 16 == 529


class AttentionNet(nn.Module):
    """bmm, F.softmax, bmm, mean, sigmoid and a gating multiply: no module at all."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x [1, 4, 6]
        a = F.softmax(torch.bmm(x.transpose(1, 2), x), dim=-1)  # [1, 6, 6]
        y = torch.bmm(a, x.transpose(1, 2))  # [1, 6, 4]
        return y * torch.sigmoid(y.mean())


def test_attention_net_by_hand() -> None:
    v = values(AttentionNet(), (1, 4, 6))
    assert v["macs"] == 6 * 4 * 6 + 6 * 6 * 4 == 288
    # 2 x 288 + softmax 5 x 36 + mean 24 + sigmoid 1 + multiply 24
    assert v["flops"] == 576 + 180 + 24 + 1 + 24 == 805
    assert v["conv-only-macs"] == 0
    assert v["thop"] == 0  # no hooked module: thop sees nothing
    assert v["fvcore"] == 288  # the two bmm
    assert v["ptflops"] == 288 + 36  # torch.bmm patched; F.softmax 1 per input element; x * y not patched
    assert v["ptflops-aten"] == 288


class PoolNet(nn.Module):
    """AvgPool2d(3, 1, 1) -> AdaptiveAvgPool2d(2) -> flatten -> nn.Softmax, on [1, 2, 4, 4]."""

    def __init__(self) -> None:
        super().__init__()
        self.avg = nn.AvgPool2d(3, 1, 1)  # 32 outputs, windows of 9
        self.aap = nn.AdaptiveAvgPool2d(2)  # 32 inputs -> 8 outputs, windows of 2 x 2
        self.softmax = nn.Softmax(dim=1)  # one row of 8

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.softmax(self.aap(self.avg(x)).flatten(1))


def test_pool_net_by_hand() -> None:
    v = values(PoolNet(), (1, 2, 4, 4))
    assert v["macs"] == 0
    assert v["flops"] == 32 * 9 + 8 * 4 + 5 * 8 == 360  # window sums, softmax 5 per element
    # thop: avg pool 1 per output (32); adaptive (4 + 1) per output (40); nn.Softmax (3 x 8 - 1) per row (23)
    assert v["thop"] == 32 + 40 + 23 == 95
    # fvcore: adaptive_avg_pool2d 1 per input (32); avg_pool2d and softmax have no handle
    assert v["fvcore"] == 32
    # ptflops: each pool module 2 x its inputs (hook + patched F.*pool*): 64 + 64; F.softmax 8
    assert v["ptflops"] == 64 + 64 + 8 == 136
    assert v["ptflops-aten"] == 0


def test_transposed_convolution_by_hand() -> None:
    # ConvTranspose1d(2 -> 3, kernel 3) on [1, 2, 4] -> [1, 3, 6]
    v = values(nn.ConvTranspose1d(2, 3, 3), (1, 2, 4))
    assert v["macs"] == 8 * 3 * 3 == 72  # every input element x 3 output channels x 3 taps
    assert v["fvcore"] == 72  # fvcore counts transposed convolutions on the input too
    assert v["thop"] == 18 * 2 * 3 == 108  # thop: output elements x input channels x taps
    assert v["ptflops"] == 72 + 18 and v["ptflops-aten"] == 72 + 18  # + bias per output element


def test_fallbacks_without_the_log() -> None:
    result, log = cv.count_detailed(ConvNet().to("meta"), meta_inputs([(1, 2, 5, 5)]))
    assert cv.fvcore(result.cost, result.per_op) == cv.fvcore(result.cost, result.per_op, log) == 552
    assert cv.ptflops_aten(result.cost) == cv.ptflops_aten(result.cost, result.per_op, log) == 529
    assert cv.thop(result.cost, result.per_op) == 606
    # without the log ptflops takes the max-pool as its window sum (27 = its 27 inputs here: no overlap)
    assert cv.ptflops(result.cost, result.per_op) == 691


def test_units_and_unknown_name() -> None:
    assert cv.CONVENTIONS["flops"].unit == "FLOPs"
    assert all(c.unit in ("FLOPs", "MACs") for c in cv.CONVENTIONS.values())
    assert {"flops", "macs", "thop", "fvcore", "ptflops", "ptflops-aten", "conv-only-macs"} <= set(cv.CONVENTIONS)
    with pytest.raises(UsageError, match="valid choices"):
        cv.value("nope", cv.Cost())


# ---------------------------------------------------------------------------------------------------------
# Against the installed tools, on real CPU tensors

SMALL = {"T": 4, "H": 8, "W": 8}
BLOCKS = [("nl", "banet", SMALL), ("cbam", None, SMALL), ("sta", None, SMALL), ("se", None, SMALL), ("w3", None, None)]


def _real(case_or_net):
    torch.manual_seed(0)
    module = case_or_net.build("cpu").eval()
    inputs = meta_inputs(case_or_net.input_shapes(), "cpu")
    result, log = cv.count_detailed(case_or_net.build("meta"), meta_inputs(case_or_net.input_shapes()))
    return module, inputs, result, log


@pytest.mark.parametrize("name,preset,sizes", BLOCKS)
def test_fvcore_convention_matches_fvcore(name, preset, sizes) -> None:
    pytest.importorskip("fvcore")
    module, inputs, result, log = _real(api.resolve(name, preset, sizes))
    real = ext.count_fvcore(lambda: module, lambda: inputs, 0, 1 << 40)
    assert cv.fvcore(result.cost, result.per_op, log) == real.native


@pytest.mark.parametrize("name,preset,sizes", BLOCKS)
def test_ptflops_conventions_match_ptflops(name, preset, sizes) -> None:
    pytest.importorskip("ptflops")
    module, inputs, result, log = _real(api.resolve(name, preset, sizes))
    assert cv.ptflops(result.cost, result.per_op, log) == ext.count_ptflops(module, inputs, "pytorch", result.per_op).native
    assert cv.ptflops_aten(result.cost, result.per_op, log) == ext.count_ptflops(module, inputs, "aten", result.per_op).native


def test_tool_conventions_match_on_a_network() -> None:
    pytest.importorskip("fvcore")
    pytest.importorskip("ptflops")
    net = api.resolve_network("resnet3d-50", "cbam", frames=2, size=16)
    module, inputs, result, log = _real(net)
    assert cv.fvcore(result.cost, result.per_op, log) == ext.count_fvcore(lambda: module, lambda: inputs, 0, 1 << 40).native
    assert cv.ptflops(result.cost, result.per_op, log) == ext.count_ptflops(module, inputs, "pytorch", result.per_op).native


def test_thop_convention_matches_thop_when_installed() -> None:
    thop = pytest.importorskip("thop")  # not a dependency; checked by hand against thop 0.1.1
    for model in (ConvNet(), PoolNet()):
        shape = (1, 2, 5, 5) if isinstance(model, ConvNet) else (1, 2, 4, 4)
        with contextlib.redirect_stdout(io.StringIO()):
            macs, _ = thop.profile(model.eval(), inputs=(torch.randn(*shape),), verbose=False)
        assert int(macs) == values(type(model)(), shape)["thop"]
