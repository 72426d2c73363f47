"""BANet: R = F_CS / F_3D = 1/T + 1/H + 1/W, Eq. (2) as resolved, the cascade orders, frame selection."""

from fractions import Fraction

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnbench.api import flops_report, resolve
from attnbench.blocks.banet import ORDERS, TABLE_V_ORDERS, CascadedSelfAttention, FrameAttention, cs_ratio
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


def test_eq2_frame_scores_use_both_adjacent_differences() -> None:
    fa = FrameAttention(pool=2, hidden1=3, hidden2=2)
    f = torch.tensor([[0.1, 0.2, 0.3]])  # F(clamp(d_i)) for N-1 = 3 difference maps
    expected = torch.tensor([[0.2, 0.1 + 0.2, 0.2 + 0.3, 0.6]])
    got = torch.cat([f[:, :1] * 2, f[:, :-1] + f[:, 1:], f[:, -1:] * 2], dim=1)
    assert torch.allclose(got, expected)
    x = torch.tensor([3.0, 0.0, 7.0])
    s = torch.sigmoid(x - 3)
    assert torch.allclose(fa.shifted_sigmoid_derivative(x), s * (1 - s))
    assert fa.shifted_sigmoid_derivative(torch.tensor(3.0)) == 0.25  # peak of sigma' at the shift


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
