"""Measured speeds on disk (``results/<device>/*.jsonl``), for the papers' speed figures.

A run is every ``ok`` network row of one device, dtype and batch, with its videos per second (VPS) per
(network, preset, attention). A paper's speed figure is compared as a ratio of two networks measured in the
same run; the run preferred is one from the folder a report is writing (``prefer``: the rows it just
measured), then a CUDA one, then fp32, then batch 1.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attnbench.errors import AttnBenchWarning, UsageError
from attnbench.store import jsonl

Net = tuple[str, str, str]  # (network, preset, attn)


@dataclass
class Run:
    slug: str
    dtype: str
    batch: int
    device: str = ""  # the GPU or CPU model, from the rows' fingerprint
    vps: dict[Net, float] = field(default_factory=dict)
    preferred: bool = False  # read from the ``prefer`` folder (a report's own rows)

    @property
    def label(self) -> str:
        return f"{self.device or self.slug}, {self.dtype}, batch {self.batch}"


def _row_net(row: dict[str, Any]) -> Net | None:
    if row.get("kind") != "network" or row.get("status") != "ok" or not row.get("vps") or not row.get("network"):
        return None
    return (str(row.get("network", "")), str(row.get("preset", "")), str(row.get("attn", "none")))


def runs(results_dir: Path, prefer: Path | None = None) -> list[Run]:
    """Every run on disk: ``results_dir/*/*.jsonl``, and ``prefer/*.jsonl`` (a report's own folder, which
    may lie elsewhere) as runs of their own marked ``preferred``. Rows with fields of the wrong type are
    skipped with one warning per file."""
    found: dict[tuple[str, str, int, bool], Run] = {}
    own = sorted(prefer.glob("*.jsonl")) if prefer is not None and prefer.is_dir() else []
    own_resolved = {p.resolve() for p in own}
    others = [p for p in (sorted(results_dir.glob("*/*.jsonl")) if results_dir.is_dir() else [])
              if p.resolve() not in own_resolved]
    for path in own + others:
        preferred = path in own
        try:
            rows = jsonl.load(path, need=()).rows
        except UsageError as err:  # a folder or an unreadable file named like the results: skipped
            warnings.warn(f"skipped {err}", AttnBenchWarning, stacklevel=2)
            continue
        odd = 0
        for row in rows:
            net = _row_net(row)
            if net is None:
                continue
            try:
                settings = row.get("settings") or {}
                key = (str(row.get("device_slug") or path.parent.name), str(settings.get("dtype", "fp32")),
                       int(settings.get("batch", 1)), preferred)
                vps = float(row["vps"])
                fp = row.get("fingerprint") or {}
                if not (math.isfinite(vps) and vps > 0 and isinstance(fp, dict)):
                    raise ValueError(vps)
            except (TypeError, ValueError, AttributeError, OverflowError):
                odd += 1
                continue
            run = found.setdefault(key, Run(*key[:3], preferred=preferred))
            run.device = run.device or str(fp.get("gpu_name") or fp.get("cpu_model") or "")
            run.vps[net] = vps  # the latest row of a configuration wins
        if odd:
            warnings.warn(f"{path}: skipped {odd} speed row(s) with fields of the wrong type", AttnBenchWarning,
                          stacklevel=2)
    return list(found.values())


def best_run(all_runs: Iterable[Run], needs: Iterable[Net]) -> Run | None:
    """The preferred run that measured every network in ``needs`` (a report's own rows, then CUDA, then fp32,
    then batch 1)."""
    wanted = set(needs)
    complete = [r for r in all_runs if wanted <= set(r.vps)]
    if not complete:
        return None
    return min(complete, key=lambda r: (0 if r.preferred else 1, 0 if r.slug.startswith("cuda") else 1,
                                        0 if r.dtype == "fp32" else 1, 0 if r.batch == 1 else 1, r.slug))
