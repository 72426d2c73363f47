"""The CI performance gate: ``attnbench snapshot`` writes a baseline, ``attnbench check`` compares with it.

What is compared, and how
-------------------------
* **Parameters and FLOPs** are exact integers (the exact counter on the meta device, kept as the
  per-op-category cells of :class:`~attnbench.flops.cost.Cost`), so any change at all fails, and the
  report shows baseline, current and delta for every op category that moved.
* **Latency** is compared on independent units: the **median of each measurement round** (one value
  per round and block; the rounds are interleaved, and each builds and warms up the block afresh). The
  per-call samples of one round are not independent (a slow stretch of the machine slows many
  consecutive calls), so a test on the pooled calls gives p-values like 1e-150 that mean nothing; the
  rounds are the units that are. A block is slower only when *both* hold: a one-sided Mann-Whitney U
  test of the current round medians against the baseline's (exact permutation p-value;
  :func:`~attnbench.measure.stats.mann_whitney_u`) gives p <= ``alpha`` (default 0.01), *and* the ratio
  of the medians of the round medians exceeds ``max_slowdown`` (default 1.10). (The idea of pairing a
  rank test with a minimum effect size is asv's; this code is our own.)
* **What alpha can mean with few rounds.** With n baseline and m current rounds the smallest one-sided
  p-value is 1 / C(n + m, n): 1/252 = 0.004 for 5 against 5. ``check`` refuses an ``alpha`` that the
  rounds cannot reach (``--rounds N`` explicitly), or, when the rounds come from the baseline, measures
  as many more current rounds as needed (up to :data:`MAX_AUTO_ROUNDS`) and says so. The false-alarm
  rate of the rank test alone is then exact and printed (:func:`~attnbench.measure.stats.false_alarm_rate`):
  10 against 10 rounds (the default) at alpha 0.01: 0.93% per block and measurement (5 against 5: 2/252 =
  0.79%), if rounds of unchanged code are exchangeable. Ten short rounds rather than five long ones: on a
  machine whose speed drifts, one odd round then no longer hides a real slowdown (with 5 against 5, p <=
  0.01 needs every current round above every baseline round). The ratio threshold, the load control and the re-measurement below only lower it:
  a block fails only if a second, independent measurement is slower too, so for unchanged code that
  happens with about the square of that rate (~6e-5 per block) unless the machine's speed drifts.
* **Memory**: the call's peak working memory (CUDA: the caching allocator's peak minus what was
  allocated before the call; CPU: the peak of the bytes held by tensors created during the call,
  tracked op by op, which unlike the process RSS is deterministic) may grow by at most
  ``memory_tolerance`` (default 5%).

How latency is measured, so that unchanged code does not alarm
---------------------------------------------------------------
* **Interleaved rounds.** Every block is measured in ``rounds`` short rounds (each builds the block
  afresh, warms it up and times it for ``round_s`` seconds through :func:`attnbench.bench.measure_target`),
  and the rounds of all blocks are interleaved (round-robin, the order rotated each round), so a burst
  of load from another process spreads over all blocks instead of landing on one block's whole sample.
* **A reference workload as load control.** A fixed, seeded workload (a 32-channel 3x3x3 convolution
  and a 512x512x512 matmul) is measured in the same rounds and stored in the snapshot. Each block's
  round medians are also compared after dividing each by the reference's median of the same round. On the
  same device a block is slower only if it is slower both in its own times and relative to the
  reference: when the whole machine is slower (the reference too), that is load, not a regression.
  With ``--normalize`` (different devices) only the normalised comparison counts.
* **Re-measuring suspects.** A block that looks slower by any of the deciding comparisons is measured
  again (up to ``retries`` times, default 2). It fails only if one measurement was slower by every
  deciding comparison and every measurement by at least one (:func:`confirm`); otherwise it is reported
  as ``unconfirmed`` and does not fail the build.
* **Allocator.** On CPU, ``--malloc cached`` (the default of ``snapshot`` on a CPU device) keeps
  glibc from mapping and unmapping large blocks on every call (:func:`cpu_malloc`): for blocks with big
  intermediates, kernel page faults otherwise make up half the time and vary by ~25% over minutes.
* **Clock.** ``--clock cpu`` (a snapshot setting, CPU only, one torch thread) compares the calling
  thread's CPU time per call instead of wall time, so time spent descheduled while other processes run
  is not counted; on a shared CI machine this removes most of the noise (see :class:`TimingPlan`).

Latency is compared only between runs on the same device (CPU model, cores and torch threads; or GPU
model), unless ``normalize`` is set. A timed baseline from another device is a usage error (exit 2)
unless ``--allow-device-mismatch`` is given, and then the summary's first line says that latency was not
compared (a check that passes without comparing latency must not look like one that compared it).
Memory is compared on the same kind of device (any CPU, or the same GPU model).

Reading a baseline
------------------
The whole document is validated against a declared schema (:mod:`attnbench.baseline_schema`, pydantic)
before anything in it is used: types, bounds on everything that sets how long a check runs, internal
consistency (FLOP totals against their cells, round sizes against the samples), and blocks, presets
and options known to the code. Every problem is one line and exit code 2. Everything read from the file
is printed through :func:`attnbench.text.plain` or :func:`attnbench.text.clean` (no Rich markup, no
terminal control characters), and into the Markdown summary escaped.

Validating the gate
-------------------
``ATTNBENCH_INJECT_SLOWDOWN="cs:0.25"`` (read in :func:`attnbench.bench.injected_slowdown`) makes one
block ~25% slower. It exists only to validate this gate (tests and ``scripts/validate_gate.py``).
"""

from __future__ import annotations

import gc
import json
import math
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

import attnbench
from attnbench import api, bench
from attnbench import baseline_schema as schema
from attnbench.blocks.registry import all_blocks, get_block
from attnbench.errors import UsageError, check_range
from attnbench.flops.cost import CATEGORIES, KINDS
from attnbench.measure import device as dev
from attnbench.measure.device import torch_threads
from attnbench.measure.stats import Measurement, false_alarm_rate, mann_whitney_u, median, min_p_value
from attnbench.text import clean
from attnbench.units import human

SCHEMA = schema.SCHEMA
REPORT_SCHEMA = "attnbench.check/1"
SIZES = schema.SIZES
REFERENCE_KEY = "reference"
CLOCKS = schema.CLOCKS
MALLOC_MODES = schema.MALLOC_MODES
MAX_AUTO_ROUNDS = 20  # check measures at most this many rounds on its own to make alpha reachable
CPU_IDENTITY, CUDA_IDENTITY = dev.CPU_IDENTITY, dev.CUDA_IDENTITY
INJECT_SLOWDOWN_ENV = bench.INJECT_SLOWDOWN_ENV

Progress = Callable[[str], None]


# -- settings ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TimingPlan:
    """How latency is measured: on which device and dtype, with how many torch threads (None: torch's
    default), in how many interleaved rounds of ``round_s`` seconds of timed calls each (at least
    ``min_reps`` calls per round), and with which clock.

    ``clock="wall"`` (default) compares the per-call latencies of :func:`attnbench.measure.timing.time_callable`
    (``perf_counter`` on CPU, CUDA events on a GPU). ``clock="cpu"`` (CPU only, one torch thread)
    compares the CPU time the calling thread spends per call (``time.thread_time_ns`` between the starts
    of consecutive timed calls, so everything a call does in that thread is included): on a shared
    machine, time spent waiting while other processes run is not counted, so their load does not read
    as a slowdown of the block.
    """

    device: str = "cpu"
    dtype: str = "fp32"
    threads: int | None = None
    rounds: int = 10  # validated on a drifting 2-core VM: see results/gate-validation/
    round_s: float = 0.15
    min_reps: int = 5
    max_warmup_s: float = 0.3
    clock: str = "wall"
    malloc: str = "system"
    timing: str = "auto"  # CUDA: graph replay where the capture works (see attnbench.measure.timing)

    def check(self) -> "TimingPlan":
        device = dev.resolve_device(self.device)
        dev.resolve_dtype(self.dtype)
        check_range("--rounds", self.rounds, 1, schema.MAX_ROUNDS)
        check_range("--round-s", self.round_s, 0, schema.MAX_ROUND_S, low_open=True)
        check_range("min_reps", self.min_reps, 1, schema.MAX_MIN_REPS)
        check_range("max_warmup_s", self.max_warmup_s, 0, schema.MAX_WARMUP_S)
        if self.rounds * (self.round_s + self.max_warmup_s) > schema.MAX_TIMED_S_PER_BLOCK:
            raise UsageError(f"--rounds x (--round-s + warm-up) is {self.rounds * (self.round_s + self.max_warmup_s):.4g} s "
                             f"per block, more than the {schema.MAX_TIMED_S_PER_BLOCK:.0f} s allowed")
        check_range("--threads", self.threads, 1, schema.MAX_THREADS)
        if self.timing not in schema.TIMING_MODES:
            raise api.unknown("timing mode", self.timing, schema.TIMING_MODES)
        if self.malloc not in MALLOC_MODES:
            raise api.unknown("malloc mode", self.malloc, MALLOC_MODES)
        if self.clock not in CLOCKS:
            raise api.unknown("clock", self.clock, CLOCKS)
        if self.clock == "cpu":
            if device.type != "cpu":
                raise UsageError("--clock cpu needs --device cpu (GPU work is timed with CUDA events)")
            if self.threads != 1:
                raise UsageError("--clock cpu needs --threads 1 (the CPU time of one thread is measured)")
            if self.min_reps < 2:
                raise UsageError("--clock cpu needs at least 2 timed calls per round")
        return self


@dataclass(frozen=True)
class CheckOptions:
    """Thresholds of ``check``. ``retries``: how often a block that looks slower may be measured again
    (see :func:`confirm`). ``load_control``: on the same device, a block is
    slower only if it is slower both in its own times and relative to the reference workload of the
    same rounds (a machine that is slower as a whole is not a regression). ``normalize``: compare
    reference-normalised times only (for different devices). ``allow_device_mismatch``: a timed
    baseline from another device is checked without its latency (otherwise that is a usage error).
    ``device``/``rounds``/``round_s`` override the baseline's (None: as in the baseline; with the
    baseline's rounds, more rounds are measured if ``alpha`` needs them, see :func:`current_rounds`)."""

    alpha: float = 0.01
    max_slowdown: float = 1.10
    memory_tolerance: float = 0.05
    normalize: bool = False
    load_control: bool = True
    flops_only: bool = False
    allow_device_mismatch: bool = False
    retries: int = 2
    device: str | None = None
    rounds: int | None = None
    round_s: float | None = None

    def check(self) -> "CheckOptions":
        if not 0 < self.alpha < 1:
            raise UsageError(f"--alpha must be between 0 and 1, got {self.alpha}")
        check_range("--max-slowdown", self.max_slowdown, 1, 100)  # a ratio of medians
        check_range("--memory-tolerance", self.memory_tolerance, 0, 100)  # a fraction of the baseline's peak
        check_range("--retries", self.retries, 0, 10)
        check_range("--rounds", self.rounds, 1, schema.MAX_ROUNDS)
        check_range("--round-s", self.round_s, 0, schema.MAX_ROUND_S, low_open=True)
        return self


# -- which cases ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    """One baseline entry: a block case, its stable key and the preset its options came from."""

    key: str
    case: api.Case
    base_preset: str


def entry_key(case: api.Case) -> str:
    """``cs@banet`` for a preset; ``cs@1x64x8x14x14`` (plus ``[opt=value,...]`` for options that differ
    from the block's defaults) for a custom shape."""
    if case.preset is not None:
        return f"{case.spec.name}@{case.preset.name}"
    defaults = case.spec.resolve_options()
    changed = [f"{k}={v}" for k, v in sorted(case.options.items()) if defaults.get(k) != v]
    return f"{case.spec.name}@{case.shape}" + (f"[{','.join(changed)}]" if changed else "")


def parse_list(text: str | None) -> list[str]:
    return [p.strip() for p in (text or "").split(",") if p.strip()]


def select(modules: Sequence[str] | None, presets: str | None, sizes: Mapping[str, int | None] | None) -> list[Item]:
    """The cases a snapshot covers. ``presets``: ``all``, ``default`` (each block's first) or a comma
    list of preset names (default: ``all``, or ``default`` when sizes are given). Sizes replace the
    presets' shapes."""
    sizes = {k: v for k, v in (sizes or {}).items() if v is not None}
    specs = [get_block(m) for m in modules] if modules else all_blocks()
    mode = (presets or ("default" if sizes else "all")).strip()
    wanted = None if mode in ("all", "default") else parse_list(mode)
    if wanted is not None:
        known = {p.name for s in specs for p in s.presets}
        for name in wanted:
            if name not in known:
                raise api.unknown("preset", name, known)
    items: dict[str, Item] = {}
    for spec in specs:
        names = [p.name for p in spec.presets]
        if mode == "default":
            names = names[:1]
        elif wanted is not None:
            names = [n for n in names if n in wanted]
            if not names and modules:
                raise UsageError(f"block {spec.name} has none of the presets {', '.join(wanted)}; "
                                 f"its presets: {', '.join(p.name for p in spec.presets)}")
        for name in names:
            case = api.resolve(spec.name, name, sizes)
            key = entry_key(case)
            items.setdefault(key, Item(key, case, name))
    if not items:
        raise UsageError("the selection is empty")
    return list(items.values())


def resolve_entry(entry: Mapping[str, Any]) -> api.Case:
    """The case a baseline entry describes, as the code builds it today (a preset entry by its preset
    name, so that a changed preset shows up; a custom one by its stored shape and options)."""
    if entry.get("preset"):
        return api.resolve(entry["module"], entry["preset"])
    sizes = dict(zip(SIZES, entry["input_shape"]))
    return api.resolve(entry["module"], entry.get("base_preset"), sizes, entry.get("options") or {})


# -- parameters and FLOPs --------------------------------------------------------------------------------


# What counting a case at a size torch cannot represent (or the closed forms cannot evaluate) raises.
_COUNT_ERRORS = (RuntimeError, TypeError, ValueError, OverflowError, MemoryError, RecursionError, ZeroDivisionError)


def static_record(case: api.Case, key: str | None = None) -> dict[str, Any]:
    """Counted parameters and exact FLOPs (per op-category cells) of a case; meta device, no memory.
    A case that cannot be counted (e.g. sizes beyond what torch can index) is a usage error, one line."""
    try:
        report = api.flops_report(case, ["exact"])
    except UsageError:
        raise
    except _COUNT_ERRORS as e:
        what = clean(key or entry_key(case))
        raise UsageError(f"cannot count the parameters and FLOPs of {what} at input shape {case.shape.as_list()}: "
                         f"{type(e).__name__}: {clean((str(e).strip().splitlines() or [''])[0])[:200]}") from None
    if report.exact is not None:
        cost, unhandled, source = report.exact.cost, dict(report.exact.unhandled), "exact counter"
    else:  # a shape past torch's tensor limits: the closed forms (equal to the exact count wherever both run)
        cost, unhandled = report.analytic, {}
        source = f"closed form ({getattr(report, 'exact_skipped', None) or 'the exact counter could not run'})"
    return {
        "params": report.params_counted,
        "flops": {"total": cost.flops, "macs": cost.macs, "by_category": cost.by_category(), "cells": cost.to_dict(),
                  "counted_by": source},
        "unhandled_ops": unhandled,
    }


def _cell(cells: Mapping[str, Mapping[str, int]], category: str, kind: str) -> int:
    return int((cells.get(category) or {}).get(kind, 0))


def cells_flops(cells: Mapping[str, Mapping[str, int]]) -> int:
    return sum(2 * _cell(cells, c, "mac") + _cell(cells, c, "op") for c in cells)


def compare_params(old: int, new: int) -> dict[str, Any]:
    same = int(old) == int(new)
    return {"check": "params", "status": "ok" if same else "changed", "failed": not same,
            "baseline": int(old), "current": int(new), "delta": int(new) - int(old)}


def compare_flops(old_cells: Mapping[str, Mapping[str, int]], new_cells: Mapping[str, Mapping[str, int]]) -> dict[str, Any]:
    """Exact comparison of two ``Cost.to_dict()`` cell maps; ``categories`` lists every op category
    that changed with its baseline, current and delta FLOPs (multiply-add = 2) and its cells."""
    categories = []
    for c in sorted(set(old_cells) | set(new_cells), key=lambda c: (CATEGORIES + (c,)).index(c)):
        old = {k: _cell(old_cells, c, k) for k in KINDS}
        new = {k: _cell(new_cells, c, k) for k in KINDS}
        if old != new:
            of, nf = 2 * old["mac"] + old["op"], 2 * new["mac"] + new["op"]
            categories.append({"category": c, "baseline_flops": of, "current_flops": nf, "delta_flops": nf - of,
                               "baseline_cells": old, "current_cells": new})
    old_total, new_total = cells_flops(old_cells), cells_flops(new_cells)
    return {"check": "flops", "status": "changed" if categories else "ok", "failed": bool(categories),
            "baseline": old_total, "current": new_total, "delta": new_total - old_total, "categories": categories}


# -- latency and memory ------------------------------------------------------------------------------------


def compare_latency(old_ms: Sequence[float], new_ms: Sequence[float], alpha: float = 0.01,
                    max_slowdown: float = 1.10) -> dict[str, Any]:
    """Regression iff the one-sided U test (new > old) gives p <= ``alpha`` and median(new)/median(old)
    > ``max_slowdown``; improvement iff the mirrored conditions hold. The values must be independent
    units, one per measurement round (the gate passes per-round medians, :func:`round_values`), in any
    one unit of time; the p-value is exact for up to 50 values in all."""
    old_med, new_med = median(old_ms), median(new_ms)
    ratio = new_med / old_med if old_med > 0 else (1.0 if new_med == 0 else math.inf)
    slower = mann_whitney_u(new_ms, old_ms, "greater")
    faster = mann_whitney_u(new_ms, old_ms, "less")
    if slower.p_value <= alpha and ratio > max_slowdown:
        status = "regression"
    elif faster.p_value <= alpha and ratio < 1 / max_slowdown:
        status = "improved"
    else:
        status = "ok"
    return {"check": "latency", "status": status, "failed": status == "regression",
            "baseline": old_med, "current": new_med, "ratio": ratio,
            "p_slower": slower.p_value, "p_faster": faster.p_value, "u": slower.u, "p_method": slower.method,
            "prob_slower": slower.effect, "n_baseline": len(old_ms), "n_current": len(new_ms)}


def compare_memory(old: int | None, new: int | None, tolerance: float = 0.05) -> dict[str, Any]:
    """Regression iff ``new`` exceeds ``old`` by more than ``tolerance`` (a fraction of ``old``)."""
    if old is None or new is None:
        return {"check": "memory", "status": "skipped", "failed": False, "baseline": old, "current": new,
                "detail": "peak memory not measured in the " + ("baseline" if old is None else "current run")}
    limit = old * (1 + tolerance)
    status = "regression" if new > limit else ("improved" if new < old * (1 - tolerance) else "ok")
    return {"check": "memory", "status": status, "failed": status == "regression", "baseline": int(old),
            "current": int(new), "delta": int(new) - int(old),
            "ratio": (new / old) if old else (1.0 if new == 0 else math.inf), "tolerance": tolerance}


def round_values(t: Mapping[str, Any] | None) -> list[float] | None:
    """The test units of a timing: the median of each measurement round (ms). From ``samples_ms`` and
    ``round_sizes`` (a stored baseline's are validated to add up; stored ``round_medians_ms``, checked
    against them when read, are not needed), else ``round_medians_ms``, else the samples' median as a
    single round; None without samples."""
    if not t or not t.get("samples_ms"):
        return None
    samples, sizes = list(t["samples_ms"]), t.get("round_sizes")
    if sizes and sum(sizes) == len(samples) and all(n >= 1 for n in sizes):
        return schema.round_medians(samples, sizes)
    if t.get("round_medians_ms"):
        return list(t["round_medians_ms"])
    return [median(samples)]


def normalized(values_ms: Sequence[float], reference_ms: Sequence[float]) -> list[float]:
    """Per-round medians of a block divided by the reference workload's median of the same round
    (measured seconds apart, so load that changes from round to round cancels). With a different number
    of rounds, every value is divided by the median of the reference's rounds."""
    if len(values_ms) == len(reference_ms):
        pairs = list(zip(values_ms, reference_ms))
    else:
        pairs = [(v, median(reference_ms)) for v in values_ms]
    if any(ref <= 0 for _, ref in pairs):
        raise UsageError("the reference workload's median time is zero; cannot normalize")
    return [v / ref for v, ref in pairs]


def current_rounds(baseline_rounds: int, alpha: float, asked: int | None = None) -> tuple[int, str]:
    """How many rounds ``check`` measures, and a note when that is not simply the baseline's (or
    ``asked``). The rank test of ``baseline_rounds`` against n current round medians can give no
    one-sided p-value below 1 / C(baseline_rounds + n, n); an ``alpha`` below it could never be reached,
    so a latency regression could never fail the build. With ``asked`` rounds that is a usage error;
    without, n is raised (up to :data:`MAX_AUTO_ROUNDS`) until ``alpha`` is reachable."""
    def reachable(n: int) -> bool:
        return min_p_value(baseline_rounds, n) <= alpha

    need = next((n for n in range(1, MAX_AUTO_ROUNDS + 1) if reachable(n)), None)
    fix = f"--rounds {need} or more" if need else "a baseline with more rounds (`attnbench snapshot --rounds 5`)"
    if asked is not None:
        if not reachable(asked):
            p = min_p_value(baseline_rounds, asked)
            raise UsageError(f"--alpha {alpha:g} cannot be reached: with {baseline_rounds} baseline and {asked} current rounds "
                             f"the smallest p-value of the rank test on round medians is 1/{math.comb(baseline_rounds + asked, asked)} "
                             f"= {p:.3g}; use {fix}, or --alpha {p:.3g} or more")
        return asked, ""
    if reachable(baseline_rounds):
        return baseline_rounds, ""
    if need is None:
        p = min_p_value(baseline_rounds, MAX_AUTO_ROUNDS)
        raise UsageError(f"--alpha {alpha:g} cannot be reached with a baseline of {baseline_rounds} round(s): even against "
                         f"{MAX_AUTO_ROUNDS} current rounds the smallest p-value of the rank test on round medians is {p:.3g}; "
                         f"use {fix}, or --alpha {p:.3g} or more")
    return need, (f"the baseline's {baseline_rounds} rounds against as many current rounds cannot reach alpha {alpha:g} "
                  f"(smallest p-value {min_p_value(baseline_rounds, baseline_rounds):.3g}); measured {need} rounds")


device_differences = dev.identity_differences


def memory_comparable(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Peak memory depends on the device kind (and on CUDA on the GPU model), not on the CPU model."""
    if old.get("device_type") != new.get("device_type"):
        return False
    return old.get("device_type") != "cuda" or old.get("gpu_name") == new.get("gpu_name")


# -- measuring -----------------------------------------------------------------------------------------


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
    """Peak working memory of one call on the CPU (:func:`~attnbench.measure.memory.tensor_peak_bytes`);
    deterministic."""
    from attnbench.measure.memory import tensor_peak_bytes
    from attnbench.measure.timing import build_workload

    module = t.build()
    work = build_workload(module, t.input_shapes, device="cpu", dtype=plan.dtype, batch=batch)
    return tensor_peak_bytes(work)


def _stamped(t: bench.Target, stamps: list[int]) -> bench.Target:
    """``t`` whose module appends the calling thread's CPU time (ns) to ``stamps`` as each call starts."""
    def build() -> nn.Module:
        module = t.build()
        module.register_forward_pre_hook(lambda _m, _a: stamps.append(time.thread_time_ns()))
        return module

    return replace(t, build=build)


def _cpu_samples(stamps: Sequence[int], timing: Mapping[str, Any]) -> list[float] | None:
    """Per-call thread CPU times (ms) of the timed calls of one ``measure_target`` row: the differences
    between the starts of consecutive timed calls (warm-up calls come first, one memory call last; the
    last timed call has no timed successor, so a round of n timed calls gives n - 1 samples)."""
    w, n = int(timing["warmup_reps"]), int(timing["n"])
    if len(stamps) < w + n + 1 or n < 2:
        return None
    return [(stamps[i + 1] - stamps[i]) / 1e6 for i in range(w, w + n - 1)]


_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # mallopt parameters (glibc's malloc.h)
_GLIBC_MMAP_MAX, _GLIBC_TRIM_THRESHOLD = 65536, 128 * 1024  # their glibc defaults


@contextmanager
def cpu_malloc(mode: str) -> Iterator[str]:
    """With ``mode="cached"``, make glibc's malloc keep freed memory and serve large blocks from its heap
    (``mallopt``: no ``mmap`` for large blocks, no trimming) while the block runs, restoring the defaults
    afterwards; yields the mode in effect. PyTorch's CPU tensors come from malloc, which by default maps
    every block over ~32 MiB afresh and unmaps it when freed, so each call of e.g. a non-local block
    pays ~10^4 page faults whose cost in the kernel varies by tens of percent over minutes on a virtual
    machine; the cached mode removes that noise, much as PyTorch's caching allocator does on CUDA. Growth
    in what a call allocates is still caught by the memory check. ``system`` leaves malloc alone."""
    if mode != "cached":
        yield "system"
        return
    try:
        import ctypes
        import ctypes.util

        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        yield "system (mallopt unavailable)"
        return
    ok = mallopt(_M_MMAP_MAX, 0) == 1 and mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1
    try:
        yield "cached" if ok else "system (mallopt failed)"
    finally:
        mallopt(_M_MMAP_MAX, _GLIBC_MMAP_MAX)
        mallopt(_M_TRIM_THRESHOLD, _GLIBC_TRIM_THRESHOLD)
        trim = getattr(libc, "malloc_trim", None)
        if trim is not None:
            trim(0)  # give the kept memory back


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
                        timer="thread_time_ns" if self.clock == "cpu" else t.get("timer", ""),
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
                samples = _cpu_samples(stamps, row["timing"])
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


def _batch(case: api.Case) -> int:
    return case.shape.B


# -- snapshot ------------------------------------------------------------------------------------------


def environment() -> dict[str, Any]:
    import platform

    return {"attnbench_version": attnbench.__version__, "torch_version": torch.__version__,
            "python_version": platform.python_version()}


def snapshot(items: Sequence[Item], plan: TimingPlan | None, selection: Mapping[str, Any],
             progress: Progress | None = None) -> dict[str, Any]:
    """The baseline document: every item's parameters and exact FLOPs, and with a ``plan`` its latency
    samples, peak memory, the reference workload's samples and the device fingerprint."""
    entries = []
    for it in items:
        if progress:
            progress(f"counting {it.key}")
        c = it.case
        entries.append({"key": it.key, "module": c.spec.name, "preset": c.preset.name if c.preset else None,
                        "base_preset": it.base_preset, "input_shape": c.shape.as_list(), "options": dict(c.options),
                        **static_record(c, it.key)})
    doc: dict[str, Any] = {
        "schema": SCHEMA, "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "environment": environment(), "selection": dict(selection), "timed": plan is not None,
        "settings": asdict(plan) if plan else None, "fingerprint": None, "reference": None,
        "units": {"flops": api.UNITS["flops"], "params": api.UNITS["params"], "times": "milliseconds per call",
                  "memory": "bytes"},
        "entries": entries,
    }
    if plan is None:
        return doc
    plan.check()
    with torch_threads(plan.threads):
        fp = dev.fingerprint(plan.device)
        targets = [(REFERENCE_KEY, reference_target(), 1)] + [(it.key, bench.block_target(it.case), _batch(it.case)) for it in items]
        results = measure(targets, plan, fp, progress)
    doc["fingerprint"] = fp
    ref = results[REFERENCE_KEY]
    doc["reference"] = {"what": REFERENCE_WHAT, "flops": REFERENCE_FLOPS, "status": ref.status, "timing": ref.timing_dict()}
    for entry in entries:
        res = results[entry["key"]]
        entry["status"] = res.status
        entry["timing"] = res.timing_dict()
        entry["memory"] = res.memory_dict()
    return doc


STEADY_SPREAD = 1.10  # largest max/min of a baseline's round medians that lets a 25% slowdown stand out


def round_spread(doc: Mapping[str, Any]) -> dict[str, float]:
    """How steady a timed baseline was: for the reference workload and every timed entry, the largest round
    median over the smallest. On a quiet machine this is a few percent; when the machine's speed changes
    during the snapshot (another tenant of a virtual machine, frequency scaling) it can be 1.4, and then a
    slowdown smaller than that cannot be told from the machine's own drift."""
    out: dict[str, float] = {}
    timed = [(REFERENCE_KEY, (doc.get("reference") or {}).get("timing"))] + [
        (e["key"], e.get("timing")) for e in doc.get("entries", []) if e.get("status") == "ok"]
    for key, timing in timed:
        meds = (timing or {}).get("round_medians_ms") or []
        if len([m for m in meds if m > 0]) >= 2:
            out[key] = spread_of(meds)
    return out


def spread_of(values: Sequence[float]) -> float:
    """Largest over smallest of the positive values (1.0 for fewer than two)."""
    vals = [v for v in values if v > 0]
    return max(vals) / min(vals) if len(vals) >= 2 else 1.0


def unsteady(doc: Mapping[str, Any], limit: float = STEADY_SPREAD) -> str | None:
    """One line when a timed baseline's rounds spread more than ``limit`` (see :func:`round_spread`)."""
    spread = round_spread(doc)
    bad = {k: v for k, v in spread.items() if v > limit}
    if not bad:
        return None
    worst = ", ".join(f"{k} x{v:.2f}" for k, v in sorted(bad.items(), key=lambda kv: -kv[1])[:3])
    return (f"the machine's speed changed while the baseline was measured (round medians spread {worst}, more than "
            f"x{limit:.2f}): slowdowns smaller than that cannot be told from drift; take the snapshot again on a "
            f"quiet machine")


# -- reading a baseline ------------------------------------------------------------------------------------


def snapshot_problem(doc: Any) -> str | None:
    """The first thing wrong with a baseline document (one printable line), or None when it can be used;
    see :mod:`attnbench.baseline_schema`."""
    return schema.problem(doc)


def load_baseline(path: str | Path) -> dict[str, Any]:
    """Read and validate a baseline; every problem is one line (UsageError, exit code 2): a missing,
    unreadable, non-regular or oversized file, invalid or too deeply nested JSON, or a document that does
    not match :class:`attnbench.baseline_schema.Snapshot`."""
    return schema.load(path)


# -- check ---------------------------------------------------------------------------------------------


def _finding(key: str, **fields: Any) -> dict[str, Any]:
    return {"key": key, **fields}


def compare_config(key: str, old_shape: list[int], old_options: Mapping[str, Any], new_shape: list[int],
                   new_options: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A changed input shape or a changed option value fails (the block is measured at another
    configuration); an option that was added or removed is only noted (its default may change nothing,
    and if it does, the FLOPs say so)."""
    changed = {k: [old_options[k], new_options[k]] for k in old_options if k in new_options and old_options[k] != new_options[k]}
    if old_shape != list(new_shape) or changed:
        what = ([f"input shape {old_shape} -> {list(new_shape)}"] if old_shape != list(new_shape) else []) + \
               [f"{k}: {a} -> {b}" for k, (a, b) in changed.items()]
        return [_finding(key, check="config", status="changed", failed=True,
                         baseline={"input_shape": old_shape, "options": dict(old_options)},
                         current={"input_shape": list(new_shape), "options": dict(new_options)},
                         detail="the preset changed: " + "; ".join(what))]
    added, removed = sorted(set(new_options) - set(old_options)), sorted(set(old_options) - set(new_options))
    if added or removed:
        what = ([f"added {', '.join(added)}"] if added else []) + ([f"removed {', '.join(removed)}"] if removed else [])
        return [_finding(key, check="config", status="options", failed=False, detail="block options " + "; ".join(what))]
    return []


def _static_findings(entry: Mapping[str, Any], case: api.Case) -> list[dict[str, Any]]:
    key = entry["key"]
    out = []
    out += compare_config(key, entry["input_shape"], entry.get("options") or {}, case.shape.as_list(), dict(case.options))
    now = static_record(case, key)
    out.append(_finding(key, **compare_params(entry["params"], now["params"])))
    out.append(_finding(key, **compare_flops(entry["flops"]["cells"], now["flops"]["cells"])))
    return out


def _samples(t: Mapping[str, Any] | Timed | None) -> dict[str, Any] | None:
    """``{"samples_ms", "round_sizes", "round_medians_ms"}`` of a stored timing dict or a :class:`Timed`;
    None if absent."""
    if t is None:
        return None
    if isinstance(t, Timed):
        return ({"samples_ms": t.samples_ms, "round_sizes": t.round_sizes, "round_medians_ms": t.round_medians_ms}
                if t.samples_ms else None)
    return ({"samples_ms": t["samples_ms"], "round_sizes": t.get("round_sizes"), "round_medians_ms": t.get("round_medians_ms")}
            if t.get("samples_ms") else None)


def latency_finding(key: str, old: Mapping[str, Any], old_ref: Mapping[str, Any] | None, new: Mapping[str, Any],
                    new_ref: Mapping[str, Any] | None, opts: CheckOptions) -> dict[str, Any]:
    """Compare one measurement of a block's latency with the baseline (``{"samples_ms", "round_sizes"}``
    of both and of their reference workloads). The units compared are the per-round medians
    (:func:`round_values`). Two comparisons: ``raw`` (the round medians themselves) and ``normalized``
    (each round median divided by the reference workload's median of the same round). Which of them
    decide (``decisive``):

    * ``opts.normalize``: the normalised one (different devices);
    * else, with ``opts.load_control`` and both references: both -- a regression only if the block is
      slower in its own times *and* relative to the reference (a machine slower as a whole is not a
      regression);
    * else the raw one.

    ``flags`` lists the decisive comparisons that call it a regression; ``status`` is ``regression``
    only when all of them do (``improved`` likewise)."""
    old_v, new_v = round_values(old), round_values(new)
    if not old_v or not new_v:
        raise UsageError(f"{clean(key)}: no latency samples to compare")
    raw = compare_latency(old_v, new_v, opts.alpha, opts.max_slowdown)
    norm = None
    old_rv, new_rv = round_values(old_ref), round_values(new_ref)
    if old_rv and new_rv:
        norm = compare_latency(normalized(old_v, old_rv), normalized(new_v, new_rv), opts.alpha, opts.max_slowdown)
    if opts.normalize and norm is None:
        raise UsageError("--normalize needs the reference workload's samples of both runs")
    if opts.normalize:
        f, mode, decisive = dict(norm), "normalized", ["normalized"]
    elif opts.load_control and norm is not None:
        f, mode, decisive = dict(raw), "raw+reference", ["raw", "normalized"]
    else:
        f, mode, decisive = dict(raw), "raw", ["raw"]
    by = {"raw": raw, "normalized": norm}
    flags = [c for c in decisive if by[c]["status"] == "regression"]
    status = ("regression" if len(flags) == len(decisive)
              else "improved" if all(by[c]["status"] == "improved" for c in decisive) else "ok")
    f.update(status=status, failed=status == "regression", mode=mode, decisive=decisive, flags=flags, unit="round median",
             normalized=opts.normalize, baseline_ms=raw["baseline"], current_ms=raw["current"], raw_ratio=raw["ratio"],
             raw_p_slower=raw["p_slower"], raw_status=raw["status"], normalized_ratio=norm["ratio"] if norm else None,
             normalized_p_slower=norm["p_slower"] if norm else None, normalized_status=norm["status"] if norm else None,
             baseline_rounds_ms=old_v, current_rounds_ms=new_v)
    return _finding(key, **f)


def confirm(flags: Sequence[Sequence[str]], decisive: Sequence[str], retries: int) -> str:
    """The verdict on a block measured ``len(flags)`` times, ``flags[j]`` being the decisive comparisons
    that called measurement j a regression: ``regression`` when one measurement was a regression by
    every decisive comparison and every measurement by at least one, with at least one re-measurement
    (none if ``retries`` is 0); ``unconfirmed`` as soon as a measurement shows no slowdown at all, or
    when the re-measurements are used up; ``pending`` while another measurement is needed."""
    if not flags or any(not f for f in flags):
        return "unconfirmed" if flags and flags[0] else "ok"
    full = any(len(f) == len(decisive) for f in flags)
    if full and (len(flags) >= 2 or retries == 0):
        return "regression"
    return "pending" if len(flags) <= retries else "unconfirmed"


def check(baseline: Mapping[str, Any], opts: CheckOptions, progress: Progress | None = None) -> dict[str, Any]:
    """Validate ``baseline`` (:mod:`attnbench.baseline_schema`), re-measure what it holds and compare;
    returns the report (``passed`` False on any regression; ``not_compared`` lists what a timed baseline
    held that this check did not compare)."""
    opts.check()
    why = snapshot_problem(baseline)
    if why:
        raise UsageError(f"baseline is malformed: {why}")
    findings: list[dict[str, Any]] = []
    cases: dict[str, api.Case] = {}
    for entry in baseline["entries"]:
        key = entry["key"]
        if progress:
            progress(f"counting {key}")
        try:
            case = resolve_entry(entry)
        except UsageError as e:  # validated above, so only if the registry changed meanwhile
            raise UsageError(f"baseline entry {clean(key)} is malformed: {e}") from None
        cases[key] = case
        findings += _static_findings(entry, case)
    findings += _new_entries(baseline)

    timing_info: dict[str, Any] = {"compared": False}
    not_compared: list[str] = []
    if baseline["timed"] and not opts.flops_only:
        timing_info = _check_timing(baseline, cases, opts, findings, progress)
        not_compared = list(timing_info.get("not_compared") or [])
    elif baseline["timed"]:
        timing_info["reason"] = "--flops-only"
        not_compared = ["latency and memory (--flops-only)"]
    else:
        timing_info["reason"] = "the baseline holds parameters and FLOPs only (no timing)"

    failures = [f for f in findings if f["failed"]]
    return {
        "schema": REPORT_SCHEMA,
        "passed": not failures,
        "not_compared": not_compared,
        "baseline": {"created_utc": baseline.get("created_utc"), "timed": baseline["timed"],
                     "entries": len(baseline["entries"]), "environment": baseline.get("environment"),
                     "settings": baseline.get("settings")},
        "environment": environment(),
        "options": asdict(opts),
        "timing": timing_info,
        "summary": {
            "entries": len(baseline["entries"]),
            "failures": len(failures),
            "not_compared": not_compared,
            "by_status": _count(f"{f['check']}:{f['status']}" for f in findings),
        },
        "findings": findings,
    }


def _count(values: Iterator[str] | Sequence[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return dict(sorted(out.items()))


def _new_entries(baseline: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Cases the baseline's selection covers today but the baseline lacks (a note, not a failure)."""
    sel = baseline.get("selection") or {}
    try:
        items = select(sel.get("modules"), sel.get("presets"), sel.get("sizes"))
    except (UsageError, TypeError, AttributeError):
        return []
    have = {e["key"] for e in baseline["entries"]}
    return [_finding(it.key, check="entry", status="new", failed=False,
                     detail="not in the baseline; re-run `attnbench snapshot` to include it")
            for it in items if it.key not in have]


def _mismatch(differences: Sequence[str]) -> str:
    return f"the baseline was timed on another device ({clean('; '.join(differences))})"


def _check_timing(baseline: Mapping[str, Any], cases: Mapping[str, api.Case], opts: CheckOptions,
                  findings: list[dict[str, Any]], progress: Progress | None) -> dict[str, Any]:
    s = dict(baseline["settings"])
    plan = TimingPlan(device=opts.device or s["device"], dtype=s["dtype"], threads=s.get("threads"),
                      rounds=opts.rounds or s["rounds"], round_s=opts.round_s or s["round_s"],
                      clock=s.get("clock", "wall"), malloc=s.get("malloc", "system"),
                      min_reps=s.get("min_reps", TimingPlan.min_reps), timing=s.get("timing", "auto"),
                      max_warmup_s=s.get("max_warmup_s", TimingPlan.max_warmup_s)).check()
    old_fp = baseline["fingerprint"]
    with torch_threads(plan.threads):
        new_fp = dev.fingerprint(plan.device)
        differences = device_differences(old_fp, new_fp)
        if differences and not opts.normalize and not opts.allow_device_mismatch:
            raise UsageError(f"{_mismatch(differences)}, so its latency cannot be compared here; pass --normalize to compare "
                             f"it relative to the reference workload, --allow-device-mismatch to check without latency, "
                             f"or --flops-only")
        latency_ok = not differences or opts.normalize
        memory_ok = memory_comparable(old_fp, new_fp)
        ref_entry = baseline.get("reference") or {}
        ref_old = _samples(ref_entry.get("timing")) if ref_entry.get("status") == "ok" else None
        info: dict[str, Any] = {"compared": latency_ok or memory_ok, "plan": asdict(plan), "fingerprint": new_fp,
                                "device_differences": differences, "latency_compared": latency_ok,
                                "memory_compared": memory_ok, "not_compared": []}
        info["baseline_round_spread"] = round_spread(baseline)
        info["baseline_unsteady"] = unsteady(baseline)
        if not latency_ok:
            info["not_compared"].append(f"latency: {_mismatch(differences)}")
        if not memory_ok:
            info["not_compared"].append(f"memory: {_mismatch(differences)}")
        if opts.normalize and not ref_old:
            raise UsageError("--normalize needs the reference workload's samples in the baseline, which has none")
        entries = {e["key"]: e for e in baseline["entries"]}
        timed = [k for k, e in entries.items() if k in cases and e.get("status") == "ok"]
        for k, e in entries.items():
            if e.get("status") not in (None, "ok"):
                findings.append(_finding(k, check="latency", status="skipped", failed=False,
                                         detail=f"not timed in the baseline ({clean(e['status'])})"))
        if not timed:
            info.update(compared=False, latency_compared=False, memory_compared=False,
                        reason="no entry of the baseline was timed", not_compared=[])
            return info
        if latency_ok:
            rounds, note = current_rounds(int(s["rounds"]), opts.alpha, opts.rounds)
            plan = replace(plan, rounds=rounds).check()
            info["plan"] = asdict(plan)
            info["rank_test"] = {
                "unit": "median of each measurement round", "baseline_rounds": int(s["rounds"]), "current_rounds": rounds,
                "alpha": opts.alpha, "min_p_value": min_p_value(rounds, int(s["rounds"])),
                "false_alarm_rate": false_alarm_rate(rounds, int(s["rounds"]), opts.alpha), "note": note}
        if not (latency_ok or memory_ok):
            for k in timed:
                findings.append(_finding(k, check="latency", status="skipped", failed=False,
                                         detail=f"{_mismatch(differences)}; pass --normalize to compare"))
            return info

        targets = [(REFERENCE_KEY, reference_target(), 1)] + [(k, bench.block_target(cases[k]), _batch(cases[k])) for k in timed]
        # latency not comparable: one short round only, for the memory figures
        mplan = plan if latency_ok else replace(plan, rounds=1, round_s=0.01, min_reps=2)
        results = measure(targets, mplan, new_fp, progress, memory=memory_ok)
        ref_new = _samples(results[REFERENCE_KEY])
        info["reference_ms"] = {"baseline_median": median(round_values(ref_old)) if ref_old else None,
                                "current_median": median(round_values(ref_new)) if ref_new else None}
        if opts.normalize and not ref_new:
            raise UsageError(f"the reference workload failed in this run ({clean(results[REFERENCE_KEY].status)}); cannot --normalize")
        latency: dict[str, dict[str, Any]] = {}
        for k in timed:
            res = results[k]
            if res.status != "ok":
                findings.append(_finding(k, check="latency", status="error", failed=True,
                                         detail=f"timed in the baseline, fails now: {res.status}"))
                continue
            if latency_ok:
                latency[k] = latency_finding(k, _samples(entries[k]["timing"]), ref_old, _samples(res), ref_new, opts)
            else:
                findings.append(_finding(k, check="latency", status="skipped", failed=False,
                                         detail=f"{_mismatch(differences)}; not compared (--allow-device-mismatch)"))
            if memory_ok:
                mem = compare_memory((entries[k].get("memory") or {}).get("peak_bytes"), res.peak_bytes, opts.memory_tolerance)
                mem["metric"] = res.memory_metric
                findings.append(_finding(k, **mem))

        # A block that looks slower (by any decisive comparison) is measured again, up to opts.retries
        # times; see confirm() for the verdict. A slowdown caused by the block itself persists, a burst
        # of load from other processes rarely does.
        history = {k: [f["flags"]] for k, f in latency.items() if f["flags"]}
        for k in history:
            latency[k]["attempts"] = [_attempt(latency[k])]
        for attempt in range(opts.retries):
            pending = [k for k in history if confirm(history[k], latency[k]["decisive"], opts.retries) == "pending"]
            if not pending:
                break
            again = measure([(REFERENCE_KEY, reference_target(), 1)] + [(k, bench.block_target(cases[k]), _batch(cases[k])) for k in pending],
                            plan, new_fp, (lambda m: progress(f"re-measuring ({attempt + 1}) {m}")) if progress else None, memory=False)
            ref_again = _samples(again[REFERENCE_KEY]) or ref_new
            for k in pending:
                if again[k].status != "ok":
                    history[k].append([])
                    continue
                f = latency_finding(k, _samples(entries[k]["timing"]), ref_old, _samples(again[k]), ref_again, opts)
                latency[k]["attempts"].append(_attempt(f))
                history[k].append(f["flags"])
        for k, flags in history.items():
            f = latency[k]
            verdict = confirm(flags, f["decisive"], opts.retries)
            n = len(flags)
            if verdict == "regression":
                f.update(status="regression", failed=True,
                         detail=f"slower in {n} measurement{'s' if n > 1 else ''}" + (" (no re-measurement)" if n == 1 else ""))
            else:
                f.update(status="unconfirmed", failed=False,
                         detail=f"looked slower ({', '.join(sorted({c for fl in flags for c in fl}))}) but not consistently "
                                f"over {n} measurement{'s' if n > 1 else ''}: noise or machine load, not counted")
        # A block that passes although its rounds (in the baseline or now) spread more than a slowdown worth
        # catching has not been shown to be unchanged: the verdict says so instead of passing silently.
        base_spread = info["baseline_round_spread"]
        ref_now = spread_of(results[REFERENCE_KEY].round_medians_ms)
        info["inconclusive"] = []
        for k, f in latency.items():
            spreads = {"baseline": base_spread.get(k, 1.0), "current": spread_of(results[k].round_medians_ms)}
            if f["mode"] != "raw":  # the reference's rounds decide too
                spreads.update(reference_baseline=base_spread.get(REFERENCE_KEY, 1.0), reference_current=ref_now)
            f["round_spread"] = spreads
            worst = max(spreads.values())
            if not f["failed"] and worst > STEADY_SPREAD:
                f["inconclusive"] = True
                info["inconclusive"].append(f"{k} (round medians spread x{worst:.2f})")
        findings += latency.values()
        info["first_pass_alarms"] = sum(1 for f in latency.values() if len(f.get("attempts", [{}])[0].get("flags") or []) == len(f["decisive"]))
        info["suspects"] = len(history)
    return info


def _attempt(f: Mapping[str, Any]) -> dict[str, Any]:
    return {k: f.get(k) for k in ("status", "flags", "raw_ratio", "raw_p_slower", "normalized_ratio", "normalized_p_slower",
                                  "baseline_ms", "current_ms", "n_current")}


# -- summaries -----------------------------------------------------------------------------------------


def fmt_value(check_name: str, value: Any) -> str:
    """A finding's baseline or current value for people."""
    if value is None:
        return "n/a"
    if check_name == "params":
        return f"{value:,}"
    if check_name == "flops":
        return human(value, "FLOP")
    if check_name == "memory":
        return human(value, "B")
    if check_name == "latency":
        return f"{value:.4g}"
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return str(value)


def fmt_change(f: Mapping[str, Any]) -> str:
    """Delta or ratio, and for latency the p-value."""
    c = f["check"]
    if c == "latency" and "ratio" in f:
        rounds = f" over {f['n_baseline']}/{f['n_current']} rounds" if "n_baseline" in f else ""
        if f.get("normalized"):
            return f"x{f['ratio']:.3f} vs reference (p={f['p_slower']:.2g}{rounds}), raw x{f['raw_ratio']:.3f}"
        text = f"x{f['raw_ratio']:.3f} (p={f['raw_p_slower']:.2g}{rounds})"
        if f.get("normalized_ratio") is not None:
            text += f", vs reference x{f['normalized_ratio']:.3f}"
        return text
    if c == "memory" and "delta" in f:
        return f"{'+' if f['delta'] >= 0 else '-'}{human(abs(f['delta']), 'B')} (x{f['ratio']:.3f})"
    if c in ("params", "flops") and "delta" in f:
        if f["delta"] == 0:
            return "0"
        rel = f" ({f['delta'] / f['baseline']:+.2%})" if f["baseline"] else ""
        unit = human(abs(f["delta"]), "FLOP") if c == "flops" else f"{abs(f['delta']):,}"
        return f"{'+' if f['delta'] > 0 else '-'}{unit}{rel}"
    return ""


def verdict(f: Mapping[str, Any]) -> str:
    return ("FAIL: " if f["failed"] else "") + f["status"]


def notable(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Findings worth a line of their own: failures first, then notes (new, improved, unconfirmed...)."""
    fs = [f for f in report["findings"] if f["status"] not in ("ok",)]
    return sorted(fs, key=lambda f: (not f["failed"], f["key"]))


_MD_SPECIAL = re.compile(r"([\\`*_\[\]|~])")


def _md_escape(text: object) -> str:
    """Text from a baseline made inert in Markdown: control characters escaped (:func:`clean`), HTML's
    ``& < >`` as entities, and the characters that make links, code, emphasis or table cells
    backslash-escaped."""
    html = clean(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MD_SPECIAL.sub(r"\\\1", html)


def compared_text(report: Mapping[str, Any]) -> str:
    """What a check compared, and how (one sentence for people)."""
    opts = report["options"]
    t = report["timing"]
    what = "parameters and FLOPs (exact)"
    if t.get("compared"):
        if t.get("latency_compared"):
            clock = (t.get("plan") or {}).get("clock", "wall")
            control = ("normalized by the reference workload" if opts["normalize"] else
                       "also relative to the reference workload" if opts["load_control"] else "")
            rt = t.get("rank_test") or {}
            test = (f"one-sided Mann-Whitney U on per-round medians ({rt['baseline_rounds']} baseline vs {rt['current_rounds']} "
                    f"current rounds, exact p), p <= {opts['alpha']:g}: false-alarm rate of the rank test "
                    f"{rt['false_alarm_rate']:.2%} per block if rounds are independent"
                    if rt else f"one-sided Mann-Whitney U on per-round medians, p <= {opts['alpha']:g}")
            what += (f", latency ({clock} clock; {test}; and median ratio > {opts['max_slowdown']:g}"
                     f"{', ' + control if control else ''}; re-measured up to {opts['retries']}x before failing)")
            if rt.get("note"):
                what += f" ({rt['note']})"
        if t.get("memory_compared"):
            what += f", peak memory (tolerance {opts['memory_tolerance']:.0%})"
    elif t.get("reason"):
        what += f"; latency and memory not compared: {t['reason']}"
    return what


def headline(report: Mapping[str, Any]) -> str:
    """The verdict in one line; when a timed baseline's latency (or memory) was not compared, the line
    says so first."""
    s = report["summary"]
    missing = report.get("not_compared") or []
    skipped = f" (NOT compared: {'; '.join(missing)})" if missing else ""
    unsure = (report.get("timing") or {}).get("inconclusive") or []
    if unsure:
        skipped += (f" (latency inconclusive, the machine's speed drifted more than x{STEADY_SPREAD:.2f} between rounds: "
                    f"{', '.join(unsure)})")
    if report["passed"]:
        return f"PASS{skipped}: {s['entries']} entries, no regressions" + (" in what was compared" if missing else "")
    return f"FAIL{skipped}: {s['failures']} regression(s) in {s['entries']} entries"


def _latency_cell(f: Mapping[str, Any]) -> tuple[str, str]:
    if "baseline_ms" in f:
        return f"{f['baseline_ms']:.4g} ms", f"{f['current_ms']:.4g} ms"
    return "", ""


def finding_cells(f: Mapping[str, Any]) -> tuple[str, str, str]:
    """(baseline, current, change) of a finding as text."""
    if f["check"] == "latency":
        b, c = _latency_cell(f)
        return b, c, fmt_change(f) if "ratio" in f else f.get("detail", "")
    if f["check"] in ("entry", "config") or f["status"] == "skipped":
        return (fmt_value(f["check"], f.get("baseline")) if f.get("baseline") is not None else "",
                fmt_value(f["check"], f.get("current")) if f.get("current") is not None else "",
                f.get("detail", ""))
    return fmt_value(f["check"], f.get("baseline")), fmt_value(f["check"], f.get("current")), fmt_change(f)


def markdown_summary(report: Mapping[str, Any], baseline_path: str = "") -> str:
    """A Markdown summary of a check (for ``$GITHUB_STEP_SUMMARY``); everything from the baseline escaped."""
    ok = report["passed"]
    s = report["summary"]
    missing = report.get("not_compared") or []
    title = f"## attnbench performance gate: {'passed' if ok else 'FAILED'}"
    if missing:
        title += f" (NOT compared: {_md_escape('; '.join(missing))})"
    unsure = (report.get("timing") or {}).get("inconclusive") or []
    if unsure:
        title += f" (latency inconclusive: {_md_escape(', '.join(unsure))})"
    lines = [title, ""]
    t = report["timing"]
    lines.append(f"Baseline {_md_escape(baseline_path)}: {s['entries']} entries. Compared: {_md_escape(compared_text(report))}.")
    if t.get("device_differences"):
        lines.append(f"Device differs from the baseline's: {_md_escape('; '.join(t['device_differences']))}.")
    lines.append("")
    lines.append(f"**{s['failures']} failure(s).**" if s["failures"] else "No regressions.")
    rows = notable(report)
    if rows:
        lines += ["", "| entry | check | baseline | current | change | verdict |", "|---|---|---|---|---|---|"]
        for f in rows:
            b, c, ch = finding_cells(f)
            lines.append(f"| {_md_escape(f['key'])} | {f['check']} | {_md_escape(b)} | {_md_escape(c)} | {_md_escape(ch)} | {verdict(f)} |")
    flops = [f for f in report["findings"] if f["check"] == "flops" and f["status"] == "changed"]
    if flops:
        lines += ["", "FLOPs by op category (multiply-add = 2):", "",
                  "| entry | category | baseline FLOPs | current FLOPs | delta |", "|---|---|---:|---:|---:|"]
        for f in flops:
            for c in f["categories"]:
                lines.append(f"| {_md_escape(f['key'])} | {c['category']} | {c['baseline_flops']:,} | "
                             f"{c['current_flops']:,} | {c['delta_flops']:+,} |")
        lines += ["", "If the change is intended, regenerate the baseline with `attnbench snapshot`."]
    return "\n".join(lines) + "\n"


def append_step_summary(path: str, text: str) -> str | None:
    """Append ``text`` to the GitHub step summary file; the reason as a string if that failed."""
    try:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(text + "\n")
    except OSError as e:
        return f"cannot append to $GITHUB_STEP_SUMMARY ({path}): {e.strerror or e}"
    return None
