"""Measuring for the gate: interleaved rounds of every target through :func:`attnbench.bench.measure_target`.

Each round builds a target afresh, warms it up and times it for ``round_s`` seconds; the rounds of all
targets are interleaved (round-robin, the order rotated each round). The clocks, the allocator setting and
the memory tracker are :mod:`attnbench.measuring`'s (:mod:`~attnbench.measuring.clocks`,
:mod:`~attnbench.measuring.malloc`, :mod:`~attnbench.measuring.memory`); this module only schedules them and
keeps one :class:`Timed` per target. The fixed reference workload (:func:`reference_target`) is measured
in the same rounds as the blocks."""

from __future__ import annotations

import gc
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from attnbench import bench, cases
from attnbench.gate.settings import REFERENCE_KEY, Progress, TimingPlan
from attnbench.measuring import clocks
from attnbench.measuring import device as dev
from attnbench.measuring.malloc import cpu_malloc
from attnbench.measuring.stats import Measurement, median
from attnbench.text import clean


class _Reference(nn.Module):
    """The fixed reference workload: a 32-channel 3x3x3 convolution on 1x32x8x32x32, whose 262,144
    outputs are read as a 512x512 matrix and multiplied by a seeded 512x512 matrix."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(32, 32, 3, padding=1, bias=False)
        self.register_buffer("weight", torch.randn(512, 512))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).reshape(512, 512) @ self.weight


REFERENCE_FLOPS = 2 * 262_144 * 32 * 27 + 2 * 512**3
REFERENCE_WHAT = "conv3d 32->32 k3 on 1x32x8x32x32 + matmul 512x512x512, seed 0"


def reference_target() -> bench.Target:
    def build() -> nn.Module:
        torch.manual_seed(0)
        return _Reference()

    return bench.Target("reference", REFERENCE_KEY, "conv3d+matmul", ((1, 32, 8, 32, 32),), REFERENCE_FLOPS, build)


def cpu_peak_bytes(t: bench.Target, plan: TimingPlan, batch: int) -> int:
    """Peak working memory of one call on the CPU (:func:`~attnbench.measuring.memory.tensor_peak_bytes`);
    deterministic."""
    from attnbench.measuring.memory import tensor_peak_bytes
    from attnbench.measuring.timing import build_workload

    module = t.build()
    work = build_workload(module, t.input_shapes, device="cpu", dtype=plan.dtype, batch=batch)
    return tensor_peak_bytes(work)


def _stamped(t: bench.Target, stamps: list[int]) -> bench.Target:
    """``t`` whose module appends the calling thread's CPU time (ns) to ``stamps`` as each call starts
    (:func:`attnbench.measuring.clocks.stamp_calls`)."""
    return replace(t, build=lambda: clocks.stamp_calls(t.build(), stamps))


@dataclass
class Timed:
    """What a run measured for one target: pooled samples of all rounds, per-round medians, memory."""

    status: str = "ok"
    samples_ms: list[float] = field(default_factory=list)
    round_medians_ms: list[float] = field(default_factory=list)
    round_sizes: list[int] = field(default_factory=list)
    wall_round_medians_ms: list[float] = field(default_factory=list)
    clock: str = "wall"
    malloc: str = "system"
    timing: dict[str, Any] | None = None
    memory_rows: list[dict[str, Any]] = field(default_factory=list)
    peak_bytes: int | None = None
    memory_metric: str | None = None

    def timing_dict(self) -> dict[str, Any] | None:
        if self.status != "ok" or not self.samples_ms or self.timing is None:
            return None
        t = self.timing
        m = Measurement(tuple(s / 1e3 for s in self.samples_ms), what=t.get("what", ""), device=t.get("device", "cpu"),
                        dtype=t.get("dtype", "fp32"), batch=int(t.get("batch", 1)), threads=t.get("threads"),
                        timer=clocks.TIMER if self.clock == "cpu" else t.get("timer", ""),
                        warmup_reps=int(t.get("warmup_reps", 0)), warmup_converged=t.get("warmup_converged"))
        return {**m.to_dict(samples=True), "clock": self.clock, "malloc": self.malloc, "rounds": len(self.round_medians_ms),
                "round_medians_ms": self.round_medians_ms, "round_sizes": self.round_sizes,
                "wall_round_medians_ms": self.wall_round_medians_ms}

    def memory_dict(self) -> dict[str, Any]:
        return {"peak_bytes": self.peak_bytes, "metric": self.memory_metric,
                "report": self.memory_rows[-1] if self.memory_rows else None}


def _rounds_of(results: dict[str, Timed], order: list[tuple[str, bench.Target, int]], plan: TimingPlan,
               fingerprint: dict[str, Any], progress: Progress | None) -> None:
    for r in range(plan.rounds):
        for key, t, batch in order[r % len(order):] + order[: r % len(order)]:
            res = results[key]
            if res.status != "ok":
                continue
            if progress:
                progress(f"round {r + 1}/{plan.rounds}: {key}")
            s = bench.Settings(device=plan.device, dtype=plan.dtype, batch=batch, min_reps=plan.min_reps,
                               target_s=plan.round_s, max_warmup_s=plan.max_warmup_s, timing=plan.timing)
            stamps: list[int] = []
            try:
                row = bench.measure_target(_stamped(t, stamps) if plan.clock == "cpu" else t, s, fingerprint,
                                           tensor_peak=False, clock=plan.clock)
            except (TypeError, ValueError, OverflowError) as e:
                # measure_target turns device faults (OOM, RuntimeError) into a status; sizes past torch's
                # 64-bit limits fail earlier, while building the block or its inputs: the same for the gate
                first = (str(e).strip().splitlines() or [""])[0]
                res.status = f"error: {type(e).__name__}: {clean(first)[:160]}"
                continue
            if row["status"] != "ok":
                res.status = row["status"]
                continue
            samples = row["timing"]["samples_ms"]
            res.wall_round_medians_ms.append(row["timing"]["median_ms"])
            if plan.clock == "cpu":
                samples = clocks.per_call_ms(stamps, int(row["timing"]["warmup_reps"]), int(row["timing"]["n"]))
                if samples is None:
                    res.status = "error: the CPU clock could not follow the timed calls"
                    continue
            res.samples_ms += samples
            res.round_medians_ms.append(median(samples))
            res.round_sizes.append(len(samples))
            res.timing = row["timing"]
            res.memory_rows.append(row["memory"])


def measure(targets: Sequence[tuple[str, bench.Target, int]], plan: TimingPlan, fingerprint: dict[str, Any],
            progress: Progress | None = None, memory: bool = True) -> dict[str, Timed]:
    """Time every ``(key, target, batch)`` in ``plan.rounds`` interleaved rounds (round-robin, the order
    rotated each round) and measure each target's peak memory; a failing target keeps its status."""
    results = {key: Timed(clock=plan.clock) for key, _, _ in targets}
    order = list(targets)
    # Objects alive now (modules, counters, imports) are moved out of the collector's sight: every
    # measurement collects garbage, and scanning them again each time would cost more than the timing.
    gc.collect()
    gc.freeze()
    cpu = dev.resolve_device(plan.device).type == "cpu"
    try:
        with cpu_malloc(plan.malloc if cpu else "system") as effective:
            _rounds_of(results, order, plan, fingerprint, progress)
    finally:
        gc.unfreeze()
    for res in results.values():
        res.malloc = effective
    if not memory:
        return results
    cuda = dev.resolve_device(plan.device).type == "cuda"
    for key, t, batch in targets:
        res = results[key]
        if res.status != "ok" or t.kind == "reference":
            continue
        if cuda:
            values = [m["peak_allocated_delta_bytes"] for m in res.memory_rows if m.get("peak_allocated_delta_bytes") is not None]
            res.peak_bytes = int(median(values)) if values else None
            res.memory_metric = "cuda peak_allocated_delta_bytes (median over rounds)"
        else:
            if progress:
                progress(f"memory: {key}")
            try:
                res.peak_bytes = cpu_peak_bytes(t, plan, batch)
                res.memory_metric = "cpu peak bytes of tensors created during one call (tracked op by op)"
            except Exception as e:  # noqa: BLE001 - a block the tracker cannot follow: memory not compared
                res.memory_metric = f"not measured: {type(e).__name__}: {(str(e).splitlines() or [''])[0][:160]}"
    return results


def batch_of(case: cases.Case) -> int:
    """The batch size a case is timed at."""
    return case.shape.B
