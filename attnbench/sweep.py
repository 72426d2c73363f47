"""Scaling sweeps: how a block's cost grows with frames (T), frame size (H = W) and channels (C).

A sweep takes each block at its default preset (or a named one) and varies one axis at a time, the others
held at the preset. Every point gets the closed-form FLOPs (exact: the closed forms equal the op-level counter),
the closed-form parameter count and the predicted largest intermediate; with a device it is also timed
through :func:`attnbench.bench.measure_target` (latency and peak memory; an OOM is a row, not a crash).

Shapes a block rejects (its ``check``) become rows with ``status == "skipped"`` and the reason.

From the rows: :func:`fit_exponents` (least-squares slope of log cost against log size, per block, axis and
metric), :func:`crossovers` (where NL and CS part: the first size from which CS costs less than NL, and less
by a factor 2, in the data and by scanning the closed forms over every integer size), and :func:`max_fit`
(the largest size that fits on a device: doubling, then bisection, out-of-memory handled).

Rows are appended to a JSON-lines file one at a time (:mod:`attnbench.store.jsonl`): an interrupted sweep
keeps every finished row, and ``resume`` runs only the rows missing from the file.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from typing import Any

from attnbench import cases
from attnbench.defaults import SCHEMA, SWEEP_MODULES, SWEEP_VALUES
from attnbench.errors import AttnBenchError, AttnBenchWarning, UsageError
from attnbench.flops.memory import DTYPE_BYTES
from attnbench.text import UNHANDLED, unhandled_text
from attnbench.store import rows as rows_schema
from attnbench.store import jsonl

AXES: tuple[str, ...] = ("T", "HW", "C")
AXIS_LABELS = {"T": "T (frames)", "HW": "H = W (pixels)", "C": "C (channels)"}
DEFAULT_VALUES = SWEEP_VALUES
DEFAULT_MODULES = SWEEP_MODULES
UNITS = {
    "flops": "FLOPs, closed form (equal to the exact counter; counted on the meta device where a block declares none, "
             "flops_source = counted): a multiply-add counts 2, any other op 1",
    "params": "learnable parameters (count)",
    "predicted_largest_intermediate.bytes": "bytes of the largest intermediate tensor at the run's dtype (closed form)",
    "latency_ms": "median wall time of one forward call, milliseconds",
    "peak_bytes": "working memory of one call: CUDA: allocator peak minus what was allocated before it; CPU: the "
                  "tensor peak (tensors created during the call, tracked op by op)",
    "predicted_peak_memory.bytes": "closed-form peak working memory of one call at the run's dtype and precision",
}
# On CPU a point is not run when (this factor x its predicted largest intermediate) exceeds the memory the
# OS says is available: the Linux OOM killer ends the process instead of letting torch raise.
CPU_MEMORY_FACTOR = 3


def sizes_for(axis: str, value: int) -> dict[str, int]:
    """The sizes one sweep point overrides: ``HW`` sets H and W together."""
    if axis == "HW":
        return {"H": value, "W": value}
    if axis in ("T", "C"):
        return {axis: value}
    raise UsageError(f"unknown sweep axis '{axis}'; valid choices: {', '.join(AXES)}")


def parse_values(text: str | None, name: str) -> list[int] | None:
    """``"4,8,16"`` -> [4, 8, 16] (sorted, unique); None (not given) -> None; an empty list is refused."""
    if text is None:
        return None
    if not text.replace(",", "").strip():
        raise UsageError(f"--{name} takes a comma list of positive integers, got '{text}'")
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            v = int(part)
        except ValueError:
            raise UsageError(f"--{name} takes a comma list of positive integers, got '{part}'") from None
        if v < 1:
            raise UsageError(f"--{name} values must be >= 1, got {v}")
        out.append(v)
    if not out:
        raise UsageError(f"--{name} takes a comma list of positive integers, got '{text}'")
    return sorted(set(out))


def parse_modules(text: str | Sequence[str] | None) -> list[str]:
    """``"nl,cs"`` (or ``["nl", "cs"]``) -> ["nl", "cs"], each checked against the registry; ``all`` -> every
    block."""
    from attnbench.blocks.registry import all_blocks, get_block

    if text is None:
        return list(DEFAULT_MODULES)
    given = text.split(",") if isinstance(text, str) else list(text)
    if [m.strip() for m in given] == ["all"]:
        return [s.name for s in all_blocks()]
    names = [m.strip() for m in given if m.strip()]
    if not names:
        raise UsageError(f"--modules takes a comma list of blocks (see `attnbench list`), got '{text}'")
    for name in names:
        get_block(name)  # raises UsageError listing the valid names
    return list(dict.fromkeys(names))


# ---------------------------------------------------------------------------------------------------------
# Points and rows


@dataclass(frozen=True)
class Point:
    """One block at one value of one axis (the other sizes at the preset)."""

    module: str
    axis: str
    value: int
    preset: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)

    def key(self, where: str) -> str:
        opts = ",".join(f"{k}={v}" for k, v in sorted(self.options.items()))
        base = f"{self.module}@{self.preset or 'default'}" + (f"[{opts}]" if opts else "")
        return f"sweep:{base}:{self.axis}={self.value}:{where}"


def plan(
    modules: Sequence[str], values: Mapping[str, Sequence[int]], preset: str | None = None,
    options: Mapping[str, Any] | None = None,
) -> list[Point]:
    """Every (block, axis, value) point, in the order given: block by block, axis by axis."""
    for axis in values:
        sizes_for(axis, 1)
    return [Point(m, axis, int(v), preset, dict(options or {})) for m in modules for axis, vs in values.items() for v in vs]


def where_label(device: str | None, dtype: str = "fp32", precision: str = "pure") -> str:
    """The part of a row's key that says how it was produced: ``analytic`` or ``<device>:<dtype>`` (with
    ``/<precision>`` for fp16/bf16)."""
    if device is None:
        return "analytic"
    return f"{device}:{dtype}" + ("" if dtype == "fp32" else f"/{precision}")


def analytic_row(p: Point, dtype: str = "fp32", precision: str = "pure", device_type: str = "cpu") -> tuple[dict[str, Any], cases.Case | None]:
    """Closed-form FLOPs, parameters, largest intermediate and predicted peak working memory (at ``dtype``,
    ``precision``, on ``device_type``) at one point; a rejected shape is a row with ``status == "skipped"``
    and the block's reason (the case is then None)."""
    spec_preset = cases.get_block(p.module).preset(p.preset)  # unknown block / preset: a usage error, raised
    row: dict[str, Any] = {
        "schema": SCHEMA, "kind": "sweep", "module": p.module, "axis": p.axis, "value": p.value, "preset": spec_preset.name,
        "options": dict(p.options), "input_shape": None, "status": "ok", "reason": None,
    }
    try:
        case = cases.resolve(p.module, p.preset, sizes_for(p.axis, p.value), p.options)
    except AttnBenchError as e:
        row.update(status="skipped", reason=str(e))
        return row, None
    spec, shape, opts = case.spec, case.shape, case.options
    try:
        cost, source, unhandled = case.cost()
        params, _ = case.params()
        if source == "counted":  # a block without closed forms: counted on the meta device, unknown ops named
            row.update(flops_source="counted", unhandled_ops=unhandled)
        terms = spec.terms(shape, **opts) if spec.terms else {}
        largest = spec.largest_intermediate(shape, **opts) if spec.largest_intermediate else None
    except (AttnBenchError, ValueError, ZeroDivisionError) as e:  # a closed form undefined at this shape
        row.update(status="skipped", reason=f"{type(e).__name__}: {e}")
        return row, None
    row.update(
        input_shape=shape.as_list(), input_shapes=[list(s) for s in case.input_shapes()], options=dict(opts), flops=cost.flops, macs=cost.macs, params=params,
        by_category_flops=cost.by_category(),
    )
    for k in ("affinity_flops", "nl_affinity_flops", "ratio", "ratio_exact"):
        if k in terms:
            row[k] = terms[k]
    if largest:
        what, elements = largest
        row["predicted_largest_intermediate"] = {
            "what": what, "elements": elements, "bytes": elements * DTYPE_BYTES[dtype], "dtype": dtype,
        }
    from attnbench.flops.memory import Precision

    peak, why = spec.peak_memory(shape, Precision(dtype, precision, device_type), opts)
    row["predicted_peak_memory"] = ({"bytes": peak.bytes, "phase": peak.phase, "precision": precision, "dtype": dtype}
                                    if peak else {"bytes": None, "why_not": why})
    return row, case


def available_cpu_bytes() -> int | None:
    """MemAvailable from /proc/meminfo (Linux), else None."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def memory_guard(row: dict[str, Any], device: str) -> str | None:
    """Why a CPU point must not run (its predicted working memory exceeds what is available), or None. The
    closed-form peak is used where the block declares one (with a 1.5x margin for the allocator and the
    untracked call that precedes a measurement), else 3 x the largest intermediate."""
    if device != "cpu":
        return None
    peak = (row.get("predicted_peak_memory") or {}).get("bytes")
    largest = (row.get("predicted_largest_intermediate") or {}).get("bytes")
    if peak is not None:
        need, what = 1.5 * peak, f"1.5 x the predicted peak working memory ({peak / 2**30:.1f} GiB)"
    elif largest is not None:
        need, what = CPU_MEMORY_FACTOR * largest, f"{CPU_MEMORY_FACTOR} x the predicted largest intermediate ({largest / 2**30:.1f} GiB)"
    else:
        return None
    avail = available_cpu_bytes()
    if avail is None or need <= avail:
        return None
    return (f"not run on CPU: {what} exceeds the {avail / 2**30:.1f} GiB available (the OS would kill the process "
            "rather than raise)")


Measure = Callable[[cases.Case, Any, dict[str, Any]], dict[str, Any]]


def bench_measure(case: cases.Case, settings: Any, fingerprint: dict[str, Any]) -> dict[str, Any]:
    """Time one case with :func:`attnbench.bench.measure_target` (OOM and device errors become its status)."""
    from attnbench import bench

    return bench.measure_target(bench.block_target(case), settings, fingerprint)


def measured_fields(measured: dict[str, Any]) -> dict[str, Any]:
    """What a sweep row takes from a speed row: status, timing, memory, and the two headline numbers."""
    timing, memory = measured.get("timing") or {}, measured.get("memory") or {}
    peak = (measured.get("memory_prediction") or {}).get("measured_bytes")
    if peak is None:
        peak = memory.get("peak_allocated_bytes")
    if peak is None:
        peak = memory.get("rss_peak_delta_bytes")
    return {
        "status": measured.get("status", "ok"),
        "latency_ms": timing.get("median_ms"),
        "peak_bytes": peak,
        "timing": timing or None,
        "memory": memory or None,
        "achieved": measured.get("achieved"),
        "memory_prediction": measured.get("memory_prediction"),
    }


@dataclass
class SweepResult:
    rows: list[dict[str, Any]]
    new: int = 0  # rows computed (and appended) in this run
    reused: int = 0  # rows taken from the file (resume)
    interrupted: bool = False
    remaining: int = 0  # points not run because of the interruption
    out_path: str | None = None

    def summary_line(self) -> str:
        where = f" in {self.out_path}" if self.out_path else ""
        head = "interrupted: " if self.interrupted else ""
        tail = f", {self.remaining} not run" if self.interrupted else ""
        return f"{head}kept {self.new + self.reused} sweep rows{where} ({self.new} new, {self.reused} from the file{tail})"


def run_sweep(
    points: Iterable[Point], *, device: str | None = None, dtype: str = "fp32", precision: str = "pure", min_reps: int = 5,
    target_s: float = 0.5, out_path: str | None = None, resume: bool = False,
    on_row: Callable[[dict[str, Any]], None] | None = None, measure: Measure | None = None,
    max_flops: int | None = None, overwrite: bool = False, also: Iterable[str] = (), threads: int | None = None,
    cluster: Any = None,
) -> SweepResult:
    """Compute (and with ``device``, measure) every point, appending each finished row to ``out_path``.

    ``resume`` takes rows whose key is already in the file instead of running them (measured rows only if
    measured on this device); ``overwrite`` replaces them; with neither, a key already in the file is an error
    (:func:`attnbench.store.jsonl.session`). Ctrl-C (KeyboardInterrupt) stops the sweep: the result keeps
    every finished row and says how many were left. ``max_flops``: points whose closed-form FLOPs exceed it
    are not timed (rows marked skipped, with why). ``also``: keys a later step of the command writes (the
    max-fit rows), checked before anything runs. ``threads``: torch CPU threads while measuring (None:
    torch's). ``cluster`` (an :class:`attnbench.distributed.Cluster`): measure each point as a Ray task
    (see :func:`_run_on_ray`)."""
    from attnbench.measuring import device as dev

    points = list(points)
    if cluster is not None:
        return _run_on_ray(points, cluster, device=device, dtype=dtype, precision=precision, min_reps=min_reps,
                           target_s=target_s, out_path=out_path, resume=resume, on_row=on_row, max_flops=max_flops,
                           overwrite=overwrite, also=also, threads=threads)
    with dev.torch_threads(threads):
        return _run_here(points, device, dtype, precision, min_reps, target_s, out_path, resume, on_row, measure,
                         max_flops, overwrite, also)


def measured_where(fingerprint: dict[str, Any], device: str, dtype: str, precision: str, min_reps: int, target_s: float,
                   max_flops: int | None) -> str:
    """The part of a measured row's key that says where and how: device identity, dtype, threads and timing
    settings (a measured row is reused only for the same device and settings)."""
    from attnbench import bench

    return (f"{bench.identity(fingerprint)}:{where_label(device, dtype, precision)}:threads={fingerprint.get('torch_threads')}"
            f":reps={min_reps}:target_s={target_s:g}"
            + (f":max_gflops={max_flops / 1e9:g}" if max_flops is not None else ""))


def _run_here(points: list[Point], device: str | None, dtype: str, precision: str, min_reps: int, target_s: float,
              out_path: str | None, resume: bool, on_row: Callable[[dict[str, Any]], None] | None,
              measure: Measure | None, max_flops: int | None, overwrite: bool, also: Iterable[str]) -> SweepResult:
    from attnbench.measuring import device as dev

    fingerprint = dev.fingerprint(device) if device is not None else None
    where = where_label(device, dtype, precision)
    if fingerprint is not None:
        where = measured_where(fingerprint, device, dtype, precision, min_reps, target_s, max_flops)
    keys = [p.key(where) for p in points]
    result = SweepResult(rows=[], out_path=out_path)
    measure = measure or bench_measure
    with jsonl.session(out_path, keys, resume=resume, overwrite=overwrite, fingerprint=fingerprint, also=also,
                       check=lambda row: rows_schema.reusable_problem(rows_schema.SweepRow, row)) as have:
        for i, (p, key) in enumerate(zip(points, keys)):
            try:
                if key in have:
                    row = have[key]
                    result.reused += 1
                else:
                    row = _compute(p, key, device, dtype, precision, min_reps, target_s, max_flops, fingerprint, measure)
                    if out_path:
                        jsonl.append_row(out_path, row)
                    result.new += 1
            except KeyboardInterrupt:
                result.interrupted = True
                result.remaining = len(points) - i
                break
            result.rows.append(row)
            if on_row:
                on_row(row)
    return result


def _compute(p: Point, key: str, device: str | None, dtype: str, precision: str, min_reps: int, target_s: float,
             max_flops: int | None, fingerprint: dict[str, Any] | None, measure: Measure) -> dict[str, Any]:
    row, case, settings = _prepare(p, key, device, dtype, precision, min_reps, target_s, max_flops)
    measured = measure(case, settings, fingerprint or {}) if settings is not None else None
    return _finish(row, settings, measured, fingerprint)


def _prepare(p: Point, key: str, device: str | None, dtype: str, precision: str, min_reps: int, target_s: float,
             max_flops: int | None) -> tuple[dict[str, Any], cases.Case | None, Any]:
    """A point's row before it is measured (closed forms; skipped with why when it must not run) and, when it
    is to be measured, its case and timing settings (else None, None)."""
    from attnbench import bench

    row, case = analytic_row(p, dtype, precision, "cuda" if (device or "").startswith("cuda") else "cpu")
    row["key"] = key
    row["device"] = device
    if device is None or case is None:
        return row, None, None
    reason = memory_guard(row, device)
    if reason is None and max_flops is not None and row["flops"] > max_flops:
        reason = (f"not timed: {row['flops'] / 1e9:.1f} GFLOPs per call is above this sweep's "
                  f"timing limit of {max_flops / 1e9:.1f} GFLOPs")
    if reason:
        row.update(status="skipped", reason=reason)
        return row, None, None
    settings = bench.Settings(device=device, dtype=dtype, batch=case.shape.B, min_reps=min_reps,
                              target_s=target_s, max_warmup_s=max(0.2, target_s), precision=precision)
    return row, case, settings


def _finish(row: dict[str, Any], settings: Any, measured: dict[str, Any] | None,
            fingerprint: dict[str, Any] | None, load_avg: float | None = None) -> dict[str, Any]:
    """The row with what measuring gave, the device's fingerprint (the worker's, on Ray) and the load average
    when it ran (default: now, here)."""
    from attnbench.measuring import device as dev

    if row["device"] is None or row.get("input_shape") is None:  # closed forms only, or a shape the block rejects
        return row
    if measured is not None:
        row.update(measured_fields(measured))
        row["settings"] = asdict(settings)
    row["device_slug"] = dev.device_slug(fingerprint or {})
    row["fingerprint"] = fingerprint
    row["load_avg_1m"] = dev.load_average() if load_avg is None else load_avg
    return row


def _measure_on_worker(target: Any, settings: Any, threads: int | None) -> dict[str, Any]:
    """Runs in a Ray worker: one point measured the way a local run measures it, with the worker's fingerprint."""
    from attnbench import bench
    from attnbench.measuring import device as dev

    with dev.torch_threads(threads):
        fp = dev.fingerprint(settings.device)
        row = bench.measure_target(target, settings, fp)
    row["fingerprint"] = fp
    return row


def _run_on_ray(points: list[Point], cluster: Any, *, device: str | None, dtype: str, precision: str, min_reps: int,
                target_s: float, out_path: str | None, resume: bool, on_row: Callable[[dict[str, Any]], None] | None,
                max_flops: int | None, overwrite: bool, also: Iterable[str], threads: int | None) -> SweepResult:
    """:func:`run_sweep` with each measured point a Ray task (:mod:`attnbench.distributed`): closed forms,
    the memory guard and the results file stay here; rows are appended as their tasks finish, and the
    result lists them in plan order. With ``each_accelerator`` every point runs once per GPU model. On CPU a
    point uses ``threads`` cores (default 1)."""
    from attnbench import bench, distributed

    if device is None:
        raise UsageError("--ray distributes measuring: add --device (closed forms alone take milliseconds here)")
    if threads is None and not device.startswith("cuda"):
        threads = 1
    result = SweepResult(rows=[], out_path=out_path)
    done: dict[int, dict[str, Any]] = {}
    with distributed.connect(cluster) as ray:
        where = distributed.groups(ray, cluster, device, threads)
        planned = [(p, g, p.key(measured_where(g.fingerprint, device, dtype, precision, min_reps, target_s, max_flops)))
                   for g in where for p in points]
        device_of = {k: g.fingerprint for _, g, k in planned}
        with jsonl.session(out_path, list(device_of), resume=resume, overwrite=overwrite, also=also,
                           fingerprint=device_of.get,
                           check=lambda row: rows_schema.reusable_problem(rows_schema.SweepRow, row)) as have:
            jobs, waiting = [], {}
            for i, (p, g, key) in enumerate(planned):
                if key in have:
                    done[i] = have[key]
                    result.reused += 1
                    if on_row:
                        on_row(have[key])
                    continue
                row, case, settings = _prepare(p, key, device, dtype, precision, min_reps, target_s, max_flops)
                if settings is None:  # skipped: nothing to measure
                    done[i] = _finish(row, None, None, g.fingerprint)
                    _keep(out_path, done[i], result, on_row)
                    continue
                waiting[key] = (i, p, row, settings)
                jobs.append(distributed.Job(key, _measure_on_worker, (bench.block_target(case), settings, threads), g))
            try:
                for job, got in distributed.stream(ray, jobs, device, threads, cluster):
                    i, p, row, settings = waiting[job.key]
                    if isinstance(got, distributed.Failed):
                        row.update(status=got.status)
                        row = _finish(row, settings, None, job.group.fingerprint)
                    else:
                        fp = got["fingerprint"]
                        row = _finish(row, settings, got, fp, fp.get("load_avg_1m"))
                        row["worker"] = got.get("worker")
                    why = distributed.unlike_probe(job.group, job.key, row)
                    if why:
                        warnings.warn(why, AttnBenchWarning, stacklevel=2)
                    else:
                        done[i] = row
                    _keep(out_path, row, result, on_row)
            except KeyboardInterrupt:
                result.interrupted = True
                result.remaining = len(planned) - len(done)
    result.rows = [done[i] for i in sorted(done)]
    return result


def _keep(path: str | None, row: dict[str, Any], result: SweepResult, on_row: Callable[[dict[str, Any]], None] | None) -> None:
    if path:
        jsonl.append_row(path, row)
    result.new += 1
    if on_row:
        on_row(row)


# ---------------------------------------------------------------------------------------------------------
# Growth exponents

METRICS = {"flops": "FLOPs", "latency_ms": "latency (ms)", "params": "parameters", "largest_bytes": "largest intermediate (bytes)"}


def exponent(sizes: Sequence[float], costs: Sequence[float]) -> dict[str, float] | None:
    """Least-squares fit of log(cost) = a + k log(size): the growth exponent k, with R^2. None when fewer
    than two distinct positive sizes with positive costs are given."""
    pts = [(math.log(s), math.log(c)) for s, c in zip(sizes, costs) if s and c and s > 0 and c > 0]
    if len({x for x, _ in pts}) < 2:
        return None
    n = len(pts)
    mx = sum(x for x, _ in pts) / n
    my = sum(y for _, y in pts) / n
    sxx = sum((x - mx) ** 2 for x, _ in pts)
    sxy = sum((x - mx) * (y - my) for x, y in pts)
    syy = sum((y - my) ** 2 for _, y in pts)
    k = sxy / sxx
    if abs(k) < 1e-12:  # a constant cost: exactly 0, not rounding noise
        k = 0.0
    r2 = 1.0 if syy < 1e-20 else (sxy * sxy) / (sxx * syy)
    return {"exponent": k, "intercept": my - k * mx, "r2": r2, "n": n}


MEASURED_METRICS = ("latency_ms", "peak_bytes")


def metric_value(row: dict[str, Any], metric: str) -> float | None:
    """A row's value of ``metric``: closed-form metrics exist for every shape the block accepts (also when the
    point was not timed, or ran out of memory); measured ones only for rows whose status is ok."""
    if row.get("kind", "sweep") != "sweep" or not row.get("input_shape"):
        return None
    if metric in MEASURED_METRICS and row.get("status") != "ok":
        return None
    if metric == "largest_bytes":
        return (row.get("predicted_largest_intermediate") or {}).get("bytes")
    return row.get(metric)


def fit_exponents(rows: Iterable[dict[str, Any]], metrics: Sequence[str] = ("flops", "latency_ms")) -> list[dict[str, Any]]:
    """Per block, axis and metric: the fitted exponent over the whole range and the slope of its last
    segment (the two largest sizes, closest to the asymptotic growth). Closed-form metrics use every shape
    the block accepts; measured ones only the rows that ran (status ok)."""
    groups: dict[tuple[str, str, str | None], dict[int, dict[str, Any]]] = {}
    for r in rows:  # the same points measured on several devices (Ray's --each-accelerator): fitted per device
        if r.get("kind", "sweep") == "sweep" and r.get("input_shape"):
            groups.setdefault((r["module"], r["axis"], r.get("device_slug")), {})[r["value"]] = r
    devices = {d for _, _, d in groups}
    out = []
    for (module, axis, device), by_value in groups.items():
        if len(devices) > 1 and device is None:
            continue
        for metric in metrics:
            pts = sorted((v, metric_value(r, metric)) for v, r in by_value.items() if metric_value(r, metric))
            fit = exponent([v for v, _ in pts], [c for _, c in pts])
            if fit is None:
                continue
            tail = exponent([v for v, _ in pts[-2:]], [c for _, c in pts[-2:]])
            out.append({
                "module": module, "axis": axis, "metric": metric, "exponent": fit["exponent"], "r2": fit["r2"],
                "points": fit["n"], "from": pts[0][0], "to": pts[-1][0],
                "last_segment_exponent": tail["exponent"] if tail else None,
                **({"device": device} if len(devices) > 1 else {}),
            })
    return out


# ---------------------------------------------------------------------------------------------------------
# Where NL and CS part


def _first_from(values: Sequence[int], holds: Sequence[bool]) -> int | None:
    """The smallest value from which the condition holds at every larger value in the list; None if it
    does not hold at the largest."""
    first = None
    for v, h in zip(values, holds):
        if h and first is None:
            first = v
        elif not h:
            first = None
    return first


def _intervals(values: Sequence[int], holds: Sequence[bool]) -> list[list[int]]:
    """Maximal runs of consecutive listed values where the condition holds, as [first, last] pairs."""
    runs: list[list[int]] = []
    open_run = False
    for v, h in zip(values, holds):
        if h and open_run:
            runs[-1][1] = v
        elif h:
            runs.append([v, v])
        open_run = h
    return runs


def _runs_text(runs: list[list[int]], name: str) -> str:
    return ", ".join(f"{name}={a}" if a == b else f"{name} in {a}..{b}" for a, b in runs)


def analytic_scan(slow: str, fast: str, axis: str, factor: float = 2.0, preset: str | None = None,
                  limit: int | None = None) -> dict[str, Any]:
    """Scan the closed forms over every integer size 1..limit of ``axis`` (the others at each block's
    preset): the first size from which ``fast`` costs less than ``slow`` (total FLOPs), from which it costs
    less by ``factor``, and, when ``fast`` reports BANet's R = F_CS / F_3D, the sizes where R >= 1."""
    limit = limit or {"T": 512, "HW": 512, "C": 4096}[axis]
    values, below, parted, r_ge_1, rejected = [], [], [], [], 0
    r_min = r_max = None
    for v in range(1, limit + 1):
        try:
            a = cases.resolve(slow, preset, sizes_for(axis, v))
            b = cases.resolve(fast, preset, sizes_for(axis, v))
        except AttnBenchError:
            rejected += 1
            continue
        fa, fb = a.spec.cost(a.shape, **a.options).flops, b.spec.cost(b.shape, **b.options).flops
        values.append(v)
        below.append(fb < fa)
        parted.append(fa >= factor * fb)
        terms = b.spec.terms(b.shape, **b.options) if b.spec.terms else {}
        if "ratio_exact" in terms:
            r = Fraction(terms["ratio_exact"])
            r_min = r if r_min is None else min(r_min, r)
            r_max = r if r_max is None else max(r_max, r)
            if r >= 1:
                r_ge_1.append(v)
    return {
        "axis": axis, "range": [1, limit], "rejected_sizes": rejected,
        "fast_below_slow_from": _first_from(values, below),
        "fast_below_slow_everywhere": bool(values) and all(below),
        "fast_below_slow_at": _intervals(values, below),
        f"factor_{factor:g}_from": _first_from(values, parted),
        f"factor_{factor:g}_at": _intervals(values, parted),
        "affinity_ratio_at_least_1_at": r_ge_1 if r_max is not None else None,
        "affinity_ratio_min": float(r_min) if r_min is not None else None,
        "affinity_ratio_max": float(r_max) if r_max is not None else None,
    }


def crossovers(rows: Iterable[dict[str, Any]], slow: str = "nl", fast: str = "cs", factor: float = 2.0,
               scan: bool = True) -> list[dict[str, Any]]:
    """Per axis swept for both blocks at the same shapes: the FLOP (and measured latency) ratio slow/fast at
    every size, the first size from which fast is cheaper and cheaper by ``factor``, BANet's affinity ratio
    R = F_CS / F_3D, and (``scan``) the same thresholds from the closed forms at every integer size."""
    by: dict[tuple[str, str], dict[int, dict[str, Any]]] = {}
    presets: dict[tuple[str, str], str] = {}
    for r in rows:
        if r.get("kind", "sweep") == "sweep" and r.get("input_shape") and r["module"] in (slow, fast):
            by.setdefault((r["module"], r["axis"]), {})[r["value"]] = r
            presets[(r["module"], r["axis"])] = r.get("preset")
    out = []
    for axis in AXES:
        a, b = by.get((slow, axis)), by.get((fast, axis))
        if not a or not b:
            continue
        common = sorted(v for v in set(a) & set(b) if a[v]["input_shape"] == b[v]["input_shape"])
        if not common:
            out.append({"axis": axis, "pair": f"{slow}/{fast}", "comparable": False,
                        "text": f"{slow} and {fast} were swept over {axis} at different shapes: not compared"})
            continue
        flop_ratio = [a[v]["flops"] / b[v]["flops"] for v in common]
        lat = [(v, metric_value(a[v], "latency_ms"), metric_value(b[v], "latency_ms")) for v in common]
        lat = [(v, x / y) for v, x, y in lat if x and y]
        rec: dict[str, Any] = {
            "axis": axis, "pair": f"{slow}/{fast}", "comparable": True, "values": common,
            "fixed_shape": a[common[0]]["input_shape"], "flop_ratio": flop_ratio,
            "affinity_ratio_R": [b[v].get("ratio") for v in common],
            "fast_below_slow_from": _first_from(common, [f > 1 for f in flop_ratio]),
            f"factor_{factor:g}_from": _first_from(common, [f >= factor for f in flop_ratio]),
            "latency_values": [v for v, _ in lat], "latency_ratio": [x for _, x in lat],
            f"latency_factor_{factor:g}_from": _first_from([v for v, _ in lat], [x >= factor for _, x in lat]) if lat else None,
        }
        if scan:
            same_preset = presets.get((slow, axis)) == presets.get((fast, axis))
            try:
                rec["analytic_scan"] = analytic_scan(slow, fast, axis, factor, presets.get((slow, axis)) if same_preset else None)
            except AttnBenchError as e:
                rec["analytic_scan"] = {"error": str(e)}
        rec["text"] = crossover_text(rec, slow, fast, factor)
        out.append(rec)
    return out


def crossover_text(rec: dict[str, Any], slow: str, fast: str, factor: float = 2.0) -> str:
    """One sentence saying what the data (and the closed-form scan) show for one axis."""
    axis, values, ratio = rec["axis"], rec["values"], rec["flop_ratio"]
    name = "H=W" if axis == "HW" else axis
    lo, hi = min(ratio), max(ratio)
    parts = [f"over {name} in {values[0]}..{values[-1]}: {slow}/{fast} FLOPs {ratio[0]:.2f}x at {name}={values[0]} "
             f"to {ratio[-1]:.2f}x at {name}={values[-1]} (range {lo:.2f}-{hi:.2f}x)"]
    k = f"factor_{factor:g}_from"
    below = rec["fast_below_slow_from"]
    if below == values[0]:
        parts.append(f"at the swept sizes {fast} is below {slow} everywhere")
    elif below is None:
        parts.append(f"at the swept sizes {fast} is not below {slow} at the largest")
    else:
        parts.append(f"at the swept sizes {fast} is below {slow} from {name}={below}")
    parts.append(f"by {factor:g}x from {name}={rec[k]}" if rec[k] is not None else f"never by {factor:g}x")
    rs = [r for r in rec.get("affinity_ratio_R") or [] if r is not None]
    if rs:
        span = f"{rs[0]:.1%} at every swept size" if max(rs) == min(rs) else f"from {max(rs):.1%} down to {min(rs):.1%}"
        parts.append(f"R = F_CS/F_3D {span}" + (" (always < 1: the correlation FLOPs never cross)" if max(rs) < 1 else ""))
    scan = rec.get("analytic_scan") or {}
    if "error" not in scan and scan:
        s = [f"closed forms at every integer {name} in 1..{scan['range'][1]}:"]
        fb, fk = scan["fast_below_slow_from"], scan.get(k)
        if fb is not None:
            s.append(f"{fast} < {slow} from {name}={fb} on")
        else:
            runs = scan.get("fast_below_slow_at") or []
            s.append(f"{fast} < {slow} at {_runs_text(runs, name)}" if runs else f"{fast} never below {slow}")
        if fk is not None:
            s.append(f"{factor:g}x apart from {name}={fk} on")
        else:
            runs = scan.get(f"factor_{factor:g}_at") or []
            s.append(f"{factor:g}x apart only at {_runs_text(runs, name)}" if runs else f"never {factor:g}x apart")
        if scan.get("affinity_ratio_at_least_1_at") is not None:
            ge = scan["affinity_ratio_at_least_1_at"]
            s.append(("R >= 1 only at " + ", ".join(f"{name}={v}" for v in ge[:8]) + (" ..." if len(ge) > 8 else ""))
                     if ge else "R < 1 at every size")
        parts.append(" ".join(s[:1]) + " " + ", ".join(s[1:]))
    lat = rec.get("latency_ratio") or []
    if lat:
        lk = rec.get(f"latency_factor_{factor:g}_from")
        parts.append(f"measured latency {slow}/{fast} {lat[0]:.2f}x to {lat[-1]:.2f}x"
                     + (f", {factor:g}x apart from {name}={lk}" if lk is not None else ""))
    return "; ".join(parts)


# ---------------------------------------------------------------------------------------------------------
# Largest size that fits


Probe = Callable[[cases.Case], tuple[str, int | None]]


def device_probe(device: str, dtype: str = "fp32", precision: str = "pure") -> Probe:
    """One forward call of a case on ``device``: ("ok", working-memory bytes of the call) or ("OOM", None) or
    ("error: ...", None)."""

    def probe(case: cases.Case) -> tuple[str, int | None]:
        import torch

        from attnbench import bench
        from attnbench.measuring import device as dev
        from attnbench.measuring.memory import measure_memory, release_memory, run_guarded
        from attnbench.measuring.timing import build_workload

        target = bench.block_target(case)

        def once() -> Any:
            with torch.device(dev.placement(dev.resolve_device(device))):
                module = target.build()
            work = build_workload(module, target.input_shapes, device=device, dtype=dtype, precision=precision,
                                  batch=case.shape.B)
            return measure_memory(work, device=device)

        failed = None
        try:
            report, status = run_guarded(once)
        except (RuntimeError, MemoryError) as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            failed = f"error: {type(e).__name__}: {first[:160]}"
        release_memory()  # outside the handler, so the failed call's tensors are no longer referenced
        if failed:
            return failed, None
        if status:
            return status, None
        # the call's working memory (allocator peak minus what was allocated before it), as sweep rows report
        return "ok", report.peak_allocated_delta_bytes if report.peak_allocated_delta_bytes is not None else report.rss_peak_delta_bytes

    return probe


def max_fit(module: str, axis: str = "T", *, probe: Probe, start: int | None = None, limit: int = 4096,
            preset: str | None = None, options: Mapping[str, Any] | None = None,
            on_probe: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """The largest size of ``axis`` at which ``module`` runs (others at the preset): double from ``start``
    (default: the preset's size) until a probe fails or ``limit`` is reached, then bisect between the last
    size that ran and the first that did not. Every probe is kept in the result."""
    spec = cases.get_block(module)
    p = spec.preset(preset)
    if start is None:
        start = p.shape.H if axis == "HW" else getattr(p.shape, axis)
    start = max(1, min(start, limit))
    probes: list[dict[str, Any]] = []
    cache: dict[int, bool] = {}

    def fits(v: int) -> bool:
        if v in cache:
            return cache[v]
        try:
            case = cases.resolve(module, preset, sizes_for(axis, v), options)
        except AttnBenchError as e:
            status, peak = f"rejected: {e}", None
        else:
            status, peak = probe(case)
        rec = {"value": v, "status": status, "peak_bytes": peak}
        probes.append(rec)
        if on_probe:
            on_probe(rec)
        cache[v] = status == "ok"
        return cache[v]

    lo, hi, v = 0, None, start
    while True:
        if fits(v):
            lo = v
            if v >= limit:
                break
            v = min(2 * v, limit)
        else:
            hi = v
            break
    while hi is not None and hi - lo > 1:
        mid = (lo + hi) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid
    failure = next((q["status"] for q in probes if q["value"] == hi), None) if hi is not None else None
    return {
        "kind": "max-fit", "module": module, "axis": axis, "preset": p.name, "options": dict(options or {}),
        "impl": (options or {}).get("impl"), "largest_fit": lo or None,
        "smallest_failing": hi, "failure": failure, "limit": limit, "reached_limit": hi is None,
        "probes": probes,
    }


def max_fit_text(r: dict[str, Any]) -> str:
    name = "H=W" if r["axis"] == "HW" else r["axis"]
    if r["reached_limit"]:
        return f"{r['module']}: runs at every probed {name} up to the limit {r['limit']}"
    if not r["largest_fit"]:
        return f"{r['module']}: does not run even at {name}=1 ({r['failure']})"
    return f"{r['module']}: largest {name} that runs = {r['largest_fit']} ({name}={r['smallest_failing']}: {r['failure']})"


# ---------------------------------------------------------------------------------------------------------
# Tables (pandas frames; rendering is attnbench.report.tables')


def rows_frame(rows: Sequence[dict[str, Any]]) -> Any:
    """One line per sweep row; every numeric column names its unit."""
    measured = any(r.get("device") for r in rows)
    has_ratio = any("ratio" in r for r in rows)
    out = []
    for r in rows:
        li = r.get("predicted_largest_intermediate") or {}
        line: dict[str, Any] = {
            "module": r["module"], "axis": r["axis"], "value": r["value"], "preset": r.get("preset"),
            "input [B,C,T,H,W]": "x".join(str(v) for v in r["input_shape"]) if r.get("input_shape") else "-",
            "status": r["status"], "FLOPs": r.get("flops"), "params": r.get("params"),
            "pred. largest MiB": li["bytes"] / 2**20 if li.get("bytes") is not None else None,
            "pred. peak MiB": (r.get("predicted_peak_memory") or {}).get("bytes", None) / 2**20
            if (r.get("predicted_peak_memory") or {}).get("bytes") is not None else None,
        }
        if has_ratio:
            line["R = F_CS/F_3D ratio"] = r.get("ratio")
        if measured:
            line["median ms"] = r.get("latency_ms")
            line["peak MiB"] = r["peak_bytes"] / 2**20 if r.get("peak_bytes") is not None else None
        if any(x.get("unhandled_ops") for x in rows):
            line[UNHANDLED] = unhandled_text(r.get("unhandled_ops"))
        line["reason"] = r.get("reason") or ""
        out.append(line)
    return integer_columns(out, ("value", "FLOPs", "params", "pred. largest MiB", "pred. peak MiB", "R = F_CS/F_3D ratio",
                                 "median ms", "peak MiB"))


def integer_columns(records: Sequence[dict[str, Any]], cols: Sequence[str]) -> Any:
    """A frame of ``records`` whose ``cols`` keep their values as given, None included (pandas would turn a
    column of ints with a gap into floats, rounding counts above 2**53 and printing gaps as nan)."""
    import pandas as pd

    df = pd.DataFrame(list(records))
    for c in cols:
        if c in df.columns:
            df[c] = pd.Series([r.get(c) for r in records], dtype=object, index=df.index)
    return df


def exponents_frame(exps: Sequence[dict[str, Any]]) -> Any:
    import pandas as pd

    return pd.DataFrame([{
        "module": e["module"], "axis": e["axis"], **({"device": e["device"]} if "device" in e else {}),
        "metric": METRICS.get(e["metric"], e["metric"]),
        "exponent": round(e["exponent"], 4),
        "last-segment exponent": None if e["last_segment_exponent"] is None else round(e["last_segment_exponent"], 4),
        "R^2": round(e["r2"], 5), "points": e["points"], "sizes": f"{e['from']}..{e['to']}",
    } for e in exps])


def max_fit_frame(results: Sequence[dict[str, Any]]) -> Any:
    import pandas as pd

    return pd.DataFrame([{
        "module": r["module"], "axis": r["axis"], "largest that runs": r["largest_fit"],
        "smallest that fails": r["smallest_failing"], "failure": r["failure"] or "", "limit": r["limit"],
        "probes": len(r["probes"]),
        "working MiB at largest": next((q["peak_bytes"] / 2**20 for q in r["probes"]
                                     if q["value"] == r["largest_fit"] and q["peak_bytes"] is not None), None),
    } for r in results])
