"""Speed runs: what to time (targets), how (settings), and one result row per target.

A :class:`Target` is a block at a shape or a network at its input; it knows its analytic FLOPs for the
batch and how to build itself. :func:`measure_target` times it with :mod:`attnbench.measure` and returns
a JSON-able row; an out-of-memory (or other device fault) becomes a row whose ``status`` says so, and the
run goes on. Rows are appended to a JSON-lines file one at a time (:mod:`attnbench.report.store`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from attnbench.api import Case, NetworkCase
from attnbench.errors import UsageError
from attnbench.flops.count import count, meta_inputs
from attnbench.measure import device as dev
from attnbench.measure.memory import is_oom, measure_memory, release_memory
from attnbench.measure.peaks import achieved
from attnbench.measure.timing import build_workload, time_callable
from attnbench.report import store

DTYPE_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2}


@dataclass(frozen=True)
class Settings:
    device: str = "cpu"
    dtype: str = "fp32"
    batch: int = 1
    compile: bool = False
    graphs: bool = False
    flush_l2: bool = False
    channels_last: bool = False
    min_reps: int = 10
    target_s: float = 1.0
    max_warmup_s: float = 2.0


@dataclass(frozen=True)
class Target:
    kind: str  # "block" or "network"
    name: str
    variant: str  # preset name, or the attention inserted into a network
    input_shapes: tuple[tuple[int, ...], ...]  # at batch 1; the batch replaces the leading size
    flops_per_item: int  # analytic (blocks) or exact-counted (networks) FLOPs for one clip
    build: Callable[[], nn.Module]
    largest: tuple[str, int] | None = None  # largest intermediate (what, elements per clip)
    videos_per_item: int = 0  # 1 for networks (VPS = clips per second), 0 for blocks

    def key(self, s: Settings) -> str:
        return f"{self.kind}:{self.name}:{self.variant}:{s.device}:{s.dtype}:b{s.batch}:c{int(s.compile)}:g{int(s.graphs)}"


def block_target(case: Case) -> Target:
    """A block at its case's shape, with batch 1 per item (the run's batch scales it)."""
    one = case.shape.replace(B=1)
    flops = case.spec.cost(one, **case.options).flops
    largest = case.spec.largest_intermediate(one, **case.options) if case.spec.largest_intermediate else None
    shapes = tuple(tuple(s) for s in case.spec.input_shapes(one, case.options))

    def build() -> nn.Module:
        torch.manual_seed(0)
        return case.spec.build(one, **case.options)

    return Target("block", case.spec.name, case.preset.name if case.preset else str(case.shape), shapes, flops, build, largest)


def network_target(case: NetworkCase) -> Target:
    """A whole network at batch 1 per item; FLOPs from the exact counter (meta device); VPS = clips/s."""
    one = NetworkCase(case.spec, case.attn, case.preset, {**case.kwargs, "batch": 1})
    flops = count(one.build("meta"), meta_inputs(one.input_shapes())).cost.flops
    shapes = tuple(tuple(s) for s in one.input_shapes())

    def build() -> nn.Module:
        torch.manual_seed(0)
        return one.spec.build(one.attn, preset=one.preset, **one.kwargs)

    variant = f"{case.attn}@{case.preset or case.spec.default_preset.name}"
    return Target("network", case.spec.name, variant, shapes, flops, build, None, videos_per_item=1)


def _status(err: BaseException) -> str:
    if is_oom(err):
        return "OOM"
    first = (str(err).strip().splitlines() or [type(err).__name__])[0]
    return f"error: {type(err).__name__}: {first[:200]}"


def measure_target(t: Target, s: Settings, fingerprint: dict[str, Any]) -> dict[str, Any]:
    """Time one target; never raises for device faults (OOM and errors become the row's status)."""
    row: dict[str, Any] = {
        "key": t.key(s), "kind": t.kind, "name": t.name, "variant": t.variant,
        "input_shapes": [[s.batch, *shape[1:]] for shape in t.input_shapes],
        "settings": asdict(s), "device_slug": dev.device_slug(fingerprint),
        "flops": t.flops_per_item * s.batch,
        "flops_unit": "FLOPs (multiply-add = 2), whole batch; " + ("closed form" if t.kind == "block" else "exact counter"),
        "status": "ok",
    }
    if t.largest:
        what, elements = t.largest
        row["predicted_largest_intermediate"] = {
            "what": what, "elements": elements * s.batch, "bytes": elements * s.batch * DTYPE_BYTES[s.dtype],
        }
    try:
        with torch.device(dev.resolve_device(s.device)):
            module = t.build()
        work = build_workload(module, t.input_shapes, device=s.device, dtype=s.dtype, batch=s.batch,
                              compile=s.compile, channels_last=s.channels_last)
        work = injected_slowdown(t.name, work, s.device)  # test-only; a no-op unless the variable is set
        m = time_callable(work, device=s.device, min_reps=s.min_reps, target_s=s.target_s,
                          max_warmup_s=s.max_warmup_s, cuda_graph=s.graphs, flush_l2=s.flush_l2,
                          what=f"{t.name}[{t.variant}]", dtype=s.dtype, batch=s.batch)
        mem = measure_memory(work, device=s.device)
    except (RuntimeError, MemoryError) as err:
        row["status"] = _status(err)
        module = work = None  # noqa: F841 - drop references before freeing
        release_memory()
        return row
    row["timing"] = m.to_dict(samples=True)
    row["memory"] = mem.to_dict()
    row["achieved"] = achieved(row["flops"], m.median, fingerprint.get("gpu_name"), s.dtype)
    if t.videos_per_item:
        row["vps"] = t.videos_per_item * s.batch / m.median
        row["vps_unit"] = "videos per second (one clip per video)"
    del module, work
    release_memory()
    return row


def run(
    targets: Iterable[Target], s: Settings, out_path: str | None, resume: bool,
    on_row: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Measure each target in turn, appending each finished row to ``out_path`` before the next starts.
    With ``resume``, targets whose key is already in the file are not run again (their rows are returned)."""
    fingerprint = dev.fingerprint(s.device)
    have = {r["key"]: r for r in store.read_rows(out_path)} if (out_path and resume) else {}
    rows = []
    for t in targets:
        key = t.key(s)
        if key in have:
            row = have[key]
        else:
            row = measure_target(t, s, fingerprint)
            row["fingerprint"] = fingerprint
            if out_path:
                store.append_row(out_path, row)
        rows.append(row)
        if on_row:
            on_row(row)
    return rows


def latency_ratio(rows: list[dict[str, Any]], slow: str, fast: str) -> dict[str, Any] | None:
    """Median-latency and FLOP ratios of two measured names (e.g. nl vs cs at the same shape)."""
    by = {r["name"]: r for r in rows if r.get("status") == "ok"}
    if slow not in by or fast not in by:
        return None
    a, b = by[slow], by[fast]
    return {
        "pair": f"{slow}/{fast}",
        "latency_ratio": a["timing"]["median_ms"] / b["timing"]["median_ms"],
        "flop_ratio": a["flops"] / b["flops"],
    }


# -- test-only: an injected slowdown, for validating the CI performance gate ---------------------------
INJECT_SLOWDOWN_ENV = "ATTNBENCH_INJECT_SLOWDOWN"


def injected_slowdown(name: str, work: Callable[[], Any], device: str) -> Callable[[], Any]:
    """TEST ONLY. ``ATTNBENCH_INJECT_SLOWDOWN="cs:0.25"`` (comma list of ``NAME:FRACTION``) makes every
    call of the workload of target ``NAME`` busy-wait, after the real call, for FRACTION times the time
    that call took, so the target runs ~25% slower. It exists only so that ``attnbench check`` and
    ``scripts/validate_gate.py`` can show the gate detects a real slowdown; never set it otherwise.
    Unset (the normal case), ``work`` is returned unchanged."""
    spec = os.environ.get(INJECT_SLOWDOWN_ENV, "").strip()
    if not spec:
        return work
    fractions: dict[str, float] = {}
    for part in spec.split(","):
        key, _, value = part.partition(":")
        try:
            fractions[key.strip()] = float(value)
        except ValueError:
            raise UsageError(f"{INJECT_SLOWDOWN_ENV} must be NAME:FRACTION[,...], got '{spec}'") from None
    extra = fractions.get(name, 0.0)
    if extra <= 0:
        return work
    cuda = dev.resolve_device(device).type == "cuda"

    def slowed() -> Any:
        start = time.perf_counter()
        result = work()
        if cuda:
            torch.cuda.synchronize()
        until = time.perf_counter() + extra * (time.perf_counter() - start)
        while time.perf_counter() < until:  # busy: the core stays occupied, like real extra work
            pass
        return result

    return slowed
