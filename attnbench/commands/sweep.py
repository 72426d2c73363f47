"""`attnbench sweep`: how blocks' FLOPs, parameters, memory (and measured latency) grow with T, H = W and C."""

from __future__ import annotations

import json
from typing import Annotated, Any, Optional

import typer

from attnbench.commands.common import (AcceleratorOpt, EachAcceleratorOpt, RayOpt, ray_session, CsvOpt, JsonOpt, OverwriteOpt, check_timing_flags, err, guarded, interrupted,
                                       module_list, out, progress)
from attnbench.defaults import SCHEMA, SWEEP_MODULES
from attnbench.errors import UsageError, check_range


def sweep_cmd(
    modules: Annotated[list[str], typer.Option(
        "--module", "--modules", "-m", help="block (repeatable, or a comma list; 'all': every block; default: "
        + ",".join(SWEEP_MODULES) + ")")] = [],  # noqa: B006
    t_values: Annotated[Optional[str], typer.Option("--T", help="frames to sweep, e.g. 4,8,16,32,64")] = None,
    hw_values: Annotated[Optional[str], typer.Option("--HW", help="frame sizes H = W to sweep, e.g. 7,14,28,56")] = None,
    c_values: Annotated[Optional[str], typer.Option("--C", help="channels to sweep, e.g. 64,96,256")] = None,
    preset: Annotated[Optional[str], typer.Option("--preset", "-p", help="base preset of every block (default: each block's first)")] = None,
    option: Annotated[list[str], typer.Option("--option", "-o", help="block option KEY=VALUE for every block (repeatable)")] = [],  # noqa: B006
    device: Annotated[Optional[str], typer.Option("--device", help="also measure latency and peak memory on cpu, cuda or cuda:N")] = None,
    dtype: Annotated[str, typer.Option("--dtype", help="fp32, fp16 or bf16 (measured rows; sizes the predicted intermediate)")] = "fp32",
    precision: Annotated[str, typer.Option("--precision", help="fp16/bf16: pure or autocast")] = "pure",
    reps: Annotated[int, typer.Option("--reps", help="minimum timed repetitions per point (1 to 1000)")] = 5,
    target_s: Annotated[float, typer.Option("--target-s", help="seconds of timed calls per point (at most 600)")] = 0.5,
    max_gflops: Annotated[Optional[float], typer.Option("--max-gflops", help="with --device: do not time points above this many GFLOPs (rows kept as skipped)")] = None,
    factor: Annotated[float, typer.Option("--factor", help="the NL/CS cost factor whose crossover is reported")] = 2.0,
    max_fit: Annotated[bool, typer.Option("--max-fit", help="find the largest size that runs for each block (CUDA; doubling, then bisection)")] = False,
    max_fit_axis: Annotated[str, typer.Option("--max-fit-axis", help="axis searched by --max-fit: T, HW or C")] = "T",
    max_fit_limit: Annotated[int, typer.Option("--max-fit-limit", help="largest size --max-fit tries")] = 4096,
    out_file: Annotated[Optional[str], typer.Option("--out", help="JSON-lines file rows are appended to (default results/<device>/sweep.jsonl)")] = None,
    no_save: Annotated[bool, typer.Option("--no-save", help="do not append rows to a results file")] = False,
    resume: Annotated[bool, typer.Option("--resume", help="run only the rows missing from the results file (measured rows: on this device)")] = False,
    overwrite: OverwriteOpt = False,
    json_out: Annotated[bool, typer.Option("--json", help="print rows, exponents, crossovers (and max-fit) as one JSON object")] = False,  # noqa: E501
    csv: Annotated[Optional[str], typer.Option("--csv", help="write the rows as CSV")] = None,
    md: Annotated[Optional[str], typer.Option("--md", help="write rows, exponents and crossovers as Markdown")] = None,
    threads: Annotated[Optional[int], typer.Option("--threads", help="torch CPU threads while measuring (default: torch's; with --ray on CPU: 1)", show_default=False)] = None,
    ray: RayOpt = None,
    accelerator: AcceleratorOpt = None,
    each_accelerator: EachAcceleratorOpt = False,
) -> None:
    """Sweep T, H = W and C one at a time (others at each block's preset): closed-form FLOPs, parameters and
    predicted largest intermediate; with --device also latency and peak memory. Fits growth exponents and
    reports where NL and CS part. Rejected shapes are rows marked skipped; every row is appended as it finishes.
    With --ray each measured point is a task on a Ray cluster."""
    if ray is not None and device is None:  # before Ray starts
        raise UsageError("--ray distributes measuring: add --device (closed forms alone take milliseconds here)")
    if ray is not None and max_fit:
        raise UsageError("--max-fit searches one GPU step by step: it does not run on Ray (leave out --ray)")
    with ray_session(ray, accelerator, each_accelerator) as cluster:
        _sweep(modules, t_values, hw_values, c_values, preset, option, device, dtype, precision, reps, target_s, max_gflops,
               factor, max_fit, max_fit_axis, max_fit_limit, out_file, no_save, resume, overwrite, json_out, csv, md,
               threads, cluster)


def _sweep(modules: list[str], t_values: str | None, hw_values: str | None, c_values: str | None,  # noqa: PLR0913
           preset: str | None, option: list[str], device: str | None, dtype: str, precision: str, reps: int,
           target_s: float, max_gflops: float | None, factor: float, max_fit: bool, max_fit_axis: str,
           max_fit_limit: int, out_file: str | None, no_save: bool, resume: bool, overwrite: bool, json_out: bool,
           csv: str | None, md: str | None, threads: int | None, cluster: Any) -> None:
    from attnbench import api
    from attnbench import sweep as sw
    from attnbench.measuring import device as dev
    from attnbench.report import tables
    from attnbench.report.job import sweep_markdown
    from attnbench.store import files

    names = sw.parse_modules(module_list(modules) if modules else None)
    given = {"T": sw.parse_values(t_values, "T"), "HW": sw.parse_values(hw_values, "HW"), "C": sw.parse_values(c_values, "C")}
    values = {a: v for a, v in given.items() if v} or {a: list(v) for a, v in sw.DEFAULT_VALUES.items()}
    opts = api.parse_options(option)
    check_timing_flags(reps, target_s)
    check_range("--max-gflops", max_gflops, 0, 1e12, low_open=True)
    check_range("--factor", factor, 1, 1e6, low_open=True)
    check_range("--max-fit-limit", max_fit_limit, 1, 2**31)
    if no_save and (out_file is not None or resume or overwrite):
        raise UsageError("--no-save writes no results file: it cannot be combined with --out, --resume or --overwrite")
    if max_fit_axis not in sw.AXES:
        raise UsageError(f"--max-fit-axis must be one of {', '.join(sw.AXES)}, got '{max_fit_axis}'")
    dev.resolve_dtype(dtype)
    from attnbench.measuring.timing import resolve_precision

    resolve_precision(precision)
    check_range("--threads", threads, 1, 4096)
    if cluster is not None:
        from attnbench import distributed

        device = distributed.resolve_device(cluster, device)
    elif device is not None:
        if device == "auto":
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        dev.resolve_device(device)
    if max_fit and (device is None or not device.startswith("cuda")):
        raise UsageError("--max-fit needs --device cuda: on CPU running out of memory ends the process (the OS "
                             "kills it) instead of raising, so the search cannot be done safely")
    for m in names:  # every block has the base preset and takes the options: fail before running anything
        api.get_block(m).resolve_options(opts, base=api.get_block(m).preset(preset).options)
    points = sw.plan(names, values, preset, opts)
    slug = "ray" if cluster is not None else dev.device_slug(dev.fingerprint(device or "cpu"))  # on Ray each row names its device
    path = None if no_save else (out_file if out_file is not None else f"results/{slug}/sweep.jsonl")
    files.distinct({"--out": path, "--csv": csv, "--md": md})
    files.ensure_writable(path, csv, md)

    what = "sweeping" + (f" on {device}" if device else " (closed forms)")
    with progress(len(points), what, quiet=json_out) as step:
        fit_keys = _max_fit_keys(names, max_fit_axis, device, dtype, precision, preset, opts, max_fit_limit) if max_fit else {}
        result = sw.run_sweep(points, device=device, dtype=dtype, precision=precision, min_reps=reps, target_s=target_s, out_path=path,
                              also=fit_keys.values(),
                              resume=resume, overwrite=overwrite, on_row=lambda r: step(f"{r.get('module')} {r.get('axis')}={r.get('value')}"),
                              max_flops=None if max_gflops is None else int(max_gflops * 1e9), threads=threads, cluster=cluster)
    if result.interrupted:
        interrupted(result.summary_line())

    fits: list[dict[str, Any]] = []
    if max_fit:
        fits = _max_fits(names, max_fit_axis, device, dtype, precision, preset, opts, max_fit_limit, path, resume, overwrite, result)
    rows = result.rows
    exps = sw.fit_exponents(rows)
    cross = sw.crossovers(rows, factor=factor) if {"nl", "cs"} <= set(names) else []
    df = sw.rows_frame(rows)
    if csv:
        tables.write_table(df, csv=csv)
    if md:
        files.atomic_write(md, sweep_markdown(df, exps, cross, fits))
    if json_out:
        print(json.dumps({"schema": SCHEMA, "kind": "sweep", "rows": rows, "exponents": exps, "crossovers": cross, "max_fit": fits, "units": sw.UNITS}, default=str))
        return
    counted = sorted({r["module"] for r in rows if r.get("flops_source") == "counted"})
    caption = {"FLOPs": "closed form = exact counter, multiply-add = 2"
               + (f" (counted on the meta device for {', '.join(counted)}: no closed form declared)" if counted else ""),
               "pred. largest": f"largest intermediate, {dtype}"}
    if device:
        caption["median ms"] = f"on {device}"
    out.print(tables.to_rich(df, "Sweep: cost against size (others at the block's preset)", caption))
    if exps:
        out.print(tables.to_rich(sw.exponents_frame(exps), "Growth exponents: least-squares slope of log cost vs log size"))
    for c in cross:
        out.print(f"{c['pair']} {c['axis']}: {c['text']}", markup=False, highlight=False)
    if cluster is not None and cluster.each_accelerator:
        out.print(tables.to_rich(tables.per_device_frame(rows), "Median latency per GPU model (ms)"))
    if fits:
        out.print(tables.to_rich(sw.max_fit_frame(fits), f"Largest size that runs on {device} ({dtype})"))
    if path:
        out.print(result.summary_line(), markup=False, highlight=False)


def _max_fit_keys(names: list[str], axis: str, device: str, dtype: str, precision: str, preset: str | None,
                  options: dict[str, str], limit: int) -> dict[str, str]:
    from attnbench import sweep as sw

    opts = ",".join(f"{k}={v}" for k, v in sorted(options.items()))
    return {m: f"max-fit:{m}@{preset or 'default'}[{opts}]:{axis}:{sw.where_label(device, dtype, precision)}:limit={limit}"
            for m in names}


def _max_fits(names: list[str], axis: str, device: str, dtype: str, precision: str, preset: str | None,
              options: dict[str, str], limit: int, path: str | None, resume: bool, overwrite: bool,
              result: Any) -> list[dict[str, Any]]:
    from attnbench import sweep as sw
    from attnbench.measuring import device as dev
    from attnbench.store import rows, jsonl

    probe = sw.device_probe(device, dtype, precision)
    fp = dev.fingerprint(device)
    keys = _max_fit_keys(names, axis, device, dtype, precision, preset, options, limit)
    fits = []
    with jsonl.session(path, keys.values(), resume=resume, overwrite=overwrite, fingerprint=fp,
                       check=lambda row: rows.problem(rows.MaxFitRow, row)) as have:
        for m in names:
            key = keys[m]
            if key in have:
                fits.append(have[key])
                continue
            err.print(f"max-fit: {m} over {axis} on {device} ...", markup=False, highlight=False)
            try:
                r = sw.max_fit(m, axis, probe=probe, limit=limit, preset=preset, options=options)
            except KeyboardInterrupt:
                interrupted(result.summary_line() + f"; max-fit of {m} interrupted")
            r["key"] = key
            r["device"], r["dtype"], r["precision"] = device, dtype, precision
            r["fingerprint"] = fp
            if path:
                jsonl.append_row(path, r)
            fits.append(r)
    return fits


sweep_cmd = guarded(sweep_cmd)
