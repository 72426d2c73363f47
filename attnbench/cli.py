"""The attnbench command line: assembles the Typer app from :mod:`attnbench.commands` (one module per
command) and turns parser errors into one line. Nothing else lives here."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from attnbench.commands import common, flops, formula, gate, listing, report, reproduce, speed, sweep, table_vi
from attnbench.commands.common import os_error, say_error
from attnbench.errors import UsageError

app = typer.Typer(
    add_completion=True,
    no_args_is_help=False,
    invoke_without_command=True,
    pretty_exceptions_enable=False,
    help="Benchmark video attention blocks: exact FLOPs at paper shapes, real latency, memory and VPS.",
)


@app.callback()
def _main(ctx: typer.Context,
          debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False) -> None:
    common.state["debug"] = debug
    if ctx.invoked_subcommand is None and not ctx.resilient_parsing:  # a bare `attnbench`: its help, exit 0
        typer.echo(ctx.get_help())
        raise typer.Exit(0)


for _name, _fn in (("list", listing.list_cmd), ("flops", flops.flops_cmd), ("formula", formula.formula_cmd),
                   ("speed", speed.speed_cmd),
                   ("sweep", sweep.sweep_cmd), ("table-vi", table_vi.table_vi_cmd),
                   ("reproduce", reproduce.reproduce_cmd), ("report", report.report_cmd),
                   ("snapshot", gate.snapshot_cmd), ("check", gate.check_cmd)):
    app.command(_name)(_fn)


# Options whose value may be left out (click cannot say so): given bare, they take this value.
OPTIONAL_VALUES = {"--ray": "local"}


def _options() -> tuple[set[str], set[str]]:
    """The option names of every command: those that take a value, and all (flags too)."""
    group = typer.main.get_command(app)
    takes_value: set[str] = set()
    every: set[str] = set()
    for cmd in [group, *getattr(group, "commands", {}).values()]:
        for param in cmd.params:
            if getattr(param, "param_type_name", "") == "option":
                every.update(param.opts, param.secondary_opts)
                if not getattr(param, "is_flag", False):
                    takes_value.update(param.opts)
    return takes_value, every


def optional_values(argv: list[str], takes_value: set[str] | frozenset[str] = frozenset(),
                    every: set[str] | frozenset[str] = frozenset()) -> list[str]:
    """``--ray`` bare (last, or before another option) is ``--ray local``. An option that takes a value
    followed by another option's name (``--out --ray``: the parser would write to a file named ``--ray``)
    is a usage error; a file of such a name can be given as ``./--ray``."""
    out: list[str] = []
    for i, arg in enumerate(argv):
        if arg == "--":
            return out + argv[i:]
        if i > 0 and argv[i - 1] in takes_value and arg in every:
            raise UsageError(f"{argv[i - 1]} needs a value, but the next word is the option {arg} "
                             f"(a file of that name: ./{arg})")
        out.append(arg)
        if arg in OPTIONAL_VALUES and (i + 1 == len(argv) or argv[i + 1].startswith("-")):
            out.append(OPTIONAL_VALUES[arg])
    return out


def run(argv: list[str] | None = None) -> int:
    """Run the CLI on ``argv`` and return its exit code. Usage errors from the parser (unknown option,
    malformed value) become one line and exit 2, like the commands' own errors."""
    try:  # typer >= 0.20 vendors click as typer._click
        from typer._click import exceptions as cx
    except ImportError:  # pragma: no cover - older typer uses click itself
        from click import exceptions as cx

    try:
        args = sys.argv[1:] if argv is None else argv
        # the option names (~80 ms to collect) matter only where an option follows another
        names = _options() if any(a.startswith("-") and b.startswith("-") for a, b in zip(args, args[1:])) else ()
        rv = app(args=optional_values(args, *names), standalone_mode=False, prog_name="attnbench")
    except cx.UsageError as e:
        say_error(f"error: {e.format_message()}")
        return 2
    except UsageError as e:  # from optional_values, before any command runs
        say_error(f"error: {e}")
        return 2
    except typer.Exit as e:
        rv = e.exit_code
    except (typer.Abort, KeyboardInterrupt):
        say_error("interrupted")
        return 130
    except BrokenPipeError:  # output piped into a program that stopped reading (e.g. head)
        from attnbench.entry import silence_stdout

        silence_stdout()
        return 0
    except OSError as e:  # --help into a full disk, and the like
        say_error(os_error(e))
        return 2
    code = rv if isinstance(rv, int) else 0
    if code == 130 and not common.state.get("said_interrupted"):  # Ctrl-C while Typer parsed: it exits 130 silently
        say_error("interrupted")
    return code


def main() -> None:
    from attnbench.entry import main as entry_main

    entry_main()
