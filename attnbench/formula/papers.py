"""The papers' printed complexity formulas as sympy expressions, checked symbolically against derived formulas.

* BANet (Sec. III-C): Eq. (5) F_3D = C_in (THW)^2 x 2 and Eq. (6) F_CS = C_in (T(HW)^2 + H(TW)^2 + W(TH)^2) x 2,
  the FLOPs of the correlation matrices per clip (softmax excluded), and Eq. (7) R = F_CS / F_3D =
  1/T + 1/H + 1/W. The matmul category of the nl and cs blocks holds two products of equal size per
  attention, Q^T K (the correlation matrix) and A V, each L x C_in x L MACs, so the correlation matrices are
  half of it. R is computed from the two derived polynomials (cs and nl at the same C_in) and simplified by
  sympy, not typed in.
* STA (Table IV): # PARAM and # MULT of STA, c (h w + 4) + 5 and c l (h w + 4) + 3 l, and of STC,
  c^2 (l^2 + l + 2) / r and c (l + 3) + c^2 (l^2 + l + 2) / r, parsed from the strings
  :data:`attnbench.papers.sta.TABLE_IV_FORMULAS` holds (c = C, l = T, h = H, w = W; r the stc block's
  ``ratio``). # MULT is per clip and counts multiplications, so it is compared with the derived
  multiply-accumulates divided by B.

Each check substitutes the sizes the formula holds fixed, so it holds for whatever ``--vary`` chose.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import sympy as sp

from attnbench.flops.cost import CATEGORIES
from attnbench.formula.derive import SYMBOLS, Formula

B, C, T, H, W = (SYMBOLS[n] for n in ("B", "C", "T", "H", "W"))
C_IN = sp.Symbol("C_in")

# BANet Sec. III-C, as printed (Eq. 5-7), in attnbench's symbols
BANET_EQ5 = C_IN * (T * H * W) ** 2 * 2
BANET_EQ6 = C_IN * (T * (H * W) ** 2 + H * (T * W) ** 2 + W * (T * H) ** 2) * 2
BANET_EQ7 = 1 / T + 1 / H + 1 / W
BANET_LATEX = {
    "eq5": r"F_{3D} = C_{in}(THW)^2 \times 2",
    "eq6": r"F_{CS} = C_{in}(T(HW)^2 + H(TW)^2 + W(TH)^2) \times 2",
    "eq7": r"R = \frac{F_{CS}}{F_{3D}} = \frac{1}{T} + \frac{1}{H} + \frac{1}{W}",
}
TABLE_IV_LETTERS = {"c": "C", "l": "T", "h": "H", "w": "W"}


def table_iv(block: str, quantity: str, ratio: int | None = None) -> sp.Expr:
    """STA Table IV's printed formula (``block`` sta or stc, ``quantity`` params or mults) parsed from the string
    :data:`attnbench.papers.sta.TABLE_IV_FORMULAS` holds, in attnbench's symbols (r = ``ratio``)."""
    from attnbench.papers.sta import TABLE_IV_FORMULAS

    text = TABLE_IV_FORMULAS[block][quantity].replace(" x ", "*").replace("^", "**")
    names: dict[str, Any] = {letter: SYMBOLS[size] for letter, size in TABLE_IV_LETTERS.items()}
    if ratio is not None:
        names["r"] = sp.Integer(ratio)
    return sp.parse_expr(text, local_dict=names)


@dataclass
class PaperCheck:
    """One printed formula against the derived one: ``difference`` is derived - printed, simplified."""

    paper: str
    where: str
    what: str
    name: str  # LaTeX name of the quantity, e.g. F_{CS}
    printed: sp.Expr
    printed_latex: str
    derived: sp.Expr
    derived_from: str
    difference: sp.Expr
    note: str = ""
    value: dict[str, Any] | None = None  # a figure the paper prints, evaluated at its shape
    extra: dict[str, sp.Expr] = field(default_factory=dict)  # other derived quantities it is made of (LaTeX names)

    @property
    def equal(self) -> bool:
        return self.difference == 0


def _text(expr: sp.Expr) -> str:
    from attnbench.formula.render import text

    return text(expr)


def _subs(formula: Formula, expr: sp.Expr) -> sp.Expr:
    """``expr`` with the sizes ``formula`` holds fixed put in."""
    return expr.subs({SYMBOLS[f.name]: f.value for f in formula.fixed})


def _check(formula: Formula, paper: str, where: str, what: str, name: str, printed: sp.Expr, printed_latex: str,
           derived: sp.Expr, derived_from: str, note: str = "", value: dict[str, Any] | None = None,
           extra: dict[str, sp.Expr] | None = None) -> PaperCheck:
    printed = _subs(formula, printed)
    return PaperCheck(paper, where, what, name, printed, printed_latex, derived, derived_from,
                      sp.simplify(derived - printed), note, value, extra or {})


def _per_clip(formula: Formula, expr: sp.Expr) -> sp.Expr:
    return sp.expand(expr / _subs(formula, B))


def _correlation(formula: Formula) -> sp.Expr:
    """Half of the derived matmul FLOPs, per clip: the correlation matrix Q^T K of each attention."""
    return _per_clip(formula, formula.expr(formula.category("matmul")) / 2)


Derive = Callable[[str, Mapping[str, Any]], Formula]


def _nl(formula: Formula, derive_other: Derive) -> list[PaperCheck]:
    ratio = formula.options["ratio"]
    keys = formula.options.get("subsample", "none")
    note = "" if keys == "none" else f"subsample={keys}: the keys are pooled 1x2x2, Eq. (5) assumes they are not"
    return [_check(formula, "BANet", "Eq. (5)", f"correlation-matrix FLOPs of the non-local block per clip, C_in = C/{ratio}",
                   "F_{3D}", BANET_EQ5.subs(C_IN, C / ratio), BANET_LATEX["eq5"], _correlation(formula),
                   "half of the derived matmul FLOPs per clip: of its two equal products, Q^T K and A V, Q^T K is the "
                   "correlation matrix", note)]


def _cs(formula: Formula, derive_other: Derive) -> list[PaperCheck]:
    reduction = formula.options["reduction"]
    f_cs = _correlation(formula)
    eq6 = _check(formula, "BANet", "Eq. (6)", f"correlation-matrix FLOPs of the cascaded self-attention per clip, "
                 f"C_in = C' = C/{reduction}", "F_{CS}", BANET_EQ6.subs(C_IN, C / reduction), BANET_LATEX["eq6"], f_cs,
                 "half of the derived matmul FLOPs per clip: of the two equal products of each 2D block, Q^T K and A V, "
                 "Q^T K is the correlation matrix")
    nl = derive_other("nl", {"ratio": reduction, "impl": formula.options.get("impl", "naive")})
    f_3d = _correlation(nl)
    ratio = sp.expand(sp.cancel(f_cs / f_3d))
    value = None
    from attnbench.papers.banet import R_FIGURE

    shape = R_FIGURE.subject["shape"]
    at = {SYMBOLS[k]: v for k, v in shape.items() if k in ("T", "H", "W")}
    if all(s in at for s in ratio.free_symbols):
        exact = sp.Rational(ratio.subs(at))
        value = {"figure": R_FIGURE.key, "where": f"{R_FIGURE.table}", "shape": dict(shape), "printed": R_FIGURE.value,
                 "unit": R_FIGURE.unit, "derived": float(exact * 100), "exact": str(exact)}
    r = _check(formula, "BANet", "Eq. (7)", "R = F_CS / F_3D: F_CS and F_3D derived from the cs and nl blocks' counts "
               f"(nl with ratio={reduction}, the same C_in), divided and simplified by sympy", "R",
               BANET_EQ7, BANET_LATEX["eq7"], ratio, "F_CS / F_3D of the two derived polynomials, sympy.cancel + expand",
               note=f"F_3D, from the nl block derived the same way: {_text(f_3d)}", value=value,
               extra={"F_{CS}": f_cs, "F_{3D}": f_3d})
    return [eq6, r]


def _sta(formula: Formula, derive_other: Derive) -> list[PaperCheck]:
    params = formula.expr(formula.params) if formula.params is not None else sp.nan
    mults = _per_clip(formula, formula.expr(formula.cell("convolution", "mac")))
    return [
        _check(formula, "STA", "Table IV, # PARAM", "STA parameters (c = C, h = H, w = W)", "P_{STA}",
               table_iv("sta", "params"), r"c \times (h \times w + 4) + 5", params, "the derived parameters"),
        _check(formula, "STA", "Table IV, # MULT", "STA multiplications per clip (c = C, l = T, h = H, w = W)",
               "M_{STA}", table_iv("sta", "mults"), r"c \times l \times (h \times w + 4) + 3 \times l", mults,
               "the derived convolution MACs (Conv1, Deconv, Conv2) divided by B",
               "Table IV counts the convolutions' multiplies only, not Eq. 7's gating c l h w"),
    ]


def _stc(formula: Formula, derive_other: Derive) -> list[PaperCheck]:
    r = formula.options["ratio"]
    params = formula.expr(formula.params) if formula.params is not None else sp.nan
    printed = table_iv("stc", "mults", r)
    quadratic = sp.Add(*[t for t in sp.Add.make_args(printed) if sp.degree(t, C) == 2])
    fc = _per_clip(formula, formula.expr(formula.cell("linear", "mac")))
    ops = sp.Add(*[formula.expr(formula.cell(c, "op")) for c in CATEGORIES])
    work = _per_clip(formula, formula.expr(formula.macs()) + ops)
    return [
        _check(formula, "STA", "Table IV, # PARAM", f"STC parameters (c = C, l = T, r = {r})", "P_{STC}",
               table_iv("stc", "params", r), r"c^2 \times (l^2 + l + 2) / r", params, "the derived parameters"),
        _check(formula, "STA", "Table IV, # MULT (its c^2 term)", f"STC's four FC layers per clip (r = {r})", "M_{FC}",
               quadratic, r"c^2 \times (l^2 + l + 2) / r", fc, "the derived linear MACs divided by B"),
        _check(formula, "STA", "Table IV, # MULT", f"STC multiplications per clip (c = C, l = T, r = {r})", "M_{STC}",
               printed, r"c \times (l + 3) + c^2 \times (l^2 + l + 2) / r", work,
               "the derived MACs plus single ops, divided by B",
               "Table IV does not itemise c (l + 3); the difference is the work it leaves out (see the stc block: "
               "the spatial pooling and the gating, c l h w each, and the hidden ReLUs, c l / r + c / r)"),
    ]


CHECKS: dict[str, Callable[[Formula, Derive], list[PaperCheck]]] = {"nl": _nl, "cs": _cs, "sta": _sta, "stc": _stc}


def paper_checks(formula: Formula, derive_other: Derive) -> list[PaperCheck]:
    """The papers' formulas that apply to ``formula``'s block (none for most blocks). ``derive_other(name,
    options)`` derives another block over the same sizes (cs needs nl for R)."""
    if formula.cells is None or formula.module not in CHECKS:
        return []
    return CHECKS[formula.module](formula, derive_other)

