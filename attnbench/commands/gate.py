"""``attnbench snapshot`` and ``attnbench check``: the CI performance gate (logic in :mod:`attnbench.gate`).

Exit codes of ``check``: 0 every check holds, 1 a regression (or a changed parameter or FLOP count),
2 a usage error (bad option, unreadable or malformed baseline, a timed baseline from another device
without ``--normalize``, ``--allow-device-mismatch`` or ``--flops-only``).

Everything a baseline holds is printed as text, never as Rich markup or terminal control sequences
(:func:`attnbench.text.plain` in tables, :func:`attnbench.text.clean` in plain lines).
"""

from __future__ import annotations

import json
import os
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from attnbench import defaults as D
from attnbench.commands.common import AcceleratorOpt, EachAcceleratorOpt, RayOpt, ray_session, BOpt, COpt, HOpt, TOpt, WOpt, err, guarded, module_list, out
from attnbench.errors import UsageError
from attnbench.text import clean, plain

ThreadsOpt = Annotated[Optional[int], typer.Option("--threads", help="torch CPU threads while timing (default: torch's)", show_default=False)]


def _progress(enabled: bool):
    """A transient progress line on stderr, or None."""
    if not enabled:
        return None, None
    from rich.status import Status

    status = Status("", console=err)
    return status, lambda text: status.update(plain(text))  # keys come from files: never markup


def snapshot_cmd(
    out_file: Annotated[str, typer.Option("--out", help="baseline JSON file to write")],
    module: Annotated[list[str], typer.Option("--module", "--modules", "-m", help="block (repeatable, or a comma list; default: every block)", show_default=False)] = [],  # noqa: B006
    presets: Annotated[Optional[str], typer.Option("--presets", help="comma list of presets, 'all' or 'default' (default: all; with sizes: default)", show_default=False)] = None,
    B: BOpt = None, C: COpt = None, T: TOpt = None, H: HOpt = None, W: WOpt = None,  # noqa: N803
    time_it: Annotated[bool, typer.Option("--time", help="also time the blocks (implied by --device)")] = False,
    device: Annotated[Optional[str], typer.Option("--device", help="cpu, cuda, cuda:N or auto; implies --time", show_default=False)] = None,
    dtype: Annotated[str, typer.Option("--dtype", help="fp32, fp16 or bf16 (autocast) for timing")] = "fp32",
    threads: ThreadsOpt = None,
    rounds: Annotated[int, typer.Option("--rounds", help="interleaved measurement rounds per block")] = D.GATE_ROUNDS,
    round_s: Annotated[float, typer.Option("--round-s", help="seconds of timed calls per block and round")] = D.GATE_ROUND_S,
    malloc: Annotated[str, typer.Option("--malloc", help="CPU: cached (glibc keeps freed memory; no page-fault noise) or system (glibc defaults)")] = "cached",
    clock: Annotated[str, typer.Option("--clock", help="auto: cpu on a CPU device (one torch thread), wall on CUDA; wall: per-call latency; cpu: the thread's CPU time per call, robust to other processes' load")] = "auto",
    ray: RayOpt = None,
    accelerator: AcceleratorOpt = None,
    each_accelerator: EachAcceleratorOpt = False,
) -> None:
    """Write a baseline: parameters and exact FLOPs of every selected block and preset, and with --time
    or --device its latency samples, peak memory, a reference workload and the device fingerprint. With
    --ray the timing is one task on a cluster worker (a baseline is one device's: its blocks are timed
    interleaved with the reference workload); --each-accelerator writes one baseline per GPU model,
    OUT.<model>.json."""
    if ray is not None and not (time_it or device is not None):  # before Ray starts
        raise UsageError("--ray times the baseline on the cluster: add --time or --device (counting takes seconds here)")
    with ray_session(ray, accelerator, each_accelerator) as cluster:
        _snapshot(out_file, module, presets, {"B": B, "C": C, "T": T, "H": H, "W": W}, time_it, device, dtype, threads,
                  rounds, round_s, malloc, clock, cluster)


def _snapshot(out_file: str, module: list[str], presets: str | None, sizes: dict[str, int | None], time_it: bool,
              device: str | None, dtype: str, threads: int | None, rounds: int, round_s: float, malloc: str, clock: str,
              cluster: Any) -> None:
    from attnbench import gate
    from attnbench.store import files

    files.ensure_writable(out_file)  # before any work: a bad --out fails at once, not after the timing
    modules = module_list(module, absolute=True) or None  # a file block's path: absolute, so check works anywhere
    items = gate.select(modules, presets, sizes)
    plan = None
    if time_it or device is not None:
        if cluster is not None:
            from attnbench import distributed

            device = distributed.resolve_device(cluster, device or "auto")
        elif device in (None, "auto"):
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        if clock == "auto":
            from attnbench.measuring.device import resolve_device

            kind = device.split(":")[0] if cluster is not None else resolve_device(device).type
            clock = "cpu" if kind == "cpu" and threads in (None, 1) else "wall"
        if clock == "cpu" and threads is None:
            threads = 1
        plan = gate.TimingPlan(device=device, dtype=dtype, threads=threads, rounds=rounds, round_s=round_s, clock=clock,
                               malloc=malloc).check(local=cluster is None)
    selection = {"modules": modules, "presets": presets,
                 "sizes": {k: v for k, v in sizes.items() if v is not None}}
    if cluster is not None:
        from attnbench import distributed
        from attnbench.gate.baseline import snapshot_on_ray

        err.print(f"timing on the Ray cluster: {len(items)} blocks ...", markup=False, highlight=False)
        docs = snapshot_on_ray(items, plan, selection, cluster)
        for group, doc in docs:
            path = distributed.by_accelerator_path(out_file, group.label) if cluster.each_accelerator else out_file
            _write_baseline(path, doc, plan)
        return
    status, progress = _progress(err.is_terminal)
    if status:
        status.start()
    try:
        doc = gate.snapshot(items, plan, selection, progress)
    finally:
        if status:
            status.stop()
    _write_baseline(out_file, doc, plan)


def _write_baseline(out_file: str, doc: dict[str, Any], plan: Any) -> None:
    from attnbench import gate
    from attnbench.store import files

    files.atomic_write(out_file, json.dumps(doc, indent=1, sort_keys=False) + "\n")
    what = "parameters and FLOPs only"
    if plan:
        fp = doc["fingerprint"]
        what = (f"timed on {plan.device} ({fp.get('gpu_name') or fp.get('cpu_model')}), {plan.dtype}, {plan.clock} clock, "
                f"{fp.get('torch_threads')} torch thread(s)" + (f", malloc {plan.malloc}" if plan.device == "cpu" else ""))
    failed = [e["key"] for e in doc["entries"] if e.get("status") not in (None, "ok")]
    if doc.get("worker"):
        what += f", on Ray node {doc['worker'].get('node_ip')}"
    out.print(clean(f"wrote {len(doc['entries'])} entries ({what}) to {out_file}"), markup=False, highlight=False)
    if failed:
        out.print(clean(f"not timed (OOM or error): {', '.join(failed)}"), markup=False, highlight=False)
    if plan and (why := gate.unsteady(doc)):
        err.print(clean(f"warning: {why}"), markup=False, highlight=False)


def check_cmd(
    baseline: Annotated[str, typer.Option("--baseline", help="baseline JSON written by `attnbench snapshot`")],
    alpha: Annotated[float, typer.Option("--alpha", help="significance level of the one-sided Mann-Whitney U test on per-round medians (must be reachable with the rounds: 5 vs 5 rounds give p >= 1/252)")] = D.GATE_ALPHA,
    load_alpha: Annotated[float, typer.Option("--load-alpha", help="significance level of the same test relative to the reference workload under --load-control (at least --alpha): it only rules out a machine slower as a whole")] = D.GATE_LOAD_ALPHA,
    max_slowdown: Annotated[float, typer.Option("--max-slowdown", help="a slowdown fails only if median(new)/median(old) exceeds this")] = D.GATE_MAX_SLOWDOWN,
    memory_tolerance: Annotated[float, typer.Option("--memory-tolerance", help="allowed growth of peak memory (fraction)")] = D.GATE_MEMORY_TOLERANCE,
    normalize: Annotated[bool, typer.Option("--normalize", help="divide latencies by the reference workload's (compares across devices)")] = False,
    load_control: Annotated[Optional[bool], typer.Option("--load-control/--no-load-control", help="same device: a slowdown must show in two of raw times, times relative to the reference workload and times relative to the other blocks of the same rounds (default: on for a CPU, off for CUDA, where the reference does not track the GPU's speed)", show_default=False)] = None,
    flops_only: Annotated[bool, typer.Option("--flops-only", help="compare parameters and FLOPs only, even if the baseline is timed")] = False,
    allow_device_mismatch: Annotated[bool, typer.Option("--allow-device-mismatch", help="a baseline timed on another device: check it without latency (the summary says so) instead of exiting 2")] = False,
    device: Annotated[Optional[str], typer.Option("--device", help="device to time on (default: the baseline's)", show_default=False)] = None,
    rounds: Annotated[Optional[int], typer.Option("--rounds", help="measurement rounds (default: the baseline's)", show_default=False)] = None,
    round_s: Annotated[Optional[float], typer.Option("--round-s", help="seconds per block and round (default: the baseline's)", show_default=False)] = None,
    retries: Annotated[int, typer.Option("--retries", help="re-measure a block that looks slower up to this often before judging it")] = D.GATE_RETRIES,
    json_out: Annotated[bool, typer.Option("--json", help="print the report as one JSON object")] = False,
) -> None:
    """Re-measure the baseline's blocks and compare: parameters and FLOPs exactly, latency with a
    one-sided Mann-Whitney U test on the per-round medians plus a minimum slowdown, peak memory within a
    tolerance. Exit 1 on a regression, 2 on a malformed baseline or one timed on another device."""
    from attnbench import gate

    opts = gate.CheckOptions(alpha=alpha, load_alpha=load_alpha, max_slowdown=max_slowdown, memory_tolerance=memory_tolerance,
                             normalize=normalize, load_control=load_control, flops_only=flops_only,
                             allow_device_mismatch=allow_device_mismatch, retries=retries, device=device,
                             rounds=rounds, round_s=round_s).check()
    doc = gate.load_baseline(baseline)
    status, progress = _progress(err.is_terminal and not json_out)
    if status:
        status.start()
    try:
        report = gate.check(doc, opts, progress)
    except RecursionError:
        raise UsageError(f"baseline {clean(baseline)} is malformed: nested too deeply") from None
    finally:
        if status:
            status.stop()
    report["baseline"]["path"] = baseline
    summary_path = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary_path:
        problem = gate.append_step_summary(summary_path, gate.markdown_summary(report, baseline))
        if problem:
            err.print(f"warning: {problem}", markup=False, highlight=False)
    if json_out:
        print(json.dumps(report, default=str))
    else:
        _render(report, baseline)
    if not report["passed"]:
        raise typer.Exit(1)


def _render(report: dict[str, Any], baseline: str) -> None:
    from attnbench import gate

    t = report["timing"]
    table = Table(title=f"attnbench check against {plain(baseline)}")
    for col in ("entry", "params", "FLOPs", "latency (median of round medians)", "memory (peak)", "verdict"):
        table.add_column(col, justify="left" if col in ("entry", "verdict") else "right")
    by_key: dict[str, dict[str, dict[str, Any]]] = {}
    for f in report["findings"]:
        by_key.setdefault(f["key"], {})[f["check"]] = f
    for key, fs in by_key.items():
        table.add_row(plain(key), plain(_cell(fs.get("params"))), plain(_cell(fs.get("flops"))), plain(_cell(fs.get("latency"))),
                      plain(_cell(fs.get("memory"))), plain(_row_verdict(fs)))
    o = report["options"]
    caption = ["params, FLOPs: exact"]
    if t.get("latency_compared"):
        rt = t.get("rank_test") or {}
        rounds = f" ({rt['baseline_rounds']} vs {rt['current_rounds']} rounds)" if rt else ""
        rate = f", false-alarm rate of the test {rt['false_alarm_rate']:.2%} per block" if rt else ""
        caption.append(f"latency ({t['plan']['clock']} clock): fail if the U test on per-round medians{rounds} gives "
                       f"p <= {o['alpha']:g}{rate}, and the median ratio > {o['max_slowdown']:g}"
                       + (" (normalized by the reference workload)" if o["normalize"] else
                          f" in two of: raw times, relative to the reference workload (p <= {o['load_alpha']:g}), relative to "
                          f"the other blocks of the same rounds" if o["load_control"] else "")
                       + (f", confirmed by re-measuring (up to {o['retries']}x)" if o["retries"] else ""))
    if t.get("memory_compared"):
        caption.append(f"memory: fail above +{o['memory_tolerance']:.0%}")
    for missing in report.get("not_compared") or []:
        caption.append(f"NOT compared: {missing}")
    table.caption = plain(" | ".join(caption))
    out.print(table)
    for f in report["findings"]:
        if f["check"] == "flops" and f["status"] == "changed":
            out.print(_flops_table(f))
    note = (t.get("rank_test") or {}).get("note")
    if note:
        out.print(clean(f"note: {note}"), markup=False, highlight=False)
    if t.get("baseline_unsteady"):
        out.print(clean(f"note: {t['baseline_unsteady']}"), markup=False, highlight=False)
    if t.get("device_differences"):
        out.print(clean(f"device differs from the baseline's: {'; '.join(t['device_differences'])}"), markup=False, highlight=False)
    if not t.get("compared") and t.get("reason"):
        out.print(clean(f"latency and memory not compared: {t['reason']}"), markup=False, highlight=False)
    for f in gate.notable(report):
        if f["check"] in ("params", "flops"):
            continue
        b, c, ch = gate.finding_cells(f)
        extra = f" ({f['detail']})" if f.get("detail") and f["detail"] not in ch else ""
        out.print(clean(f"{gate.verdict(f)}: {f['key']} {f['check']}: {b} -> {c} {ch}{extra}".replace("  ", " ")),
                  markup=False, highlight=False)
    out.print(clean(gate.headline(report)), markup=False, highlight=False)
    if not report["passed"] and any(f["failed"] and f["check"] in ("params", "flops", "config") for f in report["findings"]):
        out.print("if the change is intended, regenerate the baseline with `attnbench snapshot`",
                  markup=False, highlight=False)


def _cell(f: dict[str, Any] | None) -> str:
    from attnbench import gate

    if f is None:
        return "-"
    b, c, ch = gate.finding_cells(f)
    if f["status"] == "skipped":
        return "skipped"
    if f["check"] == "latency" and "ratio" in f:
        return f"{c} ({ch})" + ("" if f["status"] == "ok" else f" {f['status']}")
    if f["check"] == "memory":
        return f"{c} ({ch})" + ("" if f["status"] == "ok" else f" {f['status']}")
    if f["status"] == "ok":
        return c
    return f"{b} -> {c} ({ch})"


def _row_verdict(fs: dict[str, dict[str, Any]]) -> str:
    failed = [f"{f['check']} {f['status']}" for f in fs.values() if f["failed"]]
    if failed:
        return "FAIL: " + ", ".join(failed)
    notes = [f"{f['check']} {f['status']}" for f in fs.values() if f["status"] not in ("ok", "skipped")]
    return "ok" + (f" ({', '.join(notes)})" if notes else "")


def _flops_table(f: dict[str, Any]) -> Table:
    table = Table(title=f"{plain(f['key'])}: FLOPs by op category (multiply-add = 2)")
    for col in ("category", "baseline FLOPs", "current FLOPs", "delta", "baseline mac/op", "current mac/op"):
        table.add_column(col, justify="left" if col == "category" else "right")
    for c in f["categories"]:
        rel = f" ({c['delta_flops'] / c['baseline_flops']:+.2%})" if c["baseline_flops"] else ""
        table.add_row(c["category"], f"{c['baseline_flops']:,}", f"{c['current_flops']:,}", f"{c['delta_flops']:+,}{rel}",
                      f"{c['baseline_cells']['mac']:,} / {c['baseline_cells']['op']:,}",
                      f"{c['current_cells']['mac']:,} / {c['current_cells']['op']:,}")
    table.add_row("total", f"{f['baseline']:,}", f"{f['current']:,}", f"{f['delta']:+,}", "", "")
    return table


snapshot_cmd = guarded(snapshot_cmd)
check_cmd = guarded(check_cmd)
