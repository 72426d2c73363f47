"""Derive a block's closed form from exact counts: its FLOPs per op category and its parameters as polynomials in
the sizes B, C, T, H, W, with exact rational coefficients, and the domain where they hold.

How (:func:`derive`):

1. **Domain and degrees, one size at a time.** For each size that varies, the others held at a base point, the
   block is counted on a line of sizes ``step x k`` (k = start, start + 1, ...). A step is kept when every
   count on the line (every (category, kind) cell, and the parameters) is a polynomial in the size: its
   finite differences vanish, with two more points agreeing than the degree needs, and two counts far past
   the line agree too (a floor whose period is longer than the line shows there). Steps are tried in turn:
   1, then the block's integer option values, then 2, 3, 4, 6, 8, 12, 16, 32, 64 (a size divided and floored by
   r, C // r, is a polynomial on multiples of r). The smallest multiple of the step that the block's own
   check accepts (and, for a user's block, that it runs at) is where the line starts: a declared minimum or
   divisibility; a line whose first points break the fit starts later: a minimum found where the fit breaks.
   A size that fits on no step is held fixed at its base value, and the ops whose counts are not polynomial
   in it are named.
2. **Fit.** The lowest and highest power of each size seen on its line bound each quantity's monomials; the
   counts on that quantity's box of the tensor grid (as many multiples per size as its powers need; one
   count gives every cell) determine it exactly (:func:`attnbench.formula.fit.fit_grid`).
3. **Check.** Fresh random shapes in the domain are counted and compared with the polynomials, exactly, cell by
   cell and for the parameters. On a miss the fit is tried again with every degree range widened by one,
   then from one multiple further on in the divided sizes, then in every size but B (a break where the
   smallest sizes meet, :func:`_variants`); if none predicts the checks, the error names the cells and ops
   that differ.

The work is counted by attnbench's exact counter on the meta device (FLOPs: a multiply-add counts 2, any other
arithmetic op 1); parameters by building the block on the meta device. ``source="closed form"`` fits the
block's declared closed forms the same way instead, so that the two polynomials can be compared symbolically
(:func:`compare`).
"""

from __future__ import annotations

import random
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction
from itertools import product
from typing import Any

import sympy as sp

from attnbench.blocks.registry import BlockSpec
from attnbench.cases import Case, user_code
from attnbench.errors import UsageError
from attnbench.flops.cost import CATEGORIES, KINDS
from attnbench.flops.count import count as count_exact
from attnbench.flops.count import meta_inputs, param_count
from attnbench.formula.fit import Polynomial, combine, degree, degree_range, extrapolate, fit_grid
from attnbench.shapes import VideoShape

SIZES: tuple[str, ...] = ("B", "C", "T", "H", "W")
SYMBOLS: dict[str, sp.Symbol] = {name: sp.Symbol(name) for name in SIZES}
SOURCES = ("counted", "closed form")
DEFAULT_MAX_DEGREE = 4
DEFAULT_CHECKS = 10
FALLBACK_STEPS = (2, 3, 4, 6, 8, 12, 16, 32, 64)
MAX_START = 4096  # the first accepted multiple of a step is looked for up to this size
FAIL_SEARCH = 8  # a line may start up to this many multiples in, past sizes a user's block fails at
MAX_DROP = 2  # points at the start of a line that may break the fit (a minimum found where the fit breaks)
FAR = (37, 101)  # a line that fits is confirmed this many multiples past its last point (a floor's period
# longer than the line, C // 16 on C = 16 .. 22, shows there)
CHECK_SPAN = 40  # random checks draw k from start .. start + CHECK_SPAN (sizes step x k)
UNITS = {"flops": "FLOPs: a multiply-add counts 2, any other arithmetic op 1",
         "macs": "MACs: multiply-accumulates of convolutions, linear layers and matrix products, each 1",
         "params": "learnable parameters (count)"}


class NotPolynomial(UsageError):
    """The counts are not a polynomial over the grid (named cells and ops)."""


def _clean(err: Exception) -> str:
    """A user's block's failure without the hint about forward arguments :func:`attnbench.cases.user_code` adds."""
    return str(err).split(" (its forward takes")[0]


Cell = tuple[str, str]


@dataclass(frozen=True)
class Sample:
    """What one count gives: the cost cells, FLOPs per op (counted source only), ops left uncounted."""

    cells: Mapping[Cell, int]
    per_op: Mapping[str, int] = field(default_factory=dict)
    unhandled: Mapping[str, int] = field(default_factory=dict)


class Sampler:
    """Counts (or closed forms) of one block with fixed options, cached per shape."""

    def __init__(self, spec: BlockSpec, options: Mapping[str, Any], source: str = "counted") -> None:
        if source not in SOURCES:
            raise UsageError(f"unknown source '{source}'; valid choices: {', '.join(SOURCES)}")
        if source == "closed form" and spec.cost is None and spec.params is None:
            raise UsageError(f"{spec.name} declares no closed form to fit")
        self.spec, self.options, self.source = spec, dict(options), source
        self._work: dict[VideoShape, Sample] = {}
        self._params: dict[VideoShape, int] = {}
        self._failed: dict[VideoShape, str | None] = {}
        self.counts = 0  # forward passes counted

    @property
    def has_work(self) -> bool:
        return self.source == "counted" or self.spec.cost is not None

    @property
    def has_params(self) -> bool:
        return self.source == "counted" or self.spec.params is not None

    def refusal(self, shape: VideoShape) -> str | None:
        """Why the block refuses ``shape`` (its declared check), or None."""
        try:
            self.spec.validate(shape, self.options)
        except UsageError as err:
            return str(err)
        return None

    def failure(self, shape: VideoShape) -> str | None:
        """Why ``shape`` is outside the domain: the block's check refuses it, or (a user's block) it fails to
        build or run there (counted once, the count kept); None when it counts."""
        why = self.refusal(shape)
        if why is not None or self.source != "counted":
            return why
        if shape not in self._failed:
            try:
                self.work(shape)
                self._failed[shape] = None
            except NotPolynomial:
                raise
            except UsageError as err:
                self._failed[shape] = _clean(err)
        return self._failed[shape]

    def work(self, shape: VideoShape) -> Sample:
        if shape not in self._work:
            if self.source == "closed form":
                cost = self.spec.cost(shape, **self.options) if self.spec.cost is not None else None
                self._work[shape] = Sample(dict(cost.cells) if cost is not None else {})
            else:
                try:
                    with user_code(self.spec), warnings.catch_warnings():
                        warnings.filterwarnings("ignore", "Initializing zero-element tensors")  # a size floored to 0
                        module = Case(self.spec, shape, self.options, None).build("meta")
                        result = count_exact(module, meta_inputs(self.spec.input_shapes(shape, self.options)))
                        self._params.setdefault(shape, param_count(module))
                except UsageError as err:
                    if "data-" in str(err):  # torch: an op whose output shape depends on the values (nonzero ...)
                        raise NotPolynomial(f"{self.spec.name}: its work depends on the data, not on the shapes alone, "
                                            f"so it has no formula in B, C, T, H, W: {_clean(err)}") from None
                    raise
                self.counts += 1
                self._work[shape] = Sample(dict(result.cost.cells), {k: v.flops for k, v in result.per_op.items()},
                                           dict(result.unhandled))
        return self._work[shape]

    def params(self, shape: VideoShape) -> int:
        if shape not in self._params:
            if self.source == "closed form":
                self._params[shape] = self.spec.params(shape, **self.options) if self.spec.params is not None else 0
            else:
                with user_code(self.spec):
                    self._params[shape] = param_count(Case(self.spec, shape, self.options, None).build("meta"))
        return self._params[shape]

    def quantities(self, shape: VideoShape, per_op: bool = False) -> dict[str, int]:
        """Every number one shape gives, by name: ``category.kind`` cells, ``params``, and ``op:NAME`` per op."""
        out: dict[str, int] = {}
        if self.has_work:
            sample = self.work(shape)
            out.update({f"{c}.{k}": v for (c, k), v in sample.cells.items()})
            if per_op:
                out.update({f"op:{name}": v for name, v in sample.per_op.items()})
        if self.has_params:
            out["params"] = self.params(shape)
        return out


@dataclass(frozen=True)
class Axis:
    """A size that varies: the values ``step x k`` for k >= ``start``; per quantity (``category.kind`` cells and
    ``params``) the lowest and highest power of it seen on its line (None: the quantity is zero there); why
    this domain."""

    name: str
    step: int
    start: int
    reason: str
    ranges: Mapping[str, tuple[int, int] | None]

    @property
    def work(self) -> tuple[int, int] | None:
        """The powers of this size in the work cells, all together."""
        return _union([r for q, r in self.ranges.items() if q != "params"])

    @property
    def params(self) -> tuple[int, int] | None:
        return _union([r for q, r in self.ranges.items() if q == "params"])

    def range(self, quantity: str) -> tuple[int, int]:
        """The powers a quantity is fitted over: its own, or for a quantity not seen on the line all the work
        cells' (the parameters' for ``params``)."""
        if quantity in self.ranges:
            return self.ranges[quantity] or (0, 0)
        return (self.params if quantity == "params" else self.work) or (0, 0)

    def widened(self, max_degree: int) -> "Axis":
        ranges = {q: (max(0, r[0] - 1), min(max_degree, r[1] + 1)) if r else (0, 1) for q, r in self.ranges.items()}
        return replace(self, ranges=ranges)

    @property
    def minimum(self) -> int:
        return self.step * self.start

    def value(self, k: int) -> int:
        return self.step * k

    def condition(self) -> str:
        """The domain in words, e.g. ``C even, C >= 2``."""
        parts = []
        if self.step == 2:
            parts.append(f"{self.name} even")
        elif self.step > 2:
            parts.append(f"{self.name} a multiple of {self.step}")
        parts.append(f"{self.name} >= {self.minimum}")
        return ", ".join(parts)


@dataclass(frozen=True)
class Fixed:
    """A size held fixed, at ``value``, and why (not asked to vary, refused by the block, or not polynomial
    in it: then the ops whose counts are not)."""

    name: str
    value: int
    reason: str
    ops: tuple[str, ...] = ()


@dataclass
class Formula:
    """A block's work and parameters as polynomials in the sizes that vary (see module docstring)."""

    module: str
    title: str
    source: str
    options: dict[str, Any]
    axes: list[Axis]
    fixed: list[Fixed]
    cells: dict[Cell, Polynomial] | None  # None: no work to fit (a closed form declaring parameters only)
    params: Polynomial | None
    unhandled: dict[str, int]
    grid_shapes: int
    checked: list[VideoShape]
    counts: int
    seconds: float
    max_degree: int

    @property
    def symbols(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.axes)

    @property
    def fixed_sizes(self) -> dict[str, int]:
        return {f.name: f.value for f in self.fixed}

    def _zero(self) -> Polynomial:
        return Polynomial(self.symbols, {})

    def cell(self, category: str, kind: str) -> Polynomial:
        return (self.cells or {}).get((category, kind), self._zero())

    def category(self, category: str) -> Polynomial:
        """FLOPs of one op category: 2 per multiply-accumulate + 1 per single op."""
        return combine([(2, self.cell(category, "mac")), (1, self.cell(category, "op"))], self.symbols)

    def categories(self) -> dict[str, Polynomial]:
        """FLOPs per op category, the categories with any work."""
        present = {c for c, _ in (self.cells or {})}
        return {c: self.category(c) for c in CATEGORIES if c in present}

    def flops(self) -> Polynomial:
        return combine([(1, p) for p in self.categories().values()], self.symbols)

    def macs(self) -> Polynomial:
        return combine([(1, self.cell(c, "mac")) for c in CATEGORIES], self.symbols)

    def expr(self, poly: Polynomial) -> sp.Expr:
        return poly.expr(SYMBOLS)

    def at(self, shape: VideoShape) -> tuple[dict[Cell, int], int | None]:
        """The cells and parameters the formula predicts at ``shape`` (its fixed sizes must match)."""
        values = _point(shape)
        for f in self.fixed:
            if values[f.name] != f.value:
                raise UsageError(f"the formula holds {f.name} fixed at {f.value}, got {f.name}={values[f.name]}")
        cells = {key: _integer(p(values), key) for key, p in (self.cells or {}).items()}
        return {k: v for k, v in cells.items() if v}, (_integer(self.params(values), "params") if self.params else None)

    def domain(self) -> list[dict[str, Any]]:
        return [{"symbol": a.name, "step": a.step, "minimum": a.minimum, "condition": a.condition(),
                 "reason": a.reason} for a in self.axes]


def _integer(value: Fraction, what: Any) -> int:
    if value.denominator != 1:
        raise NotPolynomial(f"the formula gives a fraction for {what}: {value}")
    return int(value)


def _point(shape: VideoShape) -> dict[str, int]:
    return dict(zip(SIZES, shape.as_list()))


# ---------------------------------------------------------------------------------------------------------
# Lines: the domain and degree of one size


def steps_to_try(options: Mapping[str, Any]) -> list[int]:
    """1, the block's integer option values (2 .. 1024: the divisors a size is likely floored by), then
    :data:`FALLBACK_STEPS`."""
    values = sorted({v for v in options.values() if isinstance(v, int) and not isinstance(v, bool) and 2 <= v <= 1024})
    return list(dict.fromkeys([1, *values, *FALLBACK_STEPS]))


@dataclass
class _Line:
    step: int
    start: int
    drop: int
    ranges: dict[str, tuple[int, int] | None]  # quantity -> (lowest, highest) power, None when all zero


class _Search:
    """Finds each size's domain and degrees (step 1 of the module docstring)."""

    def __init__(self, sampler: Sampler, max_degree: int) -> None:
        self.sampler = sampler
        self.max_degree = max_degree
        self.points = max_degree + 3 + MAX_DROP  # the most points one line is counted at

    def _shape(self, base: Mapping[str, int], name: str, value: int) -> VideoShape:
        return VideoShape(**{**base, name: value})

    def first_accepted(self, base: Mapping[str, int], name: str, step: int) -> tuple[int | None, str | None]:
        """The smallest k with ``step x k`` accepted by the block, and the refusal of the multiple below it."""
        said = None
        for k in range(1, MAX_START // step + 1):
            shape = self._shape(base, name, step * k)
            why = self.sampler.refusal(shape)
            if why is not None:
                said = f"declared: {name}={step * k}: {why}"
            elif k <= FAIL_SEARCH:  # a user's block may also fail to run at its smallest sizes
                why = self.sampler.failure(shape)
                said = f"found: the block fails at {name}={step * k}: {why}" if why else said
            if why is None:
                return k, said
        return None, said

    def line(self, base: Mapping[str, int], name: str, step: int, start: int) -> _Line | str | list[str]:
        """The line from ``step x start``: a :class:`_Line`, the refusal that stops it (str), or the quantities
        that are no polynomial on it (list)."""
        for k in range(start, start + self.points):
            why = self.sampler.refusal(self._shape(base, name, step * k))
            if why is not None:
                return f"{name}={step * k}: {why}"
        series: dict[str, list[int]] = {}
        for i, k in enumerate(range(start, start + self.points)):
            why = self.sampler.failure(self._shape(base, name, step * k))
            if why is not None:
                return f"{name}={step * k}: {why}"
            values = self.sampler.quantities(self._shape(base, name, step * k), per_op=True)
            for q in set(series) | set(values):
                series.setdefault(q, [0] * i).append(values.get(q, 0))
            n = i + 1
            for drop in range(min(MAX_DROP, n - 3) + 1):
                if all(_fits(ys[drop:], self.max_degree) for q, ys in series.items() if not q.startswith("op:")):
                    xs = [step * kk for kk in range(start + drop, start + n)]
                    far = self._far(base, name, step, start + n - 1, xs, {q: ys[drop:] for q, ys in series.items()})
                    if any(not q.startswith("op:") for q in far):
                        return far
                    ranges = {q: degree_range(xs, ys[drop:]) for q, ys in series.items() if not q.startswith("op:")}
                    return _Line(step, start + drop, drop, ranges)  # type: ignore[arg-type]
        bad = [q for q, ys in series.items() if not any(_fits(ys[d:], self.max_degree) for d in range(MAX_DROP + 1))]
        return bad

    def _far(self, base: Mapping[str, int], name: str, step: int, last: int, xs: list[int],
             series: Mapping[str, list[int]]) -> list[str]:
        """The quantities (and ops) whose line polynomial misses a count far past the line (empty: none)."""
        bad: set[str] = set()
        for offset in FAR:
            shape = self._shape(base, name, step * (last + offset))
            if self.sampler.failure(shape) is not None:
                continue
            values = self.sampler.quantities(shape, per_op=True)
            for q in set(series) | set(values):
                ys = series.get(q, [0] * len(xs))
                if extrapolate(xs, ys, step * (last + offset)) != values.get(q, 0):
                    bad.add(q)
        return sorted(bad)

    def scan(self, base: Mapping[str, int], name: str, options: Mapping[str, Any]) -> Axis | Fixed:
        notes: list[str] = []
        refusals: list[str] = []
        failed: list[str] = []
        for step in steps_to_try(options):
            start, below = self.first_accepted(base, name, step)
            if start is None:
                refusals.append((below or f"{name}: no accepted value").split(": ", 1)[-1])
                continue
            found = self.line(base, name, step, start)
            if isinstance(found, str):
                refusals.append(found)
                notes.append(f"{_multiples(name, step)} refused ({found})")
                continue
            if isinstance(found, list):
                failed = failed or found
                notes.append(f"not a polynomial on {_multiples(name, step)}")
                continue
            reason = []
            if notes:
                reason.append("found: " + "; ".join(notes[:3]) + (" ..." if len(notes) > 3 else "")
                              + (f"; a polynomial on multiples of {step} (a size divided and floored)"
                                 if step > 1 else ""))
            if below and start > 1:
                reason.append(below)
            if found.drop:
                reason.append(f"found: the fit breaks below {name}={step * found.start}")
            if not reason:
                reason.append("every value fits")
            return Axis(name, step, found.start, "; ".join(reason), found.ranges)
        if failed:
            ops = tuple(sorted(q[3:] for q in failed if q.startswith("op:")))
            cells = [q for q in failed if not q.startswith("op:")]
            what = ", ".join(cells)
            return Fixed(name, base[name], f"not a polynomial in {name} (degree <= {self.max_degree}) on multiples of "
                         f"{', '.join(map(str, steps_to_try(options)))}: {what}"
                         + (f"; ops: {', '.join(ops)}" if ops else ""), ops)
        return Fixed(name, base[name], f"the block accepts no line of {name} values around it ({refusals[0]})")


def _multiples(name: str, step: int) -> str:
    return f"every {name}" if step == 1 else f"multiples of {step}"


def _fits(ys: Sequence[int], max_degree: int) -> bool:
    d = degree(ys)
    return d is not None and d <= max_degree


def _union(ranges: Sequence[tuple[int, int] | None | bool]) -> tuple[int, int] | None:
    present = [r for r in ranges if r]
    if not present:
        return None
    return min(r[0] for r in present), max(r[1] for r in present)  # type: ignore[index]


# ---------------------------------------------------------------------------------------------------------
# The fit and its check


class _Grid:
    """Each quantity fitted on its own box of the tensor grid: per axis, as many multiples from the axis's
    start (+ ``offset``) as its powers of that size need. One count gives every work quantity at a shape."""

    def __init__(self, sampler: Sampler, axes: Sequence[Axis], fixed: Mapping[str, int], offset: int) -> None:
        self.sampler, self.axes, self.fixed, self.offset = sampler, list(axes), dict(fixed), offset
        self.points: set[VideoShape] = set()

    def shape(self, values: Sequence[int]) -> VideoShape:
        return VideoShape(**self.fixed, **{a.name: v for a, v in zip(self.axes, values)})

    def axis_values(self, quantity: str) -> tuple[list[list[int]], list[int]]:
        ranges = [a.range(quantity) for a in self.axes]
        values = [[a.value(a.start + self.offset + j) for j in range(hi - lo + 1)]
                  for a, (lo, hi) in zip(self.axes, ranges)]
        return values, [lo for lo, _ in ranges]

    def value(self, quantity: str, shape: VideoShape) -> int:
        why = self.sampler.failure(shape)
        if why is not None:
            raise _Fails(f"the block fails at {shape} [B x C x T x H x W] ({why})")
        if quantity == "params":
            return self.sampler.params(shape)
        if quantity.startswith("op:"):
            return self.sampler.work(shape).per_op.get(quantity[3:], 0)
        category, kind = quantity.split(".")
        return self.sampler.work(shape).cells.get((category, kind), 0)

    def fit(self, quantity: str) -> Polynomial:
        axis_values, lows = self.axis_values(quantity)
        values = {}
        for idx in product(*map(range, map(len, axis_values))):
            shape = self.shape([axis_values[i][j] for i, j in enumerate(idx)])
            self.points.add(shape)
            values[idx] = self.value(quantity, shape)
        return fit_grid(tuple(a.name for a in self.axes), axis_values, lows, values)

    def work_names(self) -> set[str]:
        """The work cells seen at the grid's shapes so far."""
        return {f"{c}.{k}" for s in self.points if s in self.sampler._work for c, k in self.sampler._work[s].cells}

    def fit_all(self, names: Sequence[str]) -> dict[str, Polynomial]:
        fits = {q: self.fit(q) for q in names}
        if self.sampler.has_work:
            for q in sorted(self.work_names() - set(fits)):  # a cell that appears at grid shapes only
                fits[q] = self.fit(q)
        return fits


def _checks(sampler: Sampler, axes: Sequence[Axis], fixed: Mapping[str, int], avoid: set[VideoShape],
            n: int, seed: int) -> list[VideoShape]:
    """``n`` random shapes in the domain, accepted by the block, off the fitted grid."""
    rng = random.Random(seed)
    out: list[VideoShape] = []
    for _ in range(50 * n):
        if len(out) >= n:
            break
        point = {a.name: a.value(rng.randint(a.start, a.start + CHECK_SPAN)) for a in axes}
        shape = VideoShape(**fixed, **point)
        if shape in avoid or shape in out or sampler.failure(shape) is not None:
            continue
        out.append(shape)
    return out


Miss = tuple[VideoShape, str, int, Fraction]  # shape, quantity, counted, predicted


def _misses(polys: Mapping[str, Polynomial], grid: _Grid, shapes: Sequence[VideoShape]) -> list[Miss]:
    out = []
    for shape in shapes:
        names = set(polys)
        if grid.sampler.has_work:
            names |= {f"{c}.{k}" for c, k in grid.sampler.work(shape).cells}
        for q in sorted(names):
            counted = grid.value(q, shape)
            predicted = polys[q](_point(shape)) if q in polys else Fraction(0)
            if predicted != counted:
                out.append((shape, q, counted, predicted))
    return out


def derive(spec: BlockSpec, options: Mapping[str, Any], base: VideoShape, vary: Sequence[str] = SIZES, *,
           source: str = "counted", checks: int = DEFAULT_CHECKS, seed: int = 0,
           max_degree: int = DEFAULT_MAX_DEGREE, domain: Formula | None = None, offset: int = 0) -> Formula:
    """The closed form of ``spec`` with ``options`` (resolved) as polynomials in the sizes ``vary``, the other
    sizes held at ``base`` (see the module docstring). ``domain``: reuse another formula's domain and degree
    ranges instead of searching (a grid ``offset`` multiples further on then takes other points than
    that formula's). Raises :class:`NotPolynomial` when the fitted polynomial misses a checked shape."""
    began = time.perf_counter()
    vary = _check_vary(vary)
    if not 1 <= max_degree <= 12:
        raise UsageError(f"max degree must be in 1..12, got {max_degree}")
    if not 1 <= checks <= 1000:
        raise UsageError(f"checks must be in 1..1000, got {checks}")
    sampler = Sampler(spec, options, source)
    point = _point(base)
    axes: list[Axis] = []
    fixed: list[Fixed] = []
    if domain is not None:
        point.update(domain.fixed_sizes)
        for a in domain.axes:
            if a.name in vary:
                axes.append(a)
            else:
                fixed.append(Fixed(a.name, point[a.name], "held fixed (not varied)"))
        fixed += domain.fixed
    else:
        search = _Search(sampler, max_degree)
        for name in SIZES:
            if name not in vary:
                fixed.append(Fixed(name, point[name], "held fixed (not varied)"))
                continue
            found = search.scan(point, name, options)
            if isinstance(found, Axis):
                axes.append(found)
                point[name] = found.value(found.start + 1)
            else:
                fixed.append(found)
    fixed = sorted(fixed, key=lambda f: SIZES.index(f.name))
    fixed_values = {f.name: f.value for f in fixed}
    names = sorted({q for a in axes for q in a.ranges if not q.startswith("op:")})
    if not axes:
        names = [f"{c}.{k}" for c, k in sampler.work(base).cells] if sampler.has_work else []
    names += ["params"] if sampler.has_params and "params" not in names else []
    problem = None  # the first domain's failure: (grid, misses) or the shape the block fails at
    for raised, tried in _variants(axes, max_degree):
        grid = _Grid(sampler, tried, fixed_values, offset)
        try:
            polys = grid.fit_all(names)
        except _Fails as failing:
            problem = problem or str(failing)
            continue
        shapes = _checks(sampler, tried, fixed_values, grid.points, checks, seed) if tried else []
        misses = _misses(polys, grid, shapes)
        if not misses:
            why = problem if isinstance(problem, str) else "the fit breaks where the smallest sizes meet"
            axes = [replace(a, reason=f"{a.reason}; found: {why}, so {a.name} >= {a.minimum}")
                    if a.name in raised else a for a in tried]
            break
        problem = problem or (grid, misses)
    else:
        if isinstance(problem, str):
            raise NotPolynomial(f"{spec.name}: {problem}")
        raise NotPolynomial(_miss_message(spec, *problem, max_degree))
    cells = None
    if sampler.has_work:
        cells = {}
        for q, p in polys.items():
            if q != "params" and p.terms:
                category, kind = q.split(".")
                cells[(category, kind)] = p
    unhandled: dict[str, int] = {}
    for sample in sampler._work.values():
        for op, calls in sample.unhandled.items():
            unhandled[op] = max(unhandled.get(op, 0), calls)
    return Formula(
        module=spec.name, title=spec.title, source=source, options=dict(options), axes=axes, fixed=fixed,
        cells=cells, params=polys.get("params") if sampler.has_params else None, unhandled=unhandled,
        grid_shapes=len(grid.points), checked=shapes, counts=sampler.counts, seconds=time.perf_counter() - began,
        max_degree=max_degree,
    )


def _variants(axes: list[Axis], max_degree: int) -> list[tuple[set[str], list[Axis]]]:
    """The domains to fit on, in turn, until one predicts the random checks (with the sizes whose smallest
    multiple it raised): as found; every degree range widened by one; the smallest multiple of the divided
    sizes (step > 1) raised by one, then of every size but B -- a joint break, as stpa's with two levels, where
    H = W = 8 makes the bottom level the top's size and its pooling vanishes, or a block that fails where all
    its sizes are smallest."""

    def raised(a: Axis) -> Axis:
        return replace(a, start=a.start + 1)

    out: list[tuple[set[str], list[Axis]]] = [(set(), axes), (set(), [a.widened(max_degree) for a in axes])]
    divided = {a.name for a in axes if a.step > 1}
    if divided:
        out.append((divided, [raised(a) if a.name in divided else a for a in axes]))
    rest = {a.name for a in axes if a.name != "B"}
    if rest and rest != divided:
        out.append((rest, [raised(a) if a.name in rest else a for a in axes]))
    return out


class _Fails(Exception):
    """A grid shape the block refuses or fails at."""


def _miss_message(spec: BlockSpec, grid: _Grid, misses: Sequence[Miss], max_degree: int) -> str:
    shape, quantity, counted, predicted = misses[0]
    what = sorted({q for _, q, _, _ in misses})
    ops = []
    if grid.sampler.source == "counted" and grid.sampler.has_work:
        for name in sorted({op for s in grid.points | {shape} for op in grid.sampler.work(s).per_op}):
            if grid.fit(f"op:{name}")(_point(shape)) != grid.value(f"op:{name}", shape):
                ops.append(name)
    return (f"{spec.name}: the counts are not a polynomial of degree <= {max_degree} per size over the grid: "
            f"at {shape} {quantity} is {counted}, the fit gives {predicted} "
            f"(differing: {', '.join(what)}" + (f"; ops {', '.join(ops)}" if ops else "") + "); hold the sizes it "
            "depends on fixed (--vary)")


def _check_vary(vary: Sequence[str]) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(v.strip().upper() for v in vary if v.strip()))
    if not names:
        raise UsageError("--vary needs at least one of B, C, T, H, W")
    for name in names:
        if name not in SIZES:
            raise UsageError(f"--vary takes sizes among {', '.join(SIZES)}, got '{name}'")
    return names


def parse_vary(text: str) -> tuple[str, ...]:
    """``"C,T,H,W"`` -> ("C", "T", "H", "W"), checked."""
    return _check_vary(text.split(","))


# ---------------------------------------------------------------------------------------------------------
# Closed forms, compared symbolically


@dataclass
class Comparison:
    """The derived polynomial against the block's declared closed form, per op category and for the
    parameters: the difference, simplified (0 where they agree)."""

    closed: Formula
    differences: dict[str, sp.Expr]  # category (or "params", "total") -> derived - closed form

    @property
    def equal(self) -> bool:
        return all(d == 0 for d in self.differences.values())


def compare(derived: Formula, spec: BlockSpec, seed: int = 1) -> Comparison | None:
    """Fit ``spec``'s declared closed forms over ``derived``'s domain on a shifted grid (other points than the
    counts were taken at) with their own random checks, and subtract symbolically. None when the block
    declares no closed form."""
    if spec.cost is None and spec.params is None:
        return None
    base = VideoShape(**{**{a.name: a.value(a.start + 1) for a in derived.axes}, **derived.fixed_sizes})
    closed = derive(spec, derived.options, base, derived.symbols or SIZES, source="closed form",
                    checks=min(len(derived.checked) or 1, DEFAULT_CHECKS), seed=seed, max_degree=derived.max_degree,
                    domain=derived, offset=1)
    differences: dict[str, sp.Expr] = {}
    if spec.cost is not None:
        mine, theirs = derived.categories(), closed.categories()
        for category in CATEGORIES:
            if category in mine or category in theirs:
                a = derived.expr(mine.get(category, derived._zero()))
                b = closed.expr(theirs.get(category, closed._zero()))
                differences[category] = sp.simplify(a - b)
        for category in CATEGORIES:
            for kind in KINDS:
                diff = sp.expand(derived.expr(derived.cell(category, kind)) - closed.expr(closed.cell(category, kind)))
                if diff != 0:
                    differences[f"{category}.{kind}"] = diff
        differences["total"] = sp.simplify(derived.expr(derived.flops()) - closed.expr(closed.flops()))
    if spec.params is not None and derived.params is not None and closed.params is not None:
        differences["params"] = sp.simplify(derived.expr(derived.params) - closed.expr(closed.params))
    return Comparison(closed, differences)
