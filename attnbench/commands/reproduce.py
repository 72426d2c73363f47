"""`attnbench reproduce`: every complexity figure the papers print, beside ours, with a verdict and a reason."""

from __future__ import annotations

from typing import Annotated, Any, Optional

import typer

from attnbench.commands.common import guarded, out, progress


def _frame(rows: list[dict[str, Any]]):
    import pandas as pd

    return pd.DataFrame([{
        "paper": r["paper"], "table": r["table"], "item": r["item"],
        "paper value": r["paper_value"], "paper unit": r["paper_unit"],
        "ours": r["value"], "unit": r["unit"], "convention": r["convention"],
        "delta %": r["delta_pct"], "basis": r["basis"], "verdict": r["verdict"],
        "configuration": r["configuration"], "printed decimals": r["printed_decimals"],
        "at printed precision": r["at_printed_precision"], "best convention": r["best_convention"], "reason": r["reason"],
    } for r in rows])


def _num(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:,.0f}" if abs(v) >= 1e5 else f"{v:.5g}"
    return str(v)


def reproduce_cmd(
    paper: Annotated[str, typer.Option("--paper", help="banet, sta, eam, w3, stpa or all")] = "all",
    json_out: Annotated[bool, typer.Option("--json", help="one JSON object per row on stdout")] = False,
    csv: Annotated[Optional[str], typer.Option("--csv", help="write the rows as CSV")] = None,
    md: Annotated[Optional[str], typer.Option("--md", help="write the rows as Markdown")] = None,
) -> None:
    """Every complexity and speed figure printed in the papers' tables and text, one row each: the paper's
    value, ours under the counting convention the paper's numbers imply (found by trying them all), the
    difference, a verdict (reproduced, reproduced-with another configuration, indicative for speeds measured
    elsewhere, off, not-determinable) and the reason for every row that is not plainly reproduced."""
    from attnbench.store import files

    files.distinct({"--csv": csv, "--md": md})
    files.ensure_writable(csv, md)
    from rich.table import Table

    from attnbench.papers.reproduce import CHOICES, reproduce, summary

    if paper not in CHOICES:  # checked before any counting (reproduce checks it too)
        from attnbench.errors import unknown

        raise unknown("paper", paper, CHOICES)
    from attnbench.papers.reproduce import PAPERS

    started: list[str] = []
    with progress(len(PAPERS) if paper == "all" else 1, "counting on the meta device", quiet=json_out) as step:

        def on_paper(name: str) -> None:
            step(name, advance=1 if started else 0)  # the previous paper is done
            started.append(name)

        rows = reproduce(paper, on_paper=on_paper)
    s = summary(rows)
    if csv or md:
        from attnbench.report import tables  # pandas: only when a table file is asked for

        tables.write_table(_frame(rows), csv, md)
    if json_out:
        if rows:
            from attnbench.report import tables

            print(tables.json_lines(rows))
        return
    if not rows:
        from attnbench.papers import stpa

        out.print(stpa.NOTE if paper == "stpa" else "no rows", markup=False)
        return
    table = Table(title="Paper complexity figures vs attnbench", show_lines=False,
                  caption="ours: exact counter on the meta device, under the paper's convention (G = 10^9 of its unit); "
                          "delta = (ours - paper) / paper; total and ratio rows hold within 1%, increment rows (an "
                          "attention over its base network) within one unit of the last printed digit or 1% of the increment")
    for col, justify in (("paper", "left"), ("table", "left"), ("item", "left"), ("paper", "right"), ("ours", "right"),
                         ("unit", "left"), ("convention", "left"), ("delta", "right"), ("basis", "left"),
                         ("verdict", "left"), ("reason", "left")):
        table.add_column(col, justify=justify, overflow="fold")
    style = {"reproduced": "green", "reproduced-with": "cyan", "indicative": "blue", "off": "red", "not-determinable": "yellow"}
    for r in rows:
        delta = "n/a" if r["delta_pct"] is None else f"{r['delta_pct']:+.2f}%"
        table.add_row(r["paper"], r["table"], r["item"], f"{_num(r['paper_value'])} {r['paper_unit']}", _num(r["value"]),
                      r["unit"], r["convention"], delta, r["basis"], f"[{style[r['verdict']]}]{r['verdict']}[/]", r["reason"])
    out.print(table)
    for name, p in s["by_paper"].items():
        if p["counted"]:
            out.print(f"{name}: reproduced {p['counted_reproduced']} of {p['counted']} parameter, FLOP and size figures",
                      markup=False)
        if p["convention"]:
            others = [c for c in p.get("conventions_tied", []) if c != p["convention"]]
            tie = f" (tied with {', '.join(others)}; ties go to the first in the CONVENTIONS order)" if others else ""
            out.print(f"{name}: counting convention implied by its figures: {p['convention']}{tie}", markup=False)
        if p.get("configuration"):
            out.print(f"{name}: attnbench's configuration: {'; '.join(p['configuration'])}", markup=False)
        ev = p.get("rounding_evidence") or {}
        if ev.get("rows"):
            out.print(f"{name}: printed digits: {p['rounding']}; parameter counts exact at the printed digits when cut: "
                      f"{ev['truncate']} of {ev['rows']}, when rounded: {ev['round']} of {ev['rows']}", markup=False)
    if paper in ("all", "stpa"):
        from attnbench.papers import stpa

        out.print(f"stpa: {stpa.NOTE}", markup=False)
    v = s["verdicts"]
    out.print(f"reproduced: {s['reproduced']} of {s['counted_rows']} parameter, FLOP and size figures "
              f"({s['share_reproduced']:.1%}); of all {s['rows']} rows: " + "; ".join(f"{k} {n}" for k, n in v.items()),
              markup=False)


reproduce_cmd = guarded(reproduce_cmd)
