"""`attnbench formula` end to end: the full search on counts alone, the papers' formulas, JSON and LaTeX, a block
from a file the registry never saw, and the one-line errors."""

from __future__ import annotations

import json
import random
import textwrap

import pytest
import sympy as sp
import torch
from typer.testing import CliRunner

import attnbench
from attnbench import api
from attnbench.cli import app
from attnbench.formula.papers import BANET_EQ7, table_iv
from attnbench.formula.render import text
from attnbench.shapes import VideoShape
from tests.test_schema import _check_common

runner = CliRunner()
B, C, T, H, W = sp.symbols("B C T H W")


def run(*args: str):
    return runner.invoke(app, list(args))


def test_nl_formula_per_category_with_its_domain() -> None:
    result = run("formula", "--module", "nl", "--checks", "3")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "derived from exact counts on the meta device" in out
    assert "options held fixed: ratio=2, subsample=none, bn=True, impl=naive, use_scale=False" in out
    assert "domain: B >= 1; C even, C >= 2; T >= 1; H >= 1; W >= 1" in out
    assert "matmul         2*B*C*(T*H*W)**2" in out and "softmax        5*B*(T*H*W)**2" in out
    assert "a multiply-add counts 2" in out and "parameters: 2*C**2 + 9*C/2" in out
    assert "3 fresh random shapes predicted exactly" in out
    assert "derived - closed form simplifies to 0 in every op category" in out
    assert "BANet Eq. (5)" in out and "derived: C*(T*H*W)**2" in out and "): equal" in out


@pytest.fixture(scope="module")
def cs_report():
    """cs derived once (with nl for R), shared by the tests below: a derivation of both takes ~2 s."""
    return api.formula("cs", checks=2)


def test_cs_latex_derives_r_from_the_cs_and_nl_counts(cs_report, monkeypatch) -> None:
    asked = []
    monkeypatch.setattr(api, "formula", lambda *a, **k: asked.append((a, k)) or cs_report)  # the derivation above
    result = run("formula", "--module", "cs", "--latex", "--checks", "2")
    assert result.exit_code == 0, result.output
    assert asked[0][0][0] == "cs" and asked[0][1]["checks"] == 2 and asked[0][1]["vary"] == ("B", "C", "T", "H", "W")
    out = result.stdout
    assert r"F_{CS} &= C T \left(H W\right)^{2} + C H \left(T W\right)^{2} + C W \left(T H\right)^{2}" in out
    assert r"F_{3D} &= C \left(T H W\right)^{2}" in out
    assert r"R = \frac{F_{CS}}{F_{3D}} &= \frac{1}{T} + \frac{1}{H} + \frac{1}{W}" in out
    assert "R = 15/112 = 13.39% (printed 13.4%)" in out and r"\begin{align*}" in out


def test_banet_eq6_and_r_simplify_symbolically(cs_report) -> None:
    (eq6, r) = cs_report.papers
    assert eq6.equal and sp.simplify(eq6.derived - C * (T * (H * W) ** 2 + H * (T * W) ** 2 + W * (T * H) ** 2)) == 0
    assert r.equal and sp.simplify(r.derived - BANET_EQ7) == 0
    assert sp.simplify(r.extra["F_{CS}"] / r.extra["F_{3D}"] - (1 / T + 1 / H + 1 / W)) == 0
    assert r.value["exact"] == "15/112" and r.value["printed"] == 13.4
    assert cs_report.comparison.equal


def test_sta_and_stc_table_iv_symbolically() -> None:
    from attnbench.papers import sta as paper

    c, l, h, w, r = sp.symbols("c l h w r")
    # the printed strings parse to the functions papers/sta.py evaluates (symbolically, not at one point)
    letters = {c: C, l: T, h: H, w: W}
    assert sp.simplify(table_iv("sta", "params") - paper.sta_params(c, h, w).subs(letters)) == 0
    assert sp.simplify(table_iv("sta", "mults") - paper.sta_mults(c, l, h, w).subs(letters)) == 0
    for ratio in (4, 16):
        assert sp.simplify(table_iv("stc", "params", ratio) - paper.stc_params(c, l, ratio).subs(letters)) == 0
        assert sp.simplify(table_iv("stc", "mults", ratio) - paper.stc_mults(c, l, ratio).subs(letters)) == 0
    sta = api.formula("sta", checks=2).papers
    assert [p.where for p in sta] == ["Table IV, # PARAM", "Table IV, # MULT"] and all(p.equal for p in sta)
    stc = api.formula("stc", checks=2, options={"ratio": 4}).papers
    params, fc, mults = stc
    assert params.equal and fc.equal and not mults.equal
    assert sp.simplify(mults.difference - (2 * C * T * H * W + C * T / 4 + C / 4)) == 0  # pooling, gating, ReLUs


def test_json_gives_parsable_formulas_symbols_and_domain() -> None:
    result = run("formula", "--module", "stc", "--vary", "C,T", "--json", "--checks", "2")
    assert result.exit_code == 0, result.output
    rec = json.loads(result.stdout)
    _check_common(rec)  # the schema every command's JSON follows
    assert rec["kind"] == "formula" and rec["schema"] == 2 and rec["symbols"] == ["C", "T"]
    assert {k: v["value"] for k, v in rec["fixed_sizes"].items()} == {"B": 1, "H": 7, "W": 7}
    assert rec["domain"][0] == {"symbol": "C", "step": 16, "minimum": 16, "condition": "C a multiple of 16, C >= 16",
                                "reason": rec["domain"][0]["reason"]}
    assert "stc needs r to divide C" in rec["domain"][0]["reason"]
    flops = sp.parse_expr(rec["flops"]["sympy"])
    assert flops.free_symbols == {C, T} and sp.parse_expr(rec["flops"]["readable"]) == flops
    assert sp.parse_expr(rec["params"]["sympy"]) == C**2 * T**2 / 16 + C**2 * T / 16 + C**2 / 8
    assert sum(sp.parse_expr(v["sympy"]) for v in rec["by_category_flops"].values()) == flops
    assert rec["closed_form"]["equal"] is True
    assert {d["derived_minus_closed_form"] for d in rec["closed_form"]["differences"]} == {"0"}
    assert rec["units"]["flops"].startswith("FLOPs: a multiply-add counts 2")
    latex = run("formula", "--module", "stc", "--vary", "C,T", "--json", "--latex")
    assert latex.exit_code == 2 and latex.output.strip().startswith("error:")


def test_vary_names_the_sizes_held_fixed() -> None:
    result = run("formula", "--module", "nl", "--vary", "T,H,W", "--C", "64", "--checks", "2")
    assert result.exit_code == 0, result.output
    assert "symbols: T, H, W; sizes held fixed: B=1, C=64" in result.stdout
    assert "matmul         128*(T*H*W)**2" in result.stdout


def test_eca_holds_c_fixed_and_names_the_op() -> None:
    result = run("formula", "--module", "eca", "--checks", "2")
    assert result.exit_code == 0, result.output
    assert "sizes held fixed: C=256" in result.stdout
    assert "C held at 256: not a polynomial in C" in result.stdout and "ops: convolution" in result.stdout


USER_BLOCK = '''
import torch
from torch import nn


class GroupedGate(nn.Module):
    """A user's block: grouped 1x1x1 projection to C // 2 channels, attention over frames, gate, residual."""

    def __init__(self, channels, ratio=2):
        super().__init__()
        inner = channels // ratio
        self.proj = nn.Conv3d(channels, inner, 1)
        self.back = nn.Conv3d(inner, channels, 1, bias=False)
        self.norm = nn.GroupNorm(1, inner)

    def forward(self, x):
        y = self.norm(self.proj(x))
        b, c, t, h, w = y.shape
        frames = y.permute(0, 3, 4, 2, 1).reshape(b * h * w, t, c)  # attend over T at each position
        a = torch.softmax(frames @ frames.transpose(1, 2), dim=-1) @ frames
        y = a.reshape(b, h, w, t, c).permute(0, 4, 3, 1, 2)
        return x * torch.sigmoid(self.back(y)) + x


class Pooled(nn.Module):
    """A user's block pooled to a fixed 7 x 7 grid: no polynomial in H or W."""

    def __init__(self, channels):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool3d((None, 7, 7))
        self.fc = nn.Linear(channels, channels)

    def forward(self, x):
        return self.fc(self.pool(x).mean(dim=(2, 3, 4)))


class Sparse(nn.Module):
    """Sums the positive values only: its work depends on the data."""

    def __init__(self, channels):
        super().__init__()

    def forward(self, x):
        return x[x > 0].sum()


class Distances(nn.Module):
    """Distances between frame descriptors: cdist is an op the counter does not know."""

    def __init__(self, channels):
        super().__init__()

    def forward(self, x):
        f = x.mean(dim=(3, 4)).transpose(1, 2)
        return torch.cdist(f, f)
'''


def test_a_block_from_a_file_gets_a_formula_that_predicts_its_counts(tmp_path) -> None:
    path = tmp_path / "my_blocks.py"
    path.write_text(textwrap.dedent(USER_BLOCK))
    ref = f"{path}:GroupedGate"
    report = api.formula(ref, checks=4, seed=5)
    f = report.formula
    assert report.comparison is None and report.papers == []  # nothing declared: the formula is all there is
    assert [(a.name, a.step) for a in f.axes] == [("B", 1), ("C", 2), ("T", 1), ("H", 1), ("W", 1)]
    assert sp.expand(f.expr(f.category("matmul")) - 2 * B * C * T**2 * H * W) == 0  # 2 x (T x C/2 x T) MACs x 2
    from attnbench.blocks.external import _import_file

    cls = _import_file(path).GroupedGate
    rng = random.Random(20)
    for _ in range(20):
        shape = VideoShape(*(a.value(rng.randint(a.start, a.start + 30)) for a in f.axes))
        with torch.device("meta"):
            module = cls(shape.C)
        counted = attnbench.count(module, shape.as_list())
        point = dict(zip("BCTHW", shape.as_list()))
        assert counted.flops == f.flops()(point) and counted.macs == f.macs()(point)
        assert counted.by_category_flops == {c: f.category(c)(point) for c in counted.by_category_flops}
        assert counted.params == f.params(point)
        cells, params = f.at(shape)
        assert sum(2 * v if kind == "mac" else v for (_, kind), v in cells.items()) == counted.flops
    result = run("formula", "--module", ref, "--checks", "2")
    assert result.exit_code == 0 and f"{ref}: A user's block" in result.stdout, result.output
    assert "closed form" not in result.stdout.split("checked:")[1]


def test_a_block_pooled_to_a_fixed_size_names_the_op(tmp_path) -> None:
    path = tmp_path / "my_blocks.py"
    path.write_text(textwrap.dedent(USER_BLOCK))
    f = api.formula(f"{path}:Pooled", vary=("H",), checks=2).formula
    assert f.axes == [] and [x.name for x in f.fixed] == ["B", "C", "T", "H", "W"]
    assert f.fixed[3].ops == ("_adaptive_avg_pool3d",) and "not a polynomial in H" in f.fixed[3].reason


def test_data_dependent_and_unknown_ops_are_said(tmp_path) -> None:
    path = tmp_path / "my_blocks.py"
    path.write_text(textwrap.dedent(USER_BLOCK))
    result = run("formula", "--module", f"{path}:Sparse")
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
    assert "its work depends on the data" in result.output and "nonzero" in result.output
    result = run("formula", "--module", f"{path}:Distances", "--checks", "2")
    assert result.exit_code == 0, result.output
    assert "ops the counter does not know, left out of the formula: _cdist_forward x1" in result.stdout
    assert "pooling     B*C*T*H*W" in result.stdout


@pytest.mark.parametrize("args,needle", [
    (("formula",), "give --module"),
    (("formula", "--module", "nl", "--vary", "C,X"), "--vary takes sizes among B, C, T, H, W, got 'X'"),
    (("formula", "--module", "nl", "--checks", "0"), "checks must be in 1..1000"),
    (("formula", "--module", "nope"), "unknown module 'nope'"),
])
def test_bad_input_is_one_line(args, needle) -> None:
    result = run(*args)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0]


def test_readable_output_parses_as_sympy() -> None:
    report = api.formula("w3-st", checks=2)
    f = report.formula
    for poly in [*f.categories().values(), f.flops(), f.params]:
        assert sp.parse_expr(text(poly)) == f.expr(poly)
