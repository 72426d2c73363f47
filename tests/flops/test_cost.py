"""The cost primitives, each against arithmetic written out by hand."""

from attnbench.flops import cost as C
from attnbench.flops.cost import Cost


def test_conv_counts_macs_and_bias_adds() -> None:
    # out 2x4x3x3x3 = 216 elements, 5 input channels, 3x3x3 kernel: 216 * 5 * 27 = 29160 MACs; 216 bias adds
    c = C.conv(216, 5, (3, 3, 3), bias=True)
    assert c.macs == 29160
    assert c.flops == 2 * 29160 + 216


def test_transposed_conv_multiplies_every_input_by_every_tap() -> None:
    # input length 5, 1 channel in, 1 out, kernel 3 -> 15 MACs; output length 7 -> 7 bias adds
    c = C.conv_transpose(5, 1, (3,), 7, bias=True)
    assert (c.macs, c.flops) == (15, 37)


def test_linear_matmul_softmax_pool_eltwise() -> None:
    assert C.linear(4, 10, 3, bias=True).flops == 2 * 4 * 10 * 3 + 4 * 3  # 252
    assert C.matmul(2, 3, 4, 5).macs == 120
    assert C.softmax(10).flops == 50  # 5 ops per element
    assert C.pool(8, 4).flops == 32
    assert C.batchnorm(7).flops == 14
    assert C.eltwise(9).flops == 9


def test_adaptive_window_sum_matches_pytorch_rule() -> None:
    # 224 -> 56: 56 windows of 4; 5 -> 3: windows [0,2), [1,4), [3,5) = 2 + 3 + 2
    assert C.adaptive_window_sum(224, 56) == 224
    assert C.adaptive_window_sum(5, 3) == 7


def test_cost_arithmetic_and_categories() -> None:
    a = C.conv(10, 2, (1,), True) + C.softmax(3)
    assert a.by_category()["convolution"] == 2 * 20 + 10
    assert a.by_category()["softmax"] == 15
    assert (a * 3).flops == 3 * a.flops
    assert Cost.total([a, a]) == a * 2
    assert a.to_dict()["linear"] == {"mac": 0, "op": 0}
