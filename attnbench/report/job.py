"""`attnbench report`: every check attnbench can make on this machine, written to one results folder.

Sections, in order (each writes Markdown, CSV and JSON tables, some PNG plots):

* ``list`` -- the blocks, their papers, presets and options;
* ``flops`` -- closed forms against the exact counter (and torch's, fvcore's, ptflops' counters) at every preset;
* ``network-flops`` -- the papers' networks with each attention choice: parameters and exact FLOPs;
* ``sweep`` -- cost against T and H = W for NL, CS and a few others; growth exponents; where NL and CS part;
* ``speed`` -- latency and memory of every block at its first preset (``nl`` and ``cs`` with both attention
  kernels, ``impl`` naive and sdpa), the NL/CS latency ratio beside the FLOP ratio, and NL and CS over T
  (latency and peak memory against the prediction); on CUDA or with ``full`` also the networks' VPS. On a
  CPU it runs within a time budget (``budget_s``, :data:`DEFAULT_CPU_BUDGET_S` by default): targets run in
  order of importance, each only when its predicted time fits in what is left, and what did not fit is
  listed (``not_run``), never dropped;
* ``roofline`` -- every timed block's arithmetic intensity against its achieved FLOP/s on the device's
  measured roofline (:mod:`attnbench.measuring.roofline`);
* ``table-vi`` -- BANet Table VI measured (CUDA, or ``full``);
* ``reproduce`` -- the papers' printed numbers recomputed (:mod:`attnbench.papers.reproduce`, imported lazily;
  it reads measured Table VI rows from ``results/*/table-vi.jsonl``, hence after ``table-vi``);
* ``max-fit`` -- the largest T that runs for NL and CS (CUDA only).

Measured rows are appended, one finished row at a time, to the same JSON-lines files the ``sweep``, ``speed``
and ``table-vi`` commands use (``sweep.jsonl``, ``speed.jsonl``, ``table-vi.jsonl`` in the folder). With
``resume`` rows already in them (measured on this device) are not run again; without, a section replaces
the rows of the keys it measures and keeps every other line (``--overwrite`` of those commands).

A section that fails records its one-line error in the index (``README.md``) and the job goes on. With
``resume``, a section whose output files all exist is not run again (its headline is read back from its JSON).
Every file is written atomically (temporary file and rename); the index is rewritten after every section, so
an interrupted job leaves a consistent folder.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from attnbench import cases
from attnbench.errors import AttnBenchWarning, UsageError
from attnbench import sweep as sw
from attnbench.report import tables
from attnbench.store import files
from attnbench.store.files import atomic_write

MODES = ("quick", "default", "full")
INDEX_TITLE = "# attnbench report"  # first line of the folder's README.md: how a report folder is recognised
# reproduce comes after table-vi: it reads the measured Table VI rows from results/*/table-vi.jsonl
SECTION_ORDER = ("list", "flops", "network-flops", "sweep", "speed", "roofline", "table-vi", "reproduce", "max-fit")
SECTION_TITLES = {
    "list": "Blocks, papers and presets",
    "flops": "FLOPs and parameters at every preset (closed form vs counters)",
    "network-flops": "Paper networks: parameters and exact FLOPs",
    "reproduce": "Papers' printed numbers reproduced",
    "sweep": "Scaling sweep: cost against size (T, H = W, C)",
    "speed": "Measured latency, memory and VPS",
    "roofline": "Roofline: arithmetic intensity against achieved FLOP/s",
    "table-vi": "BANet Table VI measured",
    "max-fit": "Largest T that runs (NL vs CS)",
}
UNITS_NOTE = ("Units: FLOPs count a multiply-add as 2 (any other arithmetic op as 1); MACs count a multiply-add "
              "as 1; parameters are counts; latency is the median wall time of one forward call in ms; memory in "
              "bytes (MiB = 2^20 bytes); VPS = videos (one clip each) per second; arithmetic intensity in FLOP/byte.")
DEFAULT_CPU_BUDGET_S = 50.0  # seconds of the speed and roofline sections on a CPU (default and quick modes)
PLOT_RESERVE_S = 3.0  # of a budget, kept for the tables and plots written after the timing (at most 10% of it)


@dataclass(frozen=True)
class ReportOptions:
    mode: str = "default"  # quick | default | full
    device: str | None = None  # None: CUDA when present, else CPU
    dtype: str = "fp32"
    resume: bool = False
    # seconds the timing sections may take; None: DEFAULT_CPU_BUDGET_S on a CPU (default and quick modes),
    # no limit on CUDA or with full; 0: nothing is timed
    budget_s: float | None = None
    threads: int | None = None  # torch CPU threads for timing; None: the cores other processes leave free


@dataclass
class Context:
    opts: ReportOptions
    out_dir: Path
    device: str
    measure: bool  # time blocks (speed section); False only for --quick on an auto-detected CPU, or a 0 s budget
    fingerprint: dict[str, Any]
    budget_s: float | None = None  # seconds of timing (None: no limit)
    statuses: dict[str, str] = field(default_factory=dict)  # sections of this run so far: name -> status
    threads: int | None = None  # torch threads the CPU timing uses (chosen once, by timing_threads)
    threads_note: str = ""

    @property
    def cuda(self) -> bool:
        return self.device.startswith("cuda")

    @property
    def quick(self) -> bool:
        return self.opts.mode == "quick"

    @property
    def full(self) -> bool:
        return self.opts.mode == "full"

    def path(self, name: str) -> Path:
        return self.out_dir / name


@dataclass
class SectionResult:
    name: str
    status: str = "ok"  # ok | failed | unavailable | not run | kept | interrupted
    files: list[str] = field(default_factory=list)
    summary: list[str] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0


@dataclass
class ReportResult:
    out_dir: Path
    sections: list[SectionResult]
    seconds: float
    interrupted: bool = False

    @property
    def index(self) -> Path:
        return self.out_dir / "README.md"

    def summary_line(self) -> str:
        counts: dict[str, int] = {}
        for s in self.sections:
            counts[s.status] = counts.get(s.status, 0) + 1
        done = ", ".join(f"{n} {k}" for k, n in counts.items())
        head = "interrupted: " if self.interrupted else ""
        return f"{head}report in {self.index} ({done}; {self.seconds:.1f} s)"


# ---------------------------------------------------------------------------------------------------------
# Writing helpers


def write_tables(ctx: Context, stem: str, df: Any, payload: dict[str, Any], summary: list[str],
                 md_head: str = "", md_tail: str = "", extra_files: Sequence[str] = ()) -> list[str]:
    """``<stem>.md``, ``<stem>.csv`` and ``<stem>.json`` (the payload with the section's summary lines and
    its list of files, ``extra_files`` included); returns that list."""
    title = SECTION_TITLES.get(stem, stem)
    md = f"# {title}\n\n" + (md_head + "\n\n" if md_head else "") + tables.markdown(df) + (f"\n{md_tail}\n" if md_tail else "")
    files = [f"{stem}.md", f"{stem}.csv", f"{stem}.json", *extra_files]
    atomic_write(ctx.path(f"{stem}.md"), md)
    atomic_write(ctx.path(f"{stem}.csv"), df.to_csv(index=False))
    write_json(ctx, stem, payload, summary, files)
    return files


def write_json(ctx: Context, stem: str, payload: dict[str, Any], summary: list[str], files: Sequence[str] = ()) -> None:
    doc = {"section": stem, "summary": summary, "files": list(files), **payload}
    atomic_write(ctx.path(f"{stem}.json"), json.dumps(doc, default=str, indent=1))


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict):
        sep = "; " if any(isinstance(x, dict) for x in v.values()) else ", "
        return sep.join(f"{k} ({_fmt(x)})" if isinstance(x, dict) else f"{k} {_fmt(x)}" for k, x in v.items())
    if isinstance(v, (list, tuple)):
        return ", ".join(_fmt(x) for x in v)
    return str(v)


# ---------------------------------------------------------------------------------------------------------
# Sections


def section_list(ctx: Context) -> SectionResult:
    import pandas as pd

    from attnbench.blocks.registry import all_blocks

    specs = all_blocks()
    records = [{
        "module": s.name, "title": s.title, "paper": s.paper,
        "presets": [{"name": p.name, "input_shape": p.shape.as_list(), "options": dict(p.options), "source": p.source}
                    for p in s.presets],
        "options": [{"name": o.name, "type": o.type.__name__, "default": o.default,
                     "choices": list(o.choices) if o.choices else None, "help": o.help} for o in s.options],
    } for s in specs]
    df = pd.DataFrame([{
        "module": s.name, "paper": s.paper, "block": s.title,
        "presets [B,C,T,H,W]": "; ".join(f"{p.name}: {p.shape}" for p in s.presets),
        "options (default)": ", ".join(f"{o.name}={o.default}" for o in s.options) or "-",
    } for s in specs])
    n_presets = sum(len(s.presets) for s in specs)
    summary = [f"{len(specs)} blocks, {n_presets} presets"]
    files = write_tables(ctx, "list", df, {"blocks": records}, summary)
    return SectionResult("list", files=files, summary=summary)


def flops_counters(ctx: Context) -> list[str]:
    if ctx.quick:
        return ["exact"]
    if ctx.full:
        return list(cases.COUNTERS)
    return ["exact", "torch"]


def section_flops(ctx: Context) -> SectionResult:
    from attnbench.blocks.registry import all_blocks

    counters = flops_counters(ctx)
    chosen = [cases.resolve(s.name) for s in all_blocks()] if ctx.quick else cases.preset_cases()
    reports = [cases.flops_report(c, counters).to_dict() for c in chosen]
    df = tables.flops_rows(reports)
    agree = sum(1 for r in reports if r["counted"]["exact"]["equals_analytic"] and r["params"] == r["params_analytic"])
    summary = [f"{len(reports)} block cases ({'first preset of each block' if ctx.quick else 'every preset'}), "
               f"counters: {', '.join(counters)}",
               f"exact counter (meta device) equals the closed form, FLOPs and parameters: {agree}/{len(reports)}"]
    for name in counters:
        if name == "exact":
            continue
        key = name
        pairs = [(r["counted"][key], r["counted"]["exact"]["flops"]) for r in reports if key in r["counted"]]
        got = [g for g, _ in pairs]
        same = sum(1 for g, exact in pairs if g.get("flops") == exact)
        skipped = sum(1 for g in got if g.get("skipped"))
        unexplained = sum(1 for r in reports if any("unexplained" in row["reasons"].get(name, "")
                                                    for row in r["reconciliation"]))
        summary.append(f"{name}: total equals the exact count in {same}/{len(got)} cases"
                       + (f", skipped in {skipped}" if skipped else "")
                       + f"; gaps with no per-category explanation in {unexplained}/{len(got)} "
                       "(reasons per category in flops.json; a counter that skips ops or counts only multiply-adds differs by convention)")
    head = "FLOPs: multiply-add = 2; MACs: multiply-add = 1. `exact == analytic` compares FLOPs and parameters."
    files = write_tables(ctx, "flops", df, {"counters": counters, "reports": reports, "units": cases.UNITS}, summary, head)
    return SectionResult("flops", files=files, summary=summary)


def section_network_flops(ctx: Context) -> SectionResult:
    from attnbench.networks.registry import all_networks

    records = [cases.network_report(cases.resolve_network(n.name, a)) for n in all_networks() for a in n.attn_choices]
    df = sw.integer_columns(tables.network_rows(records), ("params", "exact FLOPs", "exact MACs", "attention FLOPs"))
    same = int(df["params == closed form"].sum()) if len(df) else 0
    summary = [f"{len(records)} network/attention pairs at each network's first preset; "
               f"counted parameters equal the closed form in {same}/{len(records)}"]
    files = write_tables(ctx, "network-flops", df, {"networks": records}, summary,
                         "FLOPs: exact counter on the meta device, multiply-add = 2; attention FLOPs: the blocks' closed forms.")
    return SectionResult("network-flops", files=files, summary=summary)


def section_reproduce(ctx: Context) -> SectionResult:
    import pandas as pd

    try:
        from attnbench.papers import reproduce as rp
    except ImportError as e:
        line = f"attnbench.papers.reproduce is not importable yet ({type(e).__name__}: {e})"
        write_json(ctx, "reproduce", {"available": False, "error": line}, [line])
        return SectionResult("reproduce", status="unavailable", files=["reproduce.json"], summary=[line])
    rows = rp.reproduce("all", prefer=ctx.out_dir)  # this report's own measured rows first, wherever --out puts them
    summ = rp.summary(rows)
    df = pd.DataFrame(rows)
    summary = [f"{len(rows)} printed figures checked",
               f"reproduced: {summ['reproduced']} of {summ['counted_rows']} parameter, FLOP and size figures ({summ['share_reproduced']:.1%})",
               "verdicts: " + ", ".join(f"{k} {n}" for k, n in summ["verdicts"].items())]
    summary += [f"{name}: reproduced {p['counted_reproduced']} of {p['counted']}; convention {p['convention'] or '-'}"
                for name, p in summ["by_paper"].items()]
    others = [r for r in rows if isinstance(r, dict) and r.get("verdict") not in (None, "reproduced")]
    for r in others[:15]:
        delta = r.get("delta_pct")
        reason = str(r.get("reason") or "")
        summary.append(f"{r.get('verdict')}: {r.get('paper')} {r.get('table')} {r.get('item')}: paper {_fmt(r.get('paper_value'))}, "
                       f"ours {_fmt(r.get('value'))} {r.get('unit') or ''}"
                       + (f" ({delta:+.2f}%)" if isinstance(delta, (int, float)) else "")
                       + (f"; {reason[:240]}" + ("..." if len(reason) > 240 else "") if reason else ""))
    if len(others) > 15:
        summary.append(f"... and {len(others) - 15} more in reproduce.md")
    files = write_tables(ctx, "reproduce", df, {"available": True, "rows": rows, "summary_data": summ}, summary)
    return SectionResult("reproduce", files=files, summary=summary)


def sweep_plan(ctx: Context) -> tuple[list[str], dict[str, list[int]]]:
    if ctx.quick:
        return ["nl", "cs"], {"T": [4, 8, 16, 32], "HW": [7, 14, 28]}
    if ctx.full:
        from attnbench.blocks.registry import all_blocks

        return [s.name for s in all_blocks()], {"T": [2, 4, 8, 16, 32, 64, 128], "HW": [7, 14, 28, 56, 112],
                                                "C": [32, 64, 96, 128, 256, 512]}
    return ["nl", "cs", "eam", "cbam", "w3", "sta", "stpa"], {"T": [4, 8, 16, 32, 64], "HW": [7, 14, 28, 56]}


CPU_SWEEP_MAX_FLOPS = 40 * 10**9


def section_sweep(ctx: Context, on_step: Callable[[str], None] | None = None) -> SectionResult:
    from attnbench.report import plots  # matplotlib: imported only when a section draws

    modules, values = sweep_plan(ctx)
    measured = ctx.cuda or (ctx.full and ctx.measure)
    store_path = ctx.path("sweep.jsonl")
    points = sw.plan(modules, values)
    done = [0]

    def step(_: dict[str, Any]) -> None:
        done[0] += 1
        if on_step:
            on_step(f"sweep {done[0]}/{len(points)}")

    # CPU (--full): 2 timed calls per point, and points above CPU_SWEEP_MAX_FLOPS are not timed (NL at T=32,
    # 125 GFLOPs, takes ~10 s a call on a 2-core machine); CUDA: every point, 5 calls.
    reps, target, limit = (5, 0.3, None) if ctx.cuda else (2, 0.05, CPU_SWEEP_MAX_FLOPS)
    result = sw.run_sweep(points, device=ctx.device if measured else None, dtype=ctx.opts.dtype, min_reps=reps,
                          target_s=target, out_path=str(store_path), resume=ctx.opts.resume, on_row=step,
                          max_flops=limit, overwrite=not ctx.opts.resume)
    if result.interrupted:
        raise KeyboardInterrupt
    rows = result.rows
    exps = [e for e in sw.fit_exponents(rows) if e["points"] >= plots.MIN_FIT_POINTS]  # no slope through 2 sizes
    cross = sw.crossovers(rows) if {"nl", "cs"} <= set(modules) else []
    pngs: list[str] = []
    for axis in values:
        for metric in ("flops", "latency_ms"):
            name = f"sweep-{'flops' if metric == 'flops' else 'latency'}-{axis}.png"
            title = None
            if metric == "latency_ms":
                title = f"Latency vs {plots.AXIS_LABELS.get(axis, axis)}, log-log, on {_device_label(ctx)}"
            if plots.cost_vs_size(rows, axis, metric, ctx.path(name), title=title, exponents=exps):
                pngs += plots.outputs(name)
    for c in cross:
        name = f"nl-vs-cs-{c['axis']}.png"
        if plots.ratio_vs_size(c, ctx.path(name), device="GPU" if ctx.cuda else "CPU"):
            pngs += plots.outputs(name)
    counts = {st: sum(1 for r in rows if r["status"] == st) for st in dict.fromkeys(r["status"] for r in rows)}
    summary = [f"{len(rows)} points ({', '.join(f'{n} {st}' for st, n in counts.items())}): {', '.join(modules)} over "
               + "; ".join(f"{a} in {','.join(map(str, v))}" for a, v in values.items())
               + (f"; latency measured on {ctx.device}" if measured else "; closed forms only (no timing)")
               + "; skipped = shape rejected by the block" + (" or too big to time here (reason per row)" if measured else "")]
    for e in exps:
        if e["module"] in ("nl", "cs") and e["metric"] in ("flops", "latency_ms") and e["points"] >= plots.MIN_FIT_POINTS:
            summary.append(f"{e['module']} {METRICS_SHORT[e['metric']]} over {e['axis']}: exponent {e['exponent']:.2f} "
                           + (f"(last segment {e['last_segment_exponent']:.2f}, " if e["last_segment_exponent"] is not None else "(")
                           + f"R^2 {e['r2']:.4f}, sizes {e['from']}..{e['to']})")
    summary += [f"{c['pair']} {c['axis']}: {c['text']}" for c in cross]
    df = sw.rows_frame(rows)
    atomic_write(ctx.path("sweep.md"), f"# {SECTION_TITLES['sweep']}\n\n" + sweep_markdown(df, exps, cross, []))
    atomic_write(ctx.path("sweep.csv"), df.to_csv(index=False))
    atomic_write(ctx.path("sweep-exponents.csv"), sw.exponents_frame(exps).to_csv(index=False))
    files = ["sweep.md", "sweep.csv", "sweep-exponents.csv", "sweep.json", "sweep.jsonl", *pngs]
    write_json(ctx, "sweep", {"rows": rows, "exponents": exps, "crossovers": cross, "units": sw.UNITS}, summary, files)
    return SectionResult("sweep", files=files, summary=summary)


def sweep_markdown(df: Any, exps: Sequence[dict[str, Any]], cross: Sequence[dict[str, Any]],
                   fits: Sequence[dict[str, Any]]) -> str:
    """Sweep rows, growth exponents, crossovers and max-fit results as one Markdown document."""
    parts = ["## Sweep rows\n", "FLOPs: closed form (equal to the exact counter), multiply-add = 2. "
             "Sizes not swept are the block's preset.\n", tables.markdown(df)]
    if exps:
        parts += ["\n## Growth exponents\n", "Least-squares slope of log(cost) against log(size); the last-segment "
                  "exponent uses the two largest sizes only.\n", tables.markdown(sw.exponents_frame(exps))]
    if cross:
        parts.append("\n## Where NL and CS part\n")
        parts += [f"- {c['pair']}, {c['axis']}: {c['text']}" for c in cross]
    if fits:
        parts += ["\n## Largest size that runs\n", tables.markdown(sw.max_fit_frame(fits))]
    return "\n".join(parts) + "\n"


METRICS_SHORT = {"flops": "FLOPs", "latency_ms": "latency"}


def timing_threads(ctx: Context) -> int | None:
    """The torch threads CPU timing uses, chosen once per report: ``--threads``, else the logical cores other
    processes leave free at that moment (:func:`attnbench.measuring.budget.free_threads`, half a second of
    /proc/stat), at most torch's default. None on CUDA (torch's default)."""
    import os

    import torch

    from attnbench.measuring import budget as bud

    if ctx.cuda:
        return None
    if ctx.threads is None:
        default, cores = torch.get_num_threads(), os.cpu_count() or 1
        if ctx.opts.threads:
            ctx.threads, ctx.threads_note = ctx.opts.threads, f"{ctx.opts.threads} torch threads, as asked"
        else:
            busy = bud.busy_cores(0.5)
            ctx.threads = bud.free_threads(default, cores, busy)
            ctx.threads_note = (f"{ctx.threads} torch thread{'s' if ctx.threads != 1 else ''}: "
                                + ("busy cores unknown" if busy is None else
                                   f"{busy:.1f} of {cores} logical cores busy with other processes at the start")
                                + (f" (torch's default {default} would wait for them)" if ctx.threads < default else ""))
    return ctx.threads


def speed_settings(ctx: Context, batch: int = 1) -> Any:
    from attnbench import bench

    if ctx.cuda:
        reps, target, warm = (5, 0.3, 0.5) if ctx.quick else (10, 1.0, 1.0)
    elif ctx.full:
        reps, target, warm = 3, 0.3, 0.5
    else:  # within the CPU budget: a median of at least 3 calls, short warm-up
        reps, target, warm = (2, 0.1, 0.2) if ctx.quick else (3, 0.1, 0.2)
    return bench.Settings(device=ctx.device, dtype=ctx.opts.dtype, batch=batch, min_reps=reps, target_s=target,
                          max_warmup_s=warm, threads=timing_threads(ctx))


SCAN_T = {"cpu": (4, 8, 16), "cpu-full": (4, 8, 16, 32), "cuda": (4, 8, 16, 32, 64)}  # NL and CS over T
HEADLINE = ("nl", "cs")  # timed first, with both kernels: the NL/CS latency ratio beside the FLOP ratio
IMPLS = ("naive", "sdpa")


@dataclass
class Planned:
    """One thing the speed section may time: its target, the block case behind it (None for a network), the
    group it belongs to (``headline``, ``blocks``, ``scan``, ``networks``) and a lower bound on one call's
    seconds from the device's roofline (0 when unknown)."""

    target: Any
    case: Any
    group: str
    floor_s: float = 0.0
    traffic: dict[str, Any] | None = None


def _has_impl(spec: Any) -> bool:
    return any(o.name == "impl" for o in spec.options)


def speed_plan(ctx: Context, modules: Sequence[str] | None = None) -> list[Planned]:
    """What the speed section times, most important first: NL and CS at the BANet preset with the papers'
    kernel (``headline``: naive, the maps materialised); every other block at its first preset (``blocks``);
    NL and CS with the fused kernel (``sdpa``); NL and CS over T (``scan``, :data:`SCAN_T`); on CUDA or with
    ``full``, the networks with each attention choice (``networks``). ``modules`` limits the blocks (all
    when None)."""
    from attnbench import bench
    from attnbench.blocks.registry import all_blocks
    from attnbench.networks.registry import all_networks

    specs = [s for s in all_blocks() if modules is None or s.name in modules]
    names = [s.name for s in specs]
    plan: list[Planned] = []
    head = [m for m in HEADLINE if m in names]
    for m in head:
        case = cases.resolve(m, "banet", options={"impl": "naive"})
        plan.append(Planned(bench.block_target(case), case, "headline"))
    for spec in specs:
        if spec.name in head:
            continue
        for impl in (IMPLS if _has_impl(spec) else (None,)):
            case = cases.resolve(spec.name, options={"impl": impl} if impl else None)
            plan.append(Planned(bench.block_target(case), case, "blocks"))
    for m in head:
        case = cases.resolve(m, "banet", options={"impl": "sdpa"})
        plan.append(Planned(bench.block_target(case), case, "sdpa"))
    scan = SCAN_T["cuda" if ctx.cuda else "cpu-full" if ctx.full else "cpu"]
    for t in scan:
        for impl in IMPLS:
            for m in head:
                case = cases.resolve(m, "banet", {"T": t}, {"impl": impl})
                plan.append(Planned(bench.block_target(case), case, "scan"))
    if ctx.cuda or ctx.full:
        plan += [Planned(bench.network_target(cases.resolve_network(n.name, a)), None, "networks")
                 for n in all_networks() for a in n.attn_choices]
    return plan


def block_traffic(case: Any, row: dict[str, Any], settings: Any) -> dict[str, Any] | None:
    """A lower bound on the bytes one call of a block moves (:func:`attnbench.measuring.roofline.traffic_lower_bound`):
    its inputs (in the dtype the call receives them), parameters and buffers read once, its output written
    once (shapes from one forward call on the meta device), and its declared largest intermediate (the
    row's ``predicted_largest_intermediate``) written and read once. None when the block cannot run on the
    meta device."""
    import torch

    from attnbench.flops.count import meta_inputs
    from attnbench.flops.memory import Precision
    from attnbench.measuring import roofline as rl

    p = Precision(settings.dtype, settings.precision, settings.device_type)
    stored = 4 if p.autocast else p.low  # inputs and weights: fp32 under autocast, the dtype when pure
    shapes = [(settings.batch, *s[1:]) for s in case.input_shapes()]
    try:
        module = case.build("meta")
        with torch.no_grad():
            out = module(*meta_inputs(shapes))
    except Exception:  # noqa: BLE001 - a block the meta device cannot run has no roofline point
        return None
    outs = out if isinstance(out, (tuple, list)) else (out,)
    out_elems = sum(o.numel() for o in outs if isinstance(o, torch.Tensor))
    weights = sum(t.numel() for t in (*module.parameters(), *module.buffers()))
    largest = (row.get("predicted_largest_intermediate") or {}).get("bytes")
    return rl.traffic_lower_bound(sum(math.prod(s) for s in shapes) * stored, out_elems * p.act, weights * stored, largest)


class _Warnings:
    """Collects the warnings of many runs and issues each kind once (the loaded-machine warning comes with
    every run, its load figure changing)."""

    def __init__(self) -> None:
        self.seen: set[str] = set()

    def run(self, fn: Callable[[], Any]) -> Any:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = fn()
        for w in caught:
            kind = str(w.message)[:32]
            if kind not in self.seen:
                self.seen.add(kind)
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        return result


def _label(p: Planned) -> str:
    t = p.target
    impl = t.options.get("impl") if t.kind == "block" else None
    shape = "x".join(str(v) for v in t.input_shapes[0])
    return f"{t.name}{f' {impl}' if impl else ''} @ {t.variant} [{shape}]"


def time_within_budget(ctx: Context, plan: Sequence[Planned], settings: Any, budget: Any,
                       on_step: Callable[[str], None] | None = None,
                       probe: Callable[[Planned], float] | None = None,
                       ) -> tuple[list[tuple[Planned, dict[str, Any]]], list[dict[str, Any]]]:
    """Time the planned targets in order, one ``bench.run`` each (rows appended to ``speed.jsonl`` as they
    finish). With a limited budget a target runs only when its predicted time fits in what is left: first
    from the roofline (a lower bound: FLOPs at the measured matmul rate, bytes at the copy rate), then from
    one probe call (:func:`attnbench.measuring.budget.one_call_s`); a target that does not fit is skipped
    (later, cheaper ones may still fit). ``probe(planned)`` gives one call's seconds (default: build the target
    and time one call). Returns (planned, row) pairs and the records of what was not run."""
    from attnbench import bench
    from attnbench.measuring import budget as bud
    from attnbench.store import jsonl

    def one_call(p: Planned) -> float:
        return bud.one_call_s(p.target.build, p.target.input_shapes, device=settings.device, dtype=settings.dtype,
                              precision=settings.precision, batch=settings.batch)

    probe = probe or one_call
    path = str(ctx.path("speed.jsonl"))
    have = {r["key"] for r in jsonl.load(path, warn=False).rows} if ctx.opts.resume and ctx.path("speed.jsonl").exists() else set()
    done: list[tuple[Planned, dict[str, Any]]] = []
    not_run: list[dict[str, Any]] = []
    seen: set[str] = set()
    warn = _Warnings()
    predict = lambda call: bud.MARGIN * bud.predicted_measurement_s(  # noqa: E731
        call, min_reps=settings.min_reps, target_s=settings.target_s, max_warmup_s=settings.max_warmup_s,
        device_type=settings.device_type)
    for i, p in enumerate(plan, 1):
        t = p.target
        key = t.key(settings, ctx.fingerprint)
        if key in seen:  # the scan's preset T is the headline's row
            continue
        seen.add(key)
        if on_step:
            on_step(f"speed {i}/{len(plan)}: {_label(p)}")
        predicted = None
        if budget.limited and key not in have:
            why, predicted = None, predict(p.floor_s)
            if not budget.fits(predicted):
                why = f"predicted >= {predicted:.1f} s from the roofline, {max(0.0, budget.left()):.1f} s left"
            else:
                try:
                    call = probe(p)
                    predicted = predict(call)
                    if not budget.fits(predicted):
                        why = f"one call {call:.3g} s, predicted {predicted:.1f} s, {max(0.0, budget.left()):.1f} s left"
                except Exception:  # noqa: BLE001 - the measurement itself records the failure as a row
                    pass
            if why:
                not_run.append({**t.identity(), "kind": t.kind, "impl": t.options.get("impl"), "group": p.group,
                                "input_shape": [settings.batch, *t.input_shapes[0][1:]],
                                "flops": t.flops()[0] * settings.batch if t.kind == "block" else None,
                                "predicted_s": round(predicted, 2),
                                "status": "not run: budget", "reason": why})
                continue
        started = budget.elapsed()
        rows = warn.run(lambda t=t: bench.run([t], settings, path, ctx.opts.resume, overwrite=not ctx.opts.resume))
        # speed.json only: what the budget predicted (margin included) and what the measurement took, in s
        rows[0]["report_budget"] = {"predicted_s": predicted, "took_s": budget.elapsed() - started}
        done.append((p, rows[0]))
    return done, not_run


def _device_label(ctx: Context, rows: Sequence[dict[str, Any]] = ()) -> str:
    """``CPU (AMD EPYC, 2 torch threads, 1-min load 2.5-3.1)`` or ``GPU (NVIDIA H200)``: never one for the other."""
    fp = ctx.fingerprint
    if ctx.cuda:
        return f"GPU ({fp.get('gpu_name') or ctx.device})"
    loads = [r["load_avg_1m"] for r in rows if r.get("load_avg_1m") is not None] or \
        ([fp["load_avg_1m"]] if fp.get("load_avg_1m") is not None else [])
    threads = next((r["threads"] for r in rows if r.get("threads")), fp.get("torch_threads"))
    load = "" if not loads else (f", 1-min load {min(loads):.1f}" + (f"-{max(loads):.1f}" if max(loads) - min(loads) >= 0.05 else ""))
    return (f"CPU ({fp.get('cpu_model')}, {threads} torch thread{'s' if threads != 1 else ''} on "
            f"{fp.get('logical_cores')} logical cores{load})")


def section_speed(ctx: Context, on_step: Callable[[str], None] | None = None) -> SectionResult:
    from attnbench.measuring import budget as bud
    from attnbench.measuring import device as dev
    from attnbench.measuring import roofline as rl
    from attnbench.report import plots

    reserve = 0.0 if ctx.budget_s is None else min(PLOT_RESERVE_S, 0.1 * ctx.budget_s)
    budget = bud.Budget(None if ctx.budget_s is None else ctx.budget_s - reserve)
    settings = speed_settings(ctx)
    plan = speed_plan(ctx)
    names = list(dict.fromkeys(p.target.name for p in plan))  # registry order (blocks), then networks
    with dev.torch_threads(settings.threads):  # the calibration's cache key holds the thread count
        calibration = rl.calibrate(ctx.device, ctx.opts.dtype, fingerprint=dev.fingerprint(ctx.device))
    peak, bw = calibration["matmul"]["flops_per_s"], calibration["copy"]["bytes_per_s"]
    for p in plan:
        if p.case is not None:
            p.traffic = block_traffic(p.case, {"predicted_largest_intermediate": _largest(p.target, settings)}, settings)
            flops = p.target.flops()[0] * settings.batch
            p.floor_s = max(flops / peak, (p.traffic or {}).get("bytes", 0) / bw)
    # within each group the cheapest first (by the roofline's lower bound), so that as many as possible fit
    plan = [p for group in ("headline", "blocks", "sdpa", "scan", "networks")
            for p in sorted((p for p in plan if p.group == group), key=lambda p: p.floor_s)]
    done, not_run = time_within_budget(ctx, plan, settings, budget, on_step)
    for p, row in done:
        row["report_group"] = p.group  # speed.json only: which part of the plan the row is (headline, scan ...)
        if p.traffic is not None:
            row["traffic"] = p.traffic
    timing_s = budget.elapsed()
    rows = [r for _, r in done]
    main = [r for p, r in done if p.group != "scan"]
    scan_rows = [r for p, r in done if p.group in ("headline", "sdpa", "scan")]
    main.sort(key=lambda r: (r["kind"] != "block", names.index(r.get("module") or r.get("network")), r.get("impl") or ""))
    where = _device_label(ctx, rows)
    df = tables.without_missing(tables.speed_frame(main))
    extra = ["speed.jsonl"]
    plot_title = f"{ctx.opts.dtype}, batch 1, on {where}"
    if plots.latency_vs_size(scan_rows, ctx.path("latency-vs-T.png"),
                             f"NL and CS latency vs T (frames)\n{plot_title}",
                             ylabel=f"median latency per call on {'GPU' if ctx.cuda else 'CPU'} (ms)"):
        extra += plots.outputs("latency-vs-T.png")
    metric = next(((r.get("memory_prediction") or {}).get("measured_metric") for r in scan_rows
                   if (r.get("memory_prediction") or {}).get("measured_metric")), "")
    if plots.memory_vs_size(scan_rows, ctx.path("memory-vs-T.png"),
                            f"NL and CS peak working memory vs T (frames)\n{plot_title}",
                            predicted=_predicted_memory(ctx, settings), measured_label=_measured_name(metric)):
        extra += plots.outputs("memory-vs-T.png")
    if plots.vps_bars(rows, ctx.path("vps.png"), f"VPS on {where} ({ctx.opts.dtype}, batch 1)"):
        extra += plots.outputs("vps.png")
    counts = {st: sum(1 for r in rows if r["status"] == st) for st in dict.fromkeys(r["status"] for r in rows)}
    limit = f"{ctx.budget_s:g} s budget" if ctx.budget_s is not None else "no time limit"
    summary = [f"timed on {where}; {len(rows)} targets: " + ", ".join(f"{n} {st}" for st, n in counts.items())
               + (f", {len(not_run)} not run (did not fit in the budget)" if not_run else "")
               + f"; timing took {timing_s:.1f} s ({limit})" + (f"; {ctx.threads_note}" if ctx.threads_note else "")
               + ("" if (ctx.cuda or ctx.full) else "; networks not timed on CPU (use --full)")]
    ratios = nl_cs_ratios(main)
    for r in ratios:
        summary.append(f"NL/CS at the BANet preset, {r['impl']}: latency {r['latency']:.2f}x, FLOPs {r['flops']:.2f}x "
                       f"({r['nl_ms']:.4g} ms vs {r['cs_ms']:.4g} ms on {'GPU' if ctx.cuda else 'CPU'})")
    if not_run:
        summary.append(f"not run, did not fit in the {limit}: " + ", ".join(_not_run_name(r) for r in not_run))
    for r in rows:
        if r.get("vps"):
            summary.append(f"{r['network']} {r['attn']}@{r['preset']}: {r['vps']:.3g} videos/s")
    head = (f"Measured on {where}. FLOPs analytic (blocks) or exact (networks), multiply-add = 2; times: median over "
            f"n calls, in ms; memory in MiB (2^20 bytes). Timing took {timing_s:.1f} s ({limit}).")
    tail = speed_markdown(ratios, tables.scan_frame(scan_rows) if scan_rows else None, not_run, extra)
    files = write_tables(ctx, "speed", df, {"rows": rows, "not_run": not_run, "nl_cs_ratios": ratios,
                                            "timing_s": timing_s, "budget_s": ctx.budget_s, "device": where,
                                            "roofline": {k: calibration.get(k) for k in ("matmul", "matmul_tf32", "copy")}},
                         summary, head, tail, extra_files=extra)
    return SectionResult("speed", files=files, summary=summary)


def _measured_name(metric: str) -> str:
    """A short name for how a row's working memory was measured (``bench`` rows' ``working_metric``)."""
    if metric.startswith("cpu tensor peak"):
        return "measured on CPU (tensor peak, tracked op by op)"
    if metric.startswith("CUDA-graph"):
        return "measured on GPU (CUDA-graph pool)"
    if metric.startswith("cuda"):
        return "measured on GPU (allocator peak)"
    return "measured"


def _largest(target: Any, settings: Any) -> dict[str, Any] | None:
    """The target's declared largest intermediate in bytes at the run's batch and precision (as ``bench``
    records it in a row)."""
    from attnbench.flops.memory import Precision

    if not target.largest:
        return None
    p = Precision(settings.dtype, settings.precision, settings.device_type)
    return {"bytes": target.largest[1] * settings.batch * max(p.low, p.softmax, p.act)}


def _predicted_memory(ctx: Context, settings: Any) -> dict[str, list[tuple[int, int]]]:
    """The closed-form peak of NL and CS at every T of the scan, timed or not: {series label: [(T, bytes)]}."""
    from attnbench.flops.memory import Precision
    from attnbench.report import plots

    p = Precision(settings.dtype, settings.precision, settings.device_type)
    out: dict[str, list[tuple[int, int]]] = {}
    for m in HEADLINE:
        for impl in IMPLS:
            for t in SCAN_T["cuda" if ctx.cuda else "cpu-full" if ctx.full else "cpu"]:
                case = cases.resolve(m, "banet", {"T": t}, {"impl": impl})
                peak, _ = case.spec.peak_memory(case.shape.replace(B=settings.batch), p, case.options)
                if peak is not None:
                    out.setdefault(f"{plots.paper_name(m)}, {impl}", []).append((t, peak.bytes))
    return out


def nl_cs_ratios(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per attention kernel: NL's and CS's median latency at the BANet preset, their ratio and the FLOP ratio."""
    from attnbench import bench

    out = []
    preset = [r for r in rows if r.get("preset") == "banet" and not r.get("custom")]
    for impl in IMPLS:
        ratio = bench.latency_ratio(preset, "nl", "cs", impl=impl)
        if ratio:
            by = {r["module"]: r for r in preset if r.get("impl") == impl and r.get("status") == "ok"}
            out.append({"impl": impl, "nl_ms": by["nl"]["timing"]["median_ms"], "cs_ms": by["cs"]["timing"]["median_ms"],
                        "latency": ratio["latency_ratio"], "flops": ratio["flop_ratio"]})
    return out


def _not_run_name(r: dict[str, Any]) -> str:
    name = r.get("module") or f"{r.get('network')}+{r.get('attn')}"
    return f"{name}{' ' + r['impl'] if r.get('impl') else ''} @ {r.get('preset')}" + (
        f" T={r['input_shape'][2]}" if r.get("custom") and r.get("input_shape") else "")


def speed_markdown(ratios: Sequence[dict[str, Any]], scan: Any, not_run: Sequence[dict[str, Any]],
                   images: Sequence[str]) -> str:
    """The speed section's Markdown after its main table: the NL/CS ratios, NL and CS over T with the plots,
    and what did not fit in the budget."""
    import pandas as pd

    parts = []
    if ratios:
        parts += ["## NL / CS at the BANet preset: latency ratio beside FLOP ratio", "",
                  tables.markdown(pd.DataFrame([{"impl": r["impl"], "NL median ms": r["nl_ms"], "CS median ms": r["cs_ms"],
                                                 "latency NL/CS (x)": r["latency"], "FLOP count NL/CS (x)": r["flops"]}
                                                for r in ratios]))]
    if scan is not None and len(scan):
        parts += ["## NL and CS over T (BANet preset's C, H, W)", "", tables.markdown(scan)]
    parts += [f"![{png}]({png}) ([SVG]({plots_svg(png)}))" for png in images if png.endswith(".png")]
    if not_run:
        parts += ["", "## Not run: did not fit in the time budget", "",
                  tables.markdown(pd.DataFrame([{"target": _not_run_name(r), "group": r["group"],
                                                 "input [B,C,T,H,W]": "x".join(map(str, r["input_shape"])),
                                                 "FLOPs": r["flops"], "predicted s": r["predicted_s"], "reason": r["reason"]}
                                                for r in not_run]))]
    return "\n".join(parts)


def plots_svg(png: str) -> str:
    return png[: -len(".png")] + ".svg" if png.endswith(".png") else png


def section_roofline(ctx: Context) -> SectionResult:
    """Every timed block (status ok, with a traffic bound; not the rows of the T scan) as one point per
    block, kernel and precision on the device's measured roofline, read from ``speed.json``."""
    import pandas as pd

    from attnbench.measuring import roofline as rl
    from attnbench.report import plots

    doc = json.loads(ctx.path("speed.json").read_text(encoding="utf-8"))
    rows = [r for r in doc.get("rows", []) if r.get("kind") == "block" and r.get("status") == "ok"
            and r.get("report_group") != "scan" and r.get("traffic") and (r.get("timing") or {}).get("median_ms")]
    cal = doc.get("roofline") or next((r.get("roofline") for r in rows if r.get("roofline")), None) or {}
    if not rows or not cal.get("matmul") or not cal.get("copy"):
        raise RuntimeError("speed.json holds no timed block rows with a traffic bound and a measured roofline")
    peak, bw = cal["matmul"]["flops_per_s"], cal["copy"]["bytes_per_s"]
    ridge = rl.ridge_intensity(peak, bw)
    rows.sort(key=lambda r: (plots.block_order(r["module"]), str(r.get("impl") or "")))  # NL, CS, ... as the papers list them
    points, records = [], []
    precisions = {r.get("precision") for r in rows}
    for r in rows:
        ai = rl.intensity(r["flops"], r["traffic"]["bytes"])
        achieved = r["flops"] / (r["timing"]["median_ms"] / 1e3)
        bound = rl.attainable_flops_per_s(ai, peak, bw) if ai else None
        points.append({"module": r["module"], "impl": r.get("impl"), "precision": r.get("precision"),
                       "intensity": ai, "flops_per_s": achieved, "show_precision": len(precisions) > 1})
        records.append({
            "module": r["module"], "preset": f"{r['preset']}, custom" if r.get("custom") else r["preset"],
            "impl": r.get("impl") or "-", "precision": r.get("precision"),
            "input [B,C,T,H,W]": "x".join(str(v) for v in r["input_shapes"][0]),
            "FLOPs": r["flops"], "min. bytes moved": r["traffic"]["bytes"],
            "intensity (FLOP/byte)": ai, "median ms": r["timing"]["median_ms"], "achieved FLOP/s": achieved,
            "roofline bound FLOP/s": bound, "% of bound": None if not bound else 100 * achieved / bound,
            "bound by": "memory" if ai and ai < ridge else "compute",
            "bytes basis": "with largest intermediate" if r["traffic"].get("intermediate_bytes") else "inputs, params, output",
        })
    where = doc.get("device") or _device_label(ctx)
    mm = cal["matmul"]
    roof = {"peak_flops_per_s": peak, "bytes_per_s": bw,
            "peak_label": f"{mm.get('n')}^3 {mm.get('dtype')} matmul {peak / 1e9:.3g} GFLOP/s",
            "bandwidth_label": f"{cal['copy'].get('bytes', 0) / 2**20:.0f} MiB copy {bw / 2**30:.3g} GiB/s"}
    tf32 = cal.get("matmul_tf32")
    if tf32 and tf32.get("flops_per_s"):
        roof["extra_peaks"] = [(f"TF32 matmul {tf32['flops_per_s'] / 1e9:.3g} GFLOP/s", tf32["flops_per_s"])]
    caption = ("Intensity: closed-form FLOPs (multiply-add = 2) over a lower bound on the bytes one call moves: inputs, "
               "parameters and output once, plus the block's declared largest intermediate written and read once where "
               "it declares one (NL, CS, STA, STC, STPA, W3); real kernels move more, so each point sits at or right of "
               "its true intensity. Roof: the measured calibration matmul and a copy far larger than the caches (read + "
               "write) on this device; a block whose tensors fit in the caches can sit above that memory roof. "
               f"Achieved: FLOPs / median latency of one call ({', '.join(sorted(p for p in precisions if p))}).")
    missing = [_not_run_name(x) for x in doc.get("not_run", []) if x.get("kind") == "block" and x.get("group") != "scan"]
    if missing:  # never dropped silently: the blocks the budget left out are named under the plot
        caption += f" Not timed (did not fit in the time budget): {', '.join(missing)}."
    pngs: list[str] = []
    if plots.roofline(points, roof, ctx.path("roofline.png"), f"Roofline on {where}", caption):
        pngs = plots.outputs("roofline.png")
    df = pd.DataFrame(records)
    memory_bound = sum(1 for x in records if x["bound by"] == "memory")
    summary = [f"{len(points)} timed blocks on {where}: {memory_bound} below the ridge ({ridge:.3g} FLOP/byte, "
               f"memory-bound by the lower bound on bytes), {len(points) - memory_bound} above",
               f"roof: {roof['peak_label']}; {roof['bandwidth_label']} (read + write)"]
    if missing:
        summary.append(f"not on the roofline, not timed (budget): {', '.join(missing)}")
    by = {(x["module"], x["impl"], x["preset"]): x for x in records}
    for m in HEADLINE:
        a, b = by.get((m, "naive", "banet")), by.get((m, "sdpa", "banet"))
        if a and b:
            summary.append(f"{m.upper()} naive -> sdpa: {a['intensity (FLOP/byte)']:.3g} -> {b['intensity (FLOP/byte)']:.3g} FLOP/byte, "
                           f"{a['achieved FLOP/s'] / 1e9:.3g} -> {b['achieved FLOP/s'] / 1e9:.3g} GFLOP/s")
    head = (f"Measured on {where}. {caption} `% of bound`: achieved over min(compute roof, intensity x memory roof).")
    tail = "\n".join(f"![{png}]({png}) ([SVG]({plots_svg(png)}))" for png in pngs if png.endswith(".png"))
    files = write_tables(ctx, "roofline", df, {"points": records, "roof": roof, "ridge_flop_per_byte": ridge}, summary,
                         head, tail, extra_files=pngs)
    return SectionResult("roofline", files=files, summary=summary)


def _where(ctx: Context) -> str:
    fp = ctx.fingerprint
    return f"{ctx.device} ({fp.get('gpu_name') or fp.get('cpu_model')})"


def section_table_vi(ctx: Context, on_step: Callable[[str], None] | None = None) -> SectionResult:
    import pandas as pd

    from attnbench import bench
    from attnbench.papers.banet import table_vi

    settings = speed_settings(ctx)
    store_path = ctx.path("table-vi.jsonl")
    targets = [*(bench.block_target(cases.resolve(m, "banet")) for m in ("nl", "cs")),
               *(bench.network_target(cases.resolve_network("eco", a, "16f")) for a in ("none", "nl", "cs"))]
    if ctx.cuda or (ctx.full and ctx.measure):
        rows = bench.run(targets, settings, str(store_path), ctx.opts.resume, overwrite=not ctx.opts.resume)
    else:  # a CPU report reads what `attnbench table-vi` measured here: it never times five networks itself
        rows = stored_rows(store_path, targets, settings, ctx.fingerprint)
        if not any(r.get("kind") == "network" for r in rows):
            return SectionResult("table-vi", status="not run", summary=[
                f"{store_path.name} holds no row of Table VI's networks (the full ECO 16F plain, +NL, +CS) measured on "
                "this device with these options; `attnbench table-vi --device cpu` measures them (minutes on a CPU), "
                "or --full times them here"])
    block_rows = [r for r in rows if r.get("kind") == "block"]
    net_rows = [r for r in rows if r.get("kind") == "network"]
    result = table_vi(net_rows, block_rows)
    df = pd.DataFrame(result["methods"])
    s = result["summary"]
    fmt = lambda v: "n/a" if v is None else f"{v:.2f}"  # noqa: E731
    summary = [f"CS:NL speed ratio: paper {fmt(s['paper_cs_over_nl_speed'])} ({result['paper_device']}), "
               f"measured {fmt(s['measured_cs_over_nl_speed'])} on {_where(ctx)}",
               f"network FLOP ratio (ECO+NL)/(ECO+CS): {fmt(s['network_flop_ratio_nl_over_cs'])}"]
    for m in result["methods"]:
        summary.append(f"{m['method']}: paper {m['paper VPS']} VPS, measured "
                       + ("n/a" if m["measured VPS"] is None else f"{m['measured VPS']:.3g}") + f" VPS ({m['status']})")
    files = write_tables(ctx, "table-vi", df, {"result": result}, summary,
                         "VPS: videos (16-frame clips at 224x224) per second; network FLOPs from the exact counter, multiply-add = 2.")
    return SectionResult("table-vi", files=[*files, "table-vi.jsonl"], summary=summary)


def _measured_what(key: str) -> str:
    """A row key without its repetition settings (threads, reps, target and warm-up seconds): what was
    measured, on which device, at which precision, batch and timing mode."""
    return key.split(":threads=")[0]


def stored_rows(path: Path, targets: Sequence[Any], settings: Any, fingerprint: dict[str, Any]) -> list[dict[str, Any]]:
    """For each target, the last row of ``path`` that measured it on this device at this precision, batch
    and timing mode, whatever its repetition settings (each row records its own); targets with none are
    left out."""
    from attnbench.store import jsonl

    last = {_measured_what(r["key"]): r for r in jsonl.read_rows(path, need=("key",)) if isinstance(r.get("key"), str)}
    return [last[w] for t in targets if (w := _measured_what(t.key(settings, fingerprint))) in last]


def section_max_fit(ctx: Context, on_step: Callable[[str], None] | None = None) -> SectionResult:
    probe = sw.device_probe(ctx.device, ctx.opts.dtype)
    limit = 1024 if ctx.quick else 8192
    results = []
    for m in ("nl", "cs"):
        def note(q: dict[str, Any], m: str = m) -> None:
            if on_step:
                on_step(f"max-fit {m}: T={q['value']} {q['status']}")

        results.append(sw.max_fit(m, "T", probe=probe, limit=limit, on_probe=note))
    summary = [sw.max_fit_text(r) + f" (others at the BANet preset, {ctx.opts.dtype})" for r in results]
    df = sw.max_fit_frame(results)
    files = write_tables(ctx, "max-fit", df, {"results": results}, summary,
                         f"Doubling from the preset's T, then bisection; one forward call per probe on {_where(ctx)}.")
    return SectionResult("max-fit", files=files, summary=summary)


RUNNERS: dict[str, Callable[..., SectionResult]] = {
    "list": section_list,
    "flops": section_flops,
    "network-flops": section_network_flops,
    "reproduce": section_reproduce,
    "sweep": section_sweep,
    "speed": section_speed,
    "roofline": section_roofline,
    "table-vi": section_table_vi,
    "max-fit": section_max_fit,
}
TAKES_STEP = {"sweep", "speed", "table-vi", "max-fit"}  # roofline only reads speed.json


def applies(ctx: Context, name: str) -> str | None:
    """Why a section is not run on this machine and mode, or None when it runs."""
    if name in ("speed", "roofline") and not ctx.measure:
        if ctx.budget_s == 0:
            return "--budget-s 0: nothing is timed"
        return "--quick times nothing on a CPU; give --budget-s SECONDS (or --device cpu) to time the blocks"
    if name == "roofline" and ctx.statuses.get("speed") not in (None, "ok", "kept"):
        return f"the speed section did not finish ({ctx.statuses['speed']}): no rows to place on the roofline"
    if name == "roofline" and not ctx.path("speed.json").exists():
        return "the speed section wrote no rows to place on the roofline"
    if name == "table-vi" and not (ctx.cuda or (ctx.full and ctx.measure)) and not ctx.path("table-vi.jsonl").exists():
        return "needs CUDA (or --full with --device cpu, or rows from `attnbench table-vi`): five ECO-Lite/block timings"
    if name == "max-fit" and not ctx.cuda:
        return "needs CUDA: on CPU running out of memory ends the process instead of raising"
    return None


def expected_files(name: str) -> list[str]:
    """Files whose presence means a section finished (for ``resume``)."""
    if name == "reproduce":
        return ["reproduce.json"]
    if name == "sweep":
        return ["sweep.md", "sweep.json"]
    return [f"{name}.md", f"{name}.json"]


def _kept(ctx: Context, name: str) -> SectionResult | None:
    paths = [ctx.path(f) for f in expected_files(name)]
    if not all(p.exists() for p in paths):
        return None
    path = ctx.path(f"{name}.json")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        doc = None
    strings = lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v)  # noqa: E731
    if not (isinstance(doc, dict) and strings(doc.get("summary", [])) and strings(doc.get("files", []))):
        warnings.warn(f"{path} is not a section file this report wrote; the {name} section runs again",
                      AttnBenchWarning, stacklevel=2)
        return None
    if name == "reproduce" and not doc.get("available", True):
        return None  # it may be importable now
    files = doc.get("files") or [f for f in (f"{name}.md", f"{name}.csv", f"{name}.json") if ctx.path(f).exists()]
    return SectionResult(name, status="kept", files=files, summary=list(doc.get("summary") or []))


# ---------------------------------------------------------------------------------------------------------
# The job


def make_context(opts: ReportOptions, out_dir: str | Path | None = None) -> Context:
    import torch

    from attnbench.measuring import device as dev

    if opts.mode not in MODES:
        raise UsageError(f"unknown report mode '{opts.mode}'; valid choices: {', '.join(MODES)}")
    dev.resolve_dtype(opts.dtype)
    if opts.budget_s is not None and not (0 <= opts.budget_s < float("inf")):
        raise UsageError(f"--budget-s must be a number of seconds >= 0, got {opts.budget_s}")
    if opts.device in (None, "auto"):
        device = "cuda" if torch.cuda.is_available() else "cpu"
        # --quick on a CPU times nothing unless a budget is given: it is the under-a-minute check
        measure = device != "cpu" or opts.mode != "quick" or opts.budget_s is not None
    else:
        device = opts.device
        dev.resolve_device(device)
        measure = True
    budget = opts.budget_s
    if budget is None and device == "cpu" and opts.mode != "full":
        budget = DEFAULT_CPU_BUDGET_S
    if budget == 0:
        measure = False
    fp = dev.fingerprint(device)
    folder = files.ensure_writable_dir(out_dir if out_dir is not None else Path("results") / dev.device_slug(fp))
    index = folder / "README.md"
    if index.exists() and not _is_report_index(index):
        raise UsageError(f"{folder} holds a README.md that is not an attnbench report index; the report would "
                             f"replace it: give --out an empty folder, a new one, or an earlier report's")
    if folder.is_dir() and not index.exists():
        # not a report folder: only results files of the measuring commands may be there (the report adds
        # rows to them); anything else could be a file of the user's that a section would replace
        foreign = sorted(p.name for p in folder.iterdir() if not p.name.startswith(".") and p.suffix != ".jsonl")
        if foreign:
            raise UsageError(f"{folder} is not empty and not an attnbench report folder (it holds {foreign[0]}"
                                 f"{f' and {len(foreign) - 1} more' if len(foreign) > 1 else ''}); give --out an empty "
                                 f"folder, a new one, or an earlier report's")
    return Context(opts, folder, device, measure, fp, budget)


def _is_report_index(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.readline().strip() == INDEX_TITLE
    except OSError:
        return False


Event = Callable[[str, str, "SectionResult | None"], None]


def run_report(opts: ReportOptions, out_dir: str | Path | None = None, on_event: Event | None = None,
               sections: Sequence[str] = SECTION_ORDER, command: str = "attnbench report") -> ReportResult:
    """Run every section, writing the folder and its index as it goes; never raises for a failing section.
    Ctrl-C stops after writing the index (``interrupted`` is then True)."""
    ctx = make_context(opts, out_dir)
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    results: list[SectionResult] = []
    report = ReportResult(ctx.out_dir, results, 0.0)
    write_index(ctx, report, stamp, command, running=True)  # the folder is a report's from the start
    emit = on_event or (lambda *_: None)
    for name in sections:
        why_not = applies(ctx, name)
        if why_not:
            ctx.statuses[name] = "not run"
            results.append(SectionResult(name, status="not run", summary=[why_not]))
            emit("end", name, results[-1])
            continue
        kept = _kept(ctx, name) if opts.resume else None
        if kept:
            ctx.statuses[name] = kept.status
            results.append(kept)
            emit("end", name, kept)
            continue
        emit("start", name, None)
        t0 = time.perf_counter()
        try:
            runner = RUNNERS[name]
            if name in TAKES_STEP:
                res = runner(ctx, on_step=lambda text, n=name: emit("step", text, None))
            else:
                res = runner(ctx)
        except KeyboardInterrupt:
            res = SectionResult(name, status="interrupted", error="Ctrl-C; rows finished so far are kept in the section's .jsonl (--resume goes on from there)")
            report.interrupted = True
        except Exception as e:  # noqa: BLE001 - a failing section is recorded and the job goes on
            first = (str(e).strip().splitlines() or [""])[0]
            res = SectionResult(name, status="failed", error=f"{type(e).__name__}: {first[:300]}")
        res.seconds = time.perf_counter() - t0
        ctx.statuses[name] = res.status
        results.append(res)
        emit("end", name, res)
        report.seconds = time.perf_counter() - started
        write_index(ctx, report, stamp, command, running=True)
        if report.interrupted:
            break
    report.seconds = time.perf_counter() - started
    write_index(ctx, report, stamp, command)
    return report


def timing_line(ctx: Context) -> str:
    if not ctx.measure:
        return "none (closed forms and counters only; " + (applies(ctx, "speed") or "") + ")"
    limit = f"within a {ctx.budget_s:g} s budget" if ctx.budget_s is not None else "no time limit"
    return f"on {_device_label(ctx)}, {limit}"


def _link(name: str) -> str:
    return f"[{name}]({name})"


def write_index(ctx: Context, report: ReportResult, stamp: str, command: str, running: bool = False) -> None:
    """The folder's README.md: what ran, where, each section's status, headline, files and plots."""
    fp = ctx.fingerprint
    lines = [
        INDEX_TITLE,
        "",
        f"- command: `{command}` (mode: {ctx.opts.mode}, dtype: {ctx.opts.dtype})",
        f"- started: {stamp}; wall time {'so far' if running else 'of the job'}: {report.seconds:.1f} s"
        + (" (interrupted)" if report.interrupted else ""),
        f"- device: {ctx.device}" + (f", {fp.get('gpu_name')}" if fp.get("gpu_name") else "")
        + f"; CPU: {fp.get('cpu_model')}, {fp.get('logical_cores')} logical cores, {fp.get('torch_threads')} torch threads",
        f"- torch {fp.get('torch_version')}, Python {fp.get('python_version')}, {fp.get('os')}"
        + (f", CUDA {fp.get('cuda_version')}, driver {fp.get('driver_version')}" if fp.get("gpu_name") else ""),
        f"- timing: {timing_line(ctx)}",
        "",
        UNITS_NOTE,
        "",
        "| section | status | time (s) | files |",
        "|---|---|---|---|",
    ]
    for s in report.sections:
        status = s.status if not s.error else f"{s.status}: {s.error}"
        files = ", ".join(_link(f) for f in s.files if not f.endswith((".png", ".svg"))) or "-"
        secs = f"{s.seconds:.1f}" if s.status in ("ok", "failed", "interrupted", "unavailable") else "-"
        lines.append(f"| {s.name} | {status.replace('|', '/')} | {secs} | {files} |")
    for s in report.sections:
        lines += ["", f"## {SECTION_TITLES.get(s.name, s.name)}", ""]
        if s.error:
            lines.append(f"**{s.status}**: {s.error}")
            lines.append("")
        lines += [f"- {line}" for line in s.summary]
        pngs = [f for f in s.files if f.endswith(".png")]
        for png in pngs:
            svg = plots_svg(png)
            lines += ["", f"![{png}]({png})" + (f" ([SVG]({svg}))" if svg in s.files else "")]
    atomic_write(ctx.path("README.md"), "\n".join(lines) + "\n")
