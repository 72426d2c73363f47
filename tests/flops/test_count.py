"""The exact counter on tiny hand-computed networks."""

import torch
from torch import nn

from attnbench.flops.count import count, meta_inputs, param_count


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(2, 4, 3, padding=1)
        self.bn = nn.BatchNorm3d(4)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn(self.conv(x)))  # [1, 4, 2, 3, 3]
        a = torch.softmax(torch.bmm(y.flatten(2).transpose(1, 2), y.flatten(2)), dim=-1)  # [1, 18, 18]
        pooled = y.mean((2, 3, 4))  # [1, 4]
        return self.fc(pooled).sum() + a.sum()


def test_tiny_network_by_hand() -> None:
    result = count(Tiny().to("meta"), meta_inputs([(1, 2, 2, 3, 3)]))
    c = result.cost
    # conv: 72 outputs x 2 in-channels x 27 taps = 3888 MACs, 72 bias adds
    assert (c.get("convolution", "mac"), c.get("convolution", "op")) == (3888, 72)
    # batch norm (eval): 2 x 72 ; relu: 72 elementwise
    assert c.get("normalisation", "op") == 144
    # bmm [1,18,4] x [1,4,18]: 18*4*18 = 1296 MACs ; softmax over 324 entries: 5 x 324
    assert c.get("matmul", "mac") == 1296
    assert c.get("softmax", "op") == 1620
    # mean over 72 elements, sum over 3 outputs, sum over 324 entries: 72 + 3 + 324 reduction ops
    assert c.get("pooling", "op") == 399
    # linear 4 -> 3 on one row: 12 MACs + 3 bias adds, categorised as linear
    assert (c.get("linear", "mac"), c.get("linear", "op")) == (12, 3)
    # relu 72 + final add 1
    assert c.get("elementwise", "op") == 73
    assert not result.unhandled
    assert param_count(Tiny()) == (2 * 4 * 27 + 4) + 2 * 4 + (4 * 3 + 3)


def test_unknown_op_is_reported_not_dropped() -> None:
    class Odd(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.histc(torch.cumsum(x, 0), bins=4)

    result = count(Odd(), [torch.ones(3)])
    assert result.unhandled == {"histc": 1}  # named in the result, not counted as zero silently
    assert result.per_op["cumsum"].flops == 3  # a scan: one add per element


def test_meta_device_needs_no_memory_for_huge_maps() -> None:
    # a (200704 x 200704) product on meta: counted, never allocated
    a = torch.empty(1, 200704, 8, device="meta")
    b = torch.empty(1, 8, 200704, device="meta")

    class P(nn.Module):
        def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return torch.bmm(x, y)

    assert count(P(), [a, b]).cost.macs == 200704 * 8 * 200704


def test_sdpa_counts_as_the_attention_it_fuses() -> None:
    """Every path to scaled_dot_product_attention is counted as two products and a softmax, the closed form
    of the naive attention: the op itself (inference mode), and PyTorch's math decomposition (no_grad on
    meta), whose multiplication of q and k by sqrt(scale) = 1 does no arithmetic."""
    import torch.nn.functional as F

    from attnbench.flops import cost as C
    from attnbench.flops.count import ExactCounter

    n, L, M, c = 2, 10, 6, 4
    expected = C.matmul(n, L, c, M) + C.softmax(n * L * M) + C.matmul(n, L, M, c)
    q, k, v = (torch.empty(n, 1, s, c, device="meta") for s in (L, M, M))
    for ctx in (torch.no_grad, torch.inference_mode):
        counter = ExactCounter()
        with ctx(), counter:
            F.scaled_dot_product_attention(q, k, v, scale=1.0)
        assert counter.cost == expected and not counter.unhandled, ctx.__name__


def test_convolution_shortcut_returns_what_torchs_meta_kernel_returns() -> None:
    """The counter answers a meta convolution itself (torch's kernel imports sympy): for inputs in every axis
    order, 1-D to 3-D, the shortcut's shape, strides and dtype equal the kernel's wherever it answers."""
    import itertools

    from attnbench.flops import count as c

    answered = 0
    for dim in (3, 4, 5):
        shape = [2, 6, 5, 7, 9][:dim]
        for perm in itertools.permutations(range(dim)):
            x = torch.empty([shape[i] for i in perm], device="meta").permute(*[perm.index(i) for i in range(dim)])
            for k in (1, 3):
                w = torch.empty([4, 6] + [k] * (dim - 2), device="meta")
                args = (x, w, None, [1] * (dim - 2), [k // 2] * (dim - 2), [1] * (dim - 2), False, [0] * (dim - 2), 1)
                got = c._meta_convolution(torch.ops.aten.convolution.default, args, {})
                if got is None:
                    continue
                ref = torch.ops.aten.convolution.default(*args)
                assert (got.shape, got.stride(), got.dtype) == (ref.shape, ref.stride(), ref.dtype), (dim, perm, k)
                answered += 1
    assert answered == 244  # every 3-D input (5! orders x 2 kernels), 4-D and 1-D ones in the standard order


def test_counting_nl_at_a_large_shape_imports_neither_sympy_nor_dynamo() -> None:
    """NL's output convolution reads its input in a transposed axis order: still answered without torch's
    Python meta kernels (their imports cost about a second of a one-shot `attnbench flops`)."""
    import subprocess
    import sys

    code = ("import sys; from attnbench import cases; c = cases.resolve('nl', None, {'T': 64, 'H': 56, 'W': 56}); "
            "r = cases.count_exact(c.build('meta'), cases.meta_inputs(c.input_shapes())); "
            "print(r.cost.flops, 'sympy' in sys.modules, 'torch._dynamo' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    from attnbench import api

    flops = api.resolve("nl", None, {"T": 64, "H": 56, "W": 56})
    assert done.stdout.split() == [str(flops.spec.cost(flops.shape, **flops.options).flops), "False", "False"]
