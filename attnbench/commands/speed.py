"""`attnbench speed`: latency, memory, achieved FLOP/s and VPS of blocks and networks on a real device."""

from __future__ import annotations

from typing import Annotated, Any, Optional

import typer

from attnbench.commands.common import (AcceleratorOpt, BlockOpt, EachAcceleratorOpt, RayOpt, ray_session, BOpt, COpt, CsvOpt, HOpt, JsonOpt, MdOpt, ModuleOpt, Sizes, TOpt,
                                       WOpt, OverwriteOpt, ResumeOpt, WarmupOpt, check_run, check_timing_flags,
                                       complete_network, err, guarded, interrupted, out, progress)
from attnbench.errors import UsageError, check_range
from attnbench.text import clean


def speed_cmd(
    device: Annotated[str, typer.Option("--device", help="cpu, cuda, cuda:N, or auto (cuda when present)")] = "auto",
    module: ModuleOpt = [],  # noqa: B006
    preset: Annotated[Optional[str], typer.Option("--preset", "-p", help="block or network preset (default: each one's first)")] = None,
    B: BOpt = None, C: COpt = None, T: TOpt = None, H: HOpt = None, W: WOpt = None,  # noqa: N803
    option: BlockOpt = [],  # noqa: B006
    network: Annotated[list[str], typer.Option("--network", "-n", help="paper network (repeatable); on CUDA the default adds every network", autocompletion=complete_network)] = [],  # noqa: B006
    attn: Annotated[list[str], typer.Option("--attn", "-a", help="attention in the networks (repeatable; default: every choice)")] = [],  # noqa: B006
    dtype: Annotated[str, typer.Option("--dtype", help="fp32, fp16 or bf16")] = "fp32",
    precision: Annotated[str, typer.Option("--precision", help="fp16/bf16: pure (module and inputs converted) or autocast (fp32 weights, torch.autocast per call)")] = "pure",
    timing: Annotated[str, typer.Option("--timing", help="CUDA: auto (graph replay where capture works, else pipelined), graph, pipelined (calls back to back, one sync per round) or isolated (sync before every call)")] = "auto",
    threads: Annotated[Optional[int], typer.Option("--threads", help="torch CPU threads (default: torch's)")] = None,
    roofline: Annotated[bool, typer.Option("--roofline/--no-roofline", help="calibrate the device's matmul rate (cached) and rate every row against it")] = True,
    batch: Annotated[list[int], typer.Option("--batch", help="batch size (repeatable: a sweep)")] = [1],  # noqa: B006
    compile_: Annotated[bool, typer.Option("--compile", help="torch.compile the module")] = False,
    graphs: Annotated[bool, typer.Option("--graphs", help="CUDA-graph replay, a failed capture being an error row (CUDA only; --timing auto already replays graphs where it can)")] = False,
    flush_l2: Annotated[bool, typer.Option("--flush-l2", help="flush the L2 cache between repetitions (CUDA only)")] = False,
    channels_last: Annotated[bool, typer.Option("--channels-last", help="channels_last_3d memory format")] = False,
    reps: Annotated[int, typer.Option("--reps", help="minimum timed repetitions (1 to 1000; at most 1000 are taken)")] = 10,
    target_s: Annotated[float, typer.Option("--target-s", help="seconds of timed calls to collect per row (at most 600)")] = 1.0,
    warmup_s: WarmupOpt = 2.0,
    out_file: Annotated[Optional[str], typer.Option("--out", help="JSON-lines file rows are appended to (default results/<device>/speed.jsonl)")] = None,
    no_save: Annotated[bool, typer.Option("--no-save", help="do not append rows to a results file")] = False,
    resume: ResumeOpt = False,
    overwrite: OverwriteOpt = False,
    json_out: JsonOpt = False,
    csv: CsvOpt = None,
    md: MdOpt = None,
    ray: RayOpt = None,
    accelerator: AcceleratorOpt = None,
    each_accelerator: EachAcceleratorOpt = False,
) -> None:
    """Measure latency, memory, achieved FLOP/s and VPS on a real device; OOM rows are kept and the run goes on.
    With --ray each row is a task on a Ray cluster, written here as it finishes."""
    with ray_session(ray, accelerator, each_accelerator) as cluster:
        _speed(device, module, preset, B, C, T, H, W, option, network, attn, dtype, precision, timing, threads, roofline,
               batch, compile_, graphs, flush_l2, channels_last, reps, target_s, warmup_s, out_file, no_save, resume,
               overwrite, json_out, csv, md, cluster)


def _speed(device: str, module: list[str], preset: str | None, B: int | None, C: int | None, T: int | None,  # noqa: N803, PLR0913
           H: int | None, W: int | None, option: list[str], network: list[str], attn: list[str], dtype: str,  # noqa: N803
           precision: str, timing: str, threads: int | None, roofline: bool, batch: list[int], compile_: bool,
           graphs: bool, flush_l2: bool, channels_last: bool, reps: int, target_s: float, warmup_s: float,
           out_file: str | None, no_save: bool, resume: bool, overwrite: bool, json_out: bool, csv: str | None,
           md: str | None, cluster: Any) -> None:
    from attnbench import api, bench
    from attnbench.report import tables
    from attnbench.store import files
    from attnbench.measuring import device as dev

    check_timing_flags(reps, target_s, warmup_s)
    for b in batch:
        check_range("--batch", b, 1, 1_000_000)
    check_range("--threads", threads, 1, 4096)
    if no_save and (out_file is not None or resume or overwrite):
        raise UsageError("--no-save writes no results file: it cannot be combined with --out, --resume or --overwrite")
    device = check_run(device, dtype, precision, timing, cluster)
    sizes = {"B": B, "C": C, "T": T, "H": H, "W": W}
    targets = speed_targets(module, network, attn, preset, device, sizes, api.parse_options(option))
    fp = dev.fingerprint(device) if cluster is None else None
    slug = dev.device_slug(fp) if fp is not None else "ray"  # on Ray every row names the device that measured it
    path = None if no_save else (out_file if out_file is not None else f"results/{slug}/speed.jsonl")
    files.distinct({"--out": path, "--csv": csv, "--md": md})
    files.ensure_writable(path, csv, md)
    rows: list[dict[str, Any]] = []
    try:
        with progress(len(targets) * len(set(batch)), "measuring", quiet=json_out) as step:

            def finished(row: dict[str, Any]) -> None:
                rows.append(row)
                step()

            jobs = [(t, bench.Settings(device=device, dtype=dtype, batch=b, compile=compile_, graphs=graphs,
                                       flush_l2=flush_l2, channels_last=channels_last, min_reps=reps,
                                       target_s=target_s, max_warmup_s=warmup_s, precision=precision,
                                       timing=timing, threads=threads))
                    for b in dict.fromkeys(batch) for t in targets]
            bench.run_jobs(jobs, path, resume, on_row=finished, roofline=roofline, overwrite=overwrite,
                           on_start=lambda label: step(label, advance=0), cluster=cluster)
    except KeyboardInterrupt:
        where = f" in {path}" if path else " (not saved: --no-save)"
        interrupted(f"interrupted: kept {len(rows)} finished rows{where}; rerun with --resume to finish")
    df = tables.speed_frame(rows)
    tables.write_table(df, csv, md)
    if json_out:
        print(tables.json_lines(rows))
        return
    label = dtype if dtype == "fp32" else f"{dtype} {precision}"
    where = tables.devices_of(rows) if fp is None else (fp.get("gpu_name") or fp.get("cpu_model"))
    out.print(tables.to_rich(df, f"Speed on {device}{' (Ray)' if cluster else ''} ({where}), {label}", {
        "FLOPs": "closed form (counted where a block declares none), multiply-add = 2, whole batch", "times": "median over n calls",
        "peak MiB": "working memory of one call: predicted (closed form) vs measured (CPU: tensor peak; CUDA: allocator)"}))
    for impl in sorted({r.get("impl") for r in rows if r.get("impl")}) or [None]:
        ratio = bench.latency_ratio(rows, "nl", "cs", impl)
        if ratio:
            kernel = f" with impl={impl}" if impl else ""
            out.print(f"NL/CS{kernel}: latency ratio {ratio['latency_ratio']:.2f}x, FLOP ratio {ratio['flop_ratio']:.2f}x (same input shape)")
    if cluster is not None and cluster.each_accelerator:
        out.print(tables.to_rich(tables.per_device_frame(rows), "Median latency per GPU model (ms)",
                                 {"ms": "median of one call, batch as given"}))
    statuses = [r["status"] for r in rows]
    oom = statuses.count("OOM")
    failed = sum(1 for st in statuses if st.startswith("error"))
    out.print(f"{len(rows)} rows: {len(rows) - oom - failed} ok, {oom} out of memory, {failed} other errors")
    if path:
        out.print(f"rows appended to {clean(path)}", markup=False, highlight=False)


def speed_targets(modules: list[str], networks: list[str], attns: list[str], preset: str | None, device: str,
                   sizes: Sizes, opts: dict[str, str]) -> list:
    """Blocks and networks to time. Default: every block at its first preset, plus (on CUDA) every network
    with every attention choice; on CPU networks run only when asked for (each takes seconds per call).
    Sizes apply to the blocks; block options (e.g. ``impl=sdpa``) to the blocks and to the attention blocks
    inside the networks."""
    from attnbench import api, bench
    from attnbench.blocks.registry import all_blocks
    from attnbench.networks.registry import all_networks, get_network

    if attns and not networks and (modules or device == "cpu"):
        raise UsageError("--attn applies to --network only")
    if any(v is not None for v in sizes.values()) and (networks or not modules):
        raise UsageError("sizes apply to the blocks given with --module")
    if opts and not modules and not networks:
        raise UsageError("--option applies to the blocks given with --module or the attention of --network")
    blocks = [api.resolve(m, preset if len(modules) == 1 or not networks else None, sizes, opts) for m in modules]
    if not modules and not networks:
        blocks = [api.resolve(s.name) for s in all_blocks()]
        if device != "cpu":
            networks = [n.name for n in all_networks()]
    nets = [api.resolve_network(name, a, preset if not modules else None, options=opts if a != "none" else None)
            for name in networks for a in (attns or get_network(name).attn_choices)]
    return [bench.block_target(c) for c in blocks] + [bench.network_target(c) for c in nets]


speed_cmd = guarded(speed_cmd)
