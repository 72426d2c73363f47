"""Non-local block (Wang et al., CVPR 2018), embedded-Gaussian form, the baseline of BANet, W3 and EAM.

z = x + BN(W_z( softmax(theta(x)^T phi(x)) g(x) )), with theta, phi, g and W_z 1x1x1 convolutions.

Options: ``ratio`` (inner channels C_i = C // ratio, the original uses 2), ``subsample`` (a 1x2x2 max-pool
on phi and g, as in Wang et al.'s efficient variant), ``bn`` (batch norm after W_z) and ``impl``:

* ``naive`` materialises the (THW) x (keys) affinity map and its softmax, as the papers' code does;
* ``sdpa`` calls ``F.scaled_dot_product_attention`` with ``scale=1.0`` (the embedded Gaussian has no
  1/sqrt(d)). The arithmetic is the same, so the closed-form FLOPs are the same; a fused kernel never
  holds the map, so the memory is not. q, k and v are laid out [n, 1, L, c] contiguous first: with a
  non-contiguous last dimension PyTorch silently falls back to its math kernel, which does hold the map.
  On CUDA only the fused backends (flash, memory-efficient, cuDNN) are allowed, so a shape none of them
  takes fails with an error instead of quietly becoming the naive computation.

The default, ``subsample=False``, is the configuration BANet's Eq. (5) assumes: the correlation matrix is
(THW) x (THW), so its FLOPs are F_3D = C_in (THW)^2 x 2 with C_in = C_i.
"""

from __future__ import annotations

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


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, impl: str = "naive") -> torch.Tensor:
    """Dot-product attention over positions: q [n, c, L], k and v [n, c, M] -> [n, c, L].

    Work: an L x c x M product (the correlation matrix), a softmax over its n*L*M entries and an
    L x M x c product. ``impl`` as in the module docstring."""
    if impl == "sdpa":
        return _attend_sdpa(q, k, v)
    affinity = torch.bmm(q.transpose(1, 2), k)  # [n, L, M]
    weights = F.softmax(affinity, dim=-1)
    return torch.bmm(weights, v.transpose(1, 2)).transpose(1, 2)  # [n, c, L]


def _fused_only() -> Any:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION])


def _attend_sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    qq, kk, vv = (t.transpose(1, 2).unsqueeze(1).contiguous() for t in (q, k, v))  # [n, 1, L, c]
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


def attend_cost(n: int, c: int, L: int, M: int) -> Cost:
    """Closed form of :func:`attend`."""
    return C.matmul(n, L, c, M) + C.softmax(n * L * M) + C.matmul(n, L, M, c)


def _inner(channels: int, ratio: int) -> int:
    return max(channels // ratio, 1)


class NonLocalBlock(nn.Module):
    """Embedded-Gaussian non-local block on [B, C, T, H, W] (see module docstring)."""

    def __init__(self, channels: int, ratio: int = 2, subsample: bool = False, bn: bool = True, impl: str = "naive") -> None:
        super().__init__()
        inner = _inner(channels, ratio)
        self.impl = impl
        self.theta = nn.Conv3d(channels, inner, 1)
        self.phi = nn.Conv3d(channels, inner, 1)
        self.g = nn.Conv3d(channels, inner, 1)
        self.out = nn.Conv3d(inner, channels, 1)
        self.bn = nn.BatchNorm3d(channels) if bn else nn.Identity()
        self.pool = nn.MaxPool3d((1, 2, 2)) if subsample else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, t, h, w = x.shape
        q = self.theta(x).flatten(2)
        k = self.pool(self.phi(x)).flatten(2)
        v = self.pool(self.g(x)).flatten(2)
        y = attend(q, k, v, self.impl).reshape(b, -1, t, h, w)
        return x + self.bn(self.out(y))


def _check(shape: VideoShape, ratio: int, subsample: bool, bn: bool, impl: str = "naive") -> None:
    if subsample and (shape.H < 2 or shape.W < 2):
        raise UsageError("nl with subsample=true needs H >= 2 and W >= 2")


def _keys(shape: VideoShape, subsample: bool) -> int:
    return shape.T * (shape.H // 2) * (shape.W // 2) if subsample else shape.thw


def nl_cost(shape: VideoShape, ratio: int = 2, subsample: bool = False, bn: bool = True, impl: str = "naive") -> Cost:
    b, c, n = shape.B, shape.C, shape.thw
    ci = _inner(c, ratio)
    m = _keys(shape, subsample)
    total = C.conv(b * ci * n, c, (1, 1, 1), True) * 3
    if subsample:
        total = total + C.pool(b * ci * m, 4) * 2
    total = total + attend_cost(b, ci, n, m)
    total = total + C.conv(b * c * n, ci, (1, 1, 1), True)
    if bn:
        total = total + C.batchnorm(b * c * n)
    return total + C.eltwise(b * c * n)


def nl_params(shape: VideoShape, ratio: int = 2, subsample: bool = False, bn: bool = True, impl: str = "naive") -> int:
    c = shape.C
    ci = _inner(c, ratio)
    return 3 * (c * ci + ci) + (ci * c + c) + (2 * c if bn else 0)


def nl_terms(shape: VideoShape, ratio: int = 2, subsample: bool = False, bn: bool = True, impl: str = "naive") -> dict[str, Any]:
    """BANet Eq. (5), F_3D = C_in (THW)^2 x 2 per clip, times the batch; C_in = inner channels.

    With subsample=true the keys shrink to T(H/2)(W/2) and the counted product is smaller than Eq. (5)."""
    ci = _inner(shape.C, ratio)
    f3d = ci * shape.thw**2 * 2
    return {
        "affinity_flops": shape.B * f3d,
        "affinity_flops_formula": "B x C_in (THW)^2 x 2  (BANet Eq. 5)",
        "affinity_flops_counted_form": 2 * shape.B * ci * shape.thw * _keys(shape, subsample),
        "c_in": ci,
    }


def nl_largest(shape: VideoShape, ratio: int = 2, subsample: bool = False, bn: bool = True, impl: str = "naive") -> tuple[str, int]:
    """The largest tensor the call creates, in elements: the (THW) x (keys) map (naive), or with sdpa the
    attention output, the input-sized W_z output being larger."""
    if impl == "sdpa":
        return ("W_z output B x C x THW", shape.numel)
    return ("attention map B x THW x keys", shape.B * shape.thw * _keys(shape, subsample))


def attend_memory(n: int, c: int, L: int, M: int, p: Precision, held: list[tuple[str, int]], impl: str) -> list[Phase]:
    """Phases of :func:`attend` on q [n, c, L] and k, v [n, c, M] (written in the run's dtype), with the
    tensors in ``held`` (q, k, v among them) alive throughout. Naive: the map and its softmax output are
    alive together, and still alive while the second product writes its output (they are locals until
    :func:`attend` returns); under CUDA autocast the softmax output is fp32 and the second product casts it
    back. sdpa: contiguous copies of q, k, v and the output (and, on CUDA, the fp32 log-sum-exp)."""
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
    return [("softmax", held + [amap, smax]), ("second product", second + [out])]


def nl_memory(shape: VideoShape, p: Precision, ratio: int = 2, subsample: bool = False, bn: bool = True,
              impl: str = "naive") -> Peak:
    """Peak working memory of one call (see :mod:`attnbench.flops.memory`)."""
    b, c, n = shape.B, shape.C, shape.thw
    ci, m = _inner(c, ratio), _keys(shape, subsample)
    lo, xn = p.low, b * c * n
    cast = [("x cast for the projection", xn * lo)] if p.autocast else []
    q, k, v = ("theta(x) = q", b * ci * n * lo), ("phi(x) = k", b * ci * m * lo), ("g(x) = v", b * ci * m * lo)
    phases: list[Phase] = [("theta projection", cast + [q])]
    if subsample:
        full, idx = b * ci * n * lo, b * ci * m * 8
        phases.append(("pooling phi(x)", [q, ("phi(x) before pooling", full), k, ("pooling indices (int64)", idx)]))
        phases.append(("pooling g(x)", [q, k, ("g(x) before pooling", full), v, ("pooling indices (int64)", idx)]))
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
            Option("subsample", bool, False, "1x2x2 max-pool on phi and g (off: BANet Eq. 5)"),
            Option("bn", bool, True, "batch norm after the output projection"),
            Option("impl", str, "naive", "attention kernel: naive (materialise the map) or sdpa (fused)", IMPLS, kernel=True),
        ),
        presets=(
            Preset("banet", VideoShape(1, 96, 16, 28, 28), "BANet Sec. III-A: C=96, T=16, H=W=28 (Table VI)"),
            Preset("tsm-r50-res4", VideoShape(1, 1024, 8, 14, 14), "W3 Table 6: non-local in TSM-R50 res4, 8 frames"),
        ),
    )
)
