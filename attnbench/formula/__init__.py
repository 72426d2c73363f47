"""Closed forms derived from exact counts: a block's FLOPs per op category and its parameters as polynomials in
B, C, T, H, W (:mod:`attnbench.formula.derive`), compared symbolically with the block's declared closed forms
and with the papers' printed formulas (:mod:`attnbench.formula.papers`), printed as text, LaTeX or JSON
(:mod:`attnbench.formula.render`). ``attnbench formula`` and :func:`attnbench.api.formula` call
:func:`formula_report`."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from attnbench.cases import Case
from attnbench.formula.derive import (DEFAULT_CHECKS, DEFAULT_MAX_DEGREE, SIZES, Comparison, Formula, compare,
                                      derive)
from attnbench.formula.papers import PaperCheck, paper_checks
from attnbench.shapes import VideoShape


@dataclass
class FormulaReport:
    """A derived formula, its comparison with the block's declared closed form (None: none declared) and the
    papers' formulas that apply to it."""

    formula: Formula
    comparison: Comparison | None
    papers: list[PaperCheck]
    seconds: float


def formula_report(case: Case, vary: Sequence[str] = SIZES, *, checks: int = DEFAULT_CHECKS, seed: int = 0,
                   max_degree: int = DEFAULT_MAX_DEGREE, closed_form: bool = True, papers: bool = True) -> FormulaReport:
    """Derive ``case``'s block over the sizes ``vary`` (the others held at the case's shape), then compare it."""
    from attnbench.blocks.registry import get_block

    began = time.perf_counter()
    formula = derive(case.spec, case.options, case.shape, vary, checks=checks, seed=seed, max_degree=max_degree)
    comparison = compare(formula, case.spec, seed=seed + 1) if closed_form else None

    def derive_other(name: str, options: Mapping[str, Any]) -> Formula:
        spec = get_block(name)
        base = VideoShape(**{**dict(zip(SIZES, case.shape.as_list())), **formula.fixed_sizes})
        return derive(spec, spec.resolve_options(options), base, formula.symbols or vary, checks=checks, seed=seed,
                      max_degree=max_degree)

    checked = paper_checks(formula, derive_other) if papers else []
    return FormulaReport(formula, comparison, checked, time.perf_counter() - began)
