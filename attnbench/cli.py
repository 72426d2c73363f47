"""The attnbench command line. Thin: parse options, call ``attnbench.api``, render with ``attnbench.report``."""

from __future__ import annotations

import errno
import functools
import os
import sys
import warnings
from collections.abc import Callable
from typing import Annotated, Any, Optional

import typer
from rich.console import Console

from attnbench import api
from attnbench.errors import AttnBenchError, AttnBenchWarning, check_range
from attnbench.report import tables
from attnbench.store import files
from attnbench.text import clean

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Benchmark video attention blocks: exact FLOPs at paper shapes, real latency, memory and VPS.",
)


def _width(stream: object) -> int | None:
    """Console width: a terminal's own (None lets Rich ask it), 200 columns when output is piped or when
    COLUMNS says something unusable (``COLUMNS=0`` would otherwise print nothing at all)."""
    try:
        tty = bool(stream is not None and stream.isatty())  # type: ignore[attr-defined]
    except (AttributeError, ValueError, OSError):
        tty = False
    if not tty:
        return 200
    columns = os.environ.get("COLUMNS")
    if columns is not None and not (columns.isdigit() and int(columns) >= 20):
        return 80
    return None


def _reader_gone(self: Console) -> None:
    """Rich's hook for a broken pipe (its own default exits 1): the reader stopped reading (``| head -1``),
    which is not an error. Also used by Typer's help, which prints through its own Console."""
    from attnbench.entry import silence_stdout

    silence_stdout()
    raise SystemExit(0)


Console.on_broken_pipe = _reader_gone  # type: ignore[method-assign]
out = Console(width=_width(sys.stdout))
err = Console(stderr=True, width=_width(sys.stderr))
_state = {"debug": False}


def say_error(message: str) -> None:
    """One line on stderr: control characters escaped (a newline in a path cannot split it), no markup.
    Nothing is raised if stderr is closed or full: the exit code still says what happened."""
    try:
        err.print(clean(message), markup=False, highlight=False, soft_wrap=True)
    except (OSError, ValueError):
        pass


def _os_error(e: OSError) -> str:
    """One line for an error of the environment: the file it concerns, or standard output (a full disk, a
    closed or failing stream) when it names none."""
    what = e.strerror or str(e)
    if e.filename:
        return f"error: {e.filename}: {what}"
    if e.errno in (errno.EBADF, errno.EIO, errno.ENOSPC, errno.EPIPE):
        return f"error: cannot write standard output: {what}"
    return f"error: {what}"


def guarded(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Domain errors become one line on stderr and exit code 2, as do errors of the environment (a full
    disk, a closed output); a reader that stops reading (``| head -1``) ends the command quietly;
    unexpected errors are one line and exit 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("always", AttnBenchWarning)
                warnings.showwarning = _show_warning
                return fn(*args, **kwargs)
        except AttnBenchError as e:
            if _state["debug"]:
                raise
            say_error(f"error: {e}")
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            say_error("interrupted")
            raise typer.Exit(130) from None
        except (typer.Exit, typer.Abort):
            raise
        except BrokenPipeError:
            from attnbench.entry import silence_stdout

            silence_stdout()
            raise typer.Exit(0) from None
        except OSError as e:
            if _state["debug"]:
                raise
            say_error(_os_error(e))
            raise typer.Exit(2) from None
        except Exception as e:  # noqa: BLE001 - the CLI never shows a traceback unless --debug
            if _state["debug"]:
                raise
            first = (str(e).strip().splitlines() or [""])[0]
            say_error(f"internal error: {type(e).__name__}: {first} (rerun with --debug for the traceback)")
            raise typer.Exit(1) from None

    return wrapper


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int, *rest: Any) -> None:
    """``warnings.showwarning`` while a command runs: attnbench's own warnings as one ``warning:`` line,
    anything else as Python shows it."""
    if issubclass(category, AttnBenchWarning):
        say_error(f"warning: {message}")
    else:
        _python_showwarning(message, category, filename, lineno, *rest)


_python_showwarning = warnings.showwarning


@app.callback()
def _main(debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False) -> None:
    _state["debug"] = debug


def check_timing_flags(reps: int, target_s: float, warmup_s: float | None = None) -> None:
    """The repetition and time flags every measuring command shares, with their bounds."""
    from attnbench.measure.timing import MAX_REPS, MAX_SECONDS

    check_range("--reps", reps, 1, MAX_REPS)
    check_range("--target-s", target_s, 0, MAX_SECONDS, low_open=True)
    check_range("--warmup-s", warmup_s, 0, MAX_SECONDS)


Sizes = dict[str, Optional[int]]
BOpt = Annotated[Optional[int], typer.Option("--B", help="batch size", show_default=False)]
COpt = Annotated[Optional[int], typer.Option("--C", help="channels", show_default=False)]
TOpt = Annotated[Optional[int], typer.Option("--T", help="frames", show_default=False)]
HOpt = Annotated[Optional[int], typer.Option("--H", help="height", show_default=False)]
WOpt = Annotated[Optional[int], typer.Option("--W", help="width", show_default=False)]
BlockOpt = Annotated[list[str], typer.Option("--option", "-o", help="block option KEY=VALUE (repeatable)")]


@app.command("list")
@guarded
def list_cmd(
    json_out: Annotated[bool, typer.Option("--json", help="one JSON object per block")] = False,
) -> None:
    """Blocks, their papers, presets and options."""
    from rich.table import Table

    from attnbench.blocks.registry import all_blocks

    specs = all_blocks()
    if json_out:
        records = [
            {
                "module": s.name, "title": s.title, "paper": s.paper,
                "presets": [{"name": p.name, "input_shape": p.shape.as_list(), "options": dict(p.options),
                             "source": p.source} for p in s.presets],
                "options": [{"name": o.name, "type": o.type.__name__, "default": o.default,
                             "choices": list(o.choices) if o.choices else None, "help": o.help} for o in s.options],
            }
            for s in specs
        ]
        print(tables.json_lines(records))
        return
    table = Table(title="attnbench blocks")
    for col in ("module", "paper", "block", "presets [B,C,T,H,W]", "options (default)"):
        table.add_column(col)
    for s in specs:
        presets = "\n".join(f"{p.name}: {p.shape}" for p in s.presets)
        options = "\n".join(f"{o.name}={o.default}" for o in s.options) or "-"
        table.add_row(s.name, s.paper, s.title, presets, options)
    out.print(table)


@app.command("flops")
@guarded
def flops_cmd(
    module: Annotated[list[str], typer.Option("--module", "-m", help="block name (repeatable); see `attnbench list`")] = [],  # noqa: B006
    all_blocks: Annotated[bool, typer.Option("--all", help="every block at every preset")] = False,
    preset: Annotated[Optional[str], typer.Option("--preset", "-p", help="named paper shape (default: the block's first)")] = None,
    B: BOpt = None, C: COpt = None, T: TOpt = None, H: HOpt = None, W: WOpt = None,  # noqa: N803
    option: BlockOpt = [],  # noqa: B006
    network: Annotated[list[str], typer.Option("--network", "-n", help="paper network (repeatable); --T frames, --H size")] = [],  # noqa: B006
    attn: Annotated[list[str], typer.Option("--attn", "-a", help="attention in the network (repeatable; default none)")] = [],  # noqa: B006
    counters: Annotated[str, typer.Option("--counters", help="comma list of " + ",".join(api.COUNTERS))] = ",".join(api.COUNTERS),
    json_out: Annotated[bool, typer.Option("--json", help="print one JSON object per module to stdout")] = False,
    csv: Annotated[Optional[str], typer.Option("--csv", help="write the table as CSV")] = None,
    md: Annotated[Optional[str], typer.Option("--md", help="write the table as Markdown")] = None,
) -> None:
    """Closed-form FLOPs and parameters of blocks, checked against the exact counter, fvcore and ptflops."""
    files.distinct({"--csv": csv, "--md": md})
    files.ensure_writable(csv, md)
    chosen = [c.strip() for c in counters.split(",") if c.strip()]
    if "exact" not in chosen:
        chosen.insert(0, "exact")
    sizes = {"B": B, "C": C, "T": T, "H": H, "W": W}
    opts = api.parse_options(option)
    if network:
        if module or all_blocks:
            raise api.UsageError("give blocks (--module/--all) or networks (--network), not both")
        _flops_networks(network, attn or ["none"], preset, sizes, opts, json_out, csv, md)
        return
    if attn:
        raise api.UsageError("--attn applies to --network only")
    if all_blocks:
        if module or preset or opts or any(v is not None for v in sizes.values()):
            raise api.UsageError("--all takes no --module, --preset, sizes or --option")
        cases = api.preset_cases()
    elif not module:
        raise api.UsageError("give --module NAME (repeatable) or --all; `attnbench list` shows the blocks")
    else:
        cases = [api.resolve(m, preset, sizes, opts) for m in module]
    reports = [api.flops_report(c, chosen).to_dict() for c in cases]
    df = tables.flops_rows(reports)
    tables.write_table(df, csv, md)
    if json_out:
        print(tables.json_lines(reports))
        return
    out.print(tables.to_rich(df, "FLOPs and parameters", {"FLOPs": "multiply-add = 2", "MACs": "multiply-add = 1"}))
    for rec in reports:
        if rec["counted"]["exact"].get("skipped"):
            out.print(f"note: {rec['module']}: {rec['counted']['exact']['skipped']}", markup=False, highlight=False)
    if len(reports) == 1:
        _print_terms(reports[0])
    if len(reports) == 1 and reports[0]["counted"]["exact"]["flops"] is not None:
        rec = reports[0]
        out.print(tables.to_rich(tables.reconciliation_frame(rec), "Reconciliation by op category (FLOPs, multiply-add = 2; MAC counters x2)"))
        for line in tables.reconciliation_reasons(rec):
            out.print(f"  - {line}", markup=False, highlight=False)


def _network_cases(names: list[str], attns: list[str], preset: str | None, sizes: Sizes,
                   opts: dict[str, str]) -> list[api.NetworkCase]:
    if sizes.get("C") is not None:
        raise api.UsageError("networks take RGB video: --C does not apply (use --T for frames, --H for size)")
    if sizes.get("W") is not None and sizes.get("W") != sizes.get("H"):
        raise api.UsageError("networks take square frames: give --H (and --W equal to it, or not at all)")
    return [api.resolve_network(n, a, preset, sizes.get("T"), sizes.get("H"), sizes.get("B") or 1, opts)
            for n in names for a in attns]


def _flops_networks(names: list[str], attns: list[str], preset: str | None, sizes: Sizes, opts: dict[str, str],
                    json_out: bool, csv: str | None, md: str | None) -> None:
    import pandas as pd

    records = [api.network_report(c) for c in _network_cases(names, attns, preset, sizes, opts)]
    df = pd.DataFrame(tables.network_rows(records))
    tables.write_table(df, csv, md)
    if json_out:
        print(tables.json_lines(records))
        return
    out.print(tables.to_rich(df, "Networks: parameters and FLOPs", {"FLOPs": "multiply-add = 2", "MACs": "multiply-add = 1"}))


def _print_terms(record: dict[str, Any]) -> None:
    a = record["analytic"]
    if "ratio" in a:
        out.print(
            f"R = F_CS / F_3D = {a['ratio']:.2%} ({a['ratio_exact']}); 1/T + 1/H + 1/W = {a['ratio_closed_form']:.2%}; "
            f"identity holds: {a['ratio_identity_holds']}"
        )
    if "affinity_flops" in a:
        out.print(f"correlation-matrix FLOPs ({a.get('affinity_flops_formula', '')}): {a['affinity_flops']:,} FLOPs")
    li = record.get("largest_intermediate")
    if li:
        out.print(f"largest intermediate: {li['what']} = {li['elements']:,} elements ({tables.human(li['bytes_fp32'], 'B')} in fp32)")


@app.command("speed")
@guarded
def speed_cmd(
    device: Annotated[str, typer.Option("--device", help="cpu, cuda, cuda:N, or auto (cuda when present)")] = "auto",
    module: Annotated[list[str], typer.Option("--module", "-m", help="block (repeatable); default: every block")] = [],  # noqa: B006
    preset: Annotated[Optional[str], typer.Option("--preset", "-p", help="block or network preset (default: each one's first)")] = None,
    B: BOpt = None, C: COpt = None, T: TOpt = None, H: HOpt = None, W: WOpt = None,  # noqa: N803
    option: BlockOpt = [],  # noqa: B006
    network: Annotated[list[str], typer.Option("--network", "-n", help="paper network (repeatable); on CUDA the default adds every network")] = [],  # noqa: B006
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
    warmup_s: Annotated[float, typer.Option("--warmup-s", help="longest warm-up per row, in seconds (at most 600)")] = 2.0,
    out_file: Annotated[Optional[str], typer.Option("--out", help="JSON-lines file rows are appended to (default results/<device>/speed.jsonl)")] = None,
    no_save: Annotated[bool, typer.Option("--no-save", help="do not append rows to a results file")] = False,
    resume: Annotated[bool, typer.Option("--resume", help="skip rows already in the results file (measured on this device)")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="measure rows already in the results file again (their old rows are removed)")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="print one JSON object per row")] = False,
    csv: Annotated[Optional[str], typer.Option("--csv", help="write the table as CSV")] = None,
    md: Annotated[Optional[str], typer.Option("--md", help="write the table as Markdown")] = None,
) -> None:
    """Measure latency, memory, achieved FLOP/s and VPS on a real device; OOM rows are kept and the run goes on."""
    from rich.progress import Progress

    from attnbench import bench
    from attnbench.measure import device as dev
    from attnbench.measure.timing import TIMING_MODES, resolve_precision

    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev.resolve_device(device)
    dev.resolve_dtype(dtype)
    resolve_precision(precision)
    if timing not in TIMING_MODES:
        raise api.UsageError(f"unknown timing mode '{timing}'; valid choices: {', '.join(TIMING_MODES)}")
    check_timing_flags(reps, target_s, warmup_s)
    for b in batch:
        check_range("--batch", b, 1, 1_000_000)
    check_range("--threads", threads, 1, 4096)
    if no_save and (out_file is not None or resume or overwrite):
        raise api.UsageError("--no-save writes no results file: it cannot be combined with --out, --resume or --overwrite")
    sizes = {"B": B, "C": C, "T": T, "H": H, "W": W}
    targets = _speed_targets(module, network, attn, preset, device, sizes, api.parse_options(option))
    fp = dev.fingerprint(device)
    path = None if no_save else (out_file if out_file is not None else f"results/{dev.device_slug(fp)}/speed.jsonl")
    files.distinct({"--out": path, "--csv": csv, "--md": md})
    files.ensure_writable(path, csv, md)
    rows: list[dict[str, Any]] = []
    try:
        with Progress(console=err, transient=True, disable=json_out or not err.is_terminal) as progress:
            task = progress.add_task("measuring", total=len(targets) * len(set(batch)))

            def finished(row: dict[str, Any]) -> None:
                rows.append(row)
                progress.advance(task)

            jobs = [(t, bench.Settings(device=device, dtype=dtype, batch=b, compile=compile_, graphs=graphs,
                                       flush_l2=flush_l2, channels_last=channels_last, min_reps=reps,
                                       target_s=target_s, max_warmup_s=warmup_s, precision=precision,
                                       timing=timing, threads=threads))
                    for b in dict.fromkeys(batch) for t in targets]
            bench.run_jobs(jobs, path, resume, on_row=finished, roofline=roofline, overwrite=overwrite)
    except KeyboardInterrupt:
        where = f" in {path}" if path else " (not saved: --no-save)"
        say_error(f"interrupted: kept {len(rows)} finished rows{where}; rerun with --resume to finish")
        raise typer.Exit(130) from None
    df = tables.speed_frame(rows)
    tables.write_table(df, csv, md)
    if json_out:
        print(tables.json_lines(rows))
        return
    where = fp.get("gpu_name") or fp.get("cpu_model")
    label = dtype if dtype == "fp32" else f"{dtype} {precision}"
    out.print(tables.to_rich(df, f"Speed on {device} ({where}), {label}", {
        "FLOPs": "analytic, multiply-add = 2, whole batch", "times": "median over n calls",
        "peak MiB": "working memory of one call: predicted (closed form) vs measured (CPU: tensor peak; CUDA: allocator)"}))
    for impl in sorted({r.get("impl") for r in rows if r.get("impl")}) or [None]:
        ratio = bench.latency_ratio(rows, "nl", "cs", impl)
        if ratio:
            kernel = f" with impl={impl}" if impl else ""
            out.print(f"NL/CS{kernel}: latency ratio {ratio['latency_ratio']:.2f}x, FLOP ratio {ratio['flop_ratio']:.2f}x (same input shape)")
    statuses = [r["status"] for r in rows]
    oom = statuses.count("OOM")
    failed = sum(1 for st in statuses if st.startswith("error"))
    out.print(f"{len(rows)} rows: {len(rows) - oom - failed} ok, {oom} out of memory, {failed} other errors")
    if path:
        out.print(f"rows appended to {clean(path)}", markup=False, highlight=False)


def _speed_targets(modules: list[str], networks: list[str], attns: list[str], preset: str | None, device: str,
                   sizes: Sizes, opts: dict[str, str]) -> list:
    """Blocks and networks to time. Default: every block at its first preset, plus (on CUDA) every network
    with every attention choice; on CPU networks run only when asked for (each takes seconds per call).
    Sizes apply to the blocks; block options (e.g. ``impl=sdpa``) to the blocks and to the attention blocks
    inside the networks."""
    from attnbench import bench
    from attnbench.blocks.registry import all_blocks
    from attnbench.networks.registry import all_networks, get_network

    if attns and not networks and (modules or device == "cpu"):
        raise api.UsageError("--attn applies to --network only")
    if any(v is not None for v in sizes.values()) and (networks or not modules):
        raise api.UsageError("sizes apply to the blocks given with --module")
    if opts and not modules and not networks:
        raise api.UsageError("--option applies to the blocks given with --module or the attention of --network")
    blocks = [api.resolve(m, preset if len(modules) == 1 or not networks else None, sizes, opts) for m in modules]
    if not modules and not networks:
        blocks = [api.resolve(s.name) for s in all_blocks()]
        if device != "cpu":
            networks = [n.name for n in all_networks()]
    nets = [api.resolve_network(name, a, preset if not modules else None, options=opts if a != "none" else None)
            for name in networks for a in (attns or get_network(name).attn_choices)]
    return [bench.block_target(c) for c in blocks] + [bench.network_target(c) for c in nets]


def _register_commands() -> None:
    import importlib
    import pkgutil

    import attnbench.commands as pkg

    for info in pkgutil.iter_modules(pkg.__path__):
        importlib.import_module(f"attnbench.commands.{info.name}")


_register_commands()


def run(argv: list[str] | None = None) -> int:
    """Run the CLI on ``argv`` and return its exit code. Usage errors from the parser (unknown option,
    malformed value) become one line and exit 2, like the commands' own errors."""
    try:  # typer >= 0.20 vendors click as typer._click
        from typer._click import exceptions as cx
    except ImportError:  # pragma: no cover - older typer uses click itself
        from click import exceptions as cx

    try:
        rv = app(args=argv, standalone_mode=False, prog_name="attnbench")
    except cx.UsageError as e:
        say_error(f"error: {e.format_message()}")
        return 2
    except typer.Exit as e:
        return e.exit_code
    except (typer.Abort, KeyboardInterrupt):
        say_error("interrupted")
        return 130
    except BrokenPipeError:  # output piped into a program that stopped reading (e.g. head)
        from attnbench.entry import silence_stdout

        silence_stdout()
        return 0
    except OSError as e:  # --help into a full disk, and the like
        say_error(_os_error(e))
        return 2
    return rv if isinstance(rv, int) else 0


def main() -> None:
    from attnbench.entry import main as entry_main

    entry_main()
