"""STA and STC: counted params and MACs against STA Table IV, presets against the paper, forward semantics."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attnbench.blocks.registry import get_block
from attnbench.blocks.sta import STAModule, STCBlock, resnext101_layer_input
from attnbench.errors import UsageError
from attnbench.flops.count import count, meta_inputs, param_count
from attnbench.shapes import VideoShape

STA = get_block("sta")
STC = get_block("stc")
PRESETS = [p.name for p in STA.presets]

shapes = st.builds(
    VideoShape,
    B=st.integers(1, 2),
    C=st.integers(1, 24),
    T=st.integers(1, 9),
    H=st.integers(1, 12),
    W=st.integers(1, 12),
)
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _count(spec, shape, **options):
    with torch.device("meta"):
        module = spec.build(shape, **options)
    result = count(module, meta_inputs([shape.as_list()]))
    assert not result.unhandled
    return module, result


# ---------------------------------------------------------------------------------------------------------
# Presets


def test_resnext101_layer_shapes() -> None:
    # 64 frames: T 64 -conv1-> 64 -pool-> 32 -layer2-> 16 -layer3-> 8 -layer4-> 4; H 112 -> 56 -> 28 -> 14 -> 7 -> 4
    assert resnext101_layer_input(64, 112, 4) == (8, 7, 7)
    assert resnext101_layer_input(64, 112, 5) == (4, 4, 4)
    # 16 frames: 16 -> 16 -> 8 -> 4 -> 2
    assert resnext101_layer_input(16, 112, 4) == (2, 7, 7)
    assert resnext101_layer_input(16, 112, 1) == (8, 28, 28)


def test_paper_preset_is_the_text_shape() -> None:
    for spec in (STA, STC):
        assert spec.default_preset.name == "resnext101-64f-layer4"
        assert spec.default_preset.shape == VideoShape(1, 1024, 8, 7, 7)  # Sec. IV-C: c=1024, l=8, h=w=7
        assert spec.preset("resnext101-16f-layer4").shape == VideoShape(1, 1024, 2, 7, 7)


def test_table_iv_values_at_resnext101_64f_layer4() -> None:
    shape = STA.default_preset.shape
    sta = STA.terms(shape)
    assert sta["table_iv_params"] == 1024 * (49 + 4) + 5 == 54277
    assert sta["table_iv_mults"] == 1024 * 8 * (49 + 4) + 3 * 8 == 434200
    stc = STC.terms(shape, ratio=16)
    assert stc["table_iv_params"] == 1024**2 * (64 + 8 + 2) // 16 == 4849664
    assert stc["table_iv_mults"] == 1024 * 11 + 4849664 == 4860928


# ---------------------------------------------------------------------------------------------------------
# STA against Table IV


def _assert_sta_table_iv(shape: VideoShape) -> None:
    module, result = _count(STA, shape)
    terms = STA.terms(shape)
    assert param_count(module) == terms["table_iv_params"] == STA.params(shape)
    assert result.cost.get("convolution", "mac") == shape.B * terms["table_iv_mults"]
    assert result.cost.get("convolution", "mac") == terms["conv_macs"]
    assert result.cost == STA.cost(shape)
    assert result.cost.get("elementwise", "op") >= terms["gating_mults"]


@pytest.mark.parametrize("preset", PRESETS)
def test_sta_preset_matches_table_iv(preset: str) -> None:
    shape = STA.preset(preset).shape
    _assert_sta_table_iv(shape)
    _assert_sta_table_iv(shape.replace(B=1))


@FAST
@given(shapes)
def test_sta_random_shapes_match_table_iv(shape: VideoShape) -> None:
    STA.validate(shape, {})  # every shape is valid
    _assert_sta_table_iv(shape)


def test_sta_layers_and_lengths() -> None:
    c, l, h, w = 5, 6, 3, 4
    m = STAModule(c, h, w)
    seen = {}
    for name in ("conv1", "deconv", "conv2"):
        getattr(m, name).register_forward_hook(lambda mod, i, o, name=name: seen.__setitem__(name, tuple(o.shape)))
    x = torch.randn(2, c, l, h, w)
    y = m(x)
    assert seen == {"conv1": (2, 1, l, 1, 1), "deconv": (2, 1, l + 2), "conv2": (2, c, l)}
    assert y.shape == x.shape
    assert m.conv1.bias is not None and m.deconv.bias is not None and m.conv2.bias is None
    assert m.deconv.stride == (1,) and m.deconv.kernel_size == (3,)


def test_sta_conv1_is_eq2_and_output_is_eq7() -> None:
    torch.manual_seed(0)
    c, l, h, w = 4, 5, 3, 2
    m = STAModule(c, h, w).eval()
    x = torch.randn(2, c, l, h, w)
    # Eq. (2): Z_t(i) = sum_j sum_m sum_n a_j(m, n) x_{i,j}(m, n)  (+ Conv1's bias)
    a = m.conv1.weight[0, :, 0]  # [c, h, w]
    z = torch.einsum("jmn,bjimn->bi", a, x) + m.conv1.bias
    torch.testing.assert_close(m.conv1(x).reshape(2, l), z)
    # Eq. (7): y_{i,j} = w_{i,j} x_{i,j}, one weight per frame and channel in (0, 1)
    wts = m.weights(x)
    assert wts.shape == (2, c, l)
    assert bool(((wts > 0) & (wts < 1)).all())
    torch.testing.assert_close(m(x), x * wts[..., None, None])


# ---------------------------------------------------------------------------------------------------------
# STC against Table IV


def _assert_stc_table_iv(shape: VideoShape, ratio: int) -> None:
    module, result = _count(STC, shape, ratio=ratio)
    terms = STC.terms(shape, ratio=ratio)
    c, l = shape.C, shape.T
    assert param_count(module) == terms["table_iv_params"] == STC.params(shape, ratio=ratio)
    assert result.cost == STC.cost(shape, ratio=ratio)
    # the FC MACs are the c^2 (l^2 + l + 2) / r part of Table IV's # MULT
    fc = result.cost.get("linear", "mac")
    assert fc == shape.B * terms["fc_macs_per_clip"] == shape.B * (terms["table_iv_mults"] - c * (l + 3))
    # everything counted = Table IV's # MULT + the work it leaves out
    assert result.cost.macs + (result.cost.flops - 2 * result.cost.macs) == shape.B * terms["counted_work_per_clip"]
    assert terms["counted_work_per_clip"] == terms["table_iv_mults"] + terms["omitted_by_table_iv_per_clip"]
    assert terms["counted_small_term_per_clip"] == terms["table_iv_small_term"]


@pytest.mark.parametrize("preset", PRESETS)
def test_stc_preset_matches_table_iv(preset: str) -> None:
    p = STC.preset(preset)
    options = STC.resolve_options(base=p.options)
    STC.validate(p.shape, options)
    _assert_stc_table_iv(p.shape, options["ratio"])


@FAST
@given(shapes, st.integers(1, 8))
def test_stc_random_shapes_match_table_iv_or_are_rejected(shape: VideoShape, ratio: int) -> None:
    if shape.C % ratio:
        with pytest.raises(UsageError) as err:
            STC.validate(shape, {"ratio": ratio})
        assert "\n" not in str(err.value) and "r=" in str(err.value)
        return
    STC.validate(shape, {"ratio": ratio})
    _assert_stc_table_iv(shape, ratio)


def test_stc_branches_and_gate() -> None:
    torch.manual_seed(0)
    c, l, r = 8, 3, 4
    m = STCBlock(c, l, r).eval()
    x = torch.randn(2, c, l, 5, 6)
    a_t, a_s = m.gates(x)
    # the channel branch's input (mean over l of the spatial means) is the global mean over l, h, w
    torch.testing.assert_close(a_s, m.channel(x.mean(dim=(2, 3, 4))))
    torch.testing.assert_close(a_t, m.temporal(x.mean(dim=(3, 4)).flatten(1)))
    torch.testing.assert_close(m(x), x * (a_t * a_s)[:, :, None, None, None])
    widths = [layer.out_features for layer in (m.temporal[0], m.temporal[2], m.channel[0], m.channel[2])]
    assert widths == [c * l // r, c, c // r, c]
    assert all(layer.bias is None for layer in m.modules() if isinstance(layer, torch.nn.Linear))
