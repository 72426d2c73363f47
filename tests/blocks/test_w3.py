"""W3 (What-Where-When attention): hand-counted parameters, shapes, composition, option checks."""

from __future__ import annotations

import pytest
import torch

from attnbench.blocks.registry import get_block
from attnbench.blocks.w3 import W3, ChannelTemporalAttention, SpatioTemporalAttention
from attnbench.errors import UsageError
from attnbench.flops.count import count, meta_inputs, param_count
from attnbench.shapes import VideoShape

TINY = VideoShape(1, 4, 3, 5, 5)


def _counted(name: str, shape: VideoShape, **given):
    spec = get_block(name)
    options = spec.resolve_options(given)
    spec.validate(shape, options)
    with torch.device("meta"):
        module = spec.build(shape, **options)
    result = count(module, meta_inputs(spec.input_shapes(shape, options)))
    return spec, options, module, result


def test_tiny_params_by_hand() -> None:
    # C = 4, ratio 2 -> 2 hidden units; K_c-vid = 3 depthwise; st_hidden 1; refine with N = 4 stages.
    theta_c_frm = (4 * 2 + 2) + (2 * 4 + 4)  # Linear(4, 2) + Linear(2, 4) = 10 + 12 = 22
    theta_c_vid = 2 * (4 * 1 * 3 + 4)  # two depthwise Conv1d(4, 4, 3, groups=4) = 2 x 16 = 32
    theta_s_frm = 2 * 7 * 7 + 1  # Conv 2 -> 1, 7x7 = 99
    theta_s_vid = (1 * 27 + 1) + (1 * 27 + 1)  # Conv3d 1 -> 1 -> 1, 3x3x3 = 56
    theta_ref = 4 * 4 + 4  # 1x1 conv N=4 -> C=4 = 20
    assert theta_c_frm + theta_c_vid + theta_s_frm + theta_s_vid + theta_ref == 229
    spec = get_block("w3")
    opts = {"ratio": 2}
    assert spec.params(TINY, **spec.resolve_options(opts)) == 229
    assert spec.params(TINY, **spec.resolve_options(opts | {"refine": False})) == 209
    assert param_count(W3(4, ratio=2)) == 229
    terms = spec.terms(TINY, **spec.resolve_options(opts))
    assert (terms["params_theta_c_frm"], terms["params_theta_c_vid"]) == (22, 32)
    assert (terms["params_theta_s_frm"], terms["params_theta_s_vid"], terms["params_theta_ref"]) == (99, 56, 20)


def test_tiny_params_full_mix_and_hidden() -> None:
    # full temporal convs: 2 x (4 * 4 * 5 + 4) = 168; st_hidden 3: (3 * 27 + 3) + (3 * 27 + 1) = 166
    spec = get_block("w3")
    opts = spec.resolve_options({"ratio": 4, "ct_kernel": 5, "ct_mix": "full", "st_hidden": 3, "refine": False})
    theta_c_frm = (4 * 1 + 1) + (1 * 4 + 4)  # 13
    assert spec.params(TINY, **opts) == theta_c_frm + 168 + 99 + 166


def test_output_shape_equals_input() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 8, 4, 6, 7)
    earlier = [torch.rand(2, 1, 4, 6 * 2**k, 7 * 2**k) for k in (3, 2, 1)]
    assert W3(8, ratio=2)(x, *earlier).shape == x.shape
    assert W3(8, ratio=2, refine=False)(x).shape == x.shape
    assert W3(8, ratio=2, stages=1)(x).shape == x.shape
    assert ChannelTemporalAttention(8, ratio=4, ct_dilation=2)(x).shape == x.shape
    assert SpatioTemporalAttention(2)(x).shape == x.shape


def test_masks_have_factorised_shapes_and_lie_in_unit_interval() -> None:
    torch.manual_seed(0)
    x = torch.randn(1, 8, 4, 6, 6)
    ct, st = ChannelTemporalAttention(8, ratio=2), SpatioTemporalAttention()
    mc, ms = ct.mask(x), st.mask(x)
    assert mc.shape == (1, 8, 4, 1, 1) and ms.shape == (1, 1, 4, 6, 6)
    assert bool(((mc > 0) & (mc < 1)).all()) and bool(((ms > 0) & (ms < 1)).all())


def test_sub_modules_compose_as_the_block_does() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 8, 5, 4, 4)
    block = W3(8, ratio=2, refine=False).eval()
    with torch.no_grad():
        assert torch.allclose(block(x), block.spatial(block.channel(x)))
    shape = VideoShape(2, 8, 5, 4, 4)
    w3, ct, st = get_block("w3"), get_block("w3-ct"), get_block("w3-st")
    opts = {"ratio": 2, "ct_kernel": 5, "ct_mix": "full", "ct_dilation": 2, "st_hidden": 2}
    full = w3.resolve_options(opts | {"refine": False})
    ct_opts = {k: v for k, v in opts.items() if k != "st_hidden"}
    assert w3.cost(shape, **full) == ct.cost(shape, **ct_opts) + st.cost(shape, st_hidden=2)
    assert w3.params(shape, **full) == ct.params(shape, **ct_opts) + st.params(shape, st_hidden=2)


def test_refine_adds_the_head_to_the_attended_features() -> None:
    torch.manual_seed(0)
    x = torch.randn(1, 4, 2, 3, 3)
    earlier = [torch.rand(1, 1, 2, 6, 6)]
    block = W3(4, ratio=2, stages=2).eval()
    with torch.no_grad():
        f_c = block.channel(x)
        m_s = block.spatial.mask(f_c)
        pooled = torch.nn.functional.avg_pool3d(earlier[0], (1, 2, 2))  # AAP 6x6 -> 3x3 is a 2x2 mean
        head = torch.relu(block.refine.conv(torch.cat([pooled, m_s], dim=1)))
        assert torch.allclose(block(x, *earlier), f_c * m_s + head)


@pytest.mark.parametrize(
    "given",
    [
        {"ratio": 3, "ct_mix": "full", "ct_dilation": 3, "st_hidden": 2, "stages": 3},
        {"ratio": 1, "ct_kernel": 7, "refine": False},
        {"ratio": 2, "ct_kernel": 1, "stages": 1},
    ],
)
def test_counted_equals_closed_form_odd_shapes(given) -> None:
    shape = VideoShape(2, 6, 1, 1, 3)
    spec, options, module, result = _counted("w3", shape, **given)
    assert not result.unhandled
    assert result.cost == spec.cost(shape, **options)
    assert param_count(module) == spec.params(shape, **options)


def test_refine_inputs_are_the_earlier_stage_masks() -> None:
    spec = get_block("w3")
    p = spec.preset("tsm-r50-res5-8f")
    options = spec.resolve_options(base=p.options)
    assert options["refine"] and options["stages"] == 4
    assert spec.input_shapes(p.shape, options) == [
        (1, 2048, 8, 7, 7), (1, 1, 8, 56, 56), (1, 1, 8, 28, 28), (1, 1, 8, 14, 14)
    ]
    res4 = spec.preset("tsm-r50-res4-16f")
    assert spec.resolve_options(base=res4.options)["refine"] is False
    assert res4.shape == VideoShape(1, 1024, 16, 14, 14)


def test_wrong_number_of_earlier_masks_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="takes 3 earlier masks"):
        W3(4, ratio=2)(torch.randn(1, 4, 2, 3, 3))


@pytest.mark.parametrize(
    "name,shape,given,message",
    [
        ("w3", VideoShape(1, 8, 2, 3, 3), {}, "ratio must be in 1..8"),
        ("w3-ct", VideoShape(1, 3, 2, 3, 3), {"ratio": 4}, "ratio must be in 1..3"),
        ("w3", VideoShape(1, 32, 2, 3, 3), {"stages": 6}, r"stages must be <= 5"),
    ],
)
def test_check_rejects_impossible_options(name, shape, given, message) -> None:
    spec = get_block(name)
    with pytest.raises(UsageError, match=message) as err:
        spec.validate(shape, spec.resolve_options(given))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "given,message",
    [
        ({"ct_kernel": 4}, "ct_kernel.*1, 3, 5, 7"),
        ({"ct_mix": "grouped"}, "ct_mix.*depthwise, full"),
        ({"ratio": 0}, "ratio.*1"),
        ({"ct_dilation": "two"}, "ct_dilation.*int"),
        ({"refine": "maybe"}, "refine.*bool"),
        ({"kernel": 3}, "kernel"),
    ],
)
def test_option_parsing_errors(given, message) -> None:
    with pytest.raises(UsageError, match=message) as err:
        get_block("w3").resolve_options(given)
    assert "\n" not in str(err.value)


def test_stages_out_of_range_is_refused_even_without_refine() -> None:
    spec = get_block("w3")  # an option that does nothing at this setting is still no licence for nonsense
    with pytest.raises(UsageError, match=r"stages must be <= 5"):
        spec.resolve_options({"refine": False, "stages": 99})
