"""EAM (Jiang, Jiang, Fang, Chen): efficient spatial (EAM-S) and temporal (EAM-T) attention for 3D CNNs,
and the baselines of its Table 4 in 3D form: SE, ECA and CBAM.

EAM-S (Sec. 3.2, Eq. 4-7) on V [B, C, T, H, W]: per channel, the 3D global average (Eq. 4) and 3D global max
(Eq. 5) over T, H, W, summed (Eq. 6: s = a_c + m_c); a bias-free 1-D convolution with kernel k over the
channel axis, zero-padded by (k-1)/2 so that every channel sees its k neighbours (Eq. 7: k parameters
beta^j), a sigmoid, and V is re-weighted per channel: M_c(V) (x) V.

EAM-T (Sec. 3.3, Eq. 8-11): the same on the frame axis. Per frame, the average (Eq. 8) and max (Eq. 9) over
C, H, W, summed (Eq. 10: f = a_t + m_t), a bias-free 1-D convolution with kernel k over frames ("only
involves k_t parameters", Eq. 11), a sigmoid, and V is re-weighted per frame: M_t(V) (x) V.

EAM (Sec. 3.1, Eq. 1-3; option ``variant``): the gates only re-weight, and the module adds its input once at
the end, V^ = V + V'' (Eq. 3). T_trans in Eq. (1)-(2) is a layout change (moving T next to C); on PyTorch's
[B, C, T, H, W] both axes are addressed directly, so it does no work and is not written out.

* ``st`` (EAM-ST, the paper's choice, Table 2): V'' = T(S(V)): EAM-T is derived from and applied to V' (Sec. 3.4);
* ``ts`` (EAM-TS): V'' = S(T(V));
* ``s``, ``t`` (EAM-S, EAM-T alone): V'' = S(V) or T(V), with the same residual V + V'';
* ``s//t`` (EAM-S//T, "parallel with fusion"): both gates are computed from V and the two re-weighted maps
  are fused by element-wise summation, V'' = S(V) + T(V) -- the paper does not print the fusion; summation is
  the fusion it uses everywhere else (Eq. 3, 6, 10).

``k`` is both k_c and k_t: the paper sweeps one k for the module (Table 1, best and default k = 3). It must be
odd (a "same" 1-D convolution). k larger than C or T is allowed: it is the paper's own configuration at
res5 of a 16-frame clip, where T = 1 and k_t = 3; the taps that fall on the zero padding are still computed
(and counted). Parameters: k for EAM-S, k for EAM-T, 2k for a combination, whatever the shape.

Placement in the 3D ResNets (:mod:`attnbench.networks.resnet3d`; one module per stage, as Table 4's parameter
counts require). EAM, with its own identity V + V'' (Eq. 3, "passed into the next 3D CNN module"), goes after
each stage, on its output: Sec. 4.3 adds it to "res2, res3, res4, and after each layer", and on a residual
branch its identity would double the block's shortcut. The baselines below have no identity of their own and
go where their papers put them, on the residual branch of the stage's last bottleneck, before the add (SE Fig.
3, CBAM Fig. 3, ECA's ``eca_resnet.py``). Both places see the stage's output shape, so the counts are equal.

Baselines, each as in its own paper, on the whole [B, C, T, H, W] map ("3D"), no residual of their own (in a
ResNet the block's identity path adds it):

* ``se`` (Hu et al., Eq. 2-4): 3D global average pool, nn.Linear C -> C//r, ReLU, nn.Linear C//r -> C, sigmoid,
  channel re-weighting. ``bias`` defaults to off, as in the SE paper's Eq. (3) s = sigma(W2 delta(W1 z)) and its
  parameter count 2/r sum C^2, and as EAM Table 4 implies: Hara's ResNet-50 (51 classes) has 46,303,475
  parameters; one SE (r = 16) after each of res2-res5 adds 696,320 without biases (46,999,795: 46.99M in
  Table 4, which truncates -- ResNeXt-101's 47,625,715 is printed 47.62M) but 700,400 with them (47.00M).
* ``eca`` (Wang et al.): 3D global average pool, bias-free 1-D convolution over channels, sigmoid, re-weighting.
  ``k`` = 0 (default) is the ECA paper's adaptive rule (Eq. 12, gamma = 2, b = 1, as in its code:
  t = int(|(log2 C + b) / gamma|), k = t if t is odd else t + 1: 5, 5, 5, 7 for C = 256 ... 2048); an odd k > 0
  fixes it.
* ``cbam`` (Woo et al., Eq. 2-3): channel attention -- 3D global average and max pools, one shared MLP
  (nn.Linear C -> C//r, ReLU, nn.Linear C//r -> C) on each, summed, sigmoid, re-weighting; then spatial
  attention -- mean and max over channels, concatenated (2 maps), a bias-free kt x ks x ks Conv3d to one map,
  sigmoid, re-weighting. The EAM paper does not say how CBAM's 7x7 was made 3D. The default is 1x7x7 (kt = 1,
  the 2D kernel on every frame): Table 4's 16-frame rows give CBAM 0.001 GFLOPs more than SE (its deltas
  behave like multiply-accumulates plus one op per average-pooled element), which the second MLP pass plus a
  1x7x7 kernel fit (1.40 MMACs more over res2-res5) and a 7x7x7 kernel does not (5.61 MMACs more); the
  64-frame rows (CBAM = SE) fit neither. kt = 7 gives the fully inflated kernel. ``bias`` (MLP biases) and
  ``bn`` (batch norm after the spatial convolution) default to off as in CBAM's Eq. (2)-(3); CBAM's released
  code has both on.

Presets: the outputs of the stages where EAM places modules (Sec. 4.2-4.3, Table 3: res2, res3, res4 and
"all res", Table 4: "all the stages") in Hara et al.'s 3D ResNet-50 / ResNeXt-101 (conv1 7x7x7 stride (1,2,2)
pad 3, max-pool 3x3x3 stride 2 pad 1, res3-res5 stride 2 in their 3x3x3 convolution; see
:func:`resnet3d_stage_shapes`). ResNet-50 and ResNeXt-101 (expansion 2 on widths 128-1024) share the stage
widths 256, 512, 1024, 2048. 16 x 112 x 112 clips (Sec. 4.2) give 8x28x28, 4x14x14, 2x7x7, 1x4x4; the 64-frame
ResNeXt-101 gives 32x28x28, 16x14x14, 8x7x7, 4x4x4 (the network's final average pool is ceil(T/16) x
ceil(112/32)^2 = 1x4x4 and 4x4x4, the same sizes).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from attnbench.blocks.registry import BlockSpec, Option, Preset, register_block
from attnbench.errors import UsageError
from attnbench.flops import cost as C
from attnbench.flops.cost import Cost
from attnbench.flops.memory import Peak, Phase, Precision, peak
from attnbench.shapes import VideoShape

VARIANTS = ("st", "ts", "s", "t", "s//t")

# ---------------------------------------------------------------------------------------------------------
# Paper shapes


def _conv_len(n: int, kernel: int, stride: int, pad: int) -> int:
    return (n + 2 * pad - kernel) // stride + 1


STAGE_WIDTHS = {"res2": 256, "res3": 512, "res4": 1024, "res5": 2048}


def resnet3d_stage_shapes(frames: int, size: int) -> dict[str, tuple[int, int, int, int]]:
    """(C, T, H, W) at the output of res2-res5 of Hara et al.'s 3D ResNet-50 / ResNeXt-101 for a
    frames x size x size clip: conv1 7x7x7 stride (1, 2, 2) pad 3, max-pool 3x3x3 stride 2 pad 1, res2 stride 1,
    res3-res5 stride 2 (3x3x3, pad 1)."""
    t, s = frames, _conv_len(size, 7, 2, 3)  # conv1 keeps T
    t, s = _conv_len(t, 3, 2, 1), _conv_len(s, 3, 2, 1)  # max-pool
    out: dict[str, tuple[int, int, int, int]] = {}
    for i, (stage, width) in enumerate(STAGE_WIDTHS.items()):
        if i > 0:
            t, s = _conv_len(t, 3, 2, 1), _conv_len(s, 3, 2, 1)
        out[stage] = (width, t, s, s)
    return out


_CLIPS = (
    (16, "3D ResNet-50 / ResNeXt-101 (16f), 16x112x112 clips (EAM Sec. 4.2)"),
    (64, "3D ResNeXt-101 (64f), 64x112x112 clips (EAM Table 4)"),
)


def _stage_presets(what: str, options: dict[str, Any] | None = None) -> tuple[Preset, ...]:
    presets = []
    for frames, clip in _CLIPS:
        for stage, (c, t, h, w) in resnet3d_stage_shapes(frames, 112).items():
            presets.append(
                Preset(
                    f"{frames}f-{stage}",
                    VideoShape(1, c, t, h, w),
                    f"{what} after {stage} of {clip}: C={c}, T={t}, H=W={h} (Hara et al. topology: conv1 "
                    f"stride (1,2,2), max-pool stride 2, res3-res5 stride 2; EAM Table 3-4 place modules at res2-res5)",
                    dict(options or {}),
                )
            )
    return tuple(presets)


# ---------------------------------------------------------------------------------------------------------
# EAM


class _Gate1d(nn.Module):
    """A bias-free, zero-padded ("same") 1-D convolution with one input and one output channel."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 1, k, padding=(k - 1) // 2, bias=False)

    def forward(self, d: torch.Tensor) -> torch.Tensor:  # [B, L] -> [B, L]
        return self.conv(d.unsqueeze(1)).squeeze(1)


class EAMSpatial(nn.Module):
    """EAM-S, Eq. (4)-(7): returns M_c(V) (x) V (no residual)."""

    def __init__(self, k: int = 3) -> None:
        super().__init__()
        self.gate = _Gate1d(k)

    def weights(self, v: torch.Tensor) -> torch.Tensor:
        """w_c of Eq. (7), [B, C]."""
        s = v.mean(dim=(2, 3, 4)) + v.amax(dim=(2, 3, 4))  # Eq. (4)-(6)
        return torch.sigmoid(self.gate(s))

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        b, c = v.shape[:2]
        return v * self.weights(v).view(b, c, 1, 1, 1)


class EAMTemporal(nn.Module):
    """EAM-T, Eq. (8)-(11): returns M_t(V) (x) V (no residual)."""

    def __init__(self, k: int = 3) -> None:
        super().__init__()
        self.gate = _Gate1d(k)

    def weights(self, v: torch.Tensor) -> torch.Tensor:
        """w_t of Eq. (11), [B, T]."""
        f = v.mean(dim=(1, 3, 4)) + v.amax(dim=(1, 3, 4))  # Eq. (8)-(10)
        return torch.sigmoid(self.gate(f))

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        b, _, t = v.shape[:3]
        return v * self.weights(v).view(b, 1, t, 1, 1)


class EAM(nn.Module):
    """The EAM module, V^ = V + V'' (Eq. 3), with V'' from the chosen combination (see module docstring)."""

    def __init__(self, variant: str = "st", k: int = 3) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise UsageError(f"eam variant must be one of {', '.join(VARIANTS)}, got '{variant}'")
        self.variant = variant
        self.spatial = EAMSpatial(k) if "s" in variant else None
        self.temporal = EAMTemporal(k) if "t" in variant else None

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        s, t = self.spatial, self.temporal
        if self.variant == "st":
            inner = t(s(v))
        elif self.variant == "ts":
            inner = s(t(v))
        elif self.variant == "s":
            inner = s(v)
        elif self.variant == "t":
            inner = t(v)
        else:  # "s//t"
            inner = s(v) + t(v)
        return v + inner


def _check_odd_k(block: str, k: int) -> None:
    if k < 1 or k % 2 == 0:
        raise UsageError(f"{block} k must be an odd integer >= 1 (a zero-padded 'same' 1-D convolution), got {k}")


def _eam_check(shape: VideoShape, variant: str = "st", k: int = 3) -> None:
    _check_odd_k("eam", k)


def eam_s_cost(shape: VideoShape, k: int = 3) -> Cost:
    """EAM-S without the residual: two reductions, the sum s, the 1-D conv, the sigmoid, the re-weighting."""
    n, bc = shape.numel, shape.B * shape.C
    return C.reduce(n) * 2 + C.eltwise(bc) + C.conv(bc, 1, (k,), False) + C.eltwise(bc) + C.eltwise(n)


def eam_t_cost(shape: VideoShape, k: int = 3) -> Cost:
    """EAM-T without the residual: as EAM-S on the frame axis (descriptors of length T)."""
    n, bt = shape.numel, shape.B * shape.T
    return C.reduce(n) * 2 + C.eltwise(bt) + C.conv(bt, 1, (k,), False) + C.eltwise(bt) + C.eltwise(n)


def eam_cost(shape: VideoShape, variant: str = "st", k: int = 3) -> Cost:
    total = Cost()
    if "s" in variant:
        total = total + eam_s_cost(shape, k)
    if "t" in variant:
        total = total + eam_t_cost(shape, k)
    if variant == "s//t":
        total = total + C.eltwise(shape.numel)  # fusion: S(V) + T(V)
    return total + C.eltwise(shape.numel)  # residual, Eq. (3)


def eam_params(shape: VideoShape, variant: str = "st", k: int = 3) -> int:
    """k per sub-module (the 1-D kernels beta of Eq. 7 and C1D_{k_t} of Eq. 11), independent of the shape."""
    return k * (("s" in variant) + ("t" in variant))


def eam_terms(shape: VideoShape, variant: str = "st", k: int = 3) -> dict[str, Any]:
    return {
        "k_c": k if "s" in variant else None,
        "k_t": k if "t" in variant else None,
        "params_formula": "k_c + k_t (EAM-S: k_c, EAM-T: k_t; Eq. 7, 11)",
        "channel_descriptor_elements": shape.B * shape.C if "s" in variant else 0,
        "temporal_descriptor_elements": shape.B * shape.T if "t" in variant else 0,
    }


# -- memory (see attnbench.flops.memory) -------------------------------------------------------------------


def linear_stack_memory(
    what: str, rows: int, widths: Sequence[int], p: Precision, bias: bool, held: list[tuple[str, int]],
    cast_input: bool, last: str | None = None,
) -> tuple[list[Phase], tuple[str, int]]:
    """Phases of a stack of ``nn.Linear`` layers widths[0] -> widths[1] -> ... on ``rows`` rows, a ReLU between
    consecutive layers and ``last`` (an element-wise activation's name, or None) after the last one, and the
    tensor it returns. ``held`` (the stack's input among them) is alive throughout. Each layer's output is
    alive while the activation after it runs (the argument of that call); the activation feeding a layer
    is alive while the layer writes. Under autocast every layer also holds its casts of the weight and bias,
    and the first one its cast of the input when ``cast_input`` (an fp32 input); every output is in the
    run's dtype."""
    lo = p.low
    phases: list[Phase] = []
    feeding: list[tuple[str, int]] = []
    out = ("", 0)
    layers = len(widths) - 1
    for i in range(layers):
        fin, fout = widths[i], widths[i + 1]
        casts: list[tuple[str, int]] = []
        if p.autocast:
            casts = [(f"{what} layer {i + 1} weight cast", fin * fout * lo)]
            casts += [(f"{what} layer {i + 1} bias cast", fout * lo)] if bias else []
            casts += [(f"{what} input cast", rows * fin * lo)] if i == 0 and cast_input else []
        out = (f"{what} layer {i + 1} output", rows * fout * lo)
        phases.append((f"{what} layer {i + 1}", held + feeding + casts + [out]))
        act = "ReLU" if i < layers - 1 else last
        if act is not None:
            result = (f"{what} {act} {i + 1}", rows * fout * lo)
            phases.append((f"{what} {act} {i + 1}", held + [out, result]))
            feeding, out = [result], result
    return phases, out


def gate_conv_memory(what: str, length: int, k: int, p: Precision, held: list[tuple[str, int]],
                     d: tuple[str, int]) -> tuple[list[Phase], tuple[str, int]]:
    """Phases of :class:`_Gate1d` on the descriptor ``d`` (``length`` = B x L elements, in the activation
    dtype) and its output: the descriptor and the convolution's output, and under autocast the casts of the
    kernel and of the descriptor."""
    lo = p.low
    casts = [(f"{what} kernel cast", k * lo), (f"{what} descriptor cast", length * lo)] if p.autocast else []
    out = (f"{what} 1-D conv output", length * lo)
    return [(f"{what} 1-D conv", held + [d] + casts + [out])], out


def _eam_part_memory(kind: str, shape: VideoShape, p: Precision, k: int,
                     held: list[tuple[str, int]]) -> tuple[list[Phase], tuple[str, int]]:
    """Phases of EAM-S (``kind`` "S") or EAM-T ("T") with ``held`` alive, and its re-weighted output."""
    length = shape.B * (shape.C if kind == "S" else shape.T)
    act = p.act
    mean, amax = (f"EAM-{kind} mean", length * act), (f"EAM-{kind} max", length * act)
    s = (f"EAM-{kind} mean + max", length * act)
    phases: list[Phase] = [(f"EAM-{kind}: pooling", held + [mean, amax, s])]
    conv_phases, conv = gate_conv_memory(f"EAM-{kind}", length, k, p, held, s)
    phases += conv_phases
    w = (f"EAM-{kind} weights", length * p.low)
    phases.append((f"EAM-{kind}: sigmoid", held + [s, conv, w]))
    out = (f"EAM-{kind} re-weighted map", shape.numel * act)
    phases.append((f"EAM-{kind}: re-weighting", held + [w, out]))
    return phases, out


def eam_memory(shape: VideoShape, p: Precision, variant: str = "st", k: int = 3) -> Peak:
    """Peak working memory of one call (see :mod:`attnbench.flops.memory`). Every input-sized tensor is in
    the activation dtype (fp32 under autocast: the gates' bf16 weights re-weight the fp32 map). In sequence
    (``st``, ``ts``) the first part's output is alive while the second writes its own, and the peak is two
    maps; with ``s//t`` the first part's output, the second's and their sum are alive together (three);
    alone (``s``, ``t``) the part's output and the residual sum (two)."""
    n = shape.numel * p.act
    parts = {"st": "ST", "ts": "TS", "s": "S", "t": "T", "s//t": "ST"}[variant]
    phases: list[Phase] = []
    held: list[tuple[str, int]] = []
    outs = []
    for kind in parts:
        part, out = _eam_part_memory(kind, shape, p, k, held)
        phases += part
        outs.append(out)
        held = [out]  # in sequence: the next part's input; in parallel: the first summand
    inner = outs[-1]
    if variant == "s//t":
        inner = ("S(V) + T(V)", n)
        phases.append(("fusion", outs + [inner]))
    phases.append(("residual add", [inner, ("V + V'' (output)", n)]))
    return peak(phases)


_EAM_PAPER = "Jiang et al., An Efficient Attention Module for 3D CNNs in Action Recognition"
_K_HELP = "1-D kernel size k_c = k_t (odd; paper Table 1: 3, 5, 7, 9, best 3)"

register_block(
    BlockSpec(
        name="eam",
        title="EAM: efficient spatial (channel) and temporal (frame) attention",
        paper=_EAM_PAPER,
        build=lambda shape, **o: EAM(**o),
        cost=eam_cost,
        params=eam_params,
        terms=eam_terms,
        check=_eam_check,
        memory=eam_memory,
        options=(
            Option(
                "variant", str, "st",
                "st: EAM-S then EAM-T (paper); ts: T then S; s, t: one alone; s//t: parallel, fused by sum", VARIANTS,
            ),
            Option("k", int, 3, _K_HELP, minimum=1),
        ),
        presets=_stage_presets("EAM-ST"),
    )
)

for _variant in ("s", "t"):
    register_block(
        BlockSpec(
            name=f"eam-{_variant}",
            title=f"EAM-{_variant.upper()} alone (with EAM's residual V + V'')",
            paper=_EAM_PAPER,
            build=lambda shape, _v=_variant, **o: EAM(variant=_v, **o),
            cost=lambda shape, _v=_variant, **o: eam_cost(shape, variant=_v, **o),
            params=lambda shape, _v=_variant, **o: eam_params(shape, variant=_v, **o),
            terms=lambda shape, _v=_variant, **o: eam_terms(shape, variant=_v, **o),
            check=lambda shape, k=3: _check_odd_k("eam", k),
            memory=lambda shape, p, _v=_variant, **o: eam_memory(shape, p, variant=_v, **o),
            options=(Option("k", int, 3, _K_HELP, minimum=1),),
            presets=_stage_presets(f"EAM-{_variant.upper()} (Table 2)"),
        )
    )

# ---------------------------------------------------------------------------------------------------------
# SE


def _check_reduction(block: str, shape: VideoShape, r: int) -> None:
    if shape.C // r == 0:
        raise UsageError(
            f"{block} needs C // r >= 1 hidden units: r must be in 1..{shape.C} for C={shape.C}, got r={r}"
        )


class SqueezeExcitation3d(nn.Module):
    """SE on [B, C, T, H, W]: sigma(W2 relu(W1 GAP(x))) re-weights the channels."""

    def __init__(self, channels: int, r: int = 16, bias: bool = False) -> None:
        super().__init__()
        hidden = channels // r
        self.fc1 = nn.Linear(channels, hidden, bias=bias)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(hidden, channels, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[:2]
        z = x.mean(dim=(2, 3, 4))
        s = torch.sigmoid(self.fc2(self.relu(self.fc1(z))))
        return x * s.view(b, c, 1, 1, 1)


def se_cost(shape: VideoShape, r: int = 16, bias: bool = False) -> Cost:
    b, c, n = shape.B, shape.C, shape.numel
    h = c // r
    return (
        C.reduce(n)
        + C.linear(b, c, h, bias) + C.eltwise(b * h)
        + C.linear(b, h, c, bias) + C.eltwise(b * c)
        + C.eltwise(n)
    )


def se_params(shape: VideoShape, r: int = 16, bias: bool = False) -> int:
    c, h = shape.C, shape.C // r
    return 2 * c * h + ((h + c) if bias else 0)


def se_memory(shape: VideoShape, p: Precision, r: int = 16, bias: bool = False) -> Peak:
    """Peak working memory of one call (see :mod:`attnbench.flops.memory`): the re-weighted output
    (activation dtype), written while the pooled vector z (a local) and the gate s are alive. Under
    autocast the FC layers' bf16 weight casts can be larger (res5: 2 x 2048 x 128 weights, 1 x 4 x 4)."""
    b, c = shape.B, shape.C
    z = ("z = mean of x", b * c * p.act)
    phases, s = linear_stack_memory("FC", b, (c, c // r, c), p, bias, [z], cast_input=True, last="sigmoid")
    phases = [("global pooling", [z])] + phases
    phases.append(("re-weighting", [z, s, ("x * s (output)", shape.numel * p.act)]))
    return peak(phases)


register_block(
    BlockSpec(
        name="se",
        title="Squeeze-and-excitation (3D global pooling)",
        paper="Hu et al., CVPR 2018; baseline in EAM Table 4",
        build=lambda shape, **o: SqueezeExcitation3d(shape.C, **o),
        cost=se_cost,
        params=se_params,
        check=lambda shape, r=16, bias=False: _check_reduction("se", shape, r),
        memory=se_memory,
        options=(
            Option("r", int, 16, "reduction ratio: C // r hidden units (SE paper: 16)", minimum=1),
            Option("bias", bool, False, "biases in the two FC layers (SE Eq. 3 and EAM Table 4: none)"),
        ),
        presets=_stage_presets("SE (r=16)"),
    )
)

# ---------------------------------------------------------------------------------------------------------
# ECA


def eca_adaptive_k(channels: int, gamma: int = 2, b: int = 1) -> int:
    """ECA's Eq. (12) as its code computes it: t = int(|(log2 C + b) / gamma|), the next odd number >= t."""
    t = int(abs((math.log2(channels) + b) / gamma))
    return t if t % 2 else t + 1


def eca_kernel(shape: VideoShape, k: int = 0) -> int:
    return eca_adaptive_k(shape.C) if k == 0 else k


class ECA3d(nn.Module):
    """ECA on [B, C, T, H, W]: sigma(conv1d_k(GAP(x))) re-weights the channels."""

    def __init__(self, channels: int, k: int = 0) -> None:
        super().__init__()
        self.gate = _Gate1d(eca_adaptive_k(channels) if k == 0 else k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[:2]
        w = torch.sigmoid(self.gate(x.mean(dim=(2, 3, 4))))
        return x * w.view(b, c, 1, 1, 1)


def _eca_check(shape: VideoShape, k: int = 0) -> None:
    if k != 0 and k % 2 == 0:
        raise UsageError(f"eca k must be 0 (ECA's adaptive rule) or an odd integer >= 1, got {k}")


def eca_cost(shape: VideoShape, k: int = 0) -> Cost:
    b, c, n = shape.B, shape.C, shape.numel
    return C.reduce(n) + C.conv(b * c, 1, (eca_kernel(shape, k),), False) + C.eltwise(b * c) + C.eltwise(n)


def eca_params(shape: VideoShape, k: int = 0) -> int:
    return eca_kernel(shape, k)


def eca_memory(shape: VideoShape, p: Precision, k: int = 0) -> Peak:
    """Peak working memory of one call (see :mod:`attnbench.flops.memory`): the re-weighted output
    (activation dtype) and the gate w."""
    bc = shape.B * shape.C
    z = ("mean of x", bc * p.act)
    phases, conv = gate_conv_memory("ECA", bc, eca_kernel(shape, k), p, [], z)
    w = ("w = sigmoid(conv)", bc * p.low)
    phases = [("global pooling", [z])] + phases + [("sigmoid", [conv, w])]
    phases.append(("re-weighting", [w, ("x * w (output)", shape.numel * p.act)]))
    return peak(phases)


def eca_terms(shape: VideoShape, k: int = 0) -> dict[str, Any]:
    return {
        "k": eca_kernel(shape, k),
        "k_rule": "adaptive: t = int(|(log2 C + 1) / 2|), k = t if odd else t + 1 (ECA Eq. 12)" if k == 0 else "fixed",
    }


register_block(
    BlockSpec(
        name="eca",
        title="Efficient channel attention (3D global pooling)",
        paper="Wang et al., ECA-Net, CVPR 2020; baseline in EAM Table 4",
        build=lambda shape, **o: ECA3d(shape.C, **o),
        cost=eca_cost,
        params=eca_params,
        terms=eca_terms,
        check=_eca_check,
        memory=eca_memory,
        options=(Option("k", int, 0, "1-D kernel size, odd; 0: ECA's adaptive rule from C (gamma=2, b=1)", minimum=0),),
        presets=_stage_presets("ECA (adaptive k)"),
    )
)

# ---------------------------------------------------------------------------------------------------------
# CBAM


class CBAM3d(nn.Module):
    """CBAM on [B, C, T, H, W]: channel attention, then spatial attention (see module docstring)."""

    def __init__(
        self, channels: int, r: int = 16, kt: int = 1, ks: int = 7, bias: bool = False, bn: bool = False
    ) -> None:
        super().__init__()
        hidden = channels // r
        self.mlp = nn.Sequential(
            nn.Linear(channels, hidden, bias=bias), nn.ReLU(), nn.Linear(hidden, channels, bias=bias)
        )
        self.conv = nn.Conv3d(2, 1, (kt, ks, ks), padding=(kt // 2, ks // 2, ks // 2), bias=False)
        self.bn = nn.BatchNorm3d(1) if bn else nn.Identity()

    def channel_weights(self, x: torch.Tensor) -> torch.Tensor:
        """M_c of CBAM Eq. (2), [B, C]."""
        return torch.sigmoid(self.mlp(x.mean(dim=(2, 3, 4))) + self.mlp(x.amax(dim=(2, 3, 4))))

    def spatial_weights(self, x: torch.Tensor) -> torch.Tensor:
        """M_s of CBAM Eq. (3), [B, 1, T, H, W]."""
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return torch.sigmoid(self.bn(self.conv(pooled)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[:2]
        x = x * self.channel_weights(x).view(b, c, 1, 1, 1)
        return x * self.spatial_weights(x)


def _cbam_check(shape: VideoShape, r: int = 16, kt: int = 1, ks: int = 7, bias: bool = False, bn: bool = False) -> None:
    _check_reduction("cbam", shape, r)
    for name, value in (("kt", kt), ("ks", ks)):
        if value % 2 == 0:
            raise UsageError(f"cbam {name} must be an odd integer >= 1 (a zero-padded 'same' convolution), got {value}")


def cbam_cost(shape: VideoShape, r: int = 16, kt: int = 1, ks: int = 7, bias: bool = False, bn: bool = False) -> Cost:
    b, c, n, thw = shape.B, shape.C, shape.numel, shape.thw
    h = c // r
    mlp = C.linear(b, c, h, bias) + C.eltwise(b * h) + C.linear(b, h, c, bias)
    channel = C.reduce(n) * 2 + mlp * 2 + C.eltwise(b * c) * 2 + C.eltwise(n)  # sum, sigmoid, re-weighting
    spatial = C.reduce(n) * 2 + C.conv(b * thw, 2, (kt, ks, ks), False)
    if bn:
        spatial = spatial + C.batchnorm(b * thw)
    spatial = spatial + C.eltwise(b * thw) + C.eltwise(n)  # sigmoid, re-weighting
    return channel + spatial


def cbam_params(shape: VideoShape, r: int = 16, kt: int = 1, ks: int = 7, bias: bool = False, bn: bool = False) -> int:
    c, h = shape.C, shape.C // r
    return 2 * c * h + ((h + c) if bias else 0) + 2 * kt * ks * ks + (2 if bn else 0)


def cbam_memory(shape: VideoShape, p: Precision, r: int = 16, kt: int = 1, ks: int = 7, bias: bool = False,
                bn: bool = False) -> Peak:
    """Peak working memory of one call (see :mod:`attnbench.flops.memory`): the channel-weighted map x'
    (a local), the spatial weights and the output, two maps in the activation dtype. Each pass of the
    shared MLP holds its input vector; under autocast its bf16 weight casts can be larger (as for SE)."""
    b, c, lo, act = shape.B, shape.C, p.low, p.act
    bc, pos = b * c, b * shape.thw
    widths = (c, c // r, c)
    avg, mx = ("mean of x", bc * act), ("max of x", bc * act)
    first, y_avg = linear_stack_memory("MLP(avg)", b, widths, p, bias, [avg], cast_input=True)
    second, y_max = linear_stack_memory("MLP(max)", b, widths, p, bias, [y_avg, mx], cast_input=True)
    phases = [("average pooling", [avg])] + first + [("max pooling", [y_avg, mx])] + second
    total, m_c = ("MLP(avg) + MLP(max)", bc * lo), ("M_c", bc * lo)
    phases += [("channel sum", [y_avg, y_max, total]), ("channel sigmoid", [total, m_c])]
    x1 = ("x' = x * M_c", shape.numel * act)
    phases.append(("channel re-weighting", [m_c, x1]))
    pooled = ("[mean, max] over channels", 2 * pos * act)
    means = [("mean over channels", pos * act), ("max over channels", pos * act)]
    phases.append(("channel pooling", [x1] + means + [pooled]))
    casts = [("kernel cast", 2 * kt * ks * ks * lo), ("pooled maps cast", 2 * pos * lo)] if p.autocast else []
    conv = ("spatial conv output", pos * lo)
    phases.append(("spatial conv", [x1, pooled] + casts + [conv]))
    if bn:
        norm = ("batch norm output", pos * lo)
        phases.append(("batch norm", [x1, pooled, conv, norm]))
        conv = norm
    m_s = ("M_s", pos * lo)
    phases.append(("spatial sigmoid", [x1, pooled, conv, m_s]))
    phases.append(("spatial re-weighting", [x1, m_s, ("x' * M_s (output)", shape.numel * act)]))
    return peak(phases)


register_block(
    BlockSpec(
        name="cbam",
        title="CBAM: channel then spatial attention (3D)",
        paper="Woo et al., ECCV 2018; baseline in EAM Table 4",
        build=lambda shape, **o: CBAM3d(shape.C, **o),
        cost=cbam_cost,
        params=cbam_params,
        check=_cbam_check,
        memory=cbam_memory,
        options=(
            Option("r", int, 16, "reduction ratio of the shared MLP (CBAM: 16)", minimum=1),
            Option("kt", int, 1, "temporal size of the spatial-attention kernel (1: 1x7x7, 7: 7x7x7)", minimum=1),
            Option("ks", int, 7, "spatial size of the spatial-attention kernel (CBAM: 7)", minimum=1),
            Option("bias", bool, False, "biases in the shared MLP (CBAM Eq. 2: none; its code: yes)"),
            Option("bn", bool, False, "batch norm after the spatial convolution (CBAM Eq. 3: none; its code: yes)"),
        ),
        presets=_stage_presets("CBAM (r=16, 1x7x7)"),
    )
)
