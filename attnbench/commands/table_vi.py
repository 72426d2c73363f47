"""`attnbench table-vi`: BANet Table VI (ECO vs ECO + 1 NL vs ECO + 1 CS) measured side by side."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer

from attnbench.commands.common import (OverwriteOpt, ResumeOpt, WarmupOpt, check_run, check_timing_flags, err, guarded,
                                       out)
from attnbench.defaults import SCHEMA
from attnbench.errors import UsageError, check_range
from attnbench.text import clean


def table_vi_cmd(
    device: Annotated[str, typer.Option("--device", help="cpu, cuda, cuda:N, or auto")] = "auto",
    dtype: Annotated[str, typer.Option("--dtype", help="fp32, fp16 or bf16")] = "fp32",
    precision: Annotated[str, typer.Option("--precision", help="fp16/bf16: pure or autocast")] = "pure",
    impl: Annotated[str, typer.Option("--impl", help="attention kernel of NL and CS: naive or sdpa")] = "naive",
    timing: Annotated[str, typer.Option("--timing", help="CUDA: auto (graph replay where capture works), graph, pipelined or isolated")] = "auto",
    batch: Annotated[int, typer.Option("--batch", help="clips per call (VPS = clips / median latency)")] = 1,
    preset: Annotated[str, typer.Option("--preset", help="frames of the full ECO's input: 16f (Table VI), 8f or 4f")] = "16f",
    graphs: Annotated[bool, typer.Option("--graphs", help="CUDA-graph replay (CUDA only)")] = False,
    reps: Annotated[int, typer.Option("--reps", help="minimum timed repetitions (1 to 1000)")] = 10,
    target_s: Annotated[float, typer.Option("--target-s", help="seconds of timed calls per row (at most 600)")] = 2.0,
    warmup_s: WarmupOpt = 2.0,
    out_file: Annotated[Optional[str], typer.Option("--out", help="JSON-lines file for the rows (default results/<device>/table-vi.jsonl)")] = None,
    resume: ResumeOpt = False,
    overwrite: OverwriteOpt = False,
    json_out: Annotated[bool, typer.Option("--json", help="print the comparison as one JSON object")] = False,
    md: Annotated[Optional[str], typer.Option("--md", help="write the comparison as Markdown")] = None,
) -> None:
    """BANet Table VI: VPS of the full ECO (16 frames, 224x224) plain, with 1 NL and with 1 CS, in one run,
    beside the paper's 23.2 / 8.1 / 19.9 (GTX 1080 Ti), with the NL and CS blocks' latency and FLOP ratios."""
    import pandas as pd

    from attnbench import bench
    from attnbench.measuring import device as dev
    from attnbench.papers.banet import table_vi
    from attnbench.report import tables
    from attnbench.store import files

    from attnbench.blocks.nonlocal_block import IMPLS

    device = check_run(device, dtype, precision, timing)
    if impl not in IMPLS:
        raise UsageError(f"unknown impl '{impl}'; valid choices: {', '.join(IMPLS)}")
    check_timing_flags(reps, target_s, warmup_s)
    check_range("--batch", batch, 1, 1_000_000)
    fp = dev.fingerprint(device)
    path = out_file if out_file is not None else f"results/{dev.device_slug(fp)}/table-vi.jsonl"
    files.distinct({"--out": path, "--md": md})
    files.ensure_writable(path, md)
    settings = bench.Settings(device=device, dtype=dtype, batch=batch, graphs=graphs, min_reps=reps, target_s=target_s,
                              max_warmup_s=warmup_s, precision=precision, timing=timing)
    if preset not in ("16f", "8f", "4f"):
        raise UsageError(f"unknown preset '{preset}'; valid choices: 16f, 8f, 4f")
    block_targets, net_targets = bench.table_vi_targets(impl, preset=preset)
    err.print(f"timing 2 blocks and 3 networks on {device} ({fp.get('gpu_name') or fp.get('cpu_model')}), "
              f"{settings.precision_label}, impl={impl}")
    rows = bench.run([*block_targets, *net_targets], settings, path, resume, overwrite=overwrite)  # one session
    block_rows, net_rows = rows[:len(block_targets)], rows[len(block_targets):]
    result = table_vi(net_rows, block_rows)
    result = {"schema": SCHEMA, "kind": "table-vi", **result}
    result["device"] = fp
    result["settings"] = {"dtype": dtype, "precision": settings.precision_label, "impl": impl, "batch": batch,
                          "graphs": graphs, "timing": settings.timing_label}
    df = pd.DataFrame(result["methods"])
    if md:
        tables.write_table(df, md=md)
    if json_out:
        print(json.dumps(result, default=str))
        return
    out.print(tables.to_rich(df, f"BANet Table VI on {fp.get('gpu_name') or fp.get('cpu_model')} ({settings.precision_label}, impl={impl}, batch {batch}) vs paper ({result['paper_device']})",
                             {"VPS": "videos (16-frame clips) per second", "network FLOPs": "exact counter, multiply-add = 2"}))
    s = result["summary"]
    fmt = lambda v: "n/a" if v is None else f"{v:.2f}"  # noqa: E731
    out.print(f"CS:NL speed ratio  paper {fmt(s['paper_cs_over_nl_speed'])}  measured {fmt(s['measured_cs_over_nl_speed'])}")
    out.print(f"network FLOP ratio (ECO+NL)/(ECO+CS) {fmt(s['network_flop_ratio_nl_over_cs'])}")
    if "block_latency_ratio_nl_over_cs" in s:
        out.print(f"blocks alone at C=96, T=16, 28x28: NL/CS latency {fmt(s['block_latency_ratio_nl_over_cs'])}, "
                  f"FLOP ratio {fmt(s['block_flop_ratio_nl_over_cs'])}")
    out.print(f"rows appended to {clean(path)}", markup=False, highlight=False)


table_vi_cmd = guarded(table_vi_cmd)
