"""The baseline document: :func:`snapshot` writes it (counts, and with a plan the timed rounds), and
:func:`load_baseline` reads and validates one (:mod:`attnbench.gate.schema`)."""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

import attnbench
from attnbench import bench, cases
from attnbench.errors import UsageError
from attnbench.gate import schema
from attnbench.gate.cases import Item, static_record
from attnbench.gate.rounds import (
    REFERENCE_FLOPS,
    REFERENCE_WHAT,
    batch_of,
    measure,
    reference_target,
)
from attnbench.gate.settings import REFERENCE_KEY, Progress, TimingPlan
from attnbench.measuring import device as dev
from attnbench.measuring.device import torch_threads

SCHEMA = schema.SCHEMA


def environment() -> dict[str, Any]:
    import platform

    return {"attnbench_version": attnbench.__version__, "torch_version": torch.__version__,
            "python_version": platform.python_version()}


def snapshot(items: Sequence[Item], plan: TimingPlan | None, selection: Mapping[str, Any],
             progress: Progress | None = None) -> dict[str, Any]:
    """The baseline document: every item's parameters and exact FLOPs, and with a ``plan`` its latency
    samples, peak memory, the reference workload's samples and the device fingerprint."""
    doc = _counted(items, plan, selection, progress)
    if plan is None:
        return doc
    plan.check()
    with torch_threads(plan.threads):
        fp = dev.fingerprint(plan.device)
        results = measure(_targets(items), plan, fp, progress)
    return _timed(doc, fp, results)


def snapshot_on_ray(items: Sequence[Item], plan: TimingPlan, selection: Mapping[str, Any],
                    cluster: Any) -> list[tuple[Any, dict[str, Any]]]:
    """:func:`snapshot` timed on a Ray cluster: one task per GPU model (``cluster.each_accelerator``) or one
    in all, each timing every block interleaved with the reference workload on one device, as a baseline
    must; counting stays here. Returns (group, document) pairs; a task that failed for good raises."""
    from attnbench import distributed

    plan.check(local=False)
    threads = plan.threads or (None if plan.device.startswith("cuda") else 1)
    plan = replace(plan, threads=threads)
    counted = _counted(items, plan, selection, None)
    docs = []
    with distributed.connect(cluster) as ray:
        groups = distributed.groups(ray, cluster, plan.device, threads)
        jobs = [distributed.Job("snapshot", _time_on_worker, (list(items), plan), g) for g in groups]
        for job, got in distributed.stream(ray, jobs, plan.device, threads, cluster):
            if isinstance(got, distributed.Failed):
                raise UsageError(f"the snapshot's task on {job.group.label} failed: {got.status}")
            fp, results, worker = got
            doc = _timed(copy.deepcopy(counted), fp, results)
            doc["worker"] = worker
            docs.append((job.group, doc))
    return docs


def _time_on_worker(items: Sequence[Item], plan: TimingPlan) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    from attnbench.distributed import where_it_ran

    with torch_threads(plan.threads):
        fp = dev.fingerprint(plan.device)
        results = measure(_targets(items), plan, fp, None)
    return fp, results, where_it_ran()


def _targets(items: Sequence[Item]) -> list[tuple[str, bench.Target, int]]:
    return [(REFERENCE_KEY, reference_target(), 1)] + [(it.key, bench.block_target(it.case), batch_of(it.case)) for it in items]


def _counted(items: Sequence[Item], plan: TimingPlan | None, selection: Mapping[str, Any],
             progress: Progress | None) -> dict[str, Any]:
    entries = []
    for it in items:
        if progress:
            progress(f"counting {it.key}")
        c = it.case
        entries.append({"key": it.key, "module": c.spec.name, "preset": c.preset.name if c.preset else None,
                        "base_preset": it.base_preset, "input_shape": c.shape.as_list(), "options": dict(c.options),
                        **static_record(c, it.key)})
    return {
        "schema": SCHEMA, "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "environment": environment(), "selection": dict(selection), "timed": plan is not None,
        "settings": asdict(plan) if plan else None, "fingerprint": None, "reference": None,
        "units": {"flops": cases.UNITS["flops"], "params": cases.UNITS["params"], "times": "milliseconds per call",
                  "memory": "bytes"},
        "entries": entries,
    }


def _timed(doc: dict[str, Any], fp: dict[str, Any], results: Mapping[str, Any]) -> dict[str, Any]:
    doc["fingerprint"] = fp
    ref = results[REFERENCE_KEY]
    doc["reference"] = {"what": REFERENCE_WHAT, "flops": REFERENCE_FLOPS, "status": ref.status, "timing": ref.timing_dict()}
    for entry in doc["entries"]:
        res = results[entry["key"]]
        entry["status"] = res.status
        entry["timing"] = res.timing_dict()
        entry["memory"] = res.memory_dict()
    return doc


def snapshot_problem(doc: Any) -> str | None:
    """The first thing wrong with a baseline document (one printable line), or None when it can be used;
    see :mod:`attnbench.gate.schema`."""
    return schema.problem(doc)


def load_baseline(path: str | Path) -> dict[str, Any]:
    """Read and validate a baseline; every problem is one line (UsageError, exit code 2): a missing,
    unreadable, non-regular or oversized file, invalid or too deeply nested JSON, or a document that does
    not match :class:`attnbench.gate.schema.Snapshot`."""
    return schema.load(path)
