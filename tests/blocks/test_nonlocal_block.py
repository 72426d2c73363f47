"""Non-local block: where the keys are sub-sampled (none, after phi and g, before them on x), the 1/sqrt(C_i)
affinity scale, and their closed forms against the exact counter."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from attnbench.blocks.nonlocal_block import NonLocalBlock
from attnbench.blocks.registry import get_block
from attnbench.errors import UsageError
from attnbench.flops import cost as C
from attnbench.flops.count import count, meta_inputs, param_count
from attnbench.shapes import VideoShape

RES4 = VideoShape(1, 1024, 8, 14, 14)  # the tsm-r50-res4 preset: TSM-R50 res4, 8 frames


def _counted(shape: VideoShape, **given):
    spec = get_block("nl")
    options = spec.resolve_options(given)
    spec.validate(shape, options)
    with torch.device("meta"):
        module = spec.build(shape, **options)
    result = count(module, meta_inputs(spec.input_shapes(shape, options)))
    assert not result.unhandled
    return result.cost, spec.cost(shape, **options), param_count(module), spec.params(shape, **options)


@pytest.mark.parametrize("given,canonical", [
    ({}, "none"), ({"subsample": False}, "none"), ({"subsample": True}, "after"), ({"subsample": "false"}, "none"),
    ({"subsample": "true"}, "after"), ({"subsample": "1"}, "after"), ({"subsample": "before"}, "before"),
    ({"subsample": "AFTER"}, "after"),
])
def test_subsample_keeps_its_boolean_spellings(given: dict, canonical: str) -> None:
    assert get_block("nl").resolve_options(given)["subsample"] == canonical
    assert NonLocalBlock(4, subsample=given.get("subsample", "none")).subsample == canonical


def test_subsample_rejects_other_values() -> None:
    with pytest.raises(UsageError, match="valid choices: none, after, before"):
        get_block("nl").resolve_options({"subsample": "maybe"})
    with pytest.raises(UsageError, match="needs H >= 2"):
        spec = get_block("nl")
        spec.validate(VideoShape(1, 8, 2, 1, 4), spec.resolve_options({"subsample": "before"}))


@pytest.mark.parametrize("subsample", ["none", "after", "before"])
@pytest.mark.parametrize("use_scale", [False, True])
@pytest.mark.parametrize("impl", ["naive", "sdpa"])
def test_counted_equals_closed_form_at_tsm_res4(subsample: str, use_scale: bool, impl: str) -> None:
    counted, closed, params, closed_params = _counted(RES4, subsample=subsample, use_scale=use_scale, impl=impl)
    assert counted == closed
    assert params == closed_params == 3 * (1024 * 512 + 512) + (512 * 1024 + 1024) + 2 * 1024  # no option adds any


def test_pooling_x_before_phi_and_g_costs_5_38_against_7_85_gflops() -> None:
    """At C = 1024, 8 x 14 x 14 (C_i = 512, n = 1568 positions, m = 8 x 7 x 7 = 392 keys): pooling x first
    runs phi and g on m positions instead of n; the pools cost the same (C = 2 C_i channels at m outputs,
    4 compares each), so the difference is the two projections on n - m = 1176 positions."""
    before, _, _, _ = _counted(RES4, subsample="before")
    after, _, _, _ = _counted(RES4, subsample="after")
    c, ci, n, m = 1024, 512, 1568, 392
    assert after.flops - before.flops == 2 * (2 * c * ci + ci) * (n - m) == 2_467_454_976
    assert before.by_category()["pooling"] == after.by_category()["pooling"] == c * m * 4
    assert round(before.flops / 1e9, 2) == 5.38
    assert round(after.flops / 1e9, 2) == 7.85


def test_scale_costs_one_multiply_per_map_entry_or_per_element_of_q() -> None:
    shape = VideoShape(2, 16, 3, 6, 6)  # C_i = 8, n = 108 positions, m = 27 keys
    for subsample, m in (("none", 108), ("after", 27), ("before", 27)):
        plain, _, _, _ = _counted(shape, subsample=subsample)
        naive, _, _, _ = _counted(shape, subsample=subsample, use_scale=True)
        sdpa, _, _, _ = _counted(shape, subsample=subsample, use_scale=True, impl="sdpa")
        assert naive == plain + C.eltwise(2 * 108 * m)  # B x n x m map entries
        assert sdpa == plain + C.eltwise(2 * 108 * 8)  # B x n x C_i elements of q


def _seeded(module: NonLocalBlock) -> NonLocalBlock:
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return module.eval()


def _reference(m: NonLocalBlock, x: torch.Tensor, subsample: str, scale: float) -> torch.Tensor:
    """The block written out: 1x1x1 convolutions as einsums, max-pool where ``subsample`` says."""
    def proj(conv: torch.nn.Conv3d, t: torch.Tensor) -> torch.Tensor:
        return torch.einsum("oc,bcthw->bothw", conv.weight[:, :, 0, 0, 0], t) + conv.bias.view(1, -1, 1, 1, 1)

    pool = lambda t: F.max_pool3d(t, (1, 2, 2))
    src = pool(x) if subsample == "before" else x
    k, v = proj(m.phi, src), proj(m.g, src)
    if subsample == "after":
        k, v = pool(k), pool(v)
    q = proj(m.theta, x).flatten(2)
    w = torch.softmax(torch.einsum("bcl,bcm->blm", q, k.flatten(2)) * scale, dim=-1)
    y = torch.einsum("blm,bcm->bcl", w, v.flatten(2)).reshape(q.shape[0], -1, *x.shape[2:])
    return x + m.bn(proj(m.out, y))


@pytest.mark.parametrize("subsample", ["none", "after", "before"])
@pytest.mark.parametrize("use_scale", [False, True])
def test_forward_matches_the_written_out_block(subsample: str, use_scale: bool) -> None:
    x = torch.randn(2, 8, 3, 4, 6, generator=torch.Generator().manual_seed(1))
    m = _seeded(NonLocalBlock(8, subsample=subsample, use_scale=use_scale))
    scale = 4**-0.5 if use_scale else 1.0  # C_i = 4
    with torch.no_grad():
        want = _reference(m, x, subsample, scale)
        assert torch.allclose(m(x), want, atol=1e-5)
        m.impl = "sdpa"
        assert torch.allclose(m(x), want, atol=1e-5)


def test_pooling_before_and_after_are_different_blocks() -> None:
    x = torch.randn(1, 8, 2, 4, 4, generator=torch.Generator().manual_seed(2))
    before, after = _seeded(NonLocalBlock(8, subsample="before")), _seeded(NonLocalBlock(8, subsample="after"))
    with torch.no_grad():
        assert not torch.allclose(before(x), after(x))
