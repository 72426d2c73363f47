"""The exact fitting primitives and the printed forms: no torch, no counting."""

from __future__ import annotations

import random
from fractions import Fraction
from itertools import product

import sympy as sp

from attnbench.formula.fit import Polynomial, degree, degree_range, extrapolate, fit_grid
from attnbench.formula.render import latex, text


def test_degree_from_finite_differences_needs_two_agreeing_extra_points() -> None:
    assert degree([5, 5, 5]) == 0
    assert degree([1, 4, 9, 16]) is None  # a quadratic needs 5 points: 3 to fix it, 2 that agree
    assert degree([1, 4, 9, 16, 25]) == 2
    assert degree([c // 2 for c in range(1, 10)]) is None  # C // 2 on every C: no polynomial
    assert degree([c // 2 for c in range(2, 20, 2)]) == 1  # on even C it is C / 2


def test_degree_range_gives_lowest_and_highest_power() -> None:
    xs = [2, 4, 6, 8, 10, 12]
    assert degree_range(xs, [3 * x**2 + x for x in xs]) == (1, 2)  # no constant term
    assert degree_range(xs, [7] * 6) == (0, 0)
    assert degree_range(xs, [0] * 6) is None
    assert degree_range(xs, [x // 4 for x in xs]) is False
    assert extrapolate(xs[:5], [x * x for x in xs[:5]], 101) == 101 * 101


def test_fit_grid_recovers_a_polynomial_exactly() -> None:
    # 5 B C (THW)^2 / 2 + 3 C^2 T - 7: exponent ranges B 0..1, C 0..2, T 0..2, H 0..2
    def f(b: int, c: int, t: int, h: int) -> Fraction:
        return Fraction(5, 2) * b * c * (t * h) ** 2 + 3 * c * c * t - 7

    axes = [[1, 2], [2, 4, 6], [1, 2, 3], [3, 4, 5]]
    values = {idx: f(*(axes[i][j] for i, j in enumerate(idx))) for idx in product(*(range(len(a)) for a in axes))}
    poly = fit_grid(("B", "C", "T", "H"), axes, [0, 0, 0, 0], values)
    B, C, T, H = sp.symbols("B C T H")
    assert sp.expand(poly.expr() - (sp.Rational(5, 2) * B * C * (T * H) ** 2 + 3 * C**2 * T - 7)) == 0
    rng = random.Random(1)
    for _ in range(10):
        point = {g: rng.randint(1, 99) for g in "BCTH"}
        assert poly(point) == f(point["B"], point["C"], point["T"], point["H"])
    # lowest powers given: B C^2 T^2 from one point
    single = fit_grid(("B", "C", "T"), [[3], [5], [7]], [1, 2, 2], {(0, 0, 0): 3 * 25 * 49 * 4})
    assert single.terms == {(1, 2, 2): 4}


def test_readable_forms_group_t_h_w_and_parse_back() -> None:
    B, C, T, H, W = sp.symbols("B C T H W")
    eq6 = C * (T * (H * W) ** 2 + H * (T * W) ** 2 + W * (T * H) ** 2)
    assert text(eq6) == "C*T*(H*W)**2 + C*H*(T*W)**2 + C*W*(T*H)**2"
    nl = 2 * B * C * (T * H * W) ** 2 + 5 * B * C * T * H * W / 2
    assert text(nl) == "2*B*C*(T*H*W)**2 + 5*B*C*T*H*W/2"
    assert text(1 / T + 1 / H + 1 / W) == "1/T + 1/H + 1/W"
    assert latex(1 / W + 1 / T + 1 / H) == r"\frac{1}{T} + \frac{1}{H} + \frac{1}{W}"
    assert latex(nl) == r"2 B C \left(T H W\right)^{2} + \frac{5 B C T H W}{2}"
    for expr in (eq6, nl, C**2 * T / 16 - 3 * B + 1, sp.Integer(0)):
        assert sp.parse_expr(text(expr)) == sp.expand(expr)
    poly = Polynomial(("C", "T"), {(2, 1): Fraction(1, 16), (0, 0): Fraction(-3)})
    assert text(poly) == "C**2*T/16 - 3"
