"""Timing on CPU, warm-up and sampling logic on fake timers, workloads and device/dtype errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from attnbench.errors import DeviceError, UsageError
from attnbench.measuring import timing
from attnbench.measuring.timing import build_workload, time_callable

FAST = dict(warmup_min=2, max_warmup_s=0.05, min_reps=5, target_s=0.01, max_reps=200)


class FakeTimer:
    """Returns scripted times (seconds) without running anything; the last one repeats."""

    name = "fake"

    def __init__(self, times: list[float]) -> None:
        self.times = list(times)
        self.calls = 0

    def once(self) -> float:
        self.calls += 1
        return self.times.pop(0) if len(self.times) > 1 else self.times[0]

    def round(self, calls: int) -> list[float]:
        return [self.once() for _ in range(calls)]


def test_cpu_timing_of_a_tiny_op() -> None:
    x = torch.randn(64, generator=torch.Generator().manual_seed(0))
    m = time_callable(lambda: x + 1, device="cpu", what="add", **FAST)
    assert m.n >= 5
    assert m.median > 0
    assert m.device == "cpu" and m.timer == "perf_counter_ns" and m.what == "add"
    assert m.threads == torch.get_num_threads()
    assert m.warmup_reps >= 1 + 2
    assert not m.cuda_graph and not m.flush_l2


def test_max_reps_caps_and_min_reps_floors() -> None:
    x = torch.zeros(4)
    m = time_callable(lambda: x + 1, device="cpu", warmup_min=1, max_warmup_s=0.0, min_reps=3, target_s=100.0, max_reps=3)
    assert m.n == 3
    m = time_callable(lambda: x + 1, device="cpu", warmup_min=1, max_warmup_s=0.0, min_reps=7, target_s=0.0, max_reps=50)
    assert m.n == 7


def test_inference_mode_flag() -> None:
    seen: list[bool] = []
    fn = lambda: seen.append(torch.is_inference_mode_enabled())  # noqa: E731
    time_callable(fn, device="cpu", **FAST)
    assert all(seen)
    seen.clear()
    time_callable(fn, device="cpu", inference_mode=False, **FAST)
    assert not any(seen)


def test_warm_up_stops_when_round_medians_agree() -> None:
    timer = FakeTimer([10.0, 5.0, 5.0, 5.0, 4.9, 5.0, 5.1])  # first call slow, then stable
    calls, converged, last, first = timing._warm_up(timer, warmup_min=3, max_warmup_s=1e9, tol=0.05)
    assert converged and calls == 7 and last == 5.0 and first == 10.0


def test_warm_up_stops_at_its_cap_when_unstable_after_two_rounds() -> None:
    timer = FakeTimer([1.0, 1.0, 1.0, 2.0, 2.0, 1.0])
    calls, converged, _, _ = timing._warm_up(timer, warmup_min=3, max_warmup_s=0.0, tol=0.05)
    # too slow for 2 rounds of 3 within the cap: rounds of 2 calls; the cap ends it only after 2 rounds
    assert not converged and calls == 1 + 2 + 2


def test_slow_calls_can_converge() -> None:
    """Calls of ~1 s with a 2 s cap: rounds shrink to 2 calls, so two rounds are compared and a stable
    call is reported as converged (before, one 3-call round filled the cap and it never converged)."""
    timer = FakeTimer([3.0, 1.0, 1.01, 1.0, 0.99])
    calls, converged, last, first = timing._warm_up(timer, warmup_min=3, max_warmup_s=2.0, tol=0.05)
    assert converged and calls == 5 and first == 3.0
    assert timing._round_size(1.0, 3, 2.0) == 2 and timing._round_size(1e-4, 3, 2.0) == 100


def test_sampling_stops_at_target_measured_time() -> None:
    assert len(timing._sample(FakeTimer([1.0]), min_reps=4, target_s=2.5, max_reps=100)) == 4
    assert len(timing._sample(FakeTimer([1.0]), min_reps=2, target_s=5.0, max_reps=100)) == 5
    assert len(timing._sample(FakeTimer([1.0]), min_reps=2, target_s=50.0, max_reps=6)) == 6


def test_sampling_in_rounds_sized_from_the_estimate() -> None:
    timer = FakeTimer([0.001])
    samples = timing._sample(timer, min_reps=3, target_s=0.2, max_reps=1000, estimate_s=0.001)
    assert len(samples) == 200  # stops at the target however the rounds fall (50 calls per 0.05 s round)


def test_cuda_absent_raises_device_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceError, match="^CUDA is not available on this machine; "):
        time_callable(lambda: None, device="cuda", **FAST)
    with pytest.raises(DeviceError, match="CUDA is not available"):
        build_workload(nn.Identity(), [(1, 2)], device="cuda:0")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")
def test_cuda_absent_without_patching() -> None:
    with pytest.raises(DeviceError, match="CUDA is not available on this machine"):
        time_callable(lambda: None, device="cuda", **FAST)


def test_unknown_device_and_dtype_list_choices() -> None:
    with pytest.raises(UsageError, match="valid choices: cpu, cuda, cuda:N"):
        time_callable(lambda: None, device="tpu", **FAST)
    with pytest.raises(UsageError, match="valid choices: fp32, fp16, bf16"):
        time_callable(lambda: None, device="cpu", dtype="fp8", **FAST)
    with pytest.raises(UsageError, match="valid choices: fp32, fp16, bf16"):
        build_workload(nn.Identity(), [(1, 2)], dtype="float64")
    with pytest.raises(UsageError, match="valid choices"):
        build_workload(nn.Identity(), [(1, 2)], device="mps")


def test_bad_settings() -> None:
    with pytest.raises(UsageError):
        time_callable(lambda: None, device="cpu", min_reps=10, max_reps=5)
    with pytest.raises(UsageError, match="need --device cuda"):
        time_callable(lambda: None, device="cpu", cuda_graph=True)
    with pytest.raises(UsageError, match="need --device cuda"):
        time_callable(lambda: None, device="cpu", flush_l2=True)
    with pytest.raises(UsageError):
        build_workload(nn.Identity(), [(1, 2)], batch=0)


def _conv() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv3d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv3d(4, 2, 1))


def test_workload_inputs_seeded_and_batched() -> None:
    w = build_workload(_conv(), [(1, 3, 2, 6, 6)], batch=2, seed=7)
    assert w.shapes == ((2, 3, 2, 6, 6),) and w.batch == 2
    assert w.inputs[0].shape == (2, 3, 2, 6, 6) and w.inputs[0].dtype == torch.float32
    again = build_workload(_conv(), [(1, 3, 2, 6, 6)], batch=2, seed=7)
    other = build_workload(_conv(), [(1, 3, 2, 6, 6)], batch=2, seed=8)
    assert torch.equal(w.inputs[0], again.inputs[0])
    assert not torch.equal(w.inputs[0], other.inputs[0])
    assert not w.module.training
    out = w()
    assert out.shape == (2, 2, 2, 6, 6) and out.dtype == torch.float32
    assert torch.equal(out, again())


def test_workload_keeps_shapes_without_batch() -> None:
    w = build_workload(_conv(), [(3, 3, 2, 4, 4)])
    assert w.batch == 3 and w.inputs[0].shape == (3, 3, 2, 4, 4)


def test_workload_bf16_runs_under_autocast() -> None:
    w = build_workload(_conv(), [(1, 3, 2, 6, 6)], dtype="bf16", precision="autocast")
    with torch.inference_mode():
        out = w()
    assert out.dtype == torch.bfloat16 and w.autocast and w.precision == "autocast"
    assert next(w.module.parameters()).dtype == torch.float32  # parameters stay fp32
    assert w.inputs[0].dtype == torch.float32
    ref = build_workload(_conv(), [(1, 3, 2, 6, 6)])()
    assert torch.allclose(out.float(), ref, atol=0.1, rtol=0.05)


def test_workload_bf16_pure_converts_module_and_inputs() -> None:
    w = build_workload(_conv(), [(1, 3, 2, 6, 6)], dtype="bf16")
    assert w.precision == "pure" and not w.autocast
    assert all(p.dtype == torch.bfloat16 for p in w.module.parameters()) and w.inputs[0].dtype == torch.bfloat16
    with torch.inference_mode():
        out = w()
    assert out.dtype == torch.bfloat16
    ref = build_workload(_conv(), [(1, 3, 2, 6, 6)])()
    assert torch.allclose(out.float(), ref, atol=0.1, rtol=0.05)
    with pytest.raises(UsageError, match="valid choices: pure, autocast"):
        build_workload(_conv(), [(1, 3, 2, 6, 6)], dtype="bf16", precision="mixed")


def test_workload_channels_last_converts_2d_and_3d() -> None:
    """5-D weights and inputs go to channels_last_3d, 4-D ones (2-D convolutions, e.g. TSM's) to channels_last."""
    torch.manual_seed(0)
    two_d = nn.Conv2d(3, 4, 3, padding=1)
    w = build_workload(two_d, [(1, 3, 8, 8)], channels_last=True)
    assert w.inputs[0].is_contiguous(memory_format=torch.channels_last)
    assert w.module.weight.is_contiguous(memory_format=torch.channels_last)


def test_workload_channels_last_3d() -> None:
    w = build_workload(_conv(), [(1, 3, 2, 6, 6)], channels_last=True)
    fmt = torch.channels_last_3d
    assert w.channels_last and w.inputs[0].is_contiguous(memory_format=fmt)
    assert all(p.is_contiguous(memory_format=fmt) for p in w.module.parameters() if p.dim() == 5)
    ref = build_workload(_conv(), [(1, 3, 2, 6, 6)])()
    assert torch.allclose(w(), ref, atol=1e-5)


def test_workload_compile_wraps_the_module(monkeypatch: pytest.MonkeyPatch) -> None:
    wrapped: list[nn.Module] = []

    resets: list[bool] = []

    def fake_compile(module: nn.Module, dynamic: bool | None = None) -> nn.Module:  # torch.compile is too slow to load here
        assert dynamic is False  # one static graph per target: no dynamic-shape recompiles measured
        wrapped.append(module)
        return module

    import torch._dynamo
    from torch._dynamo.utils import counters

    counters["stats"]["unique_graphs"] += 5  # an earlier target's compile
    monkeypatch.setattr(torch, "compile", fake_compile)
    monkeypatch.setattr(torch._dynamo, "reset", lambda: resets.append(True))
    w = build_workload(_conv(), [(1, 3, 2, 6, 6)], compile=True)
    assert w.compiled and len(wrapped) == 1 and w.module is wrapped[0] and resets == [True]  # dynamo reset per target
    from attnbench.measuring.timing import compile_stats

    assert compile_stats() == {"unique_graphs": 0, "graph_breaks": 0}  # counted afresh for this target
    assert not build_workload(_conv(), [(1, 3, 2, 6, 6)]).compiled


def test_timing_a_workload() -> None:
    w = build_workload(_conv(), [(1, 3, 2, 6, 6)], batch=2)
    m = time_callable(w, device="cpu", what="conv", dtype=w.dtype, batch=w.batch, **FAST)
    assert m.n >= 5 and m.median > 0 and m.batch == 2
    assert m.throughput == pytest.approx(2 / m.median)
