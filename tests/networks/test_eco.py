"""The ECO family: ECO and ECO-Lite as BANet's Table I reads them, and both as released. Exact parameter
counts (closed form == built module == the figure derived from the released files), shapes, the BANet-Lite
presets' default CS block, and Table VI's network."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from attnbench.errors import UsageError
from attnbench.flops.count import meta_inputs, param_count
from attnbench.networks import bn_inception as bni
from attnbench.networks.registry import (
    NetworkPreset,
    NetworkSpec,
    get_network,
    register_network,
)

ECO_LITE_16F_101 = 33_541_605  # BANet Table I's ECO-Lite, no biases (attnbench.networks.eco)
# The released ECO-Lite (ECO-pytorch tf_model_zoo/ECO/ECO.yaml, every convolution with a bias), 101 classes:
# 2D part 681,568 (= 680,064 weights and batch norms + 1,504 biases) + res* layers 36,617,088 + fc 512 x 101 + 101.
ECO_LITE_RELEASED_101 = 681_568 + 36_617_088 + 512 * 101 + 101
# The full ECO: eco-lite without its classifier, + the 2D-Net branch (inception-3c's other three layers, 4a..5b,
# 9,580,160 without biases) + fc 1536 x 101 + 101.
ECO_101 = ECO_LITE_16F_101 - (512 * 101 + 101) + 9_580_160 + (1536 * 101 + 101)
# conv1 .. inception-5b of the released ECOfull.yaml (with biases), from the same walk over that file
RELEASED_FULL_2D = 10_270_240
ECO_RELEASED_101 = RELEASED_FULL_2D + 36_617_088 + 1536 * 101 + 101  # ECOfull.yaml's walk: 47,042,565


def _meta(spec, attn="none", **kw):
    with torch.device("meta"):
        return spec.build(attn, **kw)


def test_the_released_and_paper_figures() -> None:
    assert ECO_LITE_RELEASED_101 == 37_350_469  # the figure, re-derived above from the released yaml
    for name, expected in (("eco-lite", ECO_LITE_16F_101), ("eco-lite-released", ECO_LITE_RELEASED_101), ("eco", ECO_101),
                           ("eco-released", ECO_RELEASED_101)):
        spec = get_network(name)
        assert spec.params("none") == expected
        assert param_count(_meta(spec)) == expected
    assert ECO_101 == 43_225_189 and ECO_RELEASED_101 == 47_042_565


@pytest.mark.parametrize("name", ["eco", "eco-lite-released", "eco-released"])
@pytest.mark.parametrize("frames,num_classes", [(16, 101), (8, 400), (4, 51), (32, 174), (5, 1)])
def test_closed_form_equals_built_module(name: str, frames: int, num_classes: int) -> None:
    spec = get_network(name)
    assert param_count(_meta(spec, frames=frames, num_classes=num_classes)) == spec.params("none", frames=frames, num_classes=num_classes)
    # only the classifier depends on the classes; nothing on the frames
    fc_in = 512 if name == "eco-lite-released" else 1536
    assert spec.params("none", frames=frames, num_classes=num_classes) == spec.params("none") + fc_in * (num_classes - 101) + (num_classes - 101)


def test_released_2d_layers_match_the_released_full_eco() -> None:
    # The 2D-Net branch's widths checked against ECOfull.yaml: with biases, conv1 .. inception-5b is its 2D part.
    assert bni.bn_inception_to_3c_params(bias=True) + bni.from3c_params(bias=True) == RELEASED_FULL_2D
    with torch.device("meta"):
        two_d = torch.nn.ModuleList([bni.BNInceptionTo3c(bias=True), bni.From3c(bias=True)])
    assert param_count(two_d) == RELEASED_FULL_2D
    assert bni.bn_inception_to_3c_params(bias=True) - bni.bn_inception_to_3c_params() == 1_504  # one bias per output channel


def test_released_3d_net_structure() -> None:
    model = _meta(get_network("eco-lite-released"))
    convs = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d))]
    assert convs and all(c.bias is not None for c in convs)
    net = model.features3d
    assert (net.conv3a.in_channels, net.conv3a.out_channels, net.conv3a.kernel_size) == (96, 128, (3, 3, 3))  # res3a_2, no res3a_1
    for stage, width in zip(net.stages, (256, 512)):
        assert (stage.down.kernel_size, stage.down.stride, stage.down.out_channels) == ((3, 3, 3), (2, 2, 2), width)
    # 3D convolutions: res3a_2, res3b_1/2, then per stage a_1, a_2, down, b_1, b_2
    assert sum(isinstance(c, torch.nn.Conv3d) for c in convs) == 3 + 2 * 5


@pytest.mark.parametrize("name,attn,kw", [
    ("eco", "cs", {"preset": "banet-16f"}),  # frame attention, CS block, 2D-Net branch
    ("eco-lite-released", "nl", {}),
])
def test_forward_shapes_on_meta(name: str, attn: str, kw: dict) -> None:
    spec = get_network(name)
    model = _meta(spec, attn, batch=2, num_classes=7, **kw)
    (video,) = meta_inputs(spec.input_shapes(attn=attn, batch=2, **kw))
    assert model(video).shape == (2, 7)


def test_eco_2d_branch_shapes_on_meta() -> None:
    model = _meta(get_network("eco"))
    frames = torch.empty(16, 3, 224, 224, device="meta")
    x3b = model.features2d.stem(frames)
    f = model.features2d.double3c(x3b)
    assert tuple(x3b.shape) == (16, 320, 28, 28) and tuple(f.shape) == (16, 96, 28, 28)
    assert tuple(model.branch2d(x3b, f).shape) == (16, 1024)
    assert model.fc.in_features == 1024 + 512


@pytest.mark.parametrize("name,attn", [("eco", "cs"), ("eco-lite-released", "nl")])  # plain paths: counted on meta
def test_real_forward_tiny(name: str, attn: str) -> None:
    torch.manual_seed(0)
    spec = get_network(name)
    kw = {"frames": 4, "size": 32, "batch": 2, "num_classes": 10}
    model = spec.build(attn, **kw).eval()
    assert param_count(model) == spec.params(attn, **kw)
    with torch.no_grad():
        out = model(torch.randn(2, 3, 4, 32, 32))
    assert out.shape == (2, 10) and torch.isfinite(out).all()


def test_eco_refuses_sizes_its_reduction_blocks_cannot_take() -> None:
    eco = get_network("eco")
    assert bni.from3c_fits(224) and bni.from3c_fits(32) and not bni.from3c_fits(57)
    with pytest.raises(UsageError, match="even side at both .* nearest size that fits is 63"):
        eco.params(size=57)  # 57 -> 7 x 7 at inception-3c
    assert get_network("eco-lite").params(size=57) == ECO_LITE_16F_101  # ECO-Lite has no reduction block
    with pytest.raises(UsageError, match="eco-released: frames of 57"):
        get_network("eco-released").params(size=57)


def test_attention_sits_on_the_stacked_features_in_every_eco() -> None:
    for name in ("eco", "eco-lite", "eco-lite-released"):
        spec = get_network(name)
        for attn in ("nl", "cs"):
            (site,) = spec.attention_sites(attn)
            assert site.shape.as_list() == [1, 96, 16, 28, 28] and site.position == "after2d"
    (site,) = get_network("eco").attention_sites("cs", preset="banet-16f")
    assert site.shape.as_list() == [1, 96, 16, 28, 28]  # 16 of 32 frames kept


def test_banet_lite_presets_carry_cs_unless_told_otherwise() -> None:
    from attnbench.cases import resolve_network

    lite = get_network("eco-lite")
    for preset in ("banet-lite-4f", "banet-lite-8f", "banet-lite-16f", "banet-lite-20f"):
        assert lite.default_attn(preset) == "cs"
        assert lite.resolve(preset=preset).attn == "cs" and lite.resolve("none", preset=preset).attn == "none"
        assert resolve_network("eco-lite", preset=preset).attn == "cs"
        assert resolve_network("eco-lite", "none", preset).attn == "none"
    from attnbench.blocks.registry import get_block

    (site,) = lite.attention_sites(preset="banet-lite-16f")
    assert lite.params(preset="banet-lite-16f") - lite.params("none", preset="banet-lite-16f") == get_block("cs").params(site.shape, **site.options)
    model = _meta(lite, None, preset="banet-lite-8f")
    assert not isinstance(model.attention, torch.nn.Identity) and model.frame_attention is not None
    assert isinstance(_meta(lite, "none", preset="banet-lite-8f").attention, torch.nn.Identity)
    # the other presets stay plain
    assert [p.attn for p in lite.presets if not p.name.startswith("banet")] == [None, None, None]
    assert get_network("eco").default_attn() == "none" and get_network("eco").default_attn("banet-16f") == "cs"
    assert get_network("eco-lite-released").resolve().attn == "none"


def test_flops_cli_takes_the_presets_attention() -> None:
    from attnbench.cli import app

    def attn_of(*extra: str) -> list[str]:
        result = CliRunner().invoke(app, ["flops", "--network", "eco-lite", "--preset", "banet-lite-4f", "--counters", "exact", "--json", *extra])
        assert result.exit_code == 0, result.output
        return [json.loads(line)["attn"] for line in result.stdout.splitlines()]

    assert attn_of() == ["cs"]
    assert attn_of("--attn", "none") == ["none"]


def test_a_preset_must_name_an_attention_the_network_has() -> None:
    eco = get_network("eco")
    bad = NetworkSpec(name="eco-bad-preset", title="", paper="", attn_choices=("none", "nl"),
                      presets=(NetworkPreset("x", 4, 224, "test", attn="cs"),),
                      construct=eco.construct, base_params=eco.base_params, sites=eco.sites)
    with pytest.raises(ValueError, match="attention 'cs' is not one of"):
        register_network(bad)


def test_table_vi_times_the_full_eco() -> None:
    from attnbench import bench

    blocks, nets = bench.table_vi_targets()
    assert [t.name for t in nets] == ["eco"] * 3
    assert [t.variant.split("@")[0] for t in nets] == ["none", "nl", "cs"]
    assert [t.name for t in blocks] == ["nl", "cs"]
