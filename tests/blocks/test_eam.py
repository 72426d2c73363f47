"""EAM (EAM-S, EAM-T and their combinations) and its Table 4 baselines SE, ECA, CBAM in 3D form."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from attnbench.blocks.eam import (
    EAM,
    VARIANTS,
    CBAM3d,
    ECA3d,
    SqueezeExcitation3d,
    eca_adaptive_k,
    resnet3d_stage_shapes,
)
from attnbench.blocks.registry import get_block
from attnbench.errors import UsageError
from attnbench.flops.count import count, meta_inputs, param_count
from attnbench.shapes import VideoShape

BLOCKS = ("eam", "eam-s", "eam-t", "se", "eca", "cbam")


def _seeded(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
    return module.eval()


def _video(shape: tuple[int, ...], seed: int = 1) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# --- parameters, by hand -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name,shape,options,expected",
    [
        ("eam-s", (1, 8, 4, 5, 5), {"k": 3}, 3),  # one 1-D kernel over channels: k_c = 3 weights, no bias
        ("eam-t", (1, 8, 4, 5, 5), {"k": 3}, 3),  # one 1-D kernel over frames: k_t = 3
        ("eam", (1, 8, 4, 5, 5), {}, 6),  # st: k_c + k_t = 3 + 3
        ("eam", (1, 8, 4, 5, 5), {"variant": "s//t", "k": 5}, 10),  # 5 + 5
        ("eam", (1, 8, 4, 5, 5), {"variant": "t", "k": 9}, 9),
        ("se", (1, 32, 2, 3, 3), {}, 128),  # hidden 32 // 16 = 2: W1 2x32 = 64, W2 32x2 = 64
        ("se", (1, 32, 2, 3, 3), {"bias": True}, 162),  # 128 + 2 + 32 biases
        ("eca", (1, 256, 2, 3, 3), {}, 5),  # int((log2 256 + 1) / 2) = int(4.5) = 4 -> even -> 5
        ("eca", (1, 64, 2, 3, 3), {"k": 3}, 3),
        ("cbam", (1, 32, 2, 3, 3), {}, 226),  # MLP 64 + 64, conv 2 in x 1 x 7 x 7 = 98: 128 + 98
        ("cbam", (1, 32, 2, 3, 3), {"kt": 7}, 814),  # 128 + 2 x 7 x 7 x 7 = 128 + 686
        ("cbam", (1, 32, 2, 3, 3), {"bias": True, "bn": True}, 262),  # 226 + 2 + 32 biases + BN gamma, beta
    ],
)
def test_params_by_hand(name: str, shape: tuple[int, ...], options: dict, expected: int) -> None:
    spec = get_block(name)
    vs = VideoShape(*shape)
    opts = spec.resolve_options(options)
    spec.validate(vs, opts)
    assert spec.params(vs, **opts) == expected
    assert param_count(spec.build(vs, **opts)) == expected


@pytest.mark.parametrize("k", [1, 3, 5, 7, 9])
def test_eam_params_are_o_of_k_whatever_the_shape(k: int) -> None:
    for shape in ((1, 1, 1, 1, 1), (2, 7, 3, 4, 5), (1, 2048, 1, 4, 4), (1, 256, 32, 28, 28)):
        vs = VideoShape(*shape)
        assert get_block("eam-s").params(vs, k=k) == k
        assert get_block("eam-t").params(vs, k=k) == k
        for variant in ("st", "ts", "s//t"):
            assert get_block("eam").params(vs, variant=variant, k=k) == 2 * k


def test_eam_s_cost_by_hand() -> None:
    """B=1, C=4, T=2, H=W=1, k=3; N = 8 elements.

    pooling: mean 8 + max 8 = 16 ops; conv: 4 outputs x 3 taps = 12 MACs;
    elementwise: a+m 4, sigmoid 4, V x w 8, residual 8 = 24 ops. FLOPs = 2 x 12 + 16 + 24 = 64."""
    spec = get_block("eam-s")
    vs = VideoShape(1, 4, 2, 1, 1)
    cost = spec.cost(vs, k=3)
    assert cost.get("pooling", "op") == 16
    assert cost.get("convolution", "mac") == 12
    assert cost.get("elementwise", "op") == 24
    assert cost.flops == 64
    assert count(spec.build(vs, k=3), meta_inputs([vs.as_list()])).cost == cost


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_counted_equals_closed_form(variant: str) -> None:
    spec = get_block("eam")
    vs = VideoShape(2, 6, 5, 3, 4)
    with torch.device("meta"):
        module = spec.build(vs, variant=variant, k=3)
    result = count(module, meta_inputs([vs.as_list()]))
    assert not result.unhandled
    assert result.cost == spec.cost(vs, variant=variant, k=3)


# --- behaviour -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", BLOCKS)
def test_output_shape_equals_input_shape(name: str) -> None:
    spec = get_block(name)
    for shape in ((2, 16, 3, 5, 4), (1, 32, 1, 2, 2)):
        vs = VideoShape(*shape)
        opts = spec.resolve_options()
        module = _seeded(spec.build(vs, **opts))
        x = _video(shape)
        with torch.no_grad():
            assert module(x).shape == x.shape


def _eq7_gate(d: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """sigma(sum_j beta^j d^j) over each position's k neighbours, zero outside (Eq. 7 and 11), by loops."""
    b, length = d.shape
    k = beta.numel()
    half = (k - 1) // 2
    out = torch.zeros(b, length)
    for n in range(b):
        for i in range(length):
            acc = torch.tensor(0.0)
            for j in range(k):
                src = i + j - half
                if 0 <= src < length:
                    acc = acc + beta[j] * d[n, src]
            out[n, i] = torch.sigmoid(acc)
    return out


def test_eam_s_and_t_follow_eq_4_to_11() -> None:
    x = _video((2, 5, 4, 3, 3))
    s_mod = _seeded(EAM("s", k=3), 2)
    t_mod = _seeded(EAM("t", k=5), 3)
    # Eq. (4)-(7): channel descriptor s = GAP_3D + GMP_3D over T, H, W; w_c from a 1-D kernel over channels.
    s = x.mean(dim=(2, 3, 4)) + x.flatten(2).max(dim=2).values
    w_c = _eq7_gate(s, s_mod.spatial.gate.conv.weight.flatten())
    # Eq. (8)-(11): frame descriptor f = GAP_3D + GMP_3D over C, H, W; w_t from a 1-D kernel over frames.
    f = x.mean(dim=(1, 3, 4)) + x.transpose(1, 2).flatten(2).max(dim=2).values
    w_t = _eq7_gate(f, t_mod.temporal.gate.conv.weight.flatten())
    with torch.no_grad():
        torch.testing.assert_close(s_mod(x), x + x * w_c.view(2, 5, 1, 1, 1))
        torch.testing.assert_close(t_mod(x), x + x * w_t.view(2, 1, 4, 1, 1))


def _shared(variant: str, s_block: EAM, t_block: EAM) -> EAM:
    """An EAM of the given variant holding the same EAM-S / EAM-T weights as two single blocks."""
    block = EAM(variant, k=3).eval()
    if block.spatial is not None:
        block.spatial.load_state_dict(s_block.spatial.state_dict())
    if block.temporal is not None:
        block.temporal.load_state_dict(t_block.temporal.state_dict())
    return block


def test_combinations_compose_as_the_paper_says() -> None:
    """With S(V) = eam-s(V) - V and T(V) = eam-t(V) - V (the gates without Eq. 3's residual):
    EAM-ST = V + T(S(V)), EAM-TS = V + S(T(V)), EAM-S//T = V + S(V) + T(V)."""
    x = _video((2, 6, 5, 3, 4))
    s_block, t_block = _seeded(EAM("s"), 4), _seeded(EAM("t"), 5)

    def S(v: torch.Tensor) -> torch.Tensor:
        return s_block(v) - v

    def T(v: torch.Tensor) -> torch.Tensor:
        return t_block(v) - v

    with torch.no_grad():
        torch.testing.assert_close(_shared("st", s_block, t_block)(x), x + T(S(x)))
        torch.testing.assert_close(_shared("ts", s_block, t_block)(x), x + S(T(x)))
        torch.testing.assert_close(_shared("s//t", s_block, t_block)(x), x + S(x) + T(x))
        # the sub-modules themselves are the gates without residual
        st = _shared("st", s_block, t_block)
        torch.testing.assert_close(st(x), x + st.temporal(st.spatial(x)))
        assert not torch.allclose(_shared("st", s_block, t_block)(x), _shared("ts", s_block, t_block)(x))


def test_aliases_are_the_fixed_variants() -> None:
    vs = VideoShape(1, 4, 3, 2, 2)
    for alias, variant in (("eam-s", "s"), ("eam-t", "t")):
        torch.manual_seed(0)
        a = get_block(alias).build(vs, k=5)
        torch.manual_seed(0)
        b = get_block("eam").build(vs, variant=variant, k=5)
        x = _video(vs.as_list())
        with torch.no_grad():
            torch.testing.assert_close(a(x), b(x))
        assert get_block(alias).cost(vs, k=5) == get_block("eam").cost(vs, variant=variant, k=5)


def test_se_eca_cbam_match_their_equations() -> None:
    x = _video((2, 32, 3, 4, 4))
    z = x.mean(dim=(2, 3, 4))
    se = _seeded(SqueezeExcitation3d(32, r=16), 6)
    w = torch.sigmoid(F.relu(z @ se.fc1.weight.T) @ se.fc2.weight.T)
    eca = _seeded(ECA3d(32, k=3), 7)
    w_eca = _eq7_gate(z, eca.gate.conv.weight.flatten())
    cbam = _seeded(CBAM3d(32, r=16), 8)
    mlp = cbam.mlp
    mc = torch.sigmoid(mlp(z) + mlp(x.amax(dim=(2, 3, 4))))
    y = x * mc.view(2, 32, 1, 1, 1)
    ms = torch.sigmoid(F.conv3d(torch.cat([y.mean(1, True), y.amax(1, True)], 1), cbam.conv.weight, padding=(0, 3, 3)))
    with torch.no_grad():
        torch.testing.assert_close(se(x), x * w.view(2, 32, 1, 1, 1))
        torch.testing.assert_close(eca(x), x * w_eca.view(2, 32, 1, 1, 1))
        torch.testing.assert_close(cbam(x), y * ms)


def test_eca_adaptive_kernel() -> None:
    # t = int((log2 C + 1) / 2), made odd upwards
    assert [eca_adaptive_k(c) for c in (1, 2, 8, 64, 256, 512, 1024, 2048)] == [1, 1, 3, 3, 5, 5, 5, 7]
    assert get_block("eca").terms(VideoShape(1, 2048, 1, 4, 4), k=0)["k"] == 7


# --- rejected options and shapes ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "name,shape,options,needle",
    [
        ("eam", (1, 8, 4, 4, 4), {"k": 4}, "odd"),
        ("eam-s", (1, 8, 4, 4, 4), {"k": 2}, "odd"),
        ("eam-t", (1, 8, 4, 4, 4), {"k": 6}, "odd"),
        ("se", (1, 8, 4, 4, 4), {}, "1..8"),  # 8 // 16 == 0
        ("cbam", (1, 3, 4, 4, 4), {"r": 4}, "1..3"),
        ("cbam", (1, 32, 4, 4, 4), {"kt": 2}, "odd"),
        ("eca", (1, 32, 4, 4, 4), {"k": 4}, "odd"),
    ],
)
def test_impossible_options_are_rejected_in_one_line(name: str, shape: tuple, options: dict, needle: str) -> None:
    spec = get_block(name)
    with pytest.raises(UsageError) as err:
        spec.validate(VideoShape(*shape), spec.resolve_options(options))
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_unknown_variant_rejected() -> None:
    with pytest.raises(UsageError, match="valid choices"):
        get_block("eam").resolve_options({"variant": "x"})


def test_kernel_longer_than_the_axis_is_allowed() -> None:
    """res5 of a 16-frame clip has T = 1; the paper's k_t = 3 still runs (zero-padded)."""
    spec = get_block("eam")
    vs = spec.preset("16f-res5").shape
    assert vs.T == 1
    spec.validate(vs, spec.resolve_options())
    module = _seeded(spec.build(VideoShape(1, 4, 1, 2, 2)))
    assert module(_video((1, 4, 1, 2, 2))).shape == (1, 4, 1, 2, 2)


# --- presets at the paper's shapes ---------------------------------------------------------------------


def test_stage_shapes_of_hara_3d_resnets() -> None:
    # 16x112x112: conv1 -> 16x56x56, max-pool -> 8x28x28, then /2 per stage (ceil): 4x14x14, 2x7x7, 1x4x4
    assert resnet3d_stage_shapes(16, 112) == {
        "res2": (256, 8, 28, 28), "res3": (512, 4, 14, 14), "res4": (1024, 2, 7, 7), "res5": (2048, 1, 4, 4),
    }
    assert resnet3d_stage_shapes(64, 112) == {
        "res2": (256, 32, 28, 28), "res3": (512, 16, 14, 14), "res4": (1024, 8, 7, 7), "res5": (2048, 4, 4, 4),
    }
    for name in BLOCKS:
        assert len(get_block(name).presets) >= 2


def test_table4_se_parameter_delta() -> None:
    """One SE (r=16, no biases) after each of res2-res5: 2 x (256x16 + 512x32 + 1024x64 + 2048x128)
    = 2 x 348,160 = 696,320; Hara's ResNet-50 (51 classes, 46,303,475) + 696,320 = 46,999,795, '46.99M'."""
    spec = get_block("se")
    stages = [p for p in spec.presets if p.name.startswith("16f-")]
    assert sum(spec.params(p.shape, **spec.resolve_options(base=p.options)) for p in stages) == 696_320
    assert sum(get_block("eam").params(p.shape) for p in stages) == 4 * 6  # EAM: 46.30M stays 46.30M
