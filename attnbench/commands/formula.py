"""`attnbench formula`: a block's FLOPs per op category and its parameters as polynomials in B, C, T, H, W,
derived from exact counts and checked against the block's closed forms and the papers' formulas."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from attnbench.commands.common import (BlockOpt, BOpt, COpt, HOpt, JsonOpt, TOpt, WOpt, complete_module, guarded,
                                       out)
from attnbench.errors import UsageError


def formula_cmd(
    module: Annotated[str, typer.Option("--module", "-m", help="block: a registered name (see `attnbench list`) or "
                                        "FILE.py:CLASS", autocompletion=complete_module, show_default=False)] = "",
    preset: Annotated[Optional[str], typer.Option(
        "--preset", "-p", help="paper shape the fixed sizes come from (default: the block's first)")] = None,
    B: BOpt = None, C: COpt = None, T: TOpt = None, H: HOpt = None, W: WOpt = None,  # noqa: N803
    option: BlockOpt = [],  # noqa: B006
    vary: Annotated[str, typer.Option(
        "--vary", help="comma list of the sizes that are symbols; the others are held at the preset's (or given) values"
    )] = "B,C,T,H,W",
    checks: Annotated[int, typer.Option(
        "--checks", help="fresh random shapes the formula must predict exactly (1..1000)")] = 10,
    seed: Annotated[int, typer.Option("--seed", help="seed of the random shapes")] = 0,
    max_degree: Annotated[int, typer.Option("--max-degree", help="highest power of one size looked for (1..12)")] = 4,
    json_out: JsonOpt = False,
    latex: Annotated[bool, typer.Option("--latex", help="print LaTeX (align* blocks) for a paper")] = False,
) -> None:
    """Closed-form FLOPs (per op category) and parameters of a block, derived from exact counts as polynomials."""
    from attnbench import api
    from attnbench.formula.derive import parse_vary

    if not module:
        raise UsageError("give --module NAME or FILE.py:CLASS; `attnbench list` shows the blocks")
    if json_out and latex:
        raise UsageError("give --json or --latex, not both")
    report = api.formula(module, preset, {"B": B, "C": C, "T": T, "H": H, "W": W}, api.parse_options(option),
                         vary=parse_vary(vary), checks=checks, seed=seed, max_degree=max_degree)
    from attnbench.formula import render

    if json_out:
        import json

        print(json.dumps(render.to_dict(report)))
    elif latex:
        print(render.latex_document(report))
    else:
        for line in render.lines(report):
            out.print(line, markup=False, highlight=False, soft_wrap=True)


formula_cmd = guarded(formula_cmd)
