"""Speed runs: what to time (targets), how (settings), and one result row per target.

A :class:`Target` is a block at a shape or a network at its input; it knows its analytic FLOPs for the
batch (networks: counted lazily, once per shape, on first use), its predicted peak memory and how to build
itself. :func:`measure_target` times it with :mod:`attnbench.measuring` and returns a JSON-able row; an
out-of-memory, a failed CUDA-graph capture or another device fault becomes a row whose ``status`` says so,
and the run goes on. Rows are appended to a JSON-lines file one at a time (:mod:`attnbench.store.jsonl`).

A row's ``key`` names everything that changes what is measured: the target and its block options, the
device identity, dtype and precision, batch, compile, graphs, timing mode, L2 flush, channels-last, torch
threads and the repetition settings. ``--resume`` reuses only rows with the same key.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
from torch import nn

from attnbench.cases import Case, NetworkCase, too_big_for_tensors
from attnbench.blocks.registry import get_block
from attnbench.errors import AttnBenchError, AttnBenchWarning, UsageError
from attnbench.flops.count import count, meta_inputs
from attnbench.flops.memory import Peak, Precision
from attnbench.measuring import device as dev
from attnbench.measuring.memory import is_oom, measure_memory, release_memory, tensor_peak_bytes
from attnbench.measuring.peaks import achieved
from attnbench.measuring.timing import build_workload, compile_stats, time_callable
from attnbench.store import rows as rows_schema
from attnbench.store.rows import ROW_SCHEMA
from attnbench.store import jsonl

@dataclass(frozen=True)
class Settings:
    """How targets are timed. ``precision`` applies to fp16/bf16 (``pure``: module and inputs converted;
    ``autocast``); ``timing`` to CUDA (``auto``: CUDA-graph replay where the capture works, else
    ``pipelined``; or ``graph``, ``pipelined``, ``isolated``; see :mod:`attnbench.measuring.timing`;
    ``graphs=True`` is ``timing="graph"``, a failed capture being an error row);
    ``threads`` sets torch's CPU threads for the run (None: torch's default)."""

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
    precision: str = "pure"
    timing: str = "auto"
    threads: int | None = None

    @property
    def precision_label(self) -> str:
        """``fp32``, or the low-precision dtype with its mode (``bf16 pure``, ``bf16 autocast``)."""
        return "fp32" if self.dtype == "fp32" else f"{self.dtype} {self.precision}"

    @property
    def device_type(self) -> str:
        return "cuda" if self.device.startswith("cuda") else "cpu"

    @property
    def timing_label(self) -> str:
        if self.device_type == "cpu":
            return "per-call"
        return "graph" if self.graphs else self.timing


FlopsSource = Callable[[], tuple[int, dict[str, int]]]


@dataclass
class Target:
    """Something to time. ``flops_per_item`` is the FLOPs of one clip (an int, or a function returning
    ``(FLOPs, FLOPs by op category)`` that is called once, when first needed); ``options`` are the block
    options (part of the row key); ``memory`` predicts the peak working memory of one clip's call at a
    precision; ``largest`` is the largest intermediate (what, elements per clip)."""

    kind: str  # "block", "network" or "reference"
    name: str
    variant: str  # preset name, or the attention inserted into a network
    input_shapes: tuple[tuple[int, ...], ...]  # at batch 1; the batch replaces the leading size
    flops_per_item: int | FlopsSource
    build: Callable[[], nn.Module]
    largest: tuple[str, int] | None = None
    videos_per_item: int = 0  # 1 for networks (VPS = clips per second), 0 for blocks
    options: Mapping[str, Any] = field(default_factory=dict)
    memory: Callable[[Precision, int], tuple[Peak | None, str | None]] | None = None
    by_category: dict[str, int] | None = None
    preset: str | None = None  # the base preset, when ``variant`` names a custom shape
    custom: bool = False  # sizes (or options) differ from the preset's
    flops_source: str = ""  # "closed form" or "exact counter" (default: by kind)
    unhandled: dict[str, int] = field(default_factory=dict)  # ops the exact counter could not count (never zero silently)
    _counted: tuple[int, dict[str, int]] | None = field(default=None, repr=False)

    def identity(self) -> dict[str, str]:
        """The row's naming fields, the same as ``flops``'s: ``module`` and ``preset`` for a block (and the
        gate's reference workload); ``network``, ``attn`` and ``preset`` for a network."""
        if self.kind == "network":
            attn, _, preset = self.variant.partition("@")
            return {"network": self.name, "attn": attn, "preset": self.preset or preset, "custom": self.custom}
        return {"module": self.name, "preset": self.preset or self.variant, "custom": self.custom}

    def flops(self) -> tuple[int, dict[str, int] | None]:
        """FLOPs of one clip and their split by op category (counted now if this is the first use)."""
        if isinstance(self.flops_per_item, int):
            return self.flops_per_item, self.by_category
        if self._counted is None:
            self._counted = self.flops_per_item()
        return self._counted

    def key(self, s: Settings, fingerprint: Mapping[str, Any] | None = None) -> str:
        opts = ",".join(f"{k}={v}" for k, v in sorted(self.options.items()))
        where = identity(fingerprint) if fingerprint else s.device
        threads = s.threads if s.threads is not None else torch.get_num_threads()
        return (f"{self.kind}:{self.name}:{self.variant}:[{opts}]:{where}:{s.precision_label}:b{s.batch}"
                f":compile={int(s.compile)}:timing={s.timing_label}:l2flush={int(s.flush_l2)}"
                f":channels_last={int(s.channels_last)}:threads={threads}"
                f":reps={s.min_reps}:target_s={s.target_s:g}:warmup_s={s.max_warmup_s:g}")


def identity(fp: Mapping[str, Any]) -> str:
    """The device part of a row key: the device slug, and on CUDA the torch, CUDA and driver versions (rows
    measured under another stack are not reused)."""
    slug = dev.device_slug(fp)
    if fp.get("device_type") == "cuda":
        slug += f"/torch-{fp.get('torch_version')}/cuda-{fp.get('cuda_version')}/driver-{fp.get('driver_version')}"
    return slug


def block_target(case: Case) -> Target:
    """A block at its case's shape, with batch 1 per item (the run's batch scales it)."""
    one = case.shape.replace(B=1)
    cost, source, unhandled = case.cost(one)  # the closed form, or counted for a block that declares none
    largest = case.spec.largest_intermediate(one, **case.options) if case.spec.largest_intermediate else None
    shapes = tuple(tuple(s) for s in case.spec.input_shapes(one, case.options))

    def build() -> nn.Module:
        torch.manual_seed(0)
        return case.spec.build(one, **case.options)

    def memory(p: Precision, batch: int) -> tuple[Peak | None, str | None]:
        return case.spec.peak_memory(case.shape.replace(B=batch), p, case.options)

    return Target("block", case.spec.name, case.preset.name if case.preset else str(case.shape), shapes, cost.flops,
                  build, largest, options=dict(case.options), memory=memory, by_category=cost.by_category(),
                  preset=None if case.preset else case.base, custom=case.preset is None, flops_source=source,
                  unhandled=unhandled)


_NETWORK_FLOPS: dict[tuple[Any, ...], tuple[int, dict[str, int], dict[str, int]]] = {}  # flops, by category, unhandled


def network_target(case: NetworkCase) -> Target:
    """A whole network at batch 1 per item; VPS = clips/s. Its FLOPs come from the exact counter on the meta
    device, counted the first time a row needs them (not when the target is made) and cached per shape."""
    one = NetworkCase(case.spec, case.attn, case.preset, {**case.kwargs, "batch": 1})
    shapes = tuple(tuple(s) for s in one.input_shapes())
    ident = (case.spec.name, case.attn, case.preset, tuple(sorted((k, str(v)) for k, v in one.kwargs.items())))

    def flops() -> tuple[int, dict[str, int]]:
        if ident not in _NETWORK_FLOPS:
            result = count(one.build("meta"), meta_inputs(one.input_shapes()))
            _NETWORK_FLOPS[ident] = (result.cost.flops, result.cost.by_category(), dict(result.unhandled))
        total, by_category, target.unhandled = _NETWORK_FLOPS[ident]
        return total, by_category

    def build() -> nn.Module:
        torch.manual_seed(0)
        return one.spec.build(one.attn, preset=one.preset, **one.kwargs)

    variant = f"{case.attn}@{case.preset or case.spec.default_preset.name}"
    attention_options = {}
    if case.attn != "none":  # the attention's options in full (its kernel, impl=naive, included)
        block = get_block(case.attn)
        given = {k: v for k, v in one.kwargs.items() if k in {o.name for o in block.options}}
        attention_options = block.resolve_options(given)
    if case.kwargs.get("frames") is not None or case.kwargs.get("size") is not None:
        base = case.spec.preset(case.preset)
        variant = f"{case.attn}@{case.kwargs.get('frames') or base.frames}f-{case.kwargs.get('size') or base.size}px"
    options = {**{k: v for k, v in one.kwargs.items() if k != "batch"}, **attention_options}
    custom = case.kwargs.get("frames") is not None or case.kwargs.get("size") is not None
    target = Target("network", case.spec.name, variant, shapes, flops, build, None, videos_per_item=1, options=options,
                    preset=case.preset or case.spec.default_preset.name, custom=custom)
    return target  # flops() fills in target.unhandled when it counts


def table_vi_targets(impl: str = "naive", network: str = "eco", preset: str = "16f",
                     size: int | None = None) -> tuple[list[Target], list[Target]]:
    """BANet Table VI's targets: the NL and CS blocks at the BANet preset (with the network preset's frames),
    and the network plain, with one NL and with one CS, all with attention kernel ``impl``. The network is the
    full ECO: Table VI's baseline "ECO" runs at 23.2 VPS, Table III's ECO(16F), not ECO-Lite(16F)'s 33.1."""
    from attnbench.cases import resolve, resolve_network
    from attnbench.networks.registry import get_network

    frames = get_network(network).preset(preset).frames
    blocks = [block_target(resolve(m, "banet", {"T": frames}, {"impl": impl})) for m in ("nl", "cs")]
    nets = [network_target(resolve_network(network, a, preset, size=size, options={"impl": impl} if a != "none" else None))
            for a in ("none", "nl", "cs")]
    return blocks, nets


def _status(err: BaseException) -> str:
    if is_oom(err):
        return "OOM"
    first = (str(err).strip().splitlines() or [type(err).__name__])[0]
    if isinstance(err, AttnBenchError):
        return f"error: {first[:200]}"
    return f"error: {type(err).__name__}: {first[:200]}"


def _memory_prediction(t: Target, s: Settings, precision: Precision, measured: int | None,
                       metric: str) -> dict[str, Any] | None:
    if t.memory is None:
        return None
    predicted, why = t.memory(precision, s.batch)
    out: dict[str, Any] = {"precision": s.precision_label, "measured_bytes": measured, "measured_metric": metric}
    if predicted is None:
        return {**out, "bytes": None, "why_not": why}
    ratio = None if not measured else predicted.bytes / measured
    return {**out, **predicted.to_dict(), "predicted_over_measured": ratio}


def base_row(t: Target, s: Settings, fingerprint: dict[str, Any]) -> dict[str, Any]:
    """A speed row's naming, settings and FLOPs, before anything is measured (status ``ok``)."""
    flops, _ = t.flops()
    return {
        "schema": ROW_SCHEMA, "key": t.key(s, fingerprint), "kind": t.kind, **t.identity(),
        "options": dict(t.options), "impl": t.options.get("impl"),
        "precision": s.precision_label, "timing_mode": s.timing_label,
        "input_shape": [s.batch, *t.input_shapes[0][1:]],
        "input_shapes": [[s.batch, *shape[1:]] for shape in t.input_shapes],
        "settings": asdict(s), "device_slug": dev.device_slug(fingerprint),
        "threads": s.threads if s.threads is not None else torch.get_num_threads(), "load_avg_1m": dev.load_average(),
        "logical_cores": os.cpu_count(),
        "flops": flops * s.batch,
        "flops_unit": "FLOPs (multiply-add = 2), whole batch; "
                      + (t.flops_source or ("closed form" if t.kind == "block" else "exact counter")),
        "unhandled_ops": dict(t.unhandled),
        "status": "ok",
    }


def measure_target(t: Target, s: Settings, fingerprint: dict[str, Any], *, roofline: Mapping[str, Any] | None = None,
                   tensor_peak: bool = True, clock: str = "wall") -> dict[str, Any]:
    """Time one target; never raises for device faults (OOM, capture failures and other errors become the
    row's status). ``tensor_peak``: on CPU also measure the deterministic tensor peak (one more call),
    which the memory prediction is compared with. ``clock`` is the clock a caller compares (the gate's
    CPU-time clock sizes the test-only injected slowdown on that clock)."""
    row = base_row(t, s, fingerprint)
    precision = Precision(s.dtype, s.precision, s.device_type)
    if t.largest:
        what, elements = t.largest
        per = max(precision.low, precision.softmax, precision.act)  # under autocast an fp32 map or activation
        row["predicted_largest_intermediate"] = {
            "what": what, "elements": elements * s.batch, "bytes": elements * s.batch * per,
            "bytes_per_element": per,
        }
    by_category = t.flops()[1]
    failure: BaseException | None = None
    module = work = None
    try:
        with torch.device(dev.placement(dev.resolve_device(s.device))):
            module = t.build()
        work = build_workload(module, t.input_shapes, device=s.device, dtype=s.dtype, precision=s.precision,
                              batch=s.batch, compile=s.compile, channels_last=s.channels_last)
        timing = "graph" if s.graphs else s.timing
        work = injected_slowdown(t.name, work, s.device, clock, timing)  # test-only; a no-op unless the variable is set
        m = time_callable(work, device=s.device, min_reps=s.min_reps, target_s=s.target_s,
                          max_warmup_s=s.max_warmup_s, flush_l2=s.flush_l2,
                          timing=timing, what=f"{t.name}[{t.variant}]", dtype=s.dtype, batch=s.batch)
        compiled = compile_stats() if s.compile else None
        state = dev.device_state(dev.resolve_device(s.device).index or 0) if s.device_type == "cuda" else None
        mem = measure_memory(work, device=s.device)
        peak_bytes = tensor_peak_bytes(work) if (tensor_peak and s.device_type == "cpu") else None
    except (RuntimeError, MemoryError, AttnBenchError, TypeError, OverflowError) as err:
        if isinstance(err, UsageError) or (isinstance(err, (TypeError, OverflowError)) and not too_big_for_tensors(err)):
            raise
        row["status"] = _status(err)
        failure = err
    if failure is not None:
        # Outside the handler: the traceback (and the tensors its frames hold) is gone, so the memory the
        # failed call held can actually be released before the next target.
        del failure
        module = work = None  # noqa: F841
        release_memory()
        return row
    row["timing"] = m.to_dict(samples=True)
    row["timing_mode"], row["launch_bound"] = m.timing_mode, m.launch_bound
    row["memory"] = mem.to_dict()
    row["memory"]["graph_pool_bytes"] = m.graph_pool_bytes
    if s.device_type == "cuda":
        graph = m.timing_mode == "graph"
        measured = m.graph_pool_bytes if graph else mem.peak_allocated_delta_bytes
        metric = "CUDA-graph pool allocated by the capture" if graph else "cuda peak_allocated_delta_bytes"
    else:
        measured, metric = peak_bytes, "cpu tensor peak (tensors created during one call, tracked op by op)"
    row["memory"]["tensor_peak_bytes"] = peak_bytes
    row["memory"]["working_bytes"], row["memory"]["working_metric"] = measured, metric
    row["memory_prediction"] = _memory_prediction(t, s, precision, measured, metric)
    row["achieved"] = _achieved(row["flops"], m.median, fingerprint, s, by_category, t.options, roofline)
    if compiled is not None:
        row["compile"] = {**compiled, "compile_and_first_call_ms": row["timing"]["first_call_ms"],
                          "fell_back_to_eager": compiled["unique_graphs"] == 0}
    if state is not None:
        row["device_state_after"] = state
    if t.videos_per_item:
        row["vps"] = t.videos_per_item * s.batch / m.median
        row["vps_unit"] = "videos per second (one clip per video)"
    del module, work
    release_memory()
    return row


def _achieved(flops: int, median_s: float, fingerprint: Mapping[str, Any], s: Settings,
              by_category: dict[str, int] | None, options: Mapping[str, Any],
              roofline: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """:func:`~attnbench.measuring.peaks.achieved` with the row's math modes: an fp32 run whose attention is a
    fused sdpa kernel has its matrix work rated at TF32 (PyTorch's memory-efficient kernel uses tensor cores
    for fp32; the higher peak, so the fraction is not overstated); the measured matmul rate is the TF32
    one when the run's dominant matrix work may use TF32."""
    from attnbench.measuring.peaks import tf32_flags

    if median_s <= 0:
        return None
    tf32 = tf32_flags()
    note = None
    if s.dtype == "fp32" and options.get("impl") == "sdpa" and s.device_type == "cuda":
        tf32 = {**tf32, "cublas": True}
        note = "fp32 sdpa: matrix work rated at the TF32 peak (the fused kernel's tensor-core math)"
    cats = by_category or {}
    conv, mat = cats.get("convolution", 0), cats.get("matmul", 0) + cats.get("linear", 0)
    uses_tf32 = s.dtype == "fp32" and (tf32["cudnn"] if conv >= mat else tf32["cublas"])
    record = (roofline or {}).get("matmul_tf32") if uses_tf32 else None
    record = record or (roofline or {}).get("matmul") or {}
    out = achieved(flops, median_s, fingerprint.get("gpu_name"), s.dtype, by_category=by_category, tf32=tf32,
                   measured_matmul_flops_per_s=record.get("flops_per_s"))
    out["measured_matmul_basis"] = record.get("dtype")
    if note:
        out["note"] = note if not out.get("note") else f"{out['note']}; {note}"
    return out


def run(
    targets: Iterable[Target], s: Settings, out_path: str | None, resume: bool,
    on_row: Callable[[dict[str, Any]], None] | None = None, roofline: bool = True, overwrite: bool = False,
) -> list[dict[str, Any]]:
    """:func:`run_jobs` of every target with the settings ``s``."""
    return run_jobs([(t, s) for t in targets], out_path, resume, on_row, roofline, overwrite)


def run_jobs(
    jobs: Sequence[tuple[Target, Settings]], out_path: str | None, resume: bool,
    on_row: Callable[[dict[str, Any]], None] | None = None, roofline: bool = True, overwrite: bool = False,
    on_start: Callable[[str], None] | None = None, cluster: Any = None,
) -> list[dict[str, Any]]:
    """Measure each (target, settings) in turn (``on_start(label)`` is called before each is measured), appending each finished row to ``out_path`` before the next
    starts; a job whose key repeats an earlier one's is the same row (measured once, returned once). The
    jobs share device, dtype and threads (one fingerprint and calibration). One
    :func:`attnbench.store.jsonl.session` covers them all: with ``resume`` keys already in the file are not
    run again (their rows are returned, if measured on this device); with ``overwrite`` their old rows are
    replaced; with neither, a key already in the file stops the run before anything is measured.
    ``roofline``: calibrate (or read from the cache) the device's measured matmul rate first, so every row
    says its fraction of it. ``cluster`` (an :class:`attnbench.distributed.Cluster`): each job is a Ray task
    (:func:`_run_jobs_on_ray`)."""
    if not jobs:
        return []
    first = jobs[0][1]
    if any((s.device, s.dtype, s.threads) != (first.device, first.dtype, first.threads) for _, s in jobs):
        raise UsageError("one run measures on one device, dtype and thread count")
    if cluster is not None:
        return _run_jobs_on_ray(jobs, out_path, resume, on_row, roofline, overwrite, cluster)
    with dev.torch_threads(first.threads):
        fingerprint = dev.fingerprint(first.device)
        unique: dict[str, tuple[Target, Settings]] = {}
        for t, s in jobs:
            unique.setdefault(t.key(s, fingerprint), (t, s))
        keyed = list(unique.items())
        with jsonl.session(out_path, [k for k, _ in keyed], resume=resume, overwrite=overwrite,
                           fingerprint=fingerprint, check=lambda row: rows_schema.reusable_problem(rows_schema.SpeedRow, row)) as have:
            _warn_if_loaded(fingerprint)
            calibration = None
            if roofline:
                from attnbench.measuring.roofline import calibrate

                calibration = calibrate(first.device, first.dtype, fingerprint=fingerprint)
            rows = []
            for key, (t, s) in keyed:
                if key in have:
                    row = have[key]
                else:
                    if on_start:
                        on_start(f"{t.name}[{t.variant}] batch {s.batch}")
                    row = measure_target(t, s, fingerprint, roofline=calibration)
                    _stamp(row, fingerprint, calibration)
                    if out_path:
                        jsonl.append_row(out_path, row)
                rows.append(row)
                if on_row:
                    on_row(row)
    return rows


def _stamp(row: dict[str, Any], fingerprint: dict[str, Any], calibration: Mapping[str, Any] | None) -> None:
    row["fingerprint"] = fingerprint
    if calibration is not None:
        row["roofline"] = {k: calibration.get(k) for k in ("matmul", "matmul_tf32", "copy", "cached")}


def _measure_on_worker(t: Target, s: Settings, roofline: bool) -> dict[str, Any]:
    """Runs in a Ray worker: one job measured as :func:`run_jobs` measures it here, with the worker's
    fingerprint (and its roofline, calibrated once per node and then read from the node's cache)."""
    with dev.torch_threads(s.threads):
        fingerprint = dev.fingerprint(s.device)
        calibration = None
        if roofline:
            from attnbench.measuring.roofline import calibrate

            calibration = calibrate(s.device, s.dtype, fingerprint=fingerprint)
        row = measure_target(t, s, fingerprint, roofline=calibration)
    _stamp(row, fingerprint, calibration)
    return row


def _run_jobs_on_ray(jobs: Sequence[tuple[Target, Settings]], out_path: str | None, resume: bool,
                     on_row: Callable[[dict[str, Any]], None] | None, roofline: bool, overwrite: bool,
                     cluster: Any) -> list[dict[str, Any]]:
    """:func:`run_jobs` with each job a Ray task (:mod:`attnbench.distributed`); FLOPs are counted here
    before the jobs leave, rows are appended here as their tasks finish and returned in job order. Threads:
    the given ones, else 1 on CPU and the worker's default on CUDA (each task holds that many cores)."""
    from attnbench import distributed

    device = jobs[0][1].device
    threads = jobs[0][1].threads or (None if device.startswith("cuda") else 1)
    for t, _ in jobs:
        t.flops()  # counted on the driver (a network's on the meta device); the count travels with the target
    done: dict[str, dict[str, Any]] = {}
    with distributed.connect(cluster) as ray:
        where = distributed.groups(ray, cluster, device, threads)
        unique: dict[str, tuple[Target, Settings, Any]] = {}
        for g in where:
            n = threads or g.fingerprint.get("torch_threads")
            for t, s in jobs:
                s = replace(s, threads=n)
                unique.setdefault(t.key(s, g.fingerprint), (t, s, g))
        with jsonl.session(out_path, list(unique), resume=resume, overwrite=overwrite,
                           fingerprint=lambda key: unique[key][2].fingerprint,
                           check=lambda row: rows_schema.reusable_problem(rows_schema.SpeedRow, row)) as have:
            todo = []
            for key, (t, s, g) in unique.items():
                if key in have:
                    done[key] = have[key]
                    if on_row:
                        on_row(have[key])
                else:
                    todo.append(distributed.Job(key, _measure_on_worker, (t, s, roofline), g))
            for job, got in distributed.stream(ray, todo, device, threads, cluster):
                t, s, g = unique[job.key]
                if isinstance(got, distributed.Failed):
                    got = {**base_row(t, s, g.fingerprint), "status": got.status, "fingerprint": g.fingerprint}
                got["key"] = job.key  # the worker's own key: the same where its device is the probed one
                why = distributed.unlike_probe(g, job.key, got)
                if why:
                    warnings.warn(why, AttnBenchWarning, stacklevel=2)
                else:
                    done[job.key] = got
                if out_path:
                    jsonl.append_row(out_path, got)
                if on_row:
                    on_row(got)
    return [done[k] for k in unique if k in done]


def _warn_if_loaded(fingerprint: Mapping[str, Any]) -> None:
    """Warn when the machine is busier than it has cores: other processes then take turns with the timed
    calls and the times say more about them than about the block."""
    load, cores = fingerprint.get("load_avg_1m"), fingerprint.get("logical_cores")
    if load is not None and cores and load > cores:
        warnings.warn(f"the machine is loaded: 1-minute load average {load:.1f} on {cores} logical cores; times "
                      f"include waiting for other processes (the load is recorded in every row's fingerprint)",
                      AttnBenchWarning, stacklevel=3)


def latency_ratio(rows: list[dict[str, Any]], slow: str, fast: str, impl: str | None = None) -> dict[str, Any] | None:
    """Median-latency and FLOP ratios of two measured names (e.g. nl vs cs at the same shape); with
    ``impl``, only rows of that attention kernel."""
    by = {r["module"]: r for r in rows
          if r.get("module") and r.get("status") == "ok" and (impl is None or r.get("impl") == impl)}
    if slow not in by or fast not in by:
        return None
    a, b = by[slow], by[fast]
    return {
        "pair": f"{slow}/{fast}",
        "impl": impl,
        "latency_ratio": a["timing"]["median_ms"] / b["timing"]["median_ms"],
        "flop_ratio": a["flops"] / b["flops"],
    }


# -- test-only: an injected slowdown, for validating the CI performance gate ---------------------------
INJECT_SLOWDOWN_ENV = "ATTNBENCH_INJECT_SLOWDOWN"
CLOCKS = ("wall", "cpu")


def _fractions(spec: str) -> dict[str, float]:
    fractions: dict[str, float] = {}
    for part in spec.split(","):
        key, _, value = part.partition(":")
        try:
            fractions[key.strip()] = float(value)
        except ValueError:
            raise UsageError(f"{INJECT_SLOWDOWN_ENV} must be NAME:FRACTION[,...], got '{spec}'") from None
    return fractions


def injected_slowdown(name: str, work: Callable[[], Any], device: str, clock: str = "wall",
                      timing: str = "auto") -> Callable[[], Any]:
    """TEST ONLY. ``ATTNBENCH_INJECT_SLOWDOWN="cs:0.25"`` (comma list of ``NAME:FRACTION``) makes every
    call of the workload of target ``NAME`` about 25% slower on the clock that is compared. It exists only
    so that ``attnbench check`` and ``scripts/validate_gate.py`` can show the gate detects a real slowdown;
    never set it otherwise. Unset (the normal case), ``work`` is returned unchanged.

    * CPU: after the real call, busy-wait FRACTION times the time that call took, both read on ``clock``
      (``wall``: ``perf_counter``; ``cpu``: the thread's CPU time, which the gate's CPU clock compares).
    * CUDA: the call's time T is measured once, the way it will be compared (:func:`time_callable` with the
      same ``timing``). After each real call a GPU spin kernel (``torch.cuda._sleep``) of FRACTION x T is
      enqueued and the host busy-waits FRACTION x T: a GPU-bound call is slowed by the spin, a launch-bound
      one (the GPU idling between launches) by the host wait. Nothing synchronises inside the call, so it
      can be captured into a CUDA graph, whose replays then carry the spin (the host wait is not replayed,
      and replays are not launch-bound). Sizing it calls the workload, so with ``--compile`` the compile
      happens there and ``first_call_ms`` is no longer the compile time.
    """
    spec = os.environ.get(INJECT_SLOWDOWN_ENV, "").strip()
    if not spec:
        return work
    extra = _fractions(spec).get(name, 0.0)
    if extra <= 0:
        return work
    if clock not in CLOCKS:
        raise UsageError(f"unknown clock '{clock}'; valid choices: {', '.join(CLOCKS)}")
    if dev.resolve_device(device).type == "cuda":
        seconds = extra * time_callable(work, device=device, timing=timing, min_reps=5, target_s=0.05,
                                        max_warmup_s=0.2).median
        cycles = max(1, int(seconds * _sleep_cycles_per_second()))

        def slowed_gpu() -> Any:
            result = work()
            torch.cuda._sleep(cycles)
            until = time.perf_counter() + seconds
            while time.perf_counter() < until:
                pass
            return result

        return slowed_gpu
    now = time.thread_time if clock == "cpu" else time.perf_counter

    def slowed() -> Any:
        start = now()
        result = work()
        until = now() + extra * (now() - start)
        while now() < until:  # busy: the core stays occupied, like real extra work
            pass
        return result

    return slowed


def _sleep_cycles_per_second(cycles: int = 1_000_000) -> float:
    """How many ``torch.cuda._sleep`` cycles the GPU spins per second, timed once by CUDA events."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda._sleep(cycles)  # warm-up
    start.record()
    torch.cuda._sleep(cycles)
    end.record()
    end.synchronize()
    seconds = start.elapsed_time(end) * 1e-3
    return cycles / seconds if seconds > 0 else 1e9

