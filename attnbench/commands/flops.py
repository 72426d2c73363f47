"""`attnbench flops`: closed-form FLOPs and parameters of blocks (and whole networks), checked against the
exact counter and other counters."""

from __future__ import annotations

from typing import Annotated, Any, Optional

import typer

from attnbench.commands.common import (BlockOpt, BOpt, COpt, CsvOpt, HOpt, JsonOpt, MdOpt, ModuleOpt, Sizes, TOpt,
                                       WOpt, complete_network, guarded, out, progress)
from attnbench.defaults import COUNTERS
from attnbench.errors import UsageError


def flops_cmd(
    module: ModuleOpt = [],  # noqa: B006
    all_blocks: Annotated[bool, typer.Option("--all", help="every block at every preset")] = False,
    preset: Annotated[Optional[str], typer.Option("--preset", "-p", help="named paper shape (default: the block's first)")] = None,
    B: BOpt = None, C: COpt = None, T: TOpt = None, H: HOpt = None, W: WOpt = None,  # noqa: N803
    option: BlockOpt = [],  # noqa: B006
    network: Annotated[list[str], typer.Option("--network", "-n", help="paper network (repeatable); --T frames, --H size", autocompletion=complete_network)] = [],  # noqa: B006
    attn: Annotated[list[str], typer.Option("--attn", "-a", help="attention in the network (repeatable; default: the preset's, none but for BANet-Lite's cs)")] = [],  # noqa: B006
    counters: Annotated[str, typer.Option("--counters", help="comma list of " + ",".join(COUNTERS) + " (exact always runs)")] = ",".join(COUNTERS),
    backward: Annotated[bool, typer.Option("--backward", help="also count the backward pass (one training step)")] = False,
    json_out: JsonOpt = False,
    csv: CsvOpt = None,
    md: MdOpt = None,
) -> None:
    """Closed-form FLOPs and parameters of blocks, checked against the exact counter, fvcore and ptflops."""
    from attnbench import api
    from attnbench.report import tables
    from attnbench.store import files

    files.distinct({"--csv": csv, "--md": md})
    files.ensure_writable(csv, md)
    chosen = api.parse_counters(counters)
    sizes = {"B": B, "C": C, "T": T, "H": H, "W": W}
    opts = api.parse_options(option)
    if network:
        if module or all_blocks:
            raise UsageError("give blocks (--module/--all) or networks (--network), not both")
        _flops_networks(network, attn or [None], preset, sizes, opts, chosen, json_out, csv, md)
        return
    if attn:
        raise UsageError("--attn applies to --network only")
    if all_blocks:
        if module or preset or opts or any(v is not None for v in sizes.values()):
            raise UsageError("--all takes no --module, --preset, sizes or --option")
        cases = api.preset_cases()
    elif not module:
        raise UsageError("give --module NAME (repeatable) or --all; `attnbench list` shows the blocks")
    else:
        cases = [api.resolve(m, preset, sizes, opts) for m in module]
    reports = []
    with progress(len(cases), "counting", quiet=json_out or len(cases) < 2) as step:
        for c in cases:
            step(c.label, advance=0)
            reports.append(api.flops_report(c, chosen, backward=backward).to_dict())
            step()
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


def network_cases(names: list[str], attns: list[str | None], preset: str | None, sizes: Sizes,
                  opts: dict[str, str]) -> list[Any]:
    """The networks x attention choices asked for, checked (sizes that do not apply to a network refused); an
    attention of None is the preset's default."""
    from attnbench import api

    if sizes.get("C") is not None:
        raise UsageError("networks take RGB video: --C does not apply (use --T for frames, --H for size)")
    if sizes.get("W") is not None and sizes.get("W") != sizes.get("H"):
        raise UsageError("networks take square frames: give --H (and --W equal to it, or not at all)")
    return [api.resolve_network(n, a, preset, sizes.get("T"), sizes.get("H"), sizes.get("B") or 1, opts)
            for n in names for a in attns]


def _flops_networks(names: list[str], attns: list[str | None], preset: str | None, sizes: Sizes, opts: dict[str, str],
                    counters: list[str], json_out: bool, csv: str | None, md: str | None) -> None:
    import pandas as pd

    from attnbench import api
    from attnbench.report import tables

    cases = network_cases(names, attns, preset, sizes, opts)
    records = []
    with progress(len(cases), "counting", quiet=json_out or len(cases) < 2) as step:
        for c in cases:
            step(c.label, advance=0)
            records.append(api.network_report(c, counters))
            step()
    df = pd.DataFrame(tables.network_rows(records))
    tables.write_table(df, csv, md)
    if json_out:
        print(tables.json_lines(records))
        return
    out.print(tables.to_rich(df, "Networks: parameters and FLOPs", {"FLOPs": "multiply-add = 2", "MACs": "multiply-add = 1"}))


def _print_terms(record: dict[str, Any]) -> None:
    from attnbench.report import tables

    a = record["analytic"] or {}
    if "ratio" in a:
        out.print(
            f"R = F_CS / F_3D = {a['ratio']:.2%} ({a['ratio_exact']}); 1/T + 1/H + 1/W = {a['ratio_closed_form']:.2%}; "
            f"identity holds: {a['ratio_identity_holds']}"
        )
    if "affinity_flops" in a:
        out.print(f"correlation-matrix FLOPs ({a.get('affinity_flops_formula', '')}): {a['affinity_flops']:,} FLOPs")
    li = record.get("predicted_largest_intermediate")
    if li:
        out.print(f"largest intermediate: {li['what']} = {li['elements']:,} elements ({tables.human(li['bytes'], 'B')} in fp32)")


flops_cmd = guarded(flops_cmd)
