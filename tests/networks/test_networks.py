"""Every registered network x attention: closed-form params == counted params, exact FLOP count with no
unhandled ops (on meta), sites where the papers put them, and real forward passes on tiny inputs."""

from __future__ import annotations

import pytest
import torch

from attnbench.blocks.registry import all_blocks, get_block
from attnbench.errors import UsageError
from attnbench.flops.cost import Cost
from attnbench.flops.count import count, meta_inputs, param_count
from attnbench.networks.registry import all_networks, get_network

REGISTERED = {b.name for b in all_blocks()}
CASES = [(spec.name, attn) for spec in all_networks() for attn in spec.attn_choices]
PRESET_CASES = [(spec.name, p.name) for spec in all_networks() for p in spec.presets]


def _need(attn: str) -> None:
    if attn != "none" and attn not in REGISTERED:
        pytest.skip(f"block '{attn}' is not registered yet")


def _meta_build(spec, attn, **kw):
    with torch.device("meta"):
        return spec.build(attn, **kw)


_PLAIN: dict[tuple, Cost] = {}


def _counted(spec, attn="none", **kw) -> Cost:
    key = (spec.name, attn, tuple(sorted(kw.items())))
    if key not in _PLAIN:
        result = count(_meta_build(spec, attn, **kw), meta_inputs(spec.input_shapes(attn=attn, **kw)))
        assert not result.unhandled, f"ops the counter could not count: {dict(result.unhandled)}"
        _PLAIN[key] = result.cost
    return _PLAIN[key]


@pytest.mark.parametrize("name,attn", CASES)
def test_params_closed_form_and_exact_count(name: str, attn: str) -> None:
    _need(attn)
    spec = get_network(name)
    assert param_count(_meta_build(spec, attn)) == spec.params(attn)
    cost = _counted(spec, attn)  # no unhandled ops; the plain network's count is shared with the preset test
    assert cost.flops > 0
    if attn != "none":
        # the sites' shapes are right: the network's count is the plain count plus the block's closed form
        # at every site, cell by cell
        block = get_block(attn)
        extra = Cost.total(block.cost(s.shape, **s.options) for s in spec.attention_sites(attn))
        assert cost == _counted(spec) + extra


@pytest.mark.parametrize("name,preset", PRESET_CASES)
def test_every_preset_counts(name: str, preset: str) -> None:
    spec = get_network(name)
    p = spec.preset(preset)
    assert p.source
    kw = {} if p == spec.default_preset else {"preset": preset}  # the default preset's count is cached
    assert param_count(_meta_build(spec, "none", **kw)) == spec.params("none", **kw)
    assert _counted(spec, **kw).flops > 0


def test_plain_parameter_counts_match_the_papers() -> None:
    # EAM Table 4: ResNet-50 46.30M, ResNeXt-101 47.62M (HMDB-51, 51 classes); SE after each stage +0.70M.
    assert get_network("resnet3d-50").params() == 46_303_475
    assert get_network("resnext3d-101").params() == 47_625_715
    if "se" in REGISTERED:
        assert round(get_network("resnet3d-50").params("se") / 1e6, 2) in (46.99, 47.00)
        assert round(get_network("resnext3d-101").params("se") / 1e6, 2) == 48.32
    # torchvision-topology 2D ResNet-50: 23,508,032 without the classifier.
    assert get_network("tsm-r50").params(num_classes=1) == 23_508_032 + 2048 + 1


def test_sites_follow_the_papers() -> None:
    r50, rx101, tsm, eco = (get_network(n) for n in ("resnet3d-50", "resnext3d-101", "tsm-r50", "eco-lite"))
    assert r50.attention_sites("none") == []
    if "se" in REGISTERED:
        sites = r50.attention_sites("se")
        assert [s.shape.C for s in sites] == [256, 512, 1024, 2048]
        assert [(s.shape.T, s.shape.H) for s in sites] == [(8, 28), (4, 14), (2, 7), (1, 4)]
    if "sta" in REGISTERED:
        sites = rx101.attention_sites("sta", preset="64f")
        assert len(sites) == 3 and all(s.position == "bottom" and s.stage == 3 for s in sites)
        assert {(s.shape.C, s.shape.T, s.shape.H, s.shape.W) for s in sites} == {(2048, 4, 4, 4)}
    nl = r50.attention_sites("nl")
    assert [(s.stage, s.block) for s in nl] == [(1, 1), (1, 3), (2, 1), (2, 3), (2, 5)]
    assert all(s.options["subsample"] == "after" for s in nl)
    assert [(s.shape.C, s.shape.T, s.shape.H) for s in tsm.attention_sites("nl")] == [(512, 16, 28)] * 2 + [(1024, 16, 14)] * 3
    assert eco.attention_sites("cs")[0].shape.as_list() == [1, 96, 16, 28, 28]
    assert eco.attention_sites("nl", preset="banet-lite-16f")[0].shape.as_list() == [1, 96, 16, 28, 28]
    assert eco.attention_sites("nl", subsample=True)[0].options["subsample"] == "after"  # True means "after"
    if "w3" in REGISTERED:
        sites = tsm.attention_sites("w3")
        assert len(sites) == 16
        assert [s.options["refine"] for s in sites] == [False] * 15 + [True]
        assert sites[-1].shape.as_list() == [1, 2048, 16, 7, 7]


def test_frame_attention_params() -> None:
    eco = get_network("eco-lite")
    fa = get_block("fa")
    shape = eco.resolve(preset="banet-lite-16f").input_shape
    # "none": the plain network (the preset's default attention is BANet-Lite's CS block, tests/networks/test_eco.py)
    assert eco.params("none", preset="banet-lite-16f") == eco.params() + fa.params(shape, **fa.resolve_options())
    assert eco.input_shapes(preset="banet-lite-16f") == [(1, 3, 32, 224, 224)]
    # 32 frames in, 16 kept: the plain 16-frame network plus the frame attention's closed form
    assert _counted(eco, preset="banet-lite-16f") == _counted(eco) + fa.cost(shape, **fa.resolve_options())


def test_errors() -> None:
    with pytest.raises(UsageError, match="unknown network 'nope'; valid choices: .*eco-lite"):
        get_network("nope")
    with pytest.raises(UsageError, match="unknown attention for network eco-lite 'se'"):
        get_network("eco-lite").build("se")
    with pytest.raises(UsageError, match="no option 'bogus'"):
        get_network("tsm-r50").params("none", bogus=1)
    with pytest.raises(UsageError, match="has no option 'bogus'"):
        get_network("tsm-r50").params("nl", bogus=1)
    with pytest.raises(UsageError, match="frames must be a positive integer"):
        get_network("resnet3d-50").params(frames=0)
    with pytest.raises(UsageError):
        get_network("eco-lite").params(preset="banet-lite-16f", size=32)  # fa pools to 56 x 56
    with pytest.raises(UsageError, match="unknown preset"):
        get_network("tsm-r50").preset("99f")


# Real forward passes on tiny inputs (CPU): [B, num_classes] out, finite.
REAL = [
    ("eco-lite", "none", dict(frames=4, size=32)),
    ("eco-lite", "nl", dict(frames=4, size=32)),
    ("eco-lite", "cs", dict(frames=4, size=32)),
    ("eco-lite", "cs", dict(frames=6, size=64, frame_attention=True)),
    ("resnet3d-50", "none", dict(frames=4, size=32)),
    ("resnext3d-101", "none", dict(frames=4, size=32)),
    ("resnet3d-50", "se", dict(frames=4, size=32)),
    ("resnet3d-50", "cbam", dict(frames=4, size=32)),
    ("resnet3d-50", "eam", dict(frames=4, size=32)),
    ("resnet3d-50", "sta", dict(frames=4, size=32)),
    ("resnet3d-50", "nl", dict(frames=4, size=32)),
    ("tsm-r50", "none", dict(frames=4, size=32)),
    ("tsm-r50", "cbam", dict(frames=4, size=32)),
    ("tsm-r50", "nl", dict(frames=4, size=32)),
    ("tsm-r50", "w3", dict(frames=4, size=32)),
]


@pytest.mark.parametrize("name,attn,kw", REAL)
def test_real_forward_tiny(name: str, attn: str, kw: dict) -> None:
    _need(attn)
    torch.manual_seed(0)
    spec = get_network(name)
    model = spec.build(attn, batch=2, num_classes=10, **kw).eval()
    assert param_count(model) == spec.params(attn, batch=2, num_classes=10, **kw)
    (video,) = meta_inputs(spec.input_shapes(attn=attn, batch=2, **kw), device="cpu")
    with torch.no_grad():
        out = model(video)
    assert out.shape == (2, 10)
    assert torch.isfinite(out).all()


def test_tsm_shift_moves_one_eighth_each_way() -> None:
    from attnbench.networks.tsm import temporal_shift

    x = torch.arange(2 * 3 * 16, dtype=torch.float32).view(2 * 3, 16, 1, 1)  # B=2, T=3, C=16
    y = temporal_shift(x, 3).view(2, 3, 16)
    v = x.view(2, 3, 16)
    assert torch.equal(y[:, :-1, :2], v[:, 1:, :2]) and (y[:, -1, :2] == 0).all()
    assert torch.equal(y[:, 1:, 2:4], v[:, :-1, 2:4]) and (y[:, 0, 2:4] == 0).all()
    assert torch.equal(y[:, :, 4:], v[:, :, 4:])


def test_tsm_rejects_other_frame_counts() -> None:
    model = get_network("tsm-r50").build("none", frames=4, size=32, num_classes=3).eval()
    with pytest.raises(UsageError, match="built for 4 frames"):
        model(torch.zeros(1, 3, 2, 32, 32))


def test_w3_refinement_options() -> None:
    _need("w3")
    spec = get_network("tsm-r50")
    w3 = get_block("w3")
    last = spec.attention_sites("w3")[-1]
    head = w3.params(last.shape, **last.options) - w3.params(last.shape, **{**last.options, "refine": False})
    assert spec.params("w3") - spec.params("w3", refine=False) == head
    model = spec.build("w3", frames=3, size=32, num_classes=4, stages=2).eval()
    assert param_count(model) == spec.params("w3", frames=3, size=32, num_classes=4, stages=2)
    with torch.no_grad():
        assert model(torch.randn(1, 3, 3, 32, 32)).shape == (1, 4)
    with pytest.raises(UsageError, match="stages=5"):
        spec.params("w3", stages=5)
