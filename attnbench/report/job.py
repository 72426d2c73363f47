"""`attnbench report`: every check attnbench can make on this machine, written to one results folder.

Sections, in order (each writes Markdown, CSV and JSON tables, some PNG plots):

* ``list`` -- the blocks, their papers, presets and options;
* ``flops`` -- closed forms against the exact counter (and torch's, fvcore's, ptflops' counters) at every preset;
* ``network-flops`` -- the papers' networks with each attention choice: parameters and exact FLOPs;
* ``sweep`` -- cost against T and H = W for NL, CS and a few others; growth exponents; where NL and CS part;
* ``speed`` -- latency and memory of every block (and, on CUDA or with ``full``, the networks' VPS);
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
SECTION_ORDER = ("list", "flops", "network-flops", "sweep", "speed", "table-vi", "reproduce", "max-fit")
SECTION_TITLES = {
    "list": "Blocks, papers and presets",
    "flops": "FLOPs and parameters at every preset (closed form vs counters)",
    "network-flops": "Paper networks: parameters and exact FLOPs",
    "reproduce": "Papers' printed numbers reproduced",
    "sweep": "Scaling sweep: cost against size (T, H = W, C)",
    "speed": "Measured latency, memory and VPS",
    "table-vi": "BANet Table VI measured",
    "max-fit": "Largest T that runs (NL vs CS)",
}
UNITS_NOTE = ("Units: FLOPs count a multiply-add as 2 (any other arithmetic op as 1); MACs count a multiply-add "
              "as 1; parameters are counts; latency is the median wall time of one forward call in ms; memory in "
              "bytes (MiB = 2^20 bytes); VPS = videos (one clip each) per second.")


@dataclass(frozen=True)
class ReportOptions:
    mode: str = "default"  # quick | default | full
    device: str | None = None  # None: CUDA when present, else CPU (and then nothing is timed)
    dtype: str = "fp32"
    resume: bool = False


@dataclass
class Context:
    opts: ReportOptions
    out_dir: Path
    device: str
    measure: bool  # time blocks (speed section); True on CUDA or when a device was asked for
    fingerprint: dict[str, Any]

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
    rows = rp.reproduce("all")
    summ = rp.summary(rows)
    df = pd.DataFrame(rows)
    reproduced = sum(p["counted_reproduced"] for p in summ["by_paper"].values())
    summary = [f"{len(rows)} printed figures checked",
               f"reproduced: {reproduced} of {summ['counted_rows']} parameter, FLOP and size figures ({summ['share_reproduced']:.1%})",
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
    exps = sw.fit_exponents(rows)
    cross = sw.crossovers(rows) if {"nl", "cs"} <= set(modules) else []
    pngs: list[str] = []
    for axis in values:
        for metric in ("flops", "latency_ms"):
            name = f"sweep-{'flops' if metric == 'flops' else 'latency'}-{axis}.png"
            if plots.cost_vs_size(rows, axis, metric, ctx.path(name), exponents=exps):
                pngs.append(name)
    for c in cross:
        name = f"nl-vs-cs-{c['axis']}.png"
        if plots.ratio_vs_size(c, ctx.path(name)):
            pngs.append(name)
    counts = {st: sum(1 for r in rows if r["status"] == st) for st in dict.fromkeys(r["status"] for r in rows)}
    summary = [f"{len(rows)} points ({', '.join(f'{n} {st}' for st, n in counts.items())}): {', '.join(modules)} over "
               + "; ".join(f"{a} in {','.join(map(str, v))}" for a, v in values.items())
               + (f"; latency measured on {ctx.device}" if measured else "; closed forms only (no timing)")
               + "; skipped = shape rejected by the block" + (" or too big to time here (reason per row)" if measured else "")]
    for e in exps:
        if e["module"] in ("nl", "cs") and e["metric"] in ("flops", "latency_ms"):
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


def speed_settings(ctx: Context, batch: int = 1) -> Any:
    from attnbench import bench

    if ctx.cuda:
        reps, target = (5, 0.3) if ctx.quick else (10, 1.0)
    else:
        reps, target = (2, 0.1) if ctx.quick else (3, 0.3)
    return bench.Settings(device=ctx.device, dtype=ctx.opts.dtype, batch=batch, min_reps=reps, target_s=target,
                          max_warmup_s=max(0.5, target))


def section_speed(ctx: Context, on_step: Callable[[str], None] | None = None) -> SectionResult:
    from attnbench import bench
    from attnbench.blocks.registry import all_blocks
    from attnbench.networks.registry import all_networks
    from attnbench.report import plots

    targets = [bench.block_target(cases.resolve(s.name)) for s in all_blocks()]
    with_networks = ctx.cuda or ctx.full
    if with_networks:
        targets += [bench.network_target(cases.resolve_network(n.name, a)) for n in all_networks() for a in n.attn_choices]
    store_path = ctx.path("speed.jsonl")
    done = [0]

    def step(row: dict[str, Any]) -> None:
        done[0] += 1
        if on_step:
            on_step(f"speed {done[0]}/{len(targets)}: {row.get('module') or row.get('network')}")

    rows = bench.run(targets, speed_settings(ctx), str(store_path), ctx.opts.resume, on_row=step,
                     overwrite=not ctx.opts.resume)
    df = tables.speed_frame(rows)
    extra = ["speed.jsonl"]
    if plots.vps_bars(rows, ctx.path("vps.png"), f"VPS on {_where(ctx)} ({ctx.opts.dtype}, batch 1)"):
        extra.append("vps.png")
    counts = {st: sum(1 for r in rows if r["status"] == st) for st in dict.fromkeys(r["status"] for r in rows)}
    summary = [f"{len(rows)} targets on {_where(ctx)}: " + ", ".join(f"{n} {st}" for st, n in counts.items())
               + ("" if with_networks else "; networks not timed on CPU (use --full)")]
    ratio = bench.latency_ratio(rows, "nl", "cs")
    if ratio:
        summary.append(f"NL/CS at the BANet preset: latency {ratio['latency_ratio']:.2f}x, FLOPs {ratio['flop_ratio']:.2f}x")
    for r in rows:
        if r.get("vps"):
            summary.append(f"{r['network']} {r['attn']}@{r['preset']}: {r['vps']:.3g} videos/s")
    head = f"Measured on {_where(ctx)}; FLOPs analytic (blocks) or exact (networks), multiply-add = 2; times: median over n calls."
    files = write_tables(ctx, "speed", df, {"rows": rows}, summary, head, extra_files=extra)
    return SectionResult("speed", files=files, summary=summary)


def _where(ctx: Context) -> str:
    fp = ctx.fingerprint
    return f"{ctx.device} ({fp.get('gpu_name') or fp.get('cpu_model')})"


def section_table_vi(ctx: Context, on_step: Callable[[str], None] | None = None) -> SectionResult:
    import pandas as pd

    from attnbench import bench
    from attnbench.papers.banet import table_vi

    settings = speed_settings(ctx)
    store_path = ctx.path("table-vi.jsonl")
    # rows an earlier `attnbench table-vi` run left here are reused rather than timed again
    reuse = ctx.opts.resume or not (ctx.cuda or (ctx.full and ctx.measure))
    rows = bench.run([*(bench.block_target(cases.resolve(m, "banet")) for m in ("nl", "cs")),
                      *(bench.network_target(cases.resolve_network("eco", a, "16f")) for a in ("none", "nl", "cs"))],
                     settings, str(store_path), reuse, overwrite=not reuse)
    block_rows, net_rows = rows[:2], rows[2:]
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
    "table-vi": section_table_vi,
    "max-fit": section_max_fit,
}
TAKES_STEP = {"sweep", "speed", "table-vi", "max-fit"}


def applies(ctx: Context, name: str) -> str | None:
    """Why a section is not run on this machine and mode, or None when it runs."""
    if name == "speed" and not ctx.measure:
        return "no CUDA device here; give --device cpu to time the blocks on CPU"
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
    if opts.device in (None, "auto"):
        device = "cuda" if torch.cuda.is_available() else "cpu"
        measure = device != "cpu"
    else:
        device = opts.device
        dev.resolve_device(device)
        measure = True
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
    return Context(opts, folder, device, measure, fp)


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
            results.append(SectionResult(name, status="not run", summary=[why_not]))
            emit("end", name, results[-1])
            continue
        kept = _kept(ctx, name) if opts.resume else None
        if kept:
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
        results.append(res)
        emit("end", name, res)
        report.seconds = time.perf_counter() - started
        write_index(ctx, report, stamp, command, running=True)
        if report.interrupted:
            break
    report.seconds = time.perf_counter() - started
    write_index(ctx, report, stamp, command)
    return report


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
        f"- timing: {'on ' + ctx.device if ctx.measure else 'none (no CUDA device; closed forms and counters only)'}",
        "",
        UNITS_NOTE,
        "",
        "| section | status | time (s) | files |",
        "|---|---|---|---|",
    ]
    for s in report.sections:
        status = s.status if not s.error else f"{s.status}: {s.error}"
        files = ", ".join(_link(f) for f in s.files if not f.endswith(".png")) or "-"
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
            lines += ["", f"![{png}]({png})"]
    atomic_write(ctx.path("README.md"), "\n".join(lines) + "\n")
