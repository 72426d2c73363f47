"""What every command shares: the two consoles, the error guard (one line and exit 2 for a domain error, never a
traceback), progress bars, and the option types. Imports neither torch nor pandas: ``attnbench --help`` stays
fast."""

from __future__ import annotations

import errno
import functools
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any, Optional

import typer
from rich.console import Console

from attnbench.errors import AttnBenchError, AttnBenchWarning, UsageError, check_range
from attnbench.text import clean

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
out = Console(width=_width(sys.stdout), emoji=False)  # text from users and files: ":x:" stays ":x:"
err = Console(stderr=True, width=_width(sys.stderr), emoji=False)
state = {"debug": False}


def say_error(message: str) -> None:
    """One line on stderr: control characters escaped (a newline in a path cannot split it), no markup.
    Nothing is raised if stderr is closed or full: the exit code still says what happened."""
    try:
        err.print(clean(message), markup=False, highlight=False, soft_wrap=True)
    except (OSError, ValueError):
        pass


def interrupted(message: str = "interrupted") -> None:
    """Ctrl-C: one line (what was kept), exit 130. The CLI then knows the line was said (Typer turns a
    Ctrl-C during its own parsing into a silent exit 130, which :func:`attnbench.cli.run` reports)."""
    say_error(message)
    state["said_interrupted"] = True
    raise typer.Exit(130) from None


def os_error(e: OSError) -> str:
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
            if state["debug"]:
                raise
            say_error(f"error: {e}")
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            interrupted()
        except (typer.Exit, typer.Abort):
            raise
        except BrokenPipeError:
            from attnbench.entry import silence_stdout

            silence_stdout()
            raise typer.Exit(0) from None
        except OSError as e:
            if state["debug"]:
                raise
            say_error(os_error(e))
            raise typer.Exit(2) from None
        except Exception as e:  # noqa: BLE001 - the CLI never shows a traceback unless --debug
            if state["debug"]:
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


def check_run(device: str, dtype: str, precision: str, timing: str, cluster: Any = None) -> str:
    """The device (``auto``: CUDA when present), dtype, precision and timing mode a measuring command was
    given, checked before anything runs; returns the device. ``cluster`` (``--ray``): the device is the
    cluster workers', not this machine's (``auto`` asks the cluster, the rest is checked first)."""
    from attnbench.measuring import device as dev
    from attnbench.measuring.timing import TIMING_MODES, resolve_precision

    dev.resolve_dtype(dtype)
    resolve_precision(precision)
    if timing not in TIMING_MODES:
        raise UsageError(f"unknown timing mode '{timing}'; valid choices: {', '.join(TIMING_MODES)}")
    if cluster is not None:
        from attnbench import distributed

        return distributed.resolve_device(cluster, device)
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev.resolve_device(device)
    return device


def check_timing_flags(reps: int, target_s: float, warmup_s: float | None = None) -> None:
    """The repetition and time flags every measuring command shares, with their bounds."""
    from attnbench.measuring.timing import MAX_REPS, MAX_SECONDS

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


def complete_module(incomplete: str) -> list[str]:
    """Shell completion of ``--module``: registered blocks (a file path completes as the shell completes files)."""
    from attnbench.blocks.registry import all_blocks

    return [s.name for s in all_blocks() if s.name.startswith(incomplete)]


def complete_network(incomplete: str) -> list[str]:
    from attnbench.networks.registry import all_networks

    return [n.name for n in all_networks() if n.name.startswith(incomplete)]


ResumeOpt = Annotated[bool, typer.Option(
    "--resume", help="skip rows already in the results file (measured on this device)")]
OverwriteOpt = Annotated[bool, typer.Option(
    "--overwrite", help="measure rows already in the results file again (their old rows are removed)")]
WarmupOpt = Annotated[float, typer.Option("--warmup-s", help="longest warm-up per row, in seconds (at most 600)")]
ModuleOpt = Annotated[list[str], typer.Option(
    "--module", "-m", help="block: a registered name (see `attnbench list`) or FILE.py:CLASS, a module whose "
    "constructor takes the channel count first (repeatable)", autocompletion=complete_module)]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON to stdout (one object per line)")]
CsvOpt = Annotated[Optional[str], typer.Option("--csv", help="write the table as CSV")]
MdOpt = Annotated[Optional[str], typer.Option("--md", help="write the table as Markdown")]

RayOpt = Annotated[Optional[str], typer.Option(
    "--ray", metavar="[ADDRESS]", show_default=False,
    help="measure each point as a task on a Ray cluster (pip install 'attnbench[ray]'): no value starts Ray on this "
         "machine, 'auto' joins the running cluster, else the cluster's address")]
AcceleratorOpt = Annotated[Optional[str], typer.Option(
    "--accelerator", show_default=False, help="with --ray: run on this GPU model only (a Ray accelerator type, e.g. H100)")]
EachAcceleratorOpt = Annotated[bool, typer.Option(
    "--each-accelerator", help="with --ray: run the same points on every GPU model of the cluster, one column per model")]


@contextmanager
def ray_session(address: str | None, accelerator: str | None, each_accelerator: bool) -> Iterator[Any]:
    """``--ray``'s cluster for the whole command (None without ``--ray``). Ray starts (or is joined) only when
    a step needs it, after the options are checked; a Ray started for the command ends with it."""
    from attnbench import distributed

    cluster = distributed.cluster_option(address, accelerator, each_accelerator)
    if cluster is None:
        yield None
        return
    with distributed.command_session():
        yield cluster


def module_list(values: list[str], absolute: bool = False) -> list[str]:
    """``--module`` values: each a block name, a comma list of them, or ``FILE.py:CLASS`` (never split: a path
    may hold commas). ``absolute``: file paths made absolute (a baseline must not depend on the folder)."""
    out: list[str] = []
    for value in values:
        file, _, attr = value.rpartition(":")
        if file.endswith(".py"):
            out.append(f"{os.path.abspath(os.path.expanduser(file))}:{attr}" if absolute else value)
        else:
            out += [v.strip() for v in value.split(",") if v.strip()]
    return out


@contextmanager
def progress(total: int, what: str, quiet: bool = False) -> Iterator[Callable[..., None]]:
    """A progress bar on stderr (terminals only) that names the current item and shows an ETA. Yields
    ``step(item=None, advance=1)``: call it with the item about to start (advance=0) or just finished."""
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("ETA"), TimeRemainingColumn())
    with Progress(*columns, console=err, transient=True, disable=quiet or not err.is_terminal) as bar:
        task = bar.add_task(what, total=total)

        def step(item: str | None = None, advance: int = 1) -> None:
            bar.update(task, advance=advance, description=f"{what}: {clean(item)}" if item else what)

        yield step
