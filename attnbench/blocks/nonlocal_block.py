"""Non-local block (Wang et al., CVPR 2018), embedded-Gaussian form, the baseline of BANet, W3 and EAM.

z = x + BN(W_z( softmax(s theta(x)^T phi(x)) g(x) )), with theta, phi, g and W_z 1x1x1 convolutions (with
bias) and s = 1 or 1/sqrt(C_i).

Options:

* ``ratio``: inner channels C_i = C // ratio (the original uses 2);
* ``subsample``: how the keys and values are sub-sampled, by a 1x2x2 max-pool (kernel = stride, no padding,
  so T x floor(H/2) x floor(W/2) keys):

  - ``none`` (default; ``false`` means the same): full keys, the (THW) x (THW) map BANet's Eq. (5) assumes;
  - ``after`` (``true`` means the same): pool the *outputs* of phi and g, as TSM's ``ops/non_local.py``
    (mit-han-lab/temporal-shift-module; ``sub_sample=True`` by default, ``phi = Sequential(phi, max_pool)``)
    and mmcv's ``NonLocal3d`` (``mmcv/cnn/bricks/non_local.py``, with ``sub_sample=True``; its default is
    False) do. phi and g
    still run at every position, so the projections cost as much as without pooling;
  - ``before``: pool *x* once and run phi and g on the pooled map, as Wang et al.'s own code does
    (facebookresearch/video-nonlocal-net, ``lib/models/nonlocal_helper.py``, ``spacetime_nonlocal``: with
    ``NONLOCAL.USE_MAXPOOL`` on, its default in ``lib/core/config.py``, ``MaxPool(cur, kernels=[1, 2, 2],
    strides=[1, 2, 2])`` feeds the phi and g convolutions). phi and g then cost a quarter (H, W even). At
    TSM-R50's res4 (C = 1024, 8 x 14 x 14) the block costs 5.38 GFLOPs this way against 7.85 GFLOPs pooled
    after.

  Both pools give the same map size, the same parameters and the same affinity products; only the phi and
  g projections (and what is pooled: C channels before, 2 C_i after) differ.
* ``use_scale``: multiply the affinity by 1/sqrt(C_i) before the softmax. Wang et al.'s code does
  (``NONLOCAL.USE_SCALE = True`` by default: ``Scale(theta_phi, scale=dim_inner**-.5)``), and so does
  mmcv's ``_NonLocalNd`` (``use_scale=True`` by default: ``pairwise_weight /= inter_channels**0.5``); TSM's
  block (from AlexHex7/Non-local_pytorch) does not, and neither the non-local paper's embedded Gaussian
  (Eq. 3, exp(theta^T phi)) nor BANet's Eq. (5) writes it. Off by default. It is one multiply per map
  entry with ``impl=naive`` (in place, as both codes do) and one per element of q with ``impl=sdpa`` (see
  :func:`attend`), so with it on the two kernels' closed forms differ by that much.
* ``bn``: batch norm after W_z;
* ``impl``:

  - ``naive`` materialises the (THW) x (keys) affinity map and its softmax, as the papers' code does;
  - ``sdpa`` calls ``F.scaled_dot_product_attention`` with ``scale=1.0`` (the embedded Gaussian has no
    1/sqrt(d); ``use_scale`` scales q before the call). The arithmetic is the same (but for where
    ``use_scale`` multiplies), so the closed-form FLOPs are the same; a fused kernel never holds the map,
    so the memory is not. q, k and v are laid out [n, 1, L, c] contiguous first: with a non-contiguous
    last dimension PyTorch silently falls back to its math kernel, which does hold the map. On CUDA only
    the fused backends (flash, memory-efficient, cuDNN) are allowed, so a shape none of them takes fails
    with an error instead of quietly becoming the naive computation.

The defaults (``subsample=none``, ``use_scale=false``) are the configuration BANet's Eq. (5) assumes: the
correlation matrix is (THW) x (THW), so its FLOPs are F_3D = C_in (THW)^2 x 2 with C_in = C_i.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from attnbench.blocks.registry import BlockSpec, Option, Preset, register_block
from attnbench.errors import UsageError
from attnbench.flops import cost as C
from attnbench.flops.cost import Cost
from attnbench.flops.memory import FP32, Peak, Phase, Precision, peak
from attnbench.shapes import VideoShape

IMPLS = ("naive", "sdpa")
SUBSAMPLE = ("none", "after", "before")
_BOOL_WORDS = {"true": "after", "1": "after", "yes": "after", "false": "none", "0": "none", "no": "none"}


@dataclass(frozen=True)
class SubsampleOption(Option):
    """``subsample`` takes ``none``, ``after`` or ``before``; the boolean values it took before (True/False,
    or true/false, 1/0, yes/no on the command line) still mean ``after`` and ``none``."""

    def parse(self, raw: Any) -> Any:
        if isinstance(raw, bool):
            raw = "after" if raw else "none"
        elif isinstance(raw, str):
            raw = _BOOL_WORDS.get(raw.lower(), raw.lower())
        return super().parse(raw)


SUBSAMPLE_OPTION = SubsampleOption(
    "subsample", str, "none",
    "1x2x2 max-pool of the keys: none (BANet Eq. 5; also 'false'), after phi and g (TSM, mmcv; also 'true'), "
    "or before them, on x (Wang et al.'s code)", SUBSAMPLE)


def _subsample(value: bool | str) -> str:
    """The canonical ``subsample`` value of what a caller passed to the module or a closed form."""
    return SUBSAMPLE_OPTION.parse(value)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, impl: str = "naive", scale: float = 1.0) -> torch.Tensor:
    """Dot-product attention over positions: q [n, c, L], k and v [n, c, M] -> [n, c, L].

    Work: an L x c x M product (the correlation matrix), a softmax over its n*L*M entries and an L x M x c
    product. A ``scale`` != 1 costs one multiply per map entry with ``impl=naive`` (the map scaled in place,
    as Wang et al.'s and mmcv's code do) and one per element of q with ``impl=sdpa`` (q's contiguous copy
    scaled in place; the kernel runs with scale 1). The sdpa kernel could take the scale itself, but then
    the exact counter would see it on the meta device (PyTorch's math path multiplies q and k by
    sqrt(scale)) and not on a real one (a fused op, counted without it); scaling q ourselves is counted the
    same everywhere. ``impl`` as in the module docstring."""
    if impl == "sdpa":
        return _attend_sdpa(q, k, v, scale)
    affinity = torch.bmm(q.transpose(1, 2), k)  # [n, L, M]
    if scale != 1.0:
        affinity.mul_(scale)
    weights = F.softmax(affinity, dim=-1)
    return torch.bmm(weights, v.transpose(1, 2)).transpose(1, 2)  # [n, c, L]


def _fused_only() -> Any:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION])


def _attend_sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    qq, kk, vv = (t.transpose(1, 2).unsqueeze(1).contiguous() for t in (q, k, v))  # [n, 1, L, c]
    if scale != 1.0:
        qq.mul_(scale)  # on the copy, in place; the kernel itself runs with scale 1 (see attend)
    if qq.is_cuda:
        with _fused_only():
            out = F.scaled_dot_product_attention(qq, kk, vv, scale=1.0)
    else:
        out = F.scaled_dot_product_attention(qq, kk, vv, scale=1.0)
    return out.squeeze(1).transpose(1, 2)  # [n, c, L]


def sdpa_backend(n: int, L: int, M: int, c: int, dtype: torch.dtype, device: torch.device | str) -> str:
    """The kernel ``F.scaled_dot_product_attention`` picks for :func:`attend`'s layout ([n, 1, L, c] queries,
    [n, 1, M, c] keys and values, scale 1) on ``device``: ``FLASH_ATTENTION``, ``EFFICIENT_ATTENTION``,
    ``CUDNN_ATTENTION``, ``MATH``, or ``ERROR`` when (on CUDA, fused kernels only) none can run it."""
    from torch.nn.attention import SDPBackend

    q = torch.empty(n, 1, L, c, dtype=dtype, device=device)
    kv = torch.empty(n, 1, M, c, dtype=dtype, device=device)
    if q.is_cuda:
        with _fused_only():
            choice = torch._fused_sdp_choice(q, kv, kv, scale=1.0)
    else:
        choice = torch._fused_sdp_choice(q, kv, kv, scale=1.0)
    return SDPBackend(int(choice)).name


def attend_cost(n: int, c: int, L: int, M: int, scaled: bool = False, impl: str = "naive") -> Cost:
    """Closed form of :func:`attend`; ``scaled``: with a ``scale`` != 1."""
    total = C.matmul(n, L, c, M) + C.softmax(n * L * M) + C.matmul(n, L, M, c)
    if scaled:
        total = total + C.eltwise(n * L * c if impl == "sdpa" else n * L * M)
    return total


def _inner(channels: int, ratio: int) -> int:
    return max(channels // ratio, 1)


class NonLocalBlock(nn.Module):
    """Embedded-Gaussian non-local block on [B, C, T, H, W] (see module docstring)."""

    def __init__(self, channels: int, ratio: int = 2, subsample: bool | str = "none", bn: bool = True,
                 impl: str = "naive", use_scale: bool = False) -> None:
        super().__init__()
        inner = _inner(channels, ratio)
        self.impl = impl
        self.subsample = _subsample(subsample)
        self.scale = inner**-0.5 if use_scale else 1.0
        self.theta = nn.Conv3d(channels, inner, 1)
        self.phi = nn.Conv3d(channels, inner, 1)
        self.g = nn.Conv3d(channels, inner, 1)
        self.out = nn.Conv3d(inner, channels, 1)
        self.bn = nn.BatchNorm3d(channels) if bn else nn.Identity()
        self.pool = nn.MaxPool3d((1, 2, 2)) if self.subsample != "none" else nn.Identity()

    def keys_values(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """phi(x) and g(x), sub-sampled as ``subsample`` says, flattened to [B, C_i, keys]."""
        if self.subsample == "before":
            pooled = self.pool(x)
            return self.phi(pooled).flatten(2), self.g(pooled).flatten(2)
        return self.pool(self.phi(x)).flatten(2), self.pool(self.g(x)).flatten(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, t, h, w = x.shape
        q = self.theta(x).flatten(2)
        k, v = self.keys_values(x)
        y = attend(q, k, v, self.impl, self.scale).reshape(b, -1, t, h, w)
        return x + self.bn(self.out(y))


def _check(shape: VideoShape, ratio: int, subsample: str, bn: bool, impl: str = "naive", use_scale: bool = False) -> None:
    if _subsample(subsample) != "none" and (shape.H < 2 or shape.W < 2):
        raise UsageError(f"nl with subsample={_subsample(subsample)} needs H >= 2 and W >= 2")


def _keys(shape: VideoShape, subsample: bool | str) -> int:
    return shape.T * (shape.H // 2) * (shape.W // 2) if _subsample(subsample) != "none" else shape.thw


def nl_cost(shape: VideoShape, ratio: int = 2, subsample: bool | str = "none", bn: bool = True, impl: str = "naive",
            use_scale: bool = False) -> Cost:
    b, c, n = shape.B, shape.C, shape.thw
    ci = _inner(c, ratio)
    mode = _subsample(subsample)
    m = _keys(shape, mode)
    total = C.conv(b * ci * n, c, (1, 1, 1), True)  # theta
    if mode == "before":
        total = total + C.pool(b * c * m, 4) + C.conv(b * ci * m, c, (1, 1, 1), True) * 2  # pool x; phi, g
    else:
        total = total + C.conv(b * ci * n, c, (1, 1, 1), True) * 2  # phi, g at every position
        if mode == "after":
            total = total + C.pool(b * ci * m, 4) * 2
    total = total + attend_cost(b, ci, n, m, use_scale and ci > 1, impl)  # C_i = 1: the scale is 1, no multiply
    total = total + C.conv(b * c * n, ci, (1, 1, 1), True)
    if bn:
        total = total + C.batchnorm(b * c * n)
    return total + C.eltwise(b * c * n)


def nl_params(shape: VideoShape, ratio: int = 2, subsample: bool | str = "none", bn: bool = True, impl: str = "naive",
              use_scale: bool = False) -> int:
    """The same for every ``subsample`` and ``use_scale``: pooling and the scale have no parameters."""
    c = shape.C
    ci = _inner(c, ratio)
    return 3 * (c * ci + ci) + (ci * c + c) + (2 * c if bn else 0)


def nl_terms(shape: VideoShape, ratio: int = 2, subsample: bool | str = "none", bn: bool = True, impl: str = "naive",
             use_scale: bool = False) -> dict[str, Any]:
    """BANet Eq. (5), F_3D = C_in (THW)^2 x 2 per clip, times the batch; C_in = inner channels.

    With subsample=after or before the keys shrink to T(H/2)(W/2) and the counted product is smaller than
    Eq. (5)."""
    ci = _inner(shape.C, ratio)
    f3d = ci * shape.thw**2 * 2
    return {
        "affinity_flops": shape.B * f3d,
        "affinity_flops_formula": "B x C_in (THW)^2 x 2  (BANet Eq. 5)",
        "affinity_flops_counted_form": 2 * shape.B * ci * shape.thw * _keys(shape, subsample),
        "c_in": ci,
    }


def nl_largest(shape: VideoShape, ratio: int = 2, subsample: bool | str = "none", bn: bool = True, impl: str = "naive",
               use_scale: bool = False) -> tuple[str, int]:
    """The largest tensor the call creates, in elements: the (THW) x (keys) map (naive), or with sdpa the
    attention output, the input-sized W_z output being larger."""
    if impl == "sdpa":
        return ("W_z output B x C x THW", shape.numel)
    return ("attention map B x THW x keys", shape.B * shape.thw * _keys(shape, subsample))


def attend_memory(n: int, c: int, L: int, M: int, p: Precision, held: list[tuple[str, int]], impl: str) -> list[Phase]:
    """Phases of :func:`attend` on q [n, c, L] and k, v [n, c, M] (written in the run's dtype), with the
    tensors in ``held`` (q, k, v among them) alive throughout. Naive: the map and its softmax output are
    alive together, and still alive while the second product writes its output (they are locals until
    :func:`attend` returns); under CUDA autocast the softmax output is fp32 (from an fp32 copy of a bf16
    map, alive while softmax runs) and the second product casts it back. A scale multiplies the map in
    place (no new tensor). sdpa: contiguous copies of q, k, v and the output (and, on CUDA, the fp32
    log-sum-exp)."""
    out = ("attention output", n * L * c * p.low)
    if impl == "sdpa":
        copies = [("q laid out for sdpa", n * L * c * p.low), ("k laid out for sdpa", n * M * c * p.low),
                  ("v laid out for sdpa", n * M * c * p.low)]
        lse = [("log-sum-exp (fp32)", n * L * FP32)] if p.device_type == "cuda" else []
        return [("fused attention", held + copies + [out] + lse)]
    elements = n * L * M
    amap = (f"affinity map {n}x{L}x{M}", elements * p.low)
    smax = ("softmax output", elements * p.softmax)
    second = held + [amap, smax]
    if p.softmax != p.low:
        second.append((f"softmax output cast to {p.dtype}", elements * p.low))
    copy = [("map converted to fp32 for softmax", elements * p.softmax_copy)] if p.softmax_copy else []
    return [("softmax", held + [amap] + copy + [smax]), ("second product", second + [out])]


def nl_memory(shape: VideoShape, p: Precision, ratio: int = 2, subsample: bool | str = "none", bn: bool = True,
              impl: str = "naive", use_scale: bool = False) -> Peak:
    """Peak working memory of one call (see :mod:`attnbench.flops.memory`). With ``subsample=before`` the
    pooled x (in x's dtype) and its max-pooling indices exist only while phi and g run (a local of
    :meth:`NonLocalBlock.keys_values`)."""
    b, c, n = shape.B, shape.C, shape.thw
    mode = _subsample(subsample)
    ci, m = _inner(c, ratio), _keys(shape, mode)
    lo, xn = p.low, b * c * n
    cast = [("x cast for the projection", xn * lo)] if p.autocast else []
    q, k, v = ("theta(x) = q", b * ci * n * lo), ("phi(x) = k", b * ci * m * lo), ("g(x) = v", b * ci * m * lo)
    phases: list[Phase] = [("theta projection", cast + [q])]
    if mode == "after":
        full, idx = b * ci * n * lo, b * ci * m * 8
        phases.append(("pooling phi(x)", [q, ("phi(x) before pooling", full), k, ("pooling indices (int64)", idx)]))
        phases.append(("pooling g(x)", [q, k, ("g(x) before pooling", full), v, ("pooling indices (int64)", idx)]))
    elif mode == "before":
        pooled = ("pooled x", b * c * m * p.act)
        phases.append(("pooling x", [q, pooled, ("pooling indices (int64)", b * c * m * 8)]))
        pcast = [("pooled x cast for the projection", b * c * m * lo)] if p.autocast else []
        phases.append(("g projection", [q, pooled] + pcast + [k, v]))
    else:
        phases.append(("g projection", cast + [q, k, v]))
    qkv = [q, k, v]
    phases += attend_memory(b, ci, n, m, p, qkv, impl)
    o = ("attention output", b * n * ci * lo)
    z = ("W_z output", xn * lo)
    result = ("x + ... (output)", xn * (FP32 if p.autocast else lo))
    if bn:
        phases.append(("batch norm", qkv + [o, z, ("batch norm output", xn * lo)]))
        phases.append(("residual add", qkv + [o, ("batch norm output", xn * lo), result]))
    else:
        phases.append(("residual add", qkv + [o, z, result]))
    return peak(phases)


register_block(
    BlockSpec(
        name="nl",
        title="Non-local block (embedded Gaussian)",
        paper="Wang et al. 2018; baseline in BANet, W3, EAM",
        build=lambda shape, **o: NonLocalBlock(shape.C, **o),
        cost=nl_cost,
        params=nl_params,
        terms=nl_terms,
        check=_check,
        largest_intermediate=nl_largest,
        memory=nl_memory,
        options=(
            Option("ratio", int, 2, "inner channels C_i = C // ratio", minimum=1),
            SUBSAMPLE_OPTION,
            Option("bn", bool, True, "batch norm after the output projection"),
            Option("impl", str, "naive", "attention kernel: naive (materialise the map) or sdpa (fused)", IMPLS, kernel=True),
            Option("use_scale", bool, False, "scale the affinity by 1/sqrt(C_i) (Wang et al.'s code, mmcv; not TSM)"),
        ),
        presets=(
            Preset("banet", VideoShape(1, 96, 16, 28, 28), "BANet Sec. III-A: C=96, T=16, H=W=28 (Table VI)"),
            Preset("tsm-r50-res4", VideoShape(1, 1024, 8, 14, 14), "W3 Table 6: non-local in TSM-R50 res4, 8 frames"),
        ),
    )
)
