"""BANet: R = F_CS / F_3D = 1/T + 1/H + 1/W, Eq. (2) as resolved, the cascade orders, frame selection (abs or
signed differences, round half up)."""

import math
from fractions import Fraction

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnbench.api import flops_report, resolve
from attnbench.blocks.banet import ORDERS, TABLE_V_ORDERS, CascadedSelfAttention, FrameAttention, cs_ratio, kept_frames
from attnbench.blocks.registry import get_block
from attnbench.flops import cost as C
from attnbench.shapes import VideoShape


def test_ratio_at_paper_shape_is_13_4_percent() -> None:
    terms = flops_report(resolve("cs", "banet"), ["exact"]).to_dict()["analytic"]
    assert round(terms["ratio"] * 100, 1) == 13.4
    assert terms["ratio_exact"] == "15/112"  # 1/16 + 2/28
    assert terms["ratio_identity_holds"]


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 200), st.integers(1, 200), st.integers(1, 200))
def test_ratio_identity_any_shape(t: int, h: int, w: int) -> None:
    assert cs_ratio(VideoShape(1, 8, t, h, w)) == Fraction(1, t) + Fraction(1, h) + Fraction(1, w)


def test_counted_correlation_products_equal_eq5_and_eq6() -> None:
    """The first bmm of every attention (the correlation matrix) is Eq. 5 for nl and Eq. 6 for cs."""
    shape = dict(T=3, H=4, W=5)
    nl = flops_report(resolve("nl", sizes=shape), ["exact"]).to_dict()
    cs = flops_report(resolve("cs", sizes=shape), ["exact"]).to_dict()
    # each attention runs two equal-size products (q^T k and weights v), so correlation = bmm / 2
    assert nl["counted"]["exact"]["per_op_flops"]["bmm"] == 2 * nl["analytic"]["affinity_flops"]
    assert cs["counted"]["exact"]["per_op_flops"]["bmm"] == 2 * cs["analytic"]["affinity_flops"]
    assert cs["analytic"]["nl_affinity_flops"] == nl["analytic"]["affinity_flops"]


def test_cascade_orders_run_and_keep_shape() -> None:
    assert set(TABLE_V_ORDERS) <= set(ORDERS)
    torch.manual_seed(0)
    x = torch.randn(1, 8, 3, 4, 5)
    for order in TABLE_V_ORDERS:
        assert CascadedSelfAttention(8, order=order)(x).shape == x.shape


def test_hw_block_attends_only_within_a_frame() -> None:
    """Changing frame 0 must not change the HW block's output at frame 1 (attention within T slices)."""
    torch.manual_seed(0)
    block = CascadedSelfAttention(8, order="HW-TW-TH").blocks[0]  # 2D blocks work on C' = 4
    x = torch.randn(1, 4, 2, 3, 3)
    y = x.clone()
    y[:, :, 0] += 1.0
    assert torch.allclose(block(x)[:, :, 1], block(y)[:, :, 1])
    assert not torch.allclose(block(x)[:, :, 0], block(y)[:, :, 0])


class _FixedD(torch.nn.Module):
    """Stands in for the MLP of Eq. (1): d_i for the N-1 difference maps, whatever they hold."""

    def __init__(self, d: list[float]) -> None:
        super().__init__()
        self.d = torch.tensor(d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x [B, N-1, p*p] -> [B, N-1, 1]
        return self.d.view(1, -1, 1).expand(x.shape[0], -1, 1)


class _Recorder(torch.nn.Module):
    """Stands in for the MLP and keeps what it was given (the pooled difference maps)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen = x
        return x.new_zeros(*x.shape[:2], 1)


def _sigmoid_derivative(x: float) -> float:
    return math.exp(-x) / (1 + math.exp(-x)) ** 2


def test_eq2_frame_scores_use_both_adjacent_differences() -> None:
    """The module's scores for N = 5 frames with the MLP's d_i fixed: clamp to [0, 7], F(x) = sigma'(x - 3),
    then y_1 = 2 F_1, y_i = F_{i-1} + F_i, y_5 = 2 F_4."""
    fa = FrameAttention(pool=2, hidden1=3, hidden2=2).eval()
    fa.mlp = _FixedD([-1.0, 3.0, 9.0, 5.0])
    f = [_sigmoid_derivative(c - 3) for c in (0.0, 3.0, 7.0, 5.0)]  # clamp(d) = 0, 3, 7, 5
    expected = torch.tensor([[2 * f[0], f[0] + f[1], f[1] + f[2], f[2] + f[3], 2 * f[3]]] * 2)
    frames = torch.rand(2, 3, 5, 4, 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        got = fa.scores(frames)
    assert torch.allclose(got, expected, atol=1e-7)
    x = torch.tensor([3.0, 0.0, 7.0])
    s = torch.sigmoid(x - 3)
    assert torch.allclose(fa.shifted_sigmoid_derivative(x), s * (1 - s))
    assert fa.shifted_sigmoid_derivative(torch.tensor(3.0)) == 0.25  # peak of sigma' at the shift


def test_darkening_and_brightening_score_alike_only_with_abs() -> None:
    """Frames of grey levels 0.5, 0.2, 0.5: the first step darkens by 0.3, the second brightens by 0.3."""
    frames = torch.tensor([0.5, 0.2, 0.5]).view(1, 1, 3, 1, 1).expand(1, 3, 3, 4, 4)
    for diff, first, second in (("abs", 0.3, 0.3), ("signed", -0.3, 0.3)):
        fa = FrameAttention(pool=2, hidden1=3, hidden2=2, diff=diff)
        fa.mlp = _Recorder()
        fa.scores(frames)
        assert torch.allclose(fa.mlp.seen[0, 0], torch.full((4,), first))
        assert torch.allclose(fa.mlp.seen[0, 1], torch.full((4,), second))
    assert get_block("fa").resolve_options()["diff"] == "abs"


def test_abs_costs_one_op_per_difference_pixel() -> None:
    spec = get_block("fa")
    shape = spec.preset("banet-16f").shape  # N = 32 frames of 224 x 224: 31 difference maps
    signed = spec.cost(shape, **spec.resolve_options({"diff": "signed"}))
    assert spec.cost(shape, **spec.resolve_options()) == signed + C.eltwise(31 * 224 * 224)  # 1,555,456


def test_kept_frames_rounds_half_up() -> None:
    """M = floor(keep_ratio x N + 1/2): N = 3, 5, 7 keep 2, 3, 4 at 50% (round(), half to even, gave 2, 2, 4)."""
    assert [kept_frames(n, 0.5) for n in (3, 5, 7)] == [2, 3, 4]
    assert [kept_frames(n, 0.5) for n in (8, 16, 32)] == [4, 8, 16]
    assert kept_frames(5, 0.3) == 2  # 3/10 x 5 = 3/2 exactly, up to 2 (0.3 * 5 in floats is 1.5 too)
    assert kept_frames(1, 0.5) == 1 and kept_frames(4, 0.1) == 1 and kept_frames(6, 1.0) == 6
    out = FrameAttention(pool=2, hidden1=3, hidden2=2)(torch.randn(1, 3, 5, 4, 4))
    assert out.shape == (1, 3, 3, 4, 4)


def test_frame_attention_keeps_top_frames_in_order() -> None:
    torch.manual_seed(0)
    fa = FrameAttention(pool=4, hidden1=8, hidden2=4, keep_ratio=0.5)
    frames = torch.randn(2, 3, 6, 8, 8)
    out = fa(frames)
    assert out.shape == (2, 3, 3, 8, 8)
    scores = fa.last_scores
    for b in range(2):
        idx = torch.topk(scores[b], 3).indices.sort().values
        assert torch.equal(out[b], frames[b][:, idx])
