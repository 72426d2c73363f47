"""Interaction-aware spatio-temporal pyramid attention (stpa): shapes, closed forms, maps, losses, errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from attnbench.blocks.pyramid import (
    PAPER_BETA,
    PAPER_GAMMA,
    Level,
    SpatioTemporalPyramidAttention,
    attention_loss,
    interaction_loss,
    pyramid_levels,
    total_loss,
)
from attnbench.blocks.registry import get_block
from attnbench.errors import UsageError
from attnbench.flops import cost as C
from attnbench.flops.count import count, meta_inputs, param_count
from attnbench.shapes import VideoShape

SPEC = get_block("stpa")
# Bottom 3 x 4 x 4, then 5 x 3 x 3, top 7 x 2 x 2 (d = 4); B = 2, K = 3 frames.
TINY = VideoShape(2, 3, 3, 4, 4)
TINY_OPTS = {"c2": 5, "size2": 3, "c3": 7, "size3": 2}


def _options(**given):
    return SPEC.resolve_options({**TINY_OPTS, **given})


def _module(shape=TINY, **given):
    torch.manual_seed(0)
    return SPEC.build(shape, **_options(**given))


def _levels(shape=TINY, seed=1, **given):
    return meta_inputs(SPEC.input_shapes(shape, _options(**given)), device="cpu", seed=seed)


def test_paper_preset_is_the_inception_resnet_v2_pyramid() -> None:
    p = SPEC.preset("inception-resnet-v2")
    options = SPEC.resolve_options(base=p.options)
    assert options["fusion"] == "mul"  # Table 1(c): best fusion
    assert options["downsample"] == "max"  # Sec. 3.4
    assert SPEC.input_shapes(p.shape, options) == [
        (1, 320, 25, 35, 35),
        (1, 1088, 25, 17, 17),
        (1, 2080, 25, 8, 8),
    ]
    terms = SPEC.terms(p.shape, **options)
    assert terms["d"] == 64 and terms["K"] == 25 and terms["output_shape"] == [1, 2080, 8, 8]
    # d = 64: 64 x (320 + 1088 + 2080) weights + 3 x 64 biases
    assert SPEC.params(p.shape, **options) == 64 * (320 + 1088 + 2080) + 3 * 64 == 223424


def test_tiny_params_by_hand() -> None:
    # d = 2 * 2 = 4; levels (C_j d + d): (3*4 + 4) + (5*4 + 4) + (7*4 + 4) = 16 + 24 + 32 = 72
    assert SPEC.params(TINY, **_options()) == 72
    assert param_count(_module()) == 72
    # 2 scales: top is level 2 (3 x 3, d = 9): (3*9 + 9) + (5*9 + 9) = 36 + 54 = 90
    assert SPEC.params(TINY, **_options(scales=2)) == 90
    # 1 scale: the bottom alone (4 x 4, d = 16): 3*16 + 16 = 64
    assert SPEC.params(TINY, **_options(scales=1)) == 64


def test_params_do_not_depend_on_k() -> None:
    for k in (1, 3, 25):
        assert SPEC.params(TINY.replace(T=k), **_options()) == 72


def test_tiny_cost_by_hand() -> None:
    # B=2, K=3, d=4, positions n = K*h*w = 12, scores per level B*n*d = 96
    got = SPEC.cost(TINY, **_options())
    # R: 4 -> 2 adaptive windows 2+2 per dim (4 taps), 3 -> 2 windows 2+2 (4 taps);
    # pooled maps B*C_j*K: level 1 2*3*3 = 18, level 2 2*5*3 = 30
    assert got.get("pooling", "op") == 18 * 4 * 4 + 30 * 4 * 4 + 96  # + L2 norm's sum over 96 entries
    # scores: B*n rows = 24, each C_j x d MACs: 24*4*(3 + 5 + 7) = 1440; biases 3 levels * 96
    assert got.get("linear", "mac") == 1440 and got.get("linear", "op") == 3 * 96
    # fusion 2 * 96, L2: square 96 + rsqrt B*d = 8 + multiply 96
    assert got.get("elementwise", "op") == 2 * 96 + 96 + 8 + 96
    assert got.get("softmax", "op") == 5 * 96
    # M = A X: B x (d x n) (n x C_3) = 2 * 4 * 12 * 7
    assert got.get("matmul", "mac") == 2 * 4 * 12 * 7


@pytest.mark.parametrize("fusion", ["mul", "sum", "max"])
@pytest.mark.parametrize("downsample", ["max", "avg"])
def test_counted_equals_closed_form(fusion: str, downsample: str) -> None:
    options = _options(fusion=fusion, downsample=downsample)
    with torch.device("meta"):
        module = SPEC.build(TINY, **options)
    result = count(module, meta_inputs(SPEC.input_shapes(TINY, options)))
    assert not result.unhandled
    assert result.cost == SPEC.cost(TINY, **options)


def test_output_shape_and_maps_normalised() -> None:
    module = _module()
    levels = _levels()
    with torch.no_grad():
        out = module(*levels)
        maps = module.maps(*levels)
    assert out.shape == (2, 7, 2, 2)
    assert torch.allclose(maps.output, out)
    a = maps.attention  # [B, d, K*h*w]
    assert a.shape == (2, 4, 12)
    # Sec. 3.1: every row a^i is L2 normalised, a a^T = 1, and positive (from the softmax)
    assert torch.allclose((a * a).sum(-1), torch.ones(2, 4), atol=1e-6)
    assert (a > 0).all()
    # each scale's softmax(y^j) sums to 1 over the K*h*w positions
    assert len(maps.scale_attention) == 3
    for s in maps.scale_attention:
        assert torch.allclose(s.sum(-1), torch.ones(2, 4), atol=1e-6)
    # Eq. 4: M = A X with X the flattened top level [B, K*h*w, C_3], M row m at position m of M'
    top = levels[-1]
    x = top.permute(0, 2, 3, 4, 1).reshape(2, 12, 7)
    assert torch.allclose(maps.features, x)
    m = a @ x  # [B, d, C]
    assert torch.allclose(out.flatten(2).transpose(1, 2), m, atol=1e-6)


def _expected_attention(module, levels, fuse):
    """Eq. 1-3 written out again, independently of the module's code path."""
    scores = []
    for f, lin in zip(levels, module.score):
        b, c, k = f.shape[:3]
        if f.shape[-2:] != (2, 2):
            f = F.adaptive_max_pool2d(f.reshape(b, c * k, *f.shape[-2:]), 2).reshape(b, c, k, 2, 2)
        x = f.permute(0, 2, 3, 4, 1).reshape(b, -1, c)  # [B, K*h*w, C_j]
        scores.append(x @ lin.weight.T + lin.bias)  # Y_j^T
    a = torch.softmax(fuse(scores), dim=1)
    return (a / a.norm(dim=1, keepdim=True)).transpose(1, 2)


@pytest.mark.parametrize(
    "fusion,fuse",
    [
        ("mul", lambda ys: ys[0] * ys[1] * ys[2]),
        ("sum", lambda ys: ys[0] + ys[1] + ys[2]),
        ("max", lambda ys: torch.maximum(torch.maximum(ys[0], ys[1]), ys[2])),
    ],
)
def test_fusion_functions(fusion, fuse) -> None:
    module = _module(fusion=fusion)
    levels = _levels()
    with torch.no_grad():
        got = module.maps(*levels).attention
        want = _expected_attention(module, levels, fuse)
    assert torch.allclose(got, want, atol=1e-6)


def test_fusions_differ() -> None:
    levels = _levels()
    with torch.no_grad():
        outs = {f: _module(fusion=f)(*levels) for f in ("mul", "sum", "max")}
    assert not torch.allclose(outs["mul"], outs["sum"])
    assert not torch.allclose(outs["sum"], outs["max"])


def test_k_frames_aggregated_order_free() -> None:
    # Sec. 3.2: the K frames are attended jointly (softmax over K*h*w); the output does not depend on their
    # order and has the size of one frame's top level, whatever K.
    module = _module()
    levels = _levels()
    perm = torch.tensor([2, 0, 1])
    with torch.no_grad():
        out = module(*levels)
        shuffled = module(*(f[:, :, perm] for f in levels))
        one = module(*(f[:, :, :1] for f in levels))
    assert torch.allclose(out, shuffled, atol=1e-6)
    assert one.shape == out.shape


def test_single_frame_single_scale_is_plain_self_attention() -> None:
    shape = VideoShape(1, 3, 1, 2, 2)
    module = _module(shape, scales=1)
    (f,) = _levels(shape, scales=1)
    with torch.no_grad():
        x = f.permute(0, 2, 3, 4, 1).reshape(1, 4, 3)
        y = module.score[0](x)  # [1, 4 positions, d = 4]
        a = torch.softmax(y, dim=1)
        a = a / a.norm(dim=1, keepdim=True)
        want = a.transpose(1, 2) @ x
        assert torch.allclose(module(f).flatten(2).transpose(1, 2), want, atol=1e-6)


def test_downsampling_is_max_pooling_and_same_size_passes_through() -> None:
    module = SpatioTemporalPyramidAttention([Level(2, 4, 4), Level(2, 2, 2)])
    f = torch.arange(2 * 1 * 16, dtype=torch.float32).reshape(1, 2, 1, 4, 4)
    pooled = module._resample(f)
    assert pooled.shape == (1, 2, 1, 2, 2)
    assert pooled[0, 0, 0].tolist() == [[5.0, 7.0], [13.0, 15.0]]  # max of each 2x2 window
    top = torch.randn(1, 2, 1, 2, 2)
    assert module._resample(top) is top
    avg = SpatioTemporalPyramidAttention([Level(2, 4, 4), Level(2, 2, 2)], downsample="avg")
    assert avg._resample(f)[0, 0, 0].tolist() == [[2.5, 4.5], [10.5, 12.5]]


def test_levels_from_shape_and_options() -> None:
    assert pyramid_levels(VideoShape(1, 320, 3, 35, 35)) == [
        Level(320, 35, 35),
        Level(1088, 17, 17),
        Level(2080, 8, 8),
    ]
    assert pyramid_levels(TINY, scales=2, c2=5, size2=3) == [Level(3, 4, 4), Level(5, 3, 3)]


# ---------------------------------------------------------------------------------------------------------
# Losses


def test_interaction_loss_orthonormal_rows() -> None:
    a = torch.eye(2)  # orthonormal rows: the off-diagonal term vanishes
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    # -tr(A X X^T A^T) = -||X||_F^2 = -(1 + 4 + 9 + 16) = -30
    assert interaction_loss(a, x).item() == pytest.approx(-30.0)


def test_interaction_loss_correlated_rows() -> None:
    a = torch.tensor([[1.0, 0.0], [1.0, 0.0]])  # two equal unit rows
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    # A X = [[1, 2], [1, 2]]: captured 5 + 5 = 10; A A^T = all ones: off-diagonal squares 1 + 1 = 2
    assert interaction_loss(a, x).item() == pytest.approx(-10.0 + 2.0)


def test_interaction_loss_batch_reduction() -> None:
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    a = torch.stack([torch.eye(2), torch.tensor([[1.0, 0.0], [1.0, 0.0]])])
    xs = torch.stack([x, x])
    assert interaction_loss(a, xs, reduction="none").tolist() == pytest.approx([-30.0, -8.0])
    assert interaction_loss(a, xs).item() == pytest.approx(-19.0)
    assert interaction_loss(a, xs, reduction="sum").item() == pytest.approx(-38.0)


def test_attention_loss_values() -> None:
    a = torch.tensor([[0.6, 0.8]])
    # identical maps: delta = 0 everywhere, 2 scales x 1 row x 2 positions -> sqrt(4) = 2
    assert attention_loss(a, [a, a]).item() == pytest.approx(2.0)
    # complementary one-hot maps: delta = 1 everywhere -> sqrt(0) = 0
    assert attention_loss(torch.tensor([[1.0, 0.0]]), [torch.tensor([[0.0, 1.0]])]).item() == 0.0
    # delta = 0.5 at both positions: sqrt(2 (1 - 0.25)) = sqrt(1.5)
    got = attention_loss(torch.tensor([[1.0, 0.0]]), [torch.tensor([[0.5, 0.5]])])
    assert got.item() == pytest.approx(math.sqrt(1.5))


def test_total_loss_paper_weights() -> None:
    ce, li, la = torch.tensor(1.0), torch.tensor(-8.0), torch.tensor(2.0)
    assert PAPER_BETA == PAPER_GAMMA == 1e-4
    assert total_loss(ce, li, la).item() == pytest.approx(1.0 - 8e-4 + 2e-4)


def test_losses_train_the_attention_weights() -> None:
    module = _module()
    maps = module.maps(*_levels())
    loss = total_loss(
        maps.output.square().mean(),
        interaction_loss(maps.attention, maps.features),
        attention_loss(maps.attention, maps.scale_attention),
    )
    loss.backward()
    for lin in module.score:
        assert lin.weight.grad is not None and torch.isfinite(lin.weight.grad).all()


# ---------------------------------------------------------------------------------------------------------
# Validation


@pytest.mark.parametrize(
    "shape,given,fragment",
    [
        (VideoShape(1, 3, 2, 4, 4), {"size2": 5}, "level 2 (5x5) is larger than level 1 (4x4)"),
        (VideoShape(1, 3, 2, 8, 2), {"size2": 3, "size3": 1}, "level 2 (3x3) is larger than level 1 (8x2)"),
        (VideoShape(1, 3, 2, 8, 8), {"size2": 2, "size3": 3}, "level 3 (3x3) is larger than level 2 (2x2)"),
    ],
)
def test_rejects_growing_pyramid(shape, given, fragment) -> None:
    with pytest.raises(UsageError) as err:
        SPEC.validate(shape, SPEC.resolve_options({**TINY_OPTS, **given}))
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_unused_levels_are_not_checked() -> None:
    # scales=1: only the shape's level; c2/size2/c3/size3 are ignored
    SPEC.validate(VideoShape(1, 3, 2, 2, 2), SPEC.resolve_options({"scales": 1}))


@pytest.mark.parametrize("given", [{"fusion": "min"}, {"scales": 4}, {"downsample": "conv"}, {"size2": 0}])
def test_rejects_bad_options(given) -> None:
    with pytest.raises(UsageError):
        SPEC.resolve_options(given)


def test_rejects_wrong_number_of_levels() -> None:
    module = _module()
    with pytest.raises(UsageError, match="takes 3 pyramid levels, got 2"):
        module(*_levels()[:2])


def test_every_preset_valid_and_sourced() -> None:
    for p in SPEC.presets:
        options = SPEC.resolve_options(base=p.options)
        SPEC.validate(p.shape, options)
        assert p.source
        assert SPEC.cost(p.shape, **options).flops > 0
    paper = SPEC.preset("inception-resnet-v2")
    # per-level terms match the counted pieces: scores of level j = 2 * B*K*d*C_j*d + B*K*d*d (bias)
    t = SPEC.terms(paper.shape, **SPEC.resolve_options())
    assert t["level1_scores_flops"] == C.linear(25 * 64, 320, 64, True).flops
    assert t["level3_downsample_flops"] == 0
    assert t["aggregate_flops"] == 2 * 64 * 25 * 64 * 2080
