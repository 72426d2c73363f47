"""Per-module counts and one training step (forward + backward), against hand counts, against the same module
counted alone, and against ``torch.utils.flop_counter.FlopCounterMode``.

FlopCounterMode counts only products (mm, addmm, bmm, baddbmm, convolution and its backward, the fused
attention ops) at 2 FLOPs per multiply-accumulate, so its numbers are compared with 2 x our MACs (our MACs
are exactly the multiply-accumulates of convolutions, linear layers and products; bias adds and everything
else are single ops and not MACs). Its per-module keys are ``Global``, the root's class name and
``<class>.<qualified name>``. Where the two disagree, the test says who is right and why:

* its per-module *backward* attribution (``torch.utils.module_tracker.ModuleTracker``) enters a module when
  the gradient of its output is ready and leaves it when the gradients of all its inputs are complete; an
  ``nn.Identity`` (output = input: left, then entered again) or a module whose input does not require grad
  (the first convolutions of a block fed by the data) is never left, so every later backward op is also
  credited to it. Ours attributes each backward op to the module whose forward created the autograd node
  being executed; each module's share is checked against the module counted alone.
* the weight gradient of a grouped convolution: FlopCounterMode's ``conv_backward_flop`` computes it as an
  ungrouped convolution (C_out x C_in x taps per position), ``groups`` times the real work; the gradient
  dW[o, i, k] = sum over batch and positions of dY[n, o, p] X[n, group(o) C_in/groups + i, p + k] has
  C_out x C_in/groups x taps x positions terms, the forward's MACs, as we count.
* ``_scaled_dot_product_flash_attention_for_cpu`` (and its backward), the kernel
  ``F.scaled_dot_product_attention`` runs on CPU, is not in FlopCounterMode's registry: it counts 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from attnbench.flops.cost import Cost
from attnbench.flops.count import CountResult, count, meta_inputs
from attnbench.networks.resnet3d import Bottleneck3d

# ---------------------------------------------------------------------------------------------------------
# Models


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection, through F.scaled_dot_product_attention or an
    explicit einsum / softmax."""

    def __init__(self, dim: int, heads: int, impl: str) -> None:
        super().__init__()
        self.heads, self.impl = heads, impl
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        if self.impl == "sdpa":
            o = F.scaled_dot_product_attention(q, k, v)
        else:
            scores = torch.einsum("bhld,bhmd->bhlm", q, k) * (d // self.heads) ** -0.5
            o = torch.einsum("bhlm,bhmd->bhld", scores.softmax(-1), v)
        return self.proj(o.transpose(1, 2).reshape(b, n, d))


class ViTBlock(nn.Module):
    def __init__(self, dim: int = 16, heads: int = 2, impl: str = "sdpa") -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, impl)
        self.ln2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


def nl_block() -> tuple[nn.Module, list[tuple[int, ...]]]:
    from attnbench.api import resolve

    case = resolve("nl", sizes={"T": 4, "H": 7, "W": 7})
    return case.build("meta"), [tuple(s) for s in case.input_shapes()]


def vit_block(impl: str) -> tuple[nn.Module, list[tuple[int, ...]]]:
    return ViTBlock(impl=impl).to("meta"), [(2, 5, 16)]


def resnet_stage(groups: int = 1) -> tuple[nn.Module, list[tuple[int, ...]]]:
    """A small res3-like stage: a strided block with a projection shortcut, then an identity-shortcut block."""
    stage = nn.Sequential(Bottleneck3d(16, 8, 32, 2, groups), Bottleneck3d(32, 8, 32, 1, groups))
    return stage.to("meta"), [(1, 16, 4, 8, 8)]


MODELS = {
    "nl": nl_block,
    "vit-sdpa": lambda: vit_block("sdpa"),
    "vit-einsum": lambda: vit_block("einsum"),
    "resnet3d-stage": resnet_stage,
}

# FlopCounterMode's backward over-attribution (see module docstring): modules never left once entered.
# nl: theta / phi / g read the block input (no grad), pool is an nn.Identity; theta's backward runs last, so
# only phi, g and pool collect their siblings' work. resnet3d-stage: the Identity attention slots and block
# 1's Identity shortcut; block 0's projection shortcut reads the stage input (no grad) and runs first.
FCM_OVER_CREDITED = {
    "nl": {"phi", "g", "pool"},
    "vit-sdpa": set(),
    "vit-einsum": set(),
    "resnet3d-stage": {"0.attention", "0.shortcut", "0.shortcut.0", "1.attention", "1.shortcut"},
}


# ---------------------------------------------------------------------------------------------------------
# Helpers


def fcm_per_module(module: nn.Module, shapes: Sequence[Sequence[int]], backward: bool) -> dict[str, int]:
    """FlopCounterMode's total per module, keyed by our qualified names ("" for the root), with "Global".
    The same run as :func:`count`: eval + no_grad forward, or train mode and the gradient of ones (the
    gradient of ``out.sum()``, which lets ModuleTracker enter the root in the backward)."""
    was = module.training
    module.train(backward)
    try:
        if backward:
            with FlopCounterMode(display=False) as fcm:
                module(*meta_inputs(shapes)).sum().backward()
        else:
            with torch.no_grad(), FlopCounterMode(display=False) as fcm:
                module(*meta_inputs(shapes))
    finally:
        module.train(was)
        for p in module.parameters():
            p.grad = None
    root = type(module).__name__
    out = {}
    for key, per_op in fcm.get_flop_counts().items():
        name = "Global" if key == "Global" else "" if key == root else key[len(root) + 1:]
        out[name] = sum(per_op.values())
    return out


def module_calls(module: nn.Module, shapes: Sequence[Sequence[int]]) -> dict[str, list[tuple[tuple[int, ...], bool]]]:
    """Every call of every submodule in one training forward: (input shape, input requires grad)."""
    names = {id(m): n for n, m in module.named_modules()}
    calls: dict[str, list[tuple[tuple[int, ...], bool]]] = {n: [] for n in names.values()}

    def record(m: nn.Module, args: Any) -> None:
        if id(m) in names:
            calls[names[id(m)]].append((tuple(args[0].shape), bool(args[0].requires_grad)))

    handle = nn.modules.module.register_module_forward_pre_hook(record)
    was = module.training
    try:
        module.train()
        with torch.enable_grad():
            module(*meta_inputs(shapes))
    finally:
        handle.remove()
        module.train(was)
    return calls


def alone(submodule: nn.Module, calls: list[tuple[tuple[int, ...], bool]]) -> tuple[Cost, Cost]:
    """(forward, backward) of a submodule counted alone, one training step per recorded call, its input
    requiring grad as it did inside the network."""
    fwd, bwd = Cost(), Cost()
    for shape, requires_grad in calls:
        try:
            r = count(submodule, meta_inputs([shape]), backward=True, input_grad=requires_grad)
        except ValueError:  # nothing requires grad: no backward (and an input-independent forward)
            r = count(submodule, meta_inputs([shape]))
            fwd = fwd + r.cost
            continue
        fwd, bwd = fwd + r.forward, bwd + r.backward
    return fwd, bwd


def macs2(costs: dict[str, Cost]) -> dict[str, int]:
    return {k: 2 * v.macs for k, v in costs.items()}


# ---------------------------------------------------------------------------------------------------------
# By hand


class Shared(nn.Module):
    """A linear layer registered twice and called twice, a ReLU, and functional code in the root."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.again = self.lin  # the same module under a second attribute: one name, "lin"
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.again(self.act(self.lin(x)))
        return (y * 2).sum(-1)


def test_shared_module_repeated_calls_and_functional_code_by_hand() -> None:
    model = Shared().to("meta")
    x = torch.empty(3, 4, device="meta")
    r = count(model, [x])
    assert list(r.by_module) == ["", "lin", "act"]
    # lin, called twice: 2 x (3 rows x 4 x 4 = 48 MACs + 12 bias adds)
    assert r.by_module["lin"] == Cost({("linear", "mac"): 96, ("linear", "op"): 24})
    assert r.by_module["act"] == Cost({("elementwise", "op"): 12})
    # the root adds its own y * 2 (12) and the sum (12 inputs) to its children's
    assert r.by_module[""] == r.cost == r.by_module["lin"] + r.by_module["act"] + Cost(
        {("elementwise", "op"): 12, ("pooling", "op"): 12})
    assert r.backward is None and r.by_module_backward == {} and r.forward == r.cost

    step = count(model, [x], backward=True)
    assert step.forward == r.cost  # no batch norm, no dropout: the training forward is the eval forward
    # backward, lin: second call grad_input 3x4 @ 4x4 and grad_weight 4x3 @ 3x4 (48 MACs each), bias sum 12;
    # first call (x does not require grad) grad_weight 48 MACs, bias sum 12; the two calls' weight (16) and
    # bias (4) gradients summed by the engine, attributed to lin (both consumers are lin)
    assert step.by_module_backward["lin"] == Cost({("linear", "mac"): 3 * 48, ("linear", "op"): 12 + 12 + 16 + 4})
    assert step.by_module_backward["act"] == Cost({("elementwise", "op"): 12})  # threshold_backward
    # root: the gradient of y * 2 (12 multiplies); the sum's gradient is an expand (free)
    assert step.by_module_backward[""] == step.backward == (
        step.by_module_backward["lin"] + step.by_module_backward["act"] + Cost({("elementwise", "op"): 12}))
    assert step.cost == step.forward + step.backward
    assert step.by_module[""] == step.cost
    assert not step.unhandled


def test_training_step_restores_the_module() -> None:
    """count(..., backward=True) on a real CPU module leaves no trace: mode, .grad, batch-norm statistics."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    r = count(model, [torch.randn(2, 3, 6, 6)], backward=True)
    assert not model.training and all(p.grad is None for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    # conv 2x4x4x4 = 128 outputs x 3 x 9 = 3456 MACs; backward: weight gradient only (the input does not
    # require grad) = 3456 MACs + 128 bias-gradient adds; batch norm in training 128 x 7 and its backward
    # 128 x 13; relu and its backward 128 each; num_batches_tracked += 1 (one op, inside the batch norm)
    assert r.forward == Cost({("convolution", "mac"): 3456, ("convolution", "op"): 128,
                              ("normalisation", "op"): 128 * 7 + 1, ("elementwise", "op"): 128})
    assert r.backward == Cost({("convolution", "mac"): 3456, ("convolution", "op"): 128,
                               ("normalisation", "op"): 128 * 13, ("elementwise", "op"): 128})


def test_nothing_to_backpropagate_is_an_error() -> None:
    frozen = nn.Linear(4, 4, device="meta").requires_grad_(False)
    with pytest.raises(ValueError, match="nothing to backpropagate"):
        count(frozen, [torch.empty(2, 4, device="meta")], backward=True)
    # with the input requiring grad there is a backward (grad_input only: 2 x 4 x 4 MACs)
    r = count(frozen, [torch.empty(2, 4, device="meta")], backward=True, input_grad=True)
    assert r.backward == Cost({("linear", "mac"): 32})


# ---------------------------------------------------------------------------------------------------------
# The tree, and each module against itself counted alone


@pytest.mark.parametrize("model", list(MODELS))
@pytest.mark.parametrize("backward", [False, True], ids=["forward", "training-step"])
def test_by_module_is_an_inclusive_tree(model: str, backward: bool) -> None:
    module, shapes = MODELS[model]()
    r = count(module, meta_inputs(shapes), backward=backward)
    names = [n for n, _ in module.named_modules()]
    assert list(r.by_module) == names and list(r.by_module_forward) == names
    assert r.by_module[""] == r.cost and r.by_module_forward[""] == r.forward
    assert r.cost == (r.forward + r.backward if backward else r.forward)
    assert Cost.total(r.per_op.values()) == r.cost
    for name, sub in module.named_modules():
        assert Cost.total(r.by_module_op[name].values()) == r.by_module[name]
        children = Cost.total(r.by_module[f"{name}.{c}" if name else c] for c, _ in sub.named_children())
        for key, value in children:
            assert r.by_module[name].get(*key) >= value  # a parent includes its children
        if backward:
            assert r.by_module_forward[name] + r.by_module_backward[name] == r.by_module[name]
    assert not r.unhandled


@pytest.mark.parametrize("model", list(MODELS))
def test_each_module_equals_itself_counted_alone(model: str) -> None:
    """The attribution, checked without any other tool: a submodule's share of a training step (forward and
    backward) is what one training step of that submodule alone costs, over all its calls, its input
    requiring grad as inside the network."""
    module, shapes = MODELS[model]()
    r = count(module, meta_inputs(shapes), backward=True)
    calls = module_calls(module, shapes)
    for name, sub in module.named_modules():
        if not name:
            continue
        fwd, bwd = alone(sub, calls[name])
        assert r.by_module_forward[name] == fwd, name
        assert r.by_module_backward[name] == bwd, name


# ---------------------------------------------------------------------------------------------------------
# Against FlopCounterMode


@pytest.mark.parametrize("model", list(MODELS))
def test_forward_per_module_equals_flop_counter_mode(model: str) -> None:
    module, shapes = MODELS[model]()
    ours = macs2(count(module, meta_inputs(shapes)).by_module)
    theirs = fcm_per_module(module, shapes, backward=False)
    assert theirs["Global"] == ours[""]
    assert {n: theirs.get(n, 0) for n in ours} == ours


@pytest.mark.parametrize("model", list(MODELS))
def test_training_step_per_module_against_flop_counter_mode(model: str) -> None:
    """Totals equal; per module equal except where ModuleTracker over-credits (module docstring), where its
    excess is exactly the backward of some of the other modules (a sum of a subset of our per-module
    backward MACs)."""
    module, shapes = MODELS[model]()
    r = count(module, meta_inputs(shapes), backward=True)
    ours, backward = macs2(r.by_module), macs2(r.by_module_backward)
    theirs = fcm_per_module(module, shapes, backward=True)
    assert theirs["Global"] == ours[""]
    leaves = [n for n, m in module.named_modules() if n and not list(m.children())]
    for name, value in ours.items():
        got = theirs.get(name, 0)
        if name not in FCM_OVER_CREDITED[model]:
            assert got == value, name
            continue
        excess = got - value
        others = [backward[n] for n in leaves if n != name and not n.startswith(name + ".") and backward[n]]
        assert excess > 0 and any(sum(c) == excess for k in range(1, len(others) + 1) for c in combinations(others, k)), name


CONVS = {
    "conv1d groups 2": (lambda: nn.Conv1d(4, 6, 3, groups=2), (2, 4, 9)),
    "conv2d groups 2": (lambda: nn.Conv2d(4, 6, 3, groups=2), (2, 4, 6, 6)),
    "conv3d": (lambda: nn.Conv3d(4, 6, 3), (2, 4, 5, 6, 6)),
    "conv_transpose1d groups 2": (lambda: nn.ConvTranspose1d(4, 6, 3, groups=2), (2, 4, 9)),
    "conv_transpose2d stride 2": (lambda: nn.ConvTranspose2d(4, 6, 3, stride=2), (2, 4, 5, 5)),
    "conv_transpose2d stride 2 groups 2": (lambda: nn.ConvTranspose2d(4, 6, 3, stride=2, groups=2), (2, 4, 5, 5)),
    "conv_transpose3d": (lambda: nn.ConvTranspose3d(4, 6, 3), (2, 4, 3, 4, 4)),
}


@pytest.mark.parametrize("name", list(CONVS))
def test_convolutions_against_flop_counter_mode(name: str) -> None:
    """Forward equal; backward (input and weight gradients) 2 x the forward MACs, equal to FlopCounterMode's
    without groups; with groups it counts the weight gradient ``groups`` times (module docstring)."""
    make, shape = CONVS[name]
    conv = make().to("meta")
    r = count(conv, meta_inputs([shape]), backward=True, input_grad=True)
    assert r.backward.get("convolution", "mac") == 2 * r.forward.get("convolution", "mac")
    x = torch.empty(shape, device="meta", requires_grad=True)
    with FlopCounterMode(display=False) as fcm:
        conv(x).sum().backward()
    counts = fcm.get_flop_counts()["Global"]
    fwd, bwd = counts[torch.ops.aten.convolution], counts[torch.ops.aten.convolution_backward]
    assert fwd == 2 * r.forward.macs
    assert bwd == 2 * r.forward.macs * (1 + conv.groups)  # grad_input right, grad_weight x groups
    assert bwd == 2 * r.backward.macs if conv.groups == 1 else bwd > 2 * r.backward.macs


def test_grouped_convolution_weight_gradient_by_hand() -> None:
    """conv2d 4 -> 6, groups 2, 3x3, on (2, 4, 6, 6): 2 x 6 x 4 x 4 = 192 outputs x 2 input channels per group x 9
    taps = 3456 MACs; the weight gradient pairs each of the 6 x 2 x 9 weights with the 2 x 4 x 4 positions:
    108 x 32 = 3456, the same."""
    conv = nn.Conv2d(4, 6, 3, groups=2, bias=False).to("meta")
    r = count(conv, [torch.empty(2, 4, 6, 6, device="meta")], backward=True)  # weight gradient only
    assert r.forward.macs == 192 * 2 * 9 == 3456
    assert r.backward.macs == 6 * 2 * 9 * (2 * 4 * 4) == 3456


def test_cpu_flash_attention_is_counted_where_flop_counter_mode_sees_nothing() -> None:
    """On CPU tensors F.scaled_dot_product_attention runs ``_scaled_dot_product_flash_attention_for_cpu``
    forward and backward: we count the attention (2 x 840 MACs) and its fused backward (5 x 840);
    FlopCounterMode has no formula for these two ops and counts 0."""

    class Sdpa(nn.Module):
        def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            return F.scaled_dot_product_attention(q, k, v)

    shapes = [(2, 3, 5, 4), (2, 3, 7, 4), (2, 3, 7, 4)]
    r = count(Sdpa(), meta_inputs(shapes, "cpu"), backward=True, input_grad=True)
    assert set(r.per_op) == {"_scaled_dot_product_flash_attention_for_cpu",
                             "_scaled_dot_product_flash_attention_for_cpu_backward"}
    assert (r.forward.macs, r.backward.macs) == (2 * 840, 5 * 840)
    q, k, v = (t.requires_grad_() for t in meta_inputs(shapes, "cpu"))
    with FlopCounterMode(display=False) as fcm:
        F.scaled_dot_product_attention(q, k, v).sum().backward()
    assert fcm.get_total_flops() == 0


def test_default_count_is_unchanged() -> None:
    """count(module, inputs): eval, no grad, forward only; CountResult keeps its first fields' meaning."""
    module, shapes = nl_block()
    module.train()
    r = count(module, meta_inputs(shapes))
    assert module.training and isinstance(r, CountResult)
    assert r.backward is None and r.per_op_backward == {} and r.by_module_backward == {}
    assert r.forward == r.cost and r.per_op_forward == r.per_op
    assert r.output_elements > 0 and not r.unhandled
