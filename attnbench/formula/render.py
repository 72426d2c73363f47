"""A derived formula as text, LaTeX and JSON.

Polynomials are printed term by term in a fixed order (highest degree first), the sizes as B, C, T, H, W, and
equal powers of T, H, W grouped as the papers write them: ``2*B*C*(T*H*W)**2``, ``T*(H*W)**2``. The text
form is also valid sympy input (``sympy.parse_expr`` reads it back); JSON carries sympy's own string too.
"""

from __future__ import annotations

from collections.abc import Mapping
from fractions import Fraction
from typing import Any

import sympy as sp

from attnbench.defaults import SCHEMA
from attnbench.formula import FormulaReport
from attnbench.formula.derive import SIZES, UNITS, Formula
from attnbench.formula.fit import Polynomial

Term = tuple[Fraction, dict[str, int]]
GROUPED = ("T", "H", "W")


def terms(value: Polynomial | sp.Expr) -> list[Term]:
    """(coefficient, {size: power}) per term, in print order: highest total degree first, then lower powers of
    the earlier sizes first (Eq. 6's T(HW)^2 + H(TW)^2 + W(TH)^2, and 1/T + 1/H + 1/W)."""
    out: list[Term] = []
    if isinstance(value, Polynomial):
        out = [(c, {g: e for g, e in zip(value.gens, exps) if e}) for exps, c in value.terms.items()]
    else:
        for term in sp.Add.make_args(sp.expand(value)):
            coeff, rest = term.as_coeff_Mul()
            powers = {str(b): int(e) for b, e in rest.as_powers_dict().items() if b != 1}
            if any(name not in SIZES for name in powers) or not coeff.is_Rational:
                raise ValueError(f"not a sum of monomials in {', '.join(SIZES)}: {value}")
            out.append((Fraction(int(coeff.p), int(coeff.q)), powers))

    def key(t: Term) -> tuple[Any, ...]:
        powers = t[1]
        return (-sum(powers.values()), tuple(powers.get(s, 0) for s in SIZES))

    return sorted((t for t in out if t[0] != 0), key=key)


def _groups(powers: Mapping[str, int]) -> list[tuple[tuple[str, ...], int]]:
    """Factors in print order: B, C, then T, H, W with equal powers > 1 (or all three equal) grouped."""
    out: list[tuple[tuple[str, ...], int]] = [((s,), powers[s]) for s in SIZES if s not in GROUPED and powers.get(s)]
    thw = [(s, powers.get(s, 0)) for s in GROUPED]
    exps = [e for _, e in thw]
    if exps[0] == exps[1] == exps[2] != 0:
        return out + [(GROUPED, exps[0])]
    shared = next((e for e in set(exps) if e > 1 and exps.count(e) == 2), None)
    if shared is not None:
        pair = tuple(s for s, e in thw if e == shared)
        odd = [((s,), e) for s, e in thw if e != shared and e != 0]
        return out + odd + [(pair, shared)]  # as the papers write it: T (HW)^2, H (TW)^2, W (TH)^2
    return out + [((s,), e) for s, e in thw if e != 0]


def _text_term(coeff: Fraction, powers: Mapping[str, int]) -> str:
    num = [(g, e) for g, e in _groups(powers) if e > 0]
    den = [(g, -e) for g, e in _groups(powers) if e < 0]

    def factor(group: tuple[str, ...], e: int) -> str:
        if e == 1:
            return "*".join(group)
        return f"{group[0]}**{e}" if len(group) == 1 else "(" + "*".join(group) + f")**{e}"

    mono = "*".join(factor(g, e) for g, e in num)
    p, q = abs(coeff.numerator), coeff.denominator
    text = mono if (p == 1 and mono) else (f"{p}*{mono}" if mono else str(p))
    below = [str(q)] if q != 1 else []
    below += [factor(g, e) for g, e in den]
    if below:
        text += "/" + (below[0] if len(below) == 1 else "(" + "*".join(below) + ")")
    return text


def _joined(value: Polynomial | sp.Expr, term: Any) -> str:
    """The terms of ``value``, each written by ``term(coeff, powers)``, joined with their signs."""
    parts = terms(value)
    if not parts:
        return "0"
    out = ""
    for i, (coeff, powers) in enumerate(parts):
        body = term(coeff, powers)
        out += ("-" if coeff < 0 else "") + body if i == 0 else (" - " if coeff < 0 else " + ") + body
    return out


def text(value: Polynomial | sp.Expr) -> str:
    """The readable form: ``2*B*C*(T*H*W)**2 + 5*B*(T*H*W)**2/2``; valid sympy input."""
    return _joined(value, _text_term)


def _latex_term(coeff: Fraction, powers: Mapping[str, int]) -> str:
    def factor(group: tuple[str, ...], e: int) -> str:
        if e == 1:
            return " ".join(group)
        return f"{group[0]}^{{{e}}}" if len(group) == 1 else r"\left(" + " ".join(group) + rf"\right)^{{{e}}}"

    num = " ".join(factor(g, e) for g, e in _groups(powers) if e > 0)
    den = " ".join(factor(g, -e) for g, e in _groups(powers) if e < 0)
    p, q = abs(coeff.numerator), coeff.denominator
    if den or q != 1:
        top = num if p == 1 and num else (f"{p} {num}".strip())
        return rf"\frac{{{top or p}}}{{{(str(q) + ' ' if q != 1 else '') + den}}}".replace("{ ", "{").replace(" }", "}")
    return num if (p == 1 and num) else f"{p} {num}".strip()


def latex(value: Polynomial | sp.Expr) -> str:
    """LaTeX in the same order and grouping as :func:`text`."""
    return _joined(value, _latex_term)


def options_text(options: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in options.items()) or "(none)"


def domain_text(formula: Formula) -> str:
    return "; ".join(a.condition() for a in formula.axes) or "(nothing varies)"


def _source(formula: Formula) -> str:
    return ("derived from exact counts on the meta device" if formula.source == "counted"
            else "fitted to the block's declared closed forms")


def lines(report: FormulaReport) -> list[str]:
    """The formula as text: options and sizes held fixed, the domain, FLOPs per op category and in total, MACs,
    parameters, the checks, the closed form's and the papers' comparisons."""
    f = report.formula
    out = [f"{f.module}: {f.title} -- {_source(f)}",
           f"options held fixed: {options_text(f.options)}",
           f"symbols: {', '.join(f.symbols) or '(none)'}"
           + (f"; sizes held fixed: {', '.join(f'{x.name}={x.value}' for x in f.fixed)}" if f.fixed else ""),
           f"domain: {domain_text(f)}"]
    for a in f.axes:
        if a.step > 1 or a.start > 1:
            out.append(f"  {a.name}: {a.reason}")
    for x in f.fixed:
        if x.reason != "held fixed (not varied)":
            out.append(f"  {x.name} held at {x.value}: {x.reason}")
    if f.cells is not None:
        out.append("FLOPs by op category (a multiply-add counts 2, any other arithmetic op 1):")
        cats = f.categories()
        width = max([len(c) for c in cats] + [len("parameters")])
        for category, poly in cats.items():
            out.append(f"  {category:<{width}}  {text(poly)}")
        out.append(f"  {'total':<{width}}  {text(f.flops())}")
        out.append(f"MACs (a multiply-add counts 1; convolution, linear and matrix products): {text(f.macs())}")
    if f.params is not None:
        out.append(f"parameters: {text(f.params)}")
    if f.unhandled:
        out.append("ops the counter does not know, left out of the formula: "
                   + ", ".join(f"{op} x{n}" for op, n in sorted(f.unhandled.items())))
    example = f"; e.g. {f.checked[0]} [B x C x T x H x W]" if f.checked else ""
    out.append(f"checked: powers of each size from counts along it, coefficients fitted exactly on {f.grid_shapes} grid "
               f"shapes; {len(f.checked)} fresh random shapes predicted exactly{example}; {f.counts} counts, "
               f"{f.seconds:.2f} s")
    if report.comparison is not None:
        c = report.comparison
        if c.equal:
            out.append("closed form (declared by the block): derived - closed form simplifies to 0 in every op category, "
                       "the total and the parameters")
        else:
            out.append("closed form (declared by the block) DIFFERS: "
                       + "; ".join(f"{k}: derived - closed form = {text(v)}" for k, v in c.differences.items() if v != 0))
    for p in report.papers:
        status = "equal" if p.equal else f"differs by {text(p.difference)}"
        out.append(f"paper, {p.paper} {p.where}: {p.what}")
        out.append(f"  printed: {text(p.printed)}")
        out.append(f"  derived: {text(p.derived)}  ({p.derived_from}): {status}")
        if p.value:
            v = p.value
            out.append(f"  at {', '.join(f'{k}={n}' for k, n in v['shape'].items())}: {v['derived']:.4g}{v['unit']} "
                       f"(exactly {v['exact']}); printed {v['printed']:g}{v['unit']}")
        if p.note:
            out.append(f"  {p.note}")
    return out


def latex_document(report: FormulaReport) -> str:
    """The formula (and the papers' formulas checked against it) as LaTeX ``align*`` blocks, with comments."""
    f = report.formula
    rows = []
    if f.cells is not None:
        for category, poly in f.categories().items():
            rows.append(rf"F_{{\mathrm{{{category}}}}} &= {latex(poly)}")
        rows.append(rf"F &= {latex(f.flops())}")
    if f.params is not None:
        rows.append(rf"P &= {latex(f.params)}")
    out = [f"% attnbench formula --module {f.module}: {f.title}, {_source(f)}",
           "% F: FLOPs (a multiply-add counts 2, any other arithmetic op 1), per op category and in total; "
           "P: parameters",
           f"% options held fixed: {options_text(f.options)}"
           + (f"; sizes held fixed: {', '.join(f'{x.name}={x.value}' for x in f.fixed)}" if f.fixed else ""),
           f"% domain: {domain_text(f)}",
           r"\begin{align*}", " \\\\\n".join(rows), r"\end{align*}"]
    for p in report.papers:
        out.append(f"% {p.paper} {p.where}, as printed: {p.printed_latex}")
        out.append(f"% derived: {p.derived_from}; " + ("equal (sympy: the difference simplifies to 0)" if p.equal
                                                        else f"differs by {text(p.difference)}"))
        block = [rf"{name} &= {latex(expr)}" for name, expr in p.extra.items() if name != p.name]
        if p.extra and p.name == "R":
            block.append(rf"R = \frac{{F_{{CS}}}}{{F_{{3D}}}} &= {latex(p.derived)}")
        else:
            block.append(rf"{p.name} &= {latex(p.derived)}")
        out += [r"\begin{align*}", " \\\\\n".join(block), r"\end{align*}"]
        if p.value:
            out.append(f"% at {', '.join(f'{k}={n}' for k, n in p.value['shape'].items())}: R = {p.value['exact']} = "
                       f"{p.value['derived']:.4g}{p.value['unit']} (printed {p.value['printed']:g}{p.value['unit']})")
    return "\n".join(out)


def _poly(value: Polynomial | sp.Expr, formula: Formula) -> dict[str, str]:
    expr = formula.expr(value) if isinstance(value, Polynomial) else value
    return {"sympy": sp.sstr(expr), "readable": text(value), "latex": latex(value)}


def to_dict(report: FormulaReport) -> dict[str, Any]:
    """The JSON object (``kind: formula``): every polynomial as a sympy-parsable string (``sympy``), the readable
    form (also parsable) and LaTeX, with its symbols, the sizes held fixed and the domain."""
    f = report.formula
    out: dict[str, Any] = {
        "schema": SCHEMA, "kind": "formula", "module": f.module, "title": f.title, "source": f.source,
        "options": dict(f.options), "symbols": list(f.symbols),
        "fixed_sizes": {x.name: {"value": x.value, "reason": x.reason, "ops": list(x.ops)} for x in f.fixed},
        "domain": f.domain(),
        "flops": _poly(f.flops(), f) if f.cells is not None else None,
        "by_category_flops": {c: _poly(p, f) for c, p in f.categories().items()} if f.cells is not None else None,
        "cells": ({f"{c}.{k}": sp.sstr(f.expr(p)) for (c, k), p in sorted(f.cells.items())}
                  if f.cells is not None else None),
        "macs": _poly(f.macs(), f) if f.cells is not None else None,
        "params": _poly(f.params, f) if f.params is not None else None,
        "unhandled_ops": dict(f.unhandled),
        "check": {"grid_shapes": f.grid_shapes, "random_shapes": [s.as_list() for s in f.checked], "exact": True,
                  "counts": f.counts, "max_degree": f.max_degree},
        "seconds": report.seconds,
        "units": UNITS,
    }
    c = report.comparison
    out["closed_form"] = None if c is None else {
        "equal": c.equal, "differences": [{"of": k, "derived_minus_closed_form": sp.sstr(v)} for k, v in c.differences.items()]}
    out["papers"] = [{"paper": p.paper, "where": p.where, "what": p.what, "name": p.name,
                      "printed": sp.sstr(p.printed), "printed_latex": p.printed_latex, "derived": sp.sstr(p.derived),
                      "derived_from": p.derived_from, "difference": sp.sstr(p.difference), "equal": p.equal,
                      "note": p.note, "value": p.value, "extra": {k: sp.sstr(v) for k, v in p.extra.items()}}
                     for p in report.papers]
    return out
