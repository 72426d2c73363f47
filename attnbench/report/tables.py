"""Records (plain dicts) -> pandas DataFrames -> Rich tables, CSV, Markdown, JSON lines. No maths here."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd
from rich.table import Table

from attnbench.store import files
from attnbench.text import UNHANDLED, plain, unhandled_text
from attnbench.units import four_figures, human, human_bytes, yes_no  # noqa: F401  (re-exported: tables.human)


NONE_DECLARED = "none declared"


def flops_rows(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """One row per block case; every numeric column names its unit. A block without closed forms says
    "none declared" in its analytic columns."""
    rows = []
    for r in records:
        counted = r["counted"]
        analytic = r["analytic"]
        agrees = counted["exact"]["equals_analytic"]
        row = {
            "module": r["module"],
            "preset": f"{r['preset']}, custom" if r.get("custom") else r["preset"],
            "input [B,C,T,H,W]": "x".join(str(v) for v in r["input_shape"]),
            "params": r["params"],
            "analytic FLOPs": analytic["flops"] if analytic else NONE_DECLARED,
            "analytic MACs": analytic["macs"] if analytic else NONE_DECLARED,
            "exact FLOPs": counted["exact"]["flops"],
            "exact == analytic": (agrees and r["params_analytic"] in (None, r["params"])) if analytic else NONE_DECLARED,
        }
        row[UNHANDLED] = unhandled_text(counted["exact"].get("unhandled_ops"))
        training = counted["exact"].get("training_step")
        if training:
            row["train-step FLOPs"] = training["flops"]
        for name in ("torch", "fvcore", "ptflops", "ptflops-aten"):
            if name in counted:
                row[f"{name} FLOPs"] = counted[name]["flops"]
        for key in ("affinity_flops", "ratio"):
            if analytic and key in analytic:
                row[key.replace("_flops", " FLOPs")] = analytic[key]
        rows.append(row)
    return pd.DataFrame(without_empty(rows, UNHANDLED))


def without_empty(rows: list[dict[str, Any]], *cols: str) -> list[dict[str, Any]]:
    """``rows`` without the columns that say "-" on every row (e.g. no op left uncounted, no network)."""
    empty = [c for c in cols if all(r.get(c, "-") == "-" for r in rows)]
    return [{k: v for k, v in r.items() if k not in empty} for r in rows]


def network_rows(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per network report (``api.network_report``); every numeric column names its unit."""
    rows = []
    for r in records:
        row = {
            "network": r["network"], "attn": r["attn"], "preset": r["preset"],
            "input [B,3,T,H,W]": "x".join(str(v) for v in r["input_shape"]),
            "params": r["params"], "params == closed form": r["params"] == r["params_analytic"],
            "exact FLOPs": r["counted"]["exact"]["flops"], "exact MACs": r["counted"]["exact"]["macs"],
            "attention sites": len(r["attention_sites"]), "attention FLOPs": r["attention_flops_analytic"],
        }
        for name in ("torch", "fvcore", "ptflops", "ptflops-aten"):
            if name in r["counted"]:
                row[f"{name} FLOPs"] = r["counted"][name]["flops"]
        row[UNHANDLED] = unhandled_text(r["counted"]["exact"].get("unhandled_ops"))
        rows.append(row)
    return without_empty(rows, UNHANDLED)


IDENTIFYING = ("module", "preset", "network", "attn", "block", "method", "paper", "table", "item", "category", "axis")


def _cell(col: str, v: Any) -> str:
    """One table cell, by the column's unit (see :mod:`attnbench.units`)."""
    if isinstance(v, bool):
        return yes_no(v)
    if v is None or (isinstance(v, float) and pd.isna(v)):
        return "n/a"
    if not isinstance(v, (int, float)):
        return str(v)
    if "ratio" in col and isinstance(v, float):
        return f"{v:.2%}"
    if "FLOP/s" in col:
        return human(v, "FLOP/s")
    if "FLOPs" in col:
        return human(int(v) if float(v).is_integer() else v, "FLOP")
    if "MACs" in col:
        return human(v, "MAC")
    if "bytes" in col:
        return human_bytes(v)
    if isinstance(v, int) and col == "params":
        return f"{v:,}"
    if isinstance(v, float):
        return four_figures(v)
    return str(v)


def to_rich(df: pd.DataFrame, title: str, units: dict[str, str] | None = None) -> Table:
    """A Rich table: every number in its unit; identifying columns (module, preset, input ...) never cut, even
    when the output is piped into a narrow width."""
    table = Table(title=title, caption=" | ".join(f"{k}: {v}" for k, v in (units or {}).items()) or None)
    cells = [[plain(_cell(str(col), row[col])) for col in df.columns] for _, row in df.iterrows()]
    for i, col in enumerate(df.columns):
        name = str(col)
        whole = name in IDENTIFYING or name.startswith("input")
        longest = max((len(r[i]) for r in cells), default=0)
        table.add_column(plain(name), justify="right" if pd.api.types.is_numeric_dtype(df[col]) else "left",
                         no_wrap=whole, min_width=longest if whole else None, overflow="fold")
    for row in cells:
        table.add_row(*row)  # cells may come from results files: plain() keeps them inert
    return table


def reconciliation_frame(record: dict[str, Any]) -> pd.DataFrame:
    """Per category: analytic, exact and each counter, all in FLOPs (multiply-add = 2)."""
    rows = []
    for r in record["reconciliation"]:
        analytic = r["analytic_flops"] if r["analytic_flops"] is not None else NONE_DECLARED
        row: dict[str, Any] = {"category": r["category"], "analytic FLOPs": analytic,
                               "exact FLOPs": r["exact_flops"]}
        for counter, value in r["counters_flops"].items():
            row[f"{counter} FLOPs"] = value
        rows.append(row)
    return pd.DataFrame(rows)


def reconciliation_reasons(record: dict[str, Any]) -> list[str]:
    """One line per (category, counter) that does not agree, with its reason."""
    lines = []
    for r in record["reconciliation"]:
        for counter, reason in r["reasons"].items():
            if reason not in ("agrees", "no per-category breakdown from this counter"):
                lines.append(f"{r['category']} / {counter}: {reason}")
    return lines


def write_table(df: pd.DataFrame, csv: str | None = None, md: str | None = None) -> None:
    """CSV keeps the numbers unformatted, in the unit the header names (FLOPs exact integers), booleans as
    yes/no and missing values empty; Markdown is for people, formatted as the terminal table is (units,
    yes/no, n/a)."""
    if csv:
        files.atomic_write(csv, df.map(lambda v: yes_no(v) if isinstance(v, bool) else v).to_csv(index=False))
    if md:
        files.atomic_write(md, markdown(df))


def markdown(df: pd.DataFrame) -> str:
    """``df`` as a GitHub Markdown table (pandas' ``to_markdown``, which writes it through tabulate), every
    cell as in the terminal table (its unit, yes/no, n/a: never nan), ending in a newline; ``_(no rows)_``
    for a frame without rows."""
    if len(df) == 0:
        return "_(no rows)_\n"
    shown = pd.DataFrame([[_cell(str(col), row[col]) for col in df.columns] for _, row in df.iterrows()],
                         columns=[str(c) for c in df.columns])
    return shown.to_markdown(index=False, disable_numparse=True) + "\n"


def json_lines(records: Sequence[dict[str, Any]]) -> str:
    return "\n".join(json.dumps(r, default=str) for r in records)


def _mib(value: Any) -> float | None:
    return None if value is None else value / 2**20


def _device(row: dict[str, Any]) -> str:
    """``cpu`` or ``cuda`` (from the row's fingerprint, else its settings): a CPU time never reads as a GPU's."""
    fp = row.get("fingerprint") or {}
    kind = fp.get("device_type") or str((row.get("settings") or {}).get("device") or "-").split(":")[0]
    return f"{kind} ({fp['gpu_name']})" if kind == "cuda" and fp.get("gpu_name") else kind


def ray_node(row: dict[str, Any]) -> str:
    """Where a row measured on Ray ran: the node's address and the worker's process ("" off Ray)."""
    w = row.get("worker") or {}
    return f"{w.get('node_ip')} pid {w.get('pid')}" if w else ""


def device_label(row: dict[str, Any]) -> str:
    """The GPU model, else the CPU model, of the device a row was measured on."""
    fp = row.get("fingerprint") or {}
    return str(fp.get("gpu_name") or fp.get("cpu_model") or "-")


def devices_of(rows: Sequence[dict[str, Any]]) -> str:
    return ", ".join(dict.fromkeys(device_label(r) for r in rows)) or "-"


def per_device_frame(rows: Sequence[dict[str, Any]]) -> Any:
    """The same points side by side, one ``<model> median ms`` column per device (speed and sweep rows);
    a point a device did not run is empty, an error names its status."""
    import pandas as pd

    lines: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in rows:
        if r.get("kind") == "sweep":
            point = {"module": r["module"], "axis": r["axis"], "value": r["value"]}
        else:
            point = {"module": r.get("module") or r.get("network"), "attn": r.get("attn") or "-", "preset": r.get("preset"),
                     "input [B,C,T,H,W]": "x".join(str(v) for v in (r.get("input_shapes") or [r.get("input_shape") or []])[0])}
        line = lines.setdefault(tuple(point.values()), dict(point))
        ms = (r.get("timing") or {}).get("median_ms", r.get("latency_ms"))
        line[f"{device_label(r)} median ms"] = ms if r.get("status") == "ok" else r.get("status")
    return pd.DataFrame(list(lines.values()))


def speed_frame(rows: list[dict[str, Any]]) -> Any:
    """One line per speed row (blocks and networks); every number names its unit. Each row says where it ran
    (``device``: cpu or cuda and the GPU), with how many torch threads and the 1-minute load average."""
    import pandas as pd

    out_rows = []
    for r in rows:
        t, m, a = r.get("timing") or {}, r.get("memory") or {}, r.get("achieved") or {}
        pred = r.get("memory_prediction") or {}
        out_rows.append({
            "module": r.get("module") or "-", "network": r.get("network") or "-", "attn": r.get("attn") or "-",
            "preset": f"{r['preset']}, custom" if r.get("custom") else r["preset"],
            "impl": r.get("impl") or "-",
            "input [B,C,T,H,W]": "x".join(str(v) for v in r["input_shapes"][0]),
            "device": _device(r), "ray node": ray_node(r), "threads": r.get("threads"), "load (1 min)": r.get("load_avg_1m"),
            "precision": r.get("precision") or r["settings"]["dtype"], "timing": r.get("timing_mode") or "-",
            "status": r["status"],
            "n": t.get("n"), "median ms": t.get("median_ms"), "IQR ms": t.get("iqr_ms"),
            "p10 ms": t.get("p10_ms"), "p90 ms": t.get("p90_ms"), "noisy": t.get("noisy"),
            "FLOPs": r["flops"],
            "achieved FLOP/s": None if a.get("achieved_tflops_per_s") is None else a["achieved_tflops_per_s"] * 1e12,
            "% of spec peak": None if a.get("fraction_of_peak") is None else 100 * a["fraction_of_peak"],
            "% of measured matmul": None if a.get("fraction_of_measured_matmul") is None else 100 * a["fraction_of_measured_matmul"],
            "pred. peak MiB": _mib(pred.get("bytes")),
            "meas. peak MiB": _mib(pred.get("measured_bytes", m.get("peak_allocated_delta_bytes"))),
            "pred/meas": pred.get("predicted_over_measured"),
            "RSS peak delta MiB": _mib(m.get("rss_peak_delta_bytes")),
            "VPS": r.get("vps"),
            UNHANDLED: unhandled_text(r.get("unhandled_ops")),
        })
    return pd.DataFrame(without_empty(out_rows, "module", "network", "attn", "ray node", UNHANDLED))


def without_missing(df: Any) -> Any:
    """``df`` without the columns that hold no value on any row (None or NaN: e.g. VPS for blocks, the spec
    peak on a CPU)."""
    return df[[c for c in df.columns if df[c].notna().any()]] if len(df) else df


def scan_frame(rows: list[dict[str, Any]]) -> Any:
    """One line per timed row of a block over T (NL and CS over T in the report): latency, its spread,
    the work and the peak memory predicted and measured, and where it ran."""
    import pandas as pd

    out = []
    for r in sorted(rows, key=lambda r: (r.get("module") or "", r.get("impl") or "", r["input_shapes"][0][2])):
        t, pred = r.get("timing") or {}, r.get("memory_prediction") or {}
        a = r.get("achieved") or {}
        out.append({
            "module": r.get("module"), "impl": r.get("impl") or "-", "T": r["input_shapes"][0][2],
            "input [B,C,T,H,W]": "x".join(str(v) for v in r["input_shapes"][0]), "device": _device(r),
            "threads": r.get("threads"), "load (1 min)": r.get("load_avg_1m"), "status": r["status"],
            "n": t.get("n"), "median ms": t.get("median_ms"), "p10 ms": t.get("p10_ms"), "p90 ms": t.get("p90_ms"),
            "FLOPs": r["flops"],
            "achieved FLOP/s": None if a.get("achieved_tflops_per_s") is None else a["achieved_tflops_per_s"] * 1e12,
            "pred. peak MiB": _mib(pred.get("bytes")), "meas. peak MiB": _mib(pred.get("measured_bytes")),
        })
    return pd.DataFrame(out)
