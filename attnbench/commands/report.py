"""`attnbench report`: list, flops, reproduce, a scaling sweep, speed (within a time budget on a CPU) and a
roofline, in one results folder."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer

from attnbench.commands.common import err, guarded, interrupted, out
from attnbench.defaults import SCHEMA
from attnbench.errors import UsageError

DEFAULT_BUDGET_HELP = 50  # job.DEFAULT_CPU_BUDGET_S, written here so that the CLI imports no torch to show its help


def report_cmd(
    quick: Annotated[bool, typer.Option("--quick", help="first preset of each block, exact counter only, a short NL/CS sweep (< 1 min)")] = False,
    full: Annotated[bool, typer.Option("--full", help="all counters (fvcore, ptflops), every block in a longer sweep, networks and Table VI timed on CPU too")] = False,
    device: Annotated[Optional[str], typer.Option("--device", help="time on cpu, cuda or cuda:N (default: CUDA when present, else the CPU)")] = None,
    budget_s: Annotated[Optional[float], typer.Option("--budget-s", min=0, help=f"seconds the timing (speed and roofline sections) may take; what does not fit is listed (default: {DEFAULT_BUDGET_HELP} on a CPU, no limit on CUDA or with --full; 0: time nothing)")] = None,
    threads: Annotated[Optional[int], typer.Option("--threads", min=1, help="torch CPU threads for timing (default: the logical cores other processes leave free when timing starts)")] = None,
    dtype: Annotated[str, typer.Option("--dtype", help="fp32, fp16 or bf16 for timed sections")] = "fp32",
    out_dir: Annotated[Optional[str], typer.Option("--out", help="results folder (default results/<device>/)")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="skip sections whose output files exist; resume unfinished rows")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="print the sections' status and headlines as one JSON object")] = False,
) -> None:
    """The whole job: blocks, FLOPs at every preset, the papers' numbers reproduced, a scaling sweep with
    plots, latency and memory of every block (on a CPU within --budget-s; on CUDA also VPS) and a roofline.
    Writes Markdown, CSV, JSON, PNG and SVG files and an index README.md; a failing section is recorded
    there and the job goes on."""
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from attnbench.report import job

    if quick and full:
        raise UsageError("give --quick or --full, not both")
    opts = job.ReportOptions(mode="quick" if quick else "full" if full else "default", device=device, dtype=dtype,
                             resume=resume, budget_s=budget_s, threads=threads)
    ctx = job.make_context(opts, out_dir)  # checks device and dtype before anything runs
    err.print(f"attnbench report ({opts.mode}) on {ctx.device} -> {ctx.out_dir}/", markup=False, highlight=False)
    command = "attnbench report" + "".join(
        f" {flag}" for flag, on in (("--quick", quick), ("--full", full), ("--resume", resume)) if on
    ) + (f" --device {device}" if device else "") + (f" --budget-s {budget_s:g}" if budget_s is not None else "") + (
        f" --threads {threads}" if threads else "") + (f" --dtype {dtype}" if dtype != "fp32" else "") + (
        f" --out {out_dir}" if out_dir else "")

    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TimeElapsedColumn())
    with Progress(*columns, console=err, transient=True, disable=json_out or not err.is_terminal) as progress:
        task = progress.add_task("report", total=len(job.SECTION_ORDER))

        def on_event(kind: str, name: str, res: job.SectionResult | None) -> None:
            if kind == "start":
                progress.update(task, description=f"{name}: {job.SECTION_TITLES.get(name, name)}")
            elif kind == "step":
                progress.update(task, description=name)
            elif kind == "end" and res is not None:
                progress.advance(task)
                line = f"{res.name}: {res.status}" + (f" ({res.seconds:.1f} s)" if res.seconds else "")
                if res.error:
                    line += f" - {res.error}"
                elif res.status == "not run" and res.summary:
                    line += f" - {res.summary[0]}"
                progress.console.print(line, markup=False, highlight=False)

        result = job.run_report(opts, ctx.out_dir, on_event=on_event, command=command)
    if json_out:
        print(json.dumps({
            "schema": SCHEMA, "kind": "report", "out_dir": str(result.out_dir), "index": str(result.index), "seconds": result.seconds,
            "interrupted": result.interrupted,
            "sections": [{"name": s.name, "status": s.status, "error": s.error, "seconds": s.seconds,
                          "files": s.files, "summary": s.summary} for s in result.sections],
        }, default=str))
    else:
        out.print(result.summary_line(), markup=False, highlight=False)
    if result.interrupted:
        interrupted("interrupted: the index and the finished sections are written")


report_cmd = guarded(report_cmd)
