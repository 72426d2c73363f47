"""Every registered block's closed form, derived again from exact counts and compared symbolically (sympy: the
difference simplifies to 0 per op category, per (category, kind) cell and for the parameters): a second,
independent check of every closed form in the project.

To keep CI cheap the per-size domain and degrees are searched on the closed form (pure integer functions, no
counting); the counts are then taken on a grid one multiple further on, so that the two polynomials come
from different shapes, and the counted fit must also predict 3 fresh random shapes exactly. The full search
on counts alone (what ``attnbench formula`` does) is tested on a few blocks in test_command.py."""

from __future__ import annotations

import time

import pytest
import sympy as sp

from attnbench.blocks.registry import all_blocks, get_block
from attnbench.flops.cost import CATEGORIES, KINDS
from attnbench.formula.derive import derive

# every block at each distinct option setting its presets use, and options whose closed forms branch
EXTRA = [("nl", {"subsample": "after"}), ("nl", {"subsample": "before"}), ("nl", {"use_scale": True, "bn": False}),
         ("cs", {"reduction": 4}), ("fa", {"diff": "signed"}), ("eca", {"k": 3}), ("cbam", {"bias": True, "bn": True, "kt": 3}),
         ("se", {"bias": True}), ("w3", {"ct_mix": "full", "st_hidden": 2}), ("stc", {"ratio": 4})]


def _cases() -> list[tuple[str, str, dict]]:
    out, seen = [], set()
    for spec in all_blocks():
        for p in spec.presets:
            options = spec.resolve_options(base=p.options)
            key = (spec.name, tuple(sorted(options.items())))
            if key not in seen:
                seen.add(key)
                out.append((spec.name, p.name, options))
    for name, given in EXTRA:
        spec = get_block(name)
        out.append((name, spec.default_preset.name, spec.resolve_options(given)))
    return out


CASES = _cases()
TIMES: dict[str, float] = {}


@pytest.mark.parametrize("name,preset,options", CASES, ids=[f"{n}-{p}-{i}" for i, (n, p, _) in enumerate(CASES)])
def test_derived_formula_equals_closed_form_symbolically(name: str, preset: str, options: dict) -> None:
    began = time.perf_counter()
    spec = get_block(name)
    shape = spec.preset(preset).shape
    closed = derive(spec, options, shape, source="closed form", checks=3, seed=2)
    counted = derive(spec, options, shape, domain=closed, offset=1, checks=3, seed=3)
    assert counted.source == "counted" and counted.counts > 0
    assert len(counted.checked) == (3 if counted.axes else 0) and counted.counts >= counted.grid_shapes
    for category in CATEGORIES:
        diff = sp.simplify(counted.expr(counted.category(category)) - closed.expr(closed.category(category)))
        assert diff == 0, f"{name} {options}: {category} derived - closed form = {diff}"
        for kind in KINDS:
            assert sp.expand(counted.expr(counted.cell(category, kind)) - closed.expr(closed.cell(category, kind))) == 0
    assert sp.simplify(counted.expr(counted.flops()) - closed.expr(closed.flops())) == 0
    assert sp.simplify(counted.expr(counted.params) - closed.expr(closed.params)) == 0
    TIMES[f"{name} {options}"] = time.perf_counter() - began


def test_blocks_that_are_not_polynomial_in_a_size_hold_it_fixed() -> None:
    # eca's adaptive kernel k(C) = odd number near (log2 C + 1) / 2: no polynomial in C on any step
    spec = get_block("eca")
    closed = derive(spec, spec.resolve_options(), spec.default_preset.shape, source="closed form", checks=2)
    assert [f.name for f in closed.fixed] == ["C"] and closed.fixed[0].value == 256
    assert "not a polynomial in C" in closed.fixed[0].reason and "params" in closed.fixed[0].reason
    # fa takes RGB frames only: C = 3; its adaptive max pool to 56 x 56 is a polynomial on multiples of 56
    spec = get_block("fa")
    closed = derive(spec, spec.resolve_options(), spec.default_preset.shape, source="closed form", checks=2)
    assert [(f.name, f.value) for f in closed.fixed] == [("C", 3)] and "C must be 3" in closed.fixed[0].reason
    steps = {a.name: (a.step, a.minimum) for a in closed.axes}
    assert steps == {"B": (1, 1), "T": (1, 2), "H": (56, 56), "W": (56, 56)}
    assert "T >= 2" in closed.axes[1].reason


def test_domains_follow_divisions_and_declared_constraints() -> None:
    def domain(name: str, **given) -> dict[str, tuple[int, int]]:
        spec = get_block(name)
        f = derive(spec, spec.resolve_options(given), spec.default_preset.shape, source="closed form", checks=2)
        return {a.name: (a.step, a.minimum) for a in f.axes if (a.step, a.minimum) != (1, 1)}

    assert domain("nl") == {"C": (2, 2)}  # C_i = C // 2
    assert domain("nl", subsample="after") == {"C": (2, 2), "H": (2, 2), "W": (2, 2)}  # keys T (H // 2) (W // 2)
    assert domain("nl", use_scale=True) == {"C": (2, 4)}  # no scale multiply at C_i = 1: the fit breaks below C = 4
    assert domain("stc") == {"C": (16, 16)}  # declared: r divides C
    assert domain("stpa") == {"H": (8, 24), "W": (8, 24)}  # adaptive pool to 8 x 8; declared H, W >= 17
    # two levels, bottom pooled to the top's 8 x 8: at H = W = 8 nothing is pooled, a joint break
    assert domain("stpa", scales=2, c2=2080, size2=8) == {"H": (8, 16), "W": (8, 16)}


def test_all_blocks_time(request) -> None:
    """Runs last in this file: the time of the symbolic test over every block (printed with -s)."""
    if TIMES:
        print(f"\nderived == closed form for {len(TIMES)} block settings: {sum(TIMES.values()):.2f} s")
