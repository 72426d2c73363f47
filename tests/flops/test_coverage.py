"""Op coverage of the exact counter: every handle against a count written out by hand on a tiny tensor.

Convention (``attnbench.flops.cost``): a multiply-accumulate of a convolution, linear layer or matrix product
is one ``mac`` (2 FLOPs); any other arithmetic op is one ``op`` (1 FLOP). Shapes used below:
x3 = (2, 4, 6): 48 elements; x4 = (2, 4, 6, 6): 288; x5 = (2, 4, 4, 6, 6): 1152. Everything runs on the
``meta`` device (no memory, no arithmetic), except ``histc``, which has no meta kernel.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attnbench.flops.cost import Cost
from attnbench.flops.count import ExactCounter, count

aten = torch.ops.aten


def M(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.empty(*shape, device="meta", dtype=dtype)


def idx(*shape: int) -> torch.Tensor:
    return torch.zeros(*shape, dtype=torch.long, device="meta")


def x3() -> torch.Tensor:
    return M(2, 4, 6)


def x4() -> torch.Tensor:
    return M(2, 4, 6, 6)


def x5() -> torch.Tensor:
    return M(2, 4, 4, 6, 6)


def run(fn: Callable[[], Any]) -> ExactCounter:
    counter = ExactCounter()
    with torch.no_grad(), counter:
        fn()
    return counter


def cells(**kw: int) -> Cost:
    """cells(matmul_mac=840, softmax_op=1050) -> Cost({("matmul", "mac"): 840, ("softmax", "op"): 1050})."""
    return Cost({tuple(k.rsplit("_", 1)): v for k, v in kw.items()})  # type: ignore[misc]


# (name, call, expected cost), the arithmetic beside each expected value
CASES: list[tuple[str, Callable[[], Any], Cost]] = [
    # --- normalisation: 5 per element with statistics (+1 weight, +1 bias), batch norm in eval 2 ---
    ("layer_norm affine", lambda: F.layer_norm(M(2, 5, 6), (6,), M(6), M(6)), cells(normalisation_op=60 * 7)),
    ("layer_norm plain", lambda: F.layer_norm(M(2, 5, 6), (6,)), cells(normalisation_op=60 * 5)),
    ("group_norm", lambda: F.group_norm(x4(), 2, M(4), M(4)), cells(normalisation_op=288 * 7)),
    # instance norm runs as a training batch norm over N x C channels: its statistics are computed
    ("instance_norm", lambda: F.instance_norm(x4()), cells(normalisation_op=288 * 5)),
    ("instance_norm affine", lambda: F.instance_norm(x4(), weight=M(4), bias=M(4)), cells(normalisation_op=288 * 7)),
    ("batch_norm training", lambda: F.batch_norm(x4(), M(4), M(4), M(4), M(4), training=True),
     cells(normalisation_op=288 * 7)),
    ("batch_norm eval", lambda: F.batch_norm(x4(), M(4), M(4), M(4), M(4)), cells(normalisation_op=288 * 2)),
    # F.rms_norm decomposes: pow 60, mean 60 (a reduction), + eps 10, rsqrt 10, mul 60
    ("rms_norm functional", lambda: F.rms_norm(M(2, 5, 6), (6,)), cells(elementwise_op=60 + 10 + 10 + 60, pooling_op=60)),
    # --- softmax family: 5 per element ---
    ("softmax", lambda: F.softmax(x3(), -1), cells(softmax_op=5 * 48)),
    ("log_softmax", lambda: F.log_softmax(x3(), -1), cells(softmax_op=5 * 48)),
    ("_safe_softmax", lambda: aten._safe_softmax(x3(), -1), cells(softmax_op=5 * 48)),
    # --- activations: 1 per output element; glu: sigmoid and multiply on half the input ---
    ("glu", lambda: F.glu(x3(), 1), cells(elementwise_op=2 * 24)),
    ("prelu", lambda: F.prelu(x3(), M(4)), cells(elementwise_op=48)),
    # --- products: einsum, matmul and linear reach the counter as bmm / mm / mv / dot / addmm ---
    # q [6 heads x 5 x 4] . k [6 x 7 x 4]: 6 x 5 x 4 x 7 = 840 MACs
    ("einsum scores", lambda: torch.einsum("bhld,bhmd->bhlm", M(2, 3, 5, 4), M(2, 3, 7, 4)), cells(matmul_mac=840)),
    ("einsum weights x v", lambda: torch.einsum("bhlm,bhmd->bhld", M(2, 3, 5, 7), M(2, 3, 7, 4)), cells(matmul_mac=840)),
    # an outer product multiplies and never accumulates: 12 single ops, no MACs
    ("einsum outer", lambda: torch.einsum("i,j->ij", M(3), M(4)), cells(elementwise_op=12)),
    ("matmul 2d x 1d (mv)", lambda: torch.matmul(M(3, 4), M(4)), cells(matmul_mac=3 * 4)),
    ("matmul 1d x 1d (dot)", lambda: torch.matmul(M(4), M(4)), cells(matmul_mac=4)),
    ("matmul 4d x 4d (bmm)", lambda: torch.matmul(M(2, 3, 5, 4), M(2, 3, 4, 6)), cells(matmul_mac=6 * 5 * 4 * 6)),
    ("matmul 4d x 2d (mm)", lambda: torch.matmul(M(2, 3, 5, 4), M(4, 6)), cells(matmul_mac=30 * 4 * 6)),
    ("tensordot", lambda: torch.tensordot(M(3, 4, 5), M(4, 5, 6), dims=2), cells(matmul_mac=3 * 20 * 6)),
    # functional linear on 10 rows: 10 x 4 x 6 MACs + 60 bias adds (outside nn.Linear: matmul / elementwise)
    ("F.linear 3d", lambda: F.linear(M(2, 5, 4), M(6, 4), M(6)), cells(matmul_mac=240, elementwise_op=60)),
    ("F.linear non-contiguous", lambda: F.linear(M(5, 2, 4).transpose(0, 1), M(6, 4), M(6)),
     cells(matmul_mac=240, elementwise_op=60)),
    # baddbmm: 2 x 3 x 4 x 5 = 120 MACs; 30 outputs: the add (beta != 0), beta's scale, alpha's scale
    ("baddbmm", lambda: torch.baddbmm(M(2, 3, 5), M(2, 3, 4), M(2, 4, 5)), cells(matmul_mac=120, elementwise_op=30)),
    ("baddbmm beta=0 alpha=0.5", lambda: torch.baddbmm(M(2, 3, 5), M(2, 3, 4), M(2, 4, 5), beta=0, alpha=0.5),
     cells(matmul_mac=120, elementwise_op=30)),
    ("baddbmm beta=0.5", lambda: torch.baddbmm(M(2, 3, 5), M(2, 3, 4), M(2, 4, 5), beta=0.5),
     cells(matmul_mac=120, elementwise_op=60)),
    ("baddbmm beta=0", lambda: torch.baddbmm(M(2, 3, 5), M(2, 3, 4), M(2, 4, 5), beta=0), cells(matmul_mac=120)),
    ("addbmm", lambda: torch.addbmm(M(3, 5), M(2, 3, 4), M(2, 4, 5)), cells(matmul_mac=120, elementwise_op=15)),
    ("addmv", lambda: torch.addmv(M(3), M(3, 4), M(4)), cells(matmul_mac=12, elementwise_op=3)),
    # --- convolutions: output elements x C_in/groups x taps; transposed: input elements x C_out/groups x taps ---
    # conv1d out (2, 8, 4) = 64: 64 x 4 x 3 = 768 MACs, 64 bias adds
    ("conv1d", lambda: F.conv1d(x3(), M(8, 4, 3), M(8)), cells(convolution_mac=768, convolution_op=64)),
    # conv2d groups 2, out (2, 6, 6, 6) = 432: 432 x 2 x 9
    ("conv2d grouped", lambda: F.conv2d(x4(), M(6, 2, 3, 3), padding=1, groups=2), cells(convolution_mac=432 * 2 * 9)),
    # conv3d groups 2, out (2, 8, 2, 4, 4) = 512: 512 x 2 x 27
    ("conv3d grouped", lambda: F.conv3d(x5(), M(8, 2, 3, 3, 3), groups=2), cells(convolution_mac=512 * 2 * 27)),
    # transposed 1d: 48 inputs x 3 outputs per group x 3 taps
    ("conv_transpose1d", lambda: F.conv_transpose1d(x3(), M(4, 3, 3)), cells(convolution_mac=48 * 3 * 3)),
    ("conv_transpose2d grouped", lambda: F.conv_transpose2d(x4(), M(4, 3, 3, 3), groups=2),
     cells(convolution_mac=288 * 3 * 9)),
    # transposed 3d stride 2, bias: out (2, 2, 8, 12, 12) = 4608 bias adds
    ("conv_transpose3d", lambda: F.conv_transpose3d(x5(), M(4, 2, 2, 2, 2), M(2), stride=2),
     cells(convolution_mac=1152 * 2 * 8, convolution_op=4608)),
    # --- pooling: outputs x window ---
    ("max_pool1d", lambda: F.max_pool1d(x3(), 2), cells(pooling_op=24 * 2)),
    ("max_pool2d", lambda: F.max_pool2d(x4(), 2), cells(pooling_op=72 * 4)),
    ("max_pool3d", lambda: F.max_pool3d(x5(), 2), cells(pooling_op=144 * 8)),
    ("avg_pool1d", lambda: F.avg_pool1d(x3(), 2), cells(pooling_op=24 * 2)),
    ("avg_pool2d 3x3 pad 1", lambda: F.avg_pool2d(x4(), 3, 1, 1), cells(pooling_op=288 * 9)),
    ("avg_pool3d", lambda: F.avg_pool3d(x5(), 2), cells(pooling_op=144 * 8)),
    # adaptive 6 -> 4: windows [0,2) [1,3) [3,5) [4,6): 8 per row; 4 -> 3: [0,2) [1,3) [2,4): 6; 6 -> 3: 6
    ("adaptive_avg_pool1d", lambda: F.adaptive_avg_pool1d(x3(), 4), cells(pooling_op=8 * 8)),
    ("adaptive_avg_pool2d", lambda: F.adaptive_avg_pool2d(x4(), 4), cells(pooling_op=8 * 8 * 8)),
    ("adaptive_avg_pool3d", lambda: F.adaptive_avg_pool3d(x5(), 3), cells(pooling_op=8 * 6 * 6 * 6)),
    ("adaptive_max_pool1d", lambda: F.adaptive_max_pool1d(x3(), 4), cells(pooling_op=8 * 8)),
    ("adaptive_max_pool2d", lambda: F.adaptive_max_pool2d(x4(), 4), cells(pooling_op=8 * 8 * 8)),
    ("adaptive_max_pool3d", lambda: F.adaptive_max_pool3d(x5(), 3), cells(pooling_op=8 * 6 * 6 * 6)),
    # lp pool: pow on the input 288; avg pool 72 x 4; sign, abs, relu, mul, mul, pow on 72 outputs
    ("lp_pool2d", lambda: F.lp_pool2d(x4(), 2, 2), cells(pooling_op=288, elementwise_op=288 + 6 * 72)),
    ("fractional_max_pool2d", lambda: F.fractional_max_pool2d(x4(), 2, output_size=3), cells(pooling_op=72 * 4)),
    ("fractional_max_pool3d", lambda: F.fractional_max_pool3d(x5(), 2, output_size=2), cells(pooling_op=64 * 8)),
    # --- interpolation: nearest free; 2 n - 1 per output for n neighbours ---
    ("interpolate nearest", lambda: F.interpolate(x4(), scale_factor=2), Cost()),
    ("interpolate nearest-exact", lambda: F.interpolate(x4(), scale_factor=2, mode="nearest-exact"), Cost()),
    ("interpolate linear", lambda: F.interpolate(x3(), scale_factor=2, mode="linear"), cells(elementwise_op=96 * 3)),
    ("interpolate bilinear", lambda: F.interpolate(x4(), scale_factor=2, mode="bilinear"), cells(elementwise_op=1152 * 7)),
    ("interpolate bicubic", lambda: F.interpolate(x4(), scale_factor=2, mode="bicubic"), cells(elementwise_op=1152 * 31)),
    ("interpolate trilinear", lambda: F.interpolate(x5(), scale_factor=2, mode="trilinear"),
     cells(elementwise_op=9216 * 15)),
    ("grid_sample bilinear", lambda: F.grid_sample(x4(), M(2, 3, 3, 2), align_corners=False), cells(elementwise_op=72 * 7)),
    ("grid_sample nearest", lambda: F.grid_sample(x4(), M(2, 3, 3, 2), mode="nearest", align_corners=False), Cost()),
    # --- reductions, scans, statistics: per input element ---
    ("cumsum", lambda: torch.cumsum(x3(), -1), cells(pooling_op=48)),
    ("cumprod", lambda: torch.cumprod(x3(), -1), cells(pooling_op=48)),
    ("cummax", lambda: torch.cummax(x3(), -1), cells(pooling_op=48)),
    ("logsumexp", lambda: torch.logsumexp(x3(), -1), cells(pooling_op=4 * 48)),
    ("var", lambda: torch.var(x3(), -1), cells(pooling_op=4 * 48)),
    ("std", lambda: torch.std(x3(), -1), cells(pooling_op=4 * 48)),
    ("var_mean", lambda: torch.var_mean(x3(), -1), cells(pooling_op=4 * 48)),
    ("std_mean", lambda: torch.std_mean(x3(), -1), cells(pooling_op=4 * 48)),
    ("vector_norm p=2", lambda: torch.linalg.vector_norm(x3(), dim=-1), cells(pooling_op=2 * 48)),
    ("vector_norm p=1", lambda: torch.linalg.vector_norm(x3(), 1, dim=-1), cells(pooling_op=2 * 48)),
    ("vector_norm p=inf", lambda: torch.linalg.vector_norm(x3(), float("inf"), dim=-1), cells(pooling_op=2 * 48)),
    ("vector_norm p=3", lambda: torch.linalg.vector_norm(x3(), 3, dim=-1), cells(pooling_op=3 * 48)),
    ("torch.norm", lambda: torch.norm(x3(), dim=-1), cells(pooling_op=2 * 48)),
    ("prod", lambda: x3().prod(-1), cells(pooling_op=48)),
    ("argmax", lambda: x3().argmax(-1), cells(pooling_op=48)),
    # --- compositions: each arithmetic op of the composition ---
    ("addcmul value=0.5", lambda: torch.addcmul(x3(), x3(), x3(), value=0.5), cells(elementwise_op=48 * 3)),
    ("addcdiv", lambda: torch.addcdiv(x3(), x3(), x3()), cells(elementwise_op=48 * 2)),
    ("lerp", lambda: torch.lerp(x3(), x3(), 0.3), cells(elementwise_op=48 * 3)),
    ("where", lambda: torch.where(x3() > 0, x3(), 0.0), cells(elementwise_op=48 + 48)),  # the compare, the select
    ("clamp", lambda: x3().clamp(0, 1), cells(elementwise_op=48)),
    ("masked_fill", lambda: x3().masked_fill(M(2, 4, 6, dtype=torch.bool), 0.0), cells(elementwise_op=48)),
    ("masked_fill_ in place", lambda: x3().masked_fill_(M(2, 4, 6, dtype=torch.bool), 0.0), cells(elementwise_op=48)),
    # --- dropout: free in eval; training: the mask scaled by 1/(1-p), the multiply ---
    ("dropout eval", lambda: F.dropout(x3(), training=False), Cost()),
    ("dropout training", lambda: F.dropout(x3(), training=True), cells(elementwise_op=48 * 2)),
    ("native_dropout", lambda: aten.native_dropout(x3(), 0.5, True), cells(elementwise_op=48 * 2)),
    # --- indexing: free unless it accumulates ---
    ("embedding", lambda: F.embedding(idx(2, 3), M(10, 4)), Cost()),
    ("scatter", lambda: x3().scatter(2, idx(2, 4, 6), x3()), Cost()),
    ("scatter_add", lambda: x3().scatter_add(2, idx(2, 4, 6), x3()), cells(elementwise_op=48)),
    ("scatter_reduce", lambda: x3().scatter_reduce(2, idx(2, 4, 6), x3(), "amax"), cells(elementwise_op=48)),
    ("index_add", lambda: x3().index_add(0, idx(2), x3()), cells(elementwise_op=48)),
    ("index_put accumulate", lambda: x3().index_put((idx(2),), x3(), accumulate=True), cells(elementwise_op=2 * 24)),
    ("index_put", lambda: x3().index_put((idx(2),), x3()), Cost()),
    # F.fold (col2im): every column element added into the output: 2 x 16 x 25
    ("fold", lambda: F.fold(M(2, 16, 25), 6, 2), cells(elementwise_op=800)),
    ("unfold", lambda: F.unfold(x4(), 2), Cost()),
    ("pixel_shuffle", lambda: F.pixel_shuffle(M(1, 8, 3, 3), 2), Cost()),
    ("pad reflect", lambda: F.pad(x4(), (1, 1, 1, 1), mode="reflect"), Cost()),
    ("tril", lambda: torch.tril(M(5, 5)), Cost()),
]

ACTIVATIONS = {
    "gelu": F.gelu, "gelu tanh": lambda x: F.gelu(x, approximate="tanh"), "silu": F.silu, "mish": F.mish,
    "hardswish": F.hardswish, "hardsigmoid": F.hardsigmoid, "elu": F.elu, "selu": F.selu, "celu": F.celu,
    "softplus": F.softplus, "leaky_relu": F.leaky_relu, "relu6": F.relu6, "relu": F.relu, "sigmoid": torch.sigmoid,
    "tanh": torch.tanh, "logsigmoid": F.logsigmoid, "hardshrink": F.hardshrink, "softshrink": F.softshrink,
    "threshold": lambda x: F.threshold(x, 0.1, 0.0), "exp": torch.exp, "rsqrt": torch.rsqrt, "erf": torch.erf,
}


@pytest.mark.parametrize("name,call,expected", CASES, ids=[c[0] for c in CASES])
def test_handle_by_hand(name: str, call: Callable[[], Any], expected: Cost) -> None:
    counter = run(call)
    assert not counter.unhandled, dict(counter.unhandled)
    assert counter.cost == expected, (counter.cost, counter.per_op)


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_is_one_op_per_element(name: str) -> None:
    """Whether tagged pointwise (gelu, silu, mish ...) or handled (hardswish, log_sigmoid, prelu): 1 per
    element, an activation counted as one function evaluation like exp."""
    counter = run(lambda: ACTIVATIONS[name](x3()))
    assert not counter.unhandled
    assert counter.cost == cells(elementwise_op=48)


# --- scaled dot-product attention, every backend op, called directly --------------------------------------
# q [2, 3, 5, 4] (6 heads of 5 queries, dim 4), k and v [2, 3, 7, 4]: the two products 6 x 5 x 4 x 7 = 840
# MACs each, softmax 5 x 210 scores = 1050.
ATTENTION = cells(matmul_mac=2 * 840, softmax_op=5 * 210)
# fused backward: 5 products of 840 MACs; P = exp(S - lse) and dS = P (dP - D): 4 x 210; D = rowsum(dO * O):
# 2 x 6 x 5 x 4 = 240
ATTENTION_BACKWARD = cells(matmul_mac=5 * 840, softmax_op=4 * 210 + 2 * 120)


def _qkv() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return M(2, 3, 5, 4), M(2, 3, 7, 4), M(2, 3, 7, 4)


def _bshe() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return M(2, 5, 3, 4), M(2, 7, 3, 4), M(2, 7, 3, 4)  # the low-level kernels' [B, L, H, E] layout


SDPA_FORWARD = {
    "flash": lambda: aten._scaled_dot_product_flash_attention(*_qkv()),
    "efficient": lambda: aten._scaled_dot_product_efficient_attention(*_qkv(), None, True),
    "cudnn": lambda: aten._scaled_dot_product_cudnn_attention(*_qkv(), None, True),
    "flash for cpu": lambda: aten._scaled_dot_product_flash_attention_for_cpu(*_qkv()),
    "overrideable": lambda: aten._scaled_dot_product_fused_attention_overrideable(*_qkv()),
    "math (decomposed)": lambda: aten._scaled_dot_product_attention_math(*_qkv(), scale=1.0),
    "F.sdpa on meta (math path)": lambda: F.scaled_dot_product_attention(*_qkv(), scale=1.0),
    "_flash_attention_forward": lambda: aten._flash_attention_forward(*_bshe(), None, None, 5, 7, 0.0, False, False),
    "_efficient_attention_forward": lambda: aten._efficient_attention_forward(*_bshe(), None, None, None, 5, 7, 0.0, 0, True),
}


def _grad_out() -> tuple[torch.Tensor, ...]:
    q, k, v = _qkv()
    return M(2, 3, 5, 4), q, k, v, M(2, 3, 5, 4)  # grad_out, q, k, v, out


SDPA_BACKWARD = {
    "flash": lambda: aten._scaled_dot_product_flash_attention_backward(
        *_grad_out(), M(2, 3, 5), None, None, 5, 7, 0.0, False, M(2), M(())),
    "efficient": lambda: aten._scaled_dot_product_efficient_attention_backward(
        *_grad_out()[:4], None, M(2, 3, 5, 4), M(2, 3, 32), M(()), M(()), 0.0, [True, True, True, False]),
    "cudnn": lambda: aten._scaled_dot_product_cudnn_attention_backward(
        *_grad_out(), M(2, 3, 5, 1), M(()), M(()), None, None, None, 5, 7, 0.0, False),
    "flash for cpu": lambda: aten._scaled_dot_product_flash_attention_for_cpu_backward(
        *_grad_out(), M(2, 3, 5), 0.0, False),
    "overrideable": lambda: aten._scaled_dot_product_fused_attention_overrideable_backward(
        *_grad_out()[:4], None, [True, True, True, False], M(2, 3, 5, 4), M(2, 3, 5), None, None, 5, 7, 0.0, False,
        M(()), M(())),
    "_flash_attention_backward": lambda: aten._flash_attention_backward(
        M(2, 5, 3, 4), *_bshe(), M(2, 5, 3, 4), M(2, 3, 5), None, None, 5, 7, 0.0, False, M(2), M(())),
    "_efficient_attention_backward": lambda: aten._efficient_attention_backward(
        M(2, 5, 3, 4), *_bshe(), None, M(2, 5, 3, 4), None, None, 5, 7, M(2, 3, 32), 0.0, M(()), M(()), 0, False),
}


@pytest.mark.parametrize("name", list(SDPA_FORWARD))
def test_every_attention_forward_is_the_attention_it_fuses(name: str) -> None:
    counter = run(SDPA_FORWARD[name])
    assert not counter.unhandled
    assert counter.cost == ATTENTION, counter.per_op


@pytest.mark.parametrize("name", list(SDPA_BACKWARD))
def test_every_fused_attention_backward(name: str) -> None:
    counter = run(SDPA_BACKWARD[name])
    assert not counter.unhandled
    assert counter.cost == ATTENTION_BACKWARD, counter.per_op


def test_attention_masks_and_dropout() -> None:
    q, k, v = _qkv()
    # a float mask passed as a keyword (flash for CPU) or positionally (efficient): one add per score, 210
    kw = run(lambda: aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, attn_mask=M(2, 3, 5, 7)))
    pos = run(lambda: aten._scaled_dot_product_efficient_attention(q, k, v, M(2, 3, 5, 7), True))
    assert kw.cost == pos.cost == ATTENTION + cells(elementwise_op=210)
    # a boolean mask selects: free; dropout multiplies every score: 210
    assert run(lambda: aten._scaled_dot_product_flash_attention_for_cpu(
        q, k, v, attn_mask=M(2, 3, 5, 7, dtype=torch.bool))).cost == ATTENTION
    assert run(lambda: aten._scaled_dot_product_flash_attention(q, k, v, 0.1)).cost == ATTENTION + cells(elementwise_op=210)


def test_variable_length_flash_attention_is_reported() -> None:
    """Cumulative sequence lengths make the work depend on tensor values: the call is left unhandled."""
    cu = torch.zeros(3, dtype=torch.int32, device="meta")
    counter = run(lambda: aten._flash_attention_forward(M(10, 3, 4), M(14, 3, 4), M(14, 3, 4), cu, cu, 5, 7, 0.0, False, False))
    assert counter.unhandled["_flash_attention_forward"] == 1 and counter.cost == Cost()


def test_multihead_attention_fast_path_equals_the_slow_path() -> None:
    """``_native_multi_head_attention`` (nn.MultiheadAttention's inference kernel on CPU / CUDA) against
    the decomposed path the same module takes on meta. E = 8, 2 heads, 2 x 5 tokens: 4 projections of
    10 x 8 x 8 = 2560 MACs, attention 2 x 4 x 5 x 4 x 5 = 800; bias adds 4 x 80, q rescale 80, softmax
    5 x 100, head average 100."""
    mha = nn.MultiheadAttention(8, 2, batch_first=True, device="meta")
    slow = count(mha, [M(2, 5, 8), M(2, 5, 8), M(2, 5, 8)])
    fast = run(lambda: aten._native_multi_head_attention(M(2, 5, 8), M(2, 5, 8), M(2, 5, 8), 8, 2, M(24, 8), M(24),
                                                          M(8, 8), M(8)))
    assert fast.cost.macs == slow.cost.macs == 2560 + 800
    assert fast.cost.flops == slow.cost.flops == 2 * 3360 + 320 + 80 + 500 + 100
    assert not fast.unhandled and not slow.unhandled


# --- backward ops, called directly --------------------------------------------------------------------------


def _bn_backward(train: bool) -> Any:
    x = x4()
    return aten.native_batch_norm_backward(x4(), x, M(4), M(4), M(4), M(4), M(4), train, 1e-5, [True, True, True])


BACKWARD_CASES: list[tuple[str, Callable[[], Any], Cost]] = [
    # conv2d groups 2 above: grad_input and grad_weight 7776 MACs each, grad_bias 432 adds
    ("convolution_backward", lambda: aten.convolution_backward(
        M(2, 6, 6, 6), x4(), M(6, 2, 3, 3), [6], [1, 1], [1, 1], [1, 1], False, [0, 0], 2, [True, True, True]),
     cells(convolution_mac=2 * 7776, convolution_op=432)),
    ("convolution_backward weight only", lambda: aten.convolution_backward(
        M(2, 6, 6, 6), x4(), M(6, 2, 3, 3), None, [1, 1], [1, 1], [1, 1], False, [0, 0], 2, [False, True, False]),
     cells(convolution_mac=7776)),
    ("convolution_backward transposed", lambda: aten.convolution_backward(
        M(2, 6, 11, 11), x4(), M(4, 3, 3, 3), None, [1, 1], [0, 0], [1, 1], True, [0, 0], 2, [True, True, False]),
     cells(convolution_mac=2 * 7776)),
    # layer norm backward, 60 elements: x_hat 2 + grad_bias 1 + grad_weight 2 + grad_input (7 + 1 weight)
    ("native_layer_norm_backward", lambda: aten.native_layer_norm_backward(
        M(2, 5, 6), M(2, 5, 6), [6], M(2, 5, 1), M(2, 5, 1), M(6), M(6), [True, True, True]),
     cells(normalisation_op=60 * 13)),
    ("native_layer_norm_backward input only", lambda: aten.native_layer_norm_backward(
        M(2, 5, 6), M(2, 5, 6), [6], M(2, 5, 1), M(2, 5, 1), None, None, [True, False, False]),
     cells(normalisation_op=60 * (2 + 7))),
    ("native_group_norm_backward", lambda: aten.native_group_norm_backward(
        x4(), x4(), M(2, 2), M(2, 2), M(4), 2, 4, 36, 2, [True, True, True]), cells(normalisation_op=288 * 13)),
    ("native_batch_norm_backward training", lambda: _bn_backward(True), cells(normalisation_op=288 * 13)),
    # eval: grad_input one multiply by the folded scale; weight x_hat 2 + 2; bias 1
    ("native_batch_norm_backward eval", lambda: _bn_backward(False), cells(normalisation_op=288 * (1 + 4 + 1))),
    # RMS norm backward, grad_input only, with weight: x_hat 1 + (5 + 1)
    ("_fused_rms_norm_backward", lambda: aten._fused_rms_norm_backward(
        M(2, 5, 6), M(2, 5, 6), [6], M(2, 5, 1), M(6), [True, False]), cells(normalisation_op=60 * 7)),
    ("_softmax_backward_data", lambda: aten._softmax_backward_data(x3(), x3(), -1, torch.float32),
     cells(softmax_op=4 * 48)),
    ("_log_softmax_backward_data", lambda: aten._log_softmax_backward_data(x3(), x3(), -1, torch.float32),
     cells(softmax_op=4 * 48)),
    # max pool backward: each of the 72 gradients added to its argmax; avg: spread over the 4-window
    ("max_pool2d_with_indices_backward", lambda: aten.max_pool2d_with_indices_backward(
        M(2, 4, 3, 3), x4(), [2, 2], [2, 2], [0, 0], [1, 1], False, idx(2, 4, 3, 3)), cells(pooling_op=72)),
    ("avg_pool2d_backward", lambda: aten.avg_pool2d_backward(
        M(2, 4, 3, 3), x4(), [2, 2], [2, 2], [0, 0], False, True, None), cells(pooling_op=72 * 4)),
    ("_adaptive_avg_pool2d_backward", lambda: aten._adaptive_avg_pool2d_backward(M(2, 4, 4, 4), x4()),
     cells(pooling_op=8 * 64)),
    ("adaptive_max_pool2d_backward", lambda: aten.adaptive_max_pool2d_backward(M(2, 4, 4, 4), x4(), idx(2, 4, 4, 4)),
     cells(pooling_op=128)),
    # interpolation backward: 2 n per output gradient (n = 4 bilinear), nearest 1
    ("upsample_bilinear2d_backward", lambda: aten.upsample_bilinear2d_backward(
        M(2, 4, 12, 12), [12, 12], [2, 4, 6, 6], False), cells(elementwise_op=1152 * 8)),
    ("upsample_nearest2d_backward", lambda: aten.upsample_nearest2d_backward(M(2, 4, 12, 12), [12, 12], [2, 4, 6, 6]),
     cells(elementwise_op=1152)),
    ("embedding_dense_backward", lambda: aten.embedding_dense_backward(M(2, 3, 4), idx(2, 3), 10, -1, False),
     cells(elementwise_op=24)),
    ("native_dropout_backward", lambda: aten.native_dropout_backward(x3(), M(2, 4, 6, dtype=torch.bool), 2.0),
     cells(elementwise_op=2 * 48)),
    ("threshold_backward", lambda: aten.threshold_backward(x3(), x3(), 0.0), cells(elementwise_op=48)),
    ("gelu_backward", lambda: aten.gelu_backward(x3(), x3()), cells(elementwise_op=48)),
    ("hardswish_backward", lambda: aten.hardswish_backward(x3(), x3()), cells(elementwise_op=48)),
    ("_prelu_kernel_backward", lambda: aten._prelu_kernel_backward(x3(), x3(), M(1, 4, 1)), cells(elementwise_op=2 * 48)),
    ("reflection_pad2d_backward", lambda: aten.reflection_pad2d_backward(M(2, 4, 8, 8), x4(), [1, 1, 1, 1]),
     cells(elementwise_op=2 * 4 * 64)),
]


@pytest.mark.parametrize("name,call,expected", BACKWARD_CASES, ids=[c[0] for c in BACKWARD_CASES])
def test_backward_handle_by_hand(name: str, call: Callable[[], Any], expected: Cost) -> None:
    counter = run(call)
    assert not counter.unhandled, dict(counter.unhandled)
    assert counter.cost == expected, (counter.cost, counter.per_op)


def test_fused_rms_norm_handle() -> None:
    """``_fused_rms_norm`` decomposes on CPU and meta (it is a CUDA kernel), so its handle is called directly:
    60 elements x (square-accumulate 2 + normalise 1 + weight 1)."""
    from attnbench.flops.count import HANDLES, _bind

    func = aten._fused_rms_norm.default
    args = (M(2, 5, 6), [6], M(6), None)
    assert HANDLES[aten._fused_rms_norm](_bind(func, args, {}), (M(2, 5, 6), M(2, 5, 1))) == cells(normalisation_op=60 * 4)


def test_layer_norm_training_step_through_autograd() -> None:
    """nn.LayerNorm(6) on (2, 5, 6), one training step: forward 60 x 7; backward with the input not requiring
    grad: x_hat 2 + grad_weight 2 + grad_bias 1 per element = 60 x 5 (input_grad=True adds 8 per element)."""
    ln = nn.LayerNorm(6, device="meta")
    step = count(ln, [M(2, 5, 6)], backward=True)
    assert step.forward == cells(normalisation_op=420)
    assert step.backward == cells(normalisation_op=300)
    layer = count(ln, [M(2, 5, 6)], backward=True, input_grad=True)
    assert layer.backward == cells(normalisation_op=60 * 13)
    assert not step.unhandled and not layer.unhandled


def test_ops_nobody_handles_are_reported() -> None:
    """What no handle counts stays in ``unhandled``, named, never a silent zero: histc (no meta kernel, so on
    a CPU tensor), losses, antialiased interpolation, cdist, logcumsumexp."""
    counter = ExactCounter()
    with torch.no_grad(), counter:
        torch.histc(torch.ones(10), bins=4)
    assert counter.unhandled == {"histc": 1}
    counter = run(lambda: (F.mse_loss(x3(), x3()), F.interpolate(x4(), scale_factor=0.5, mode="bilinear", antialias=True),
                           torch.cdist(M(2, 5, 4), M(2, 6, 4)), torch.logcumsumexp(x3(), -1)))
    assert set(counter.unhandled) == {"mse_loss", "_upsample_bilinear2d_aa", "_cdist_forward", "logcumsumexp"}


def test_an_unknown_custom_op_is_reported() -> None:
    lib = torch.library.Library("attnbench_test", "FRAGMENT")
    lib.define("mystery(Tensor x) -> Tensor")
    lib.impl("mystery", lambda x: x.clone(), "Meta")
    counter = run(lambda: torch.ops.attnbench_test.mystery(x3()))
    assert counter.unhandled == {"attnbench_test.mystery": 1}
