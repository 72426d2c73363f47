"""Measuring for the gate (attnbench.gate.rounds): the deterministic CPU peak memory, and the test-only
injected slowdown that validates the gate."""

import time

import pytest

from attnbench import bench, gate
from attnbench.api import resolve
from attnbench.errors import UsageError


def test_injected_slowdown_is_off_unless_set(monkeypatch) -> None:
    def work() -> int:
        return 7

    monkeypatch.delenv(bench.INJECT_SLOWDOWN_ENV, raising=False)
    assert bench.injected_slowdown("cs", work, "cpu") is work
    monkeypatch.setenv(bench.INJECT_SLOWDOWN_ENV, "nl:0.5")
    assert bench.injected_slowdown("cs", work, "cpu") is work
    slowed = bench.injected_slowdown("nl", work, "cpu")
    assert slowed is not work and slowed() == 7
    monkeypatch.setenv(bench.INJECT_SLOWDOWN_ENV, "nl=0.5")
    with pytest.raises(UsageError):
        bench.injected_slowdown("nl", work, "cpu")


def test_cpu_peak_memory_is_deterministic() -> None:
    t = bench.block_target(resolve("nl", sizes={"C": 16, "T": 2, "H": 6, "W": 6}))
    plan = gate.TimingPlan()
    first, second = gate.cpu_peak_bytes(t, plan, 1), gate.cpu_peak_bytes(t, plan, 1)
    attention = 4 * (2 * 6 * 6) ** 2  # the THW x THW affinity matrix in fp32 is alive at the peak
    assert first == second and first > attention


def test_injected_slowdown_is_sized_on_the_compared_clock(monkeypatch) -> None:
    """With the CPU-time clock the busy-wait is sized on thread CPU time and measured on it: 25% asked is
    25% seen (before, it was sized on wall time and a 25% injection measured x1.405). Interleaved calls,
    median of per-call ratios; only the calling thread's CPU time counts, so load cannot move it much."""
    import torch

    x = torch.randn(256, 256, generator=torch.Generator().manual_seed(0))

    def work() -> torch.Tensor:
        return torch.tanh(x @ x)

    monkeypatch.setenv(bench.INJECT_SLOWDOWN_ENV, "cs:0.25")
    slowed = bench.injected_slowdown("cs", work, "cpu", clock="cpu")
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ratios = []
        for _ in range(40):
            a = time.thread_time_ns()
            work()
            b = time.thread_time_ns()
            slowed()
            c = time.thread_time_ns()
            ratios.append((c - b) / (b - a))
    finally:
        torch.set_num_threads(old)
    ratios.sort()
    assert 1.15 < ratios[len(ratios) // 2] < 1.40
    with pytest.raises(UsageError):
        bench.injected_slowdown("cs", work, "cpu", clock="sundial")
