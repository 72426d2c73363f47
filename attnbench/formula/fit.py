"""Exact polynomial fitting of integer counts: pure arithmetic, no torch.

* :func:`degree` -- the degree of a sequence sampled at equally spaced points, from its finite differences:
  the smallest d whose (d+1)-th differences are all zero, with at least ``confirm`` of them (so that the
  extra points past the d+1 that fix the polynomial agree exactly);
* :func:`degree_range` -- the lowest and highest power of a one-variable polynomial through such a sequence
  (sympy's :func:`~sympy.polys.polyfuncs.interpolate` gives its coefficients);
* :func:`fit_grid` -- the unique polynomial with the given exponent ranges through the values on a tensor
  grid: a linear system over the monomials, solved exactly (sympy's rational matrix inverse) axis by axis,
  since the system of a tensor grid is the Kronecker product of one Vandermonde system per axis;
* :class:`Polynomial` -- the result, exponents -> :class:`~fractions.Fraction`, evaluated exactly in integer
  arithmetic and turned into a sympy expression.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import cache
from math import prod

import sympy as sp

Number = int | Fraction


def degree(values: Sequence[Number], confirm: int = 2) -> int | None:
    """The smallest d such that the (d+1)-th finite differences of ``values`` (taken at equally spaced points)
    are all zero and number at least ``confirm``: the values are those of a polynomial of degree d, checked at
    ``confirm`` points beyond the d+1 that determine it. None when no such d exists."""
    diffs = list(values)
    for d in range(len(diffs)):
        diffs = [b - a for a, b in zip(diffs, diffs[1:])]
        if len(diffs) < confirm:
            return None
        if all(x == 0 for x in diffs):
            return d
    return None


def coefficients(xs: Sequence[int], ys: Sequence[Number]) -> list[Fraction]:
    """Coefficients (constant first) of the polynomial of degree < len(xs) through the points (x, y)."""
    x = sp.Symbol("x")
    points = [(int(a), sp.Rational(b.numerator, b.denominator) if isinstance(b, Fraction) else int(b))
              for a, b in zip(xs, ys)]
    poly = sp.Poly(sp.interpolate(points, x), x) if len(points) > 1 else sp.Poly(points[0][1], x)
    return [_fraction(c) for c in reversed(poly.all_coeffs())]


def degree_range(xs: Sequence[int], ys: Sequence[Number], confirm: int = 2) -> tuple[int, int] | None | bool:
    """(lowest, highest) power of the polynomial in x through the points (equally spaced ``xs``); None when
    every value is zero (no dependence to fit), False when no polynomial fits (see :func:`degree`)."""
    d = degree(ys, confirm)
    if d is None:
        return False
    if all(y == 0 for y in ys):
        return None
    coeffs = coefficients(xs[: d + 1], ys[: d + 1])
    low = next(i for i, c in enumerate(coeffs) if c != 0)
    return low, d


def extrapolate(xs: Sequence[int], ys: Sequence[Number], x: int) -> Fraction | None:
    """The value at ``x`` of the polynomial that :func:`degree` finds through the points (None: none fits)."""
    d = degree(ys)
    if d is None:
        return None
    coeffs = coefficients(xs[: d + 1], ys[: d + 1])
    return sum((c * x**i for i, c in enumerate(coeffs)), Fraction(0))


@cache
def _inverse_vandermonde(points: tuple[int, ...], low: int) -> tuple[tuple[Fraction, ...], ...]:
    """The inverse of M[j][p] = points[j] ** (low + p), exactly."""
    matrix = sp.Matrix([[sp.Integer(v) ** (low + p) for p in range(len(points))] for v in points])
    inv = matrix.inv()
    return tuple(tuple(_fraction(inv[i, j]) for j in range(len(points))) for i in range(len(points)))


def _fraction(value: sp.Rational) -> Fraction:
    value = sp.Rational(value)
    return Fraction(int(value.p), int(value.q))


@dataclass(frozen=True)
class Polynomial:
    """A polynomial with exact rational coefficients: exponent tuples (one per generator) -> coefficient."""

    gens: tuple[str, ...]
    terms: Mapping[tuple[int, ...], Fraction]

    def __call__(self, values: Mapping[str, int]) -> Fraction:
        point = [values[g] for g in self.gens]
        return sum((c * prod(v**e for v, e in zip(point, exps)) for exps, c in self.terms.items()), Fraction(0))

    def expr(self, symbols: Mapping[str, sp.Symbol] | None = None) -> sp.Expr:
        syms = [symbols[g] if symbols else sp.Symbol(g) for g in self.gens]
        return sp.Add(*[sp.Rational(c.numerator, c.denominator) * sp.Mul(*[s**e for s, e in zip(syms, exps)])
                        for exps, c in self.terms.items()])

    def __add__(self, other: "Polynomial") -> "Polynomial":
        return combine([(1, self), (1, other)])


def combine(parts: Sequence[tuple[int, Polynomial]], gens: tuple[str, ...] | None = None) -> Polynomial:
    """sum of weight x polynomial (all over the same generators)."""
    gens = gens if gens is not None else (parts[0][1].gens if parts else ())
    terms: dict[tuple[int, ...], Fraction] = {}
    for weight, poly in parts:
        if poly.gens != gens:
            raise ValueError(f"generators differ: {poly.gens} and {gens}")
        for exps, c in poly.terms.items():
            terms[exps] = terms.get(exps, Fraction(0)) + weight * c
    return Polynomial(gens, {k: v for k, v in terms.items() if v != 0})


def fit_grid(gens: tuple[str, ...], axes: Sequence[Sequence[int]], lows: Sequence[int],
             values: Mapping[tuple[int, ...], Number]) -> Polynomial:
    """The polynomial in ``gens`` whose exponent of generator i runs over lows[i] .. lows[i] + len(axes[i]) - 1
    and which takes ``values[(j_1, ..., j_n)]`` at the point (axes[1][j_1], ..., axes[n][j_n]) of the tensor
    grid: exact, since the monomials' matrix on the grid is the Kronecker product of one invertible
    Vandermonde matrix per axis (distinct non-zero points), whose inverses are applied one axis at a time."""
    shape = [len(a) for a in axes]
    table: dict[tuple[int, ...], Fraction] = {idx: Fraction(values[idx]) for idx in itertools.product(*map(range, shape))}
    for axis, (points, low) in enumerate(zip(axes, lows)):
        inv = _inverse_vandermonde(tuple(int(p) for p in points), int(low))
        new: dict[tuple[int, ...], Fraction] = {}
        for idx in table:
            p = idx[axis]
            row = inv[p]
            total = Fraction(0)
            for q, coefficient in enumerate(row):
                if coefficient:
                    total += coefficient * table[idx[:axis] + (q,) + idx[axis + 1:]]
            new[idx] = total
        table = new
    terms = {tuple(low + p for low, p in zip(lows, idx)): c for idx, c in table.items() if c != 0}
    return Polynomial(tuple(gens), terms)
