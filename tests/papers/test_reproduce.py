"""`attnbench reproduce`: the verdict rules, every paper's rows judged honestly, speed rows, CLI errors."""

import json

import pytest
from typer.testing import CliRunner

from attnbench.cli import app
from attnbench.errors import UsageError
from attnbench.papers import judge
from attnbench.papers import reproduce as rp
from attnbench.store import jsonl

runner = CliRunner()


@pytest.fixture(scope="module")
def rows(tmp_path_factory) -> list[dict]:
    """Every paper's rows, counted once for the module (no results folder: speeds are not determinable)."""
    return rp._reproduce("all", tmp_path_factory.mktemp("no-results"))


@pytest.fixture(scope="module")
def by_key(rows) -> dict[str, dict]:
    return {r["key"]: r for r in rows}


# --- the rules ----------------------------------------------------------------------------------------------


def test_one_percent_boundary() -> None:
    assert rp.verdict(100.0, 101.0) == "reproduced"  # exactly +1%
    assert rp.verdict(100.0, 99.0) == "reproduced"  # exactly -1%
    assert rp.verdict(38.466, 38.466 * 1.01) == "reproduced"  # +1% of an unround value
    assert rp.verdict(100.0, 101.001) == "off"
    assert rp.verdict(100.0, 98.999) == "off"
    assert rp.verdict(13.4, 13.392857) == "reproduced"  # BANet's R: 1/16 + 2/28 = 13.39%
    assert rp.verdict(23.2, None) == "not-determinable" and rp.verdict(None, 1.0) == "not-determinable"
    assert rp.delta_pct(None, 1.0) is None and rp.delta_pct(2.0, None) is None and rp.delta_pct(0.0, 1.0) is None
    assert rp.delta_pct(50.0, 51.0) == pytest.approx(2.0)


def test_increment_within_one_printed_unit_or_one_percent() -> None:
    assert judge.increment_holds(0.004, 0.003, 3) and judge.increment_holds(0.004, 0.005, 3)  # +/- 0.001
    assert not judge.increment_holds(0.004, 0.0, 3)  # a zero-cost attention
    assert not judge.increment_holds(0.004, 0.0051, 3)
    assert judge.increment_holds(50.0, 50.5, 1) and not judge.increment_holds(50.0, 50.6, 1)  # 1% of 50 > 0.1


def test_printed_precision_cut_and_rounded() -> None:
    assert judge.cut(46.9998, 2, "truncate") == 46.99 and judge.cut(46.9998, 2, "round") == 47.0
    assert judge.cut(47.6257, 2, "truncate") == 47.62 and judge.cut(47.6257, 2, "round") == 47.63
    assert judge.at_printed(46.99, 46.9998, 2, "truncate") and not judge.at_printed(46.99, 46.9998, 2, "round")
    assert judge.at_printed(33, 32.7, 0, "round") and judge.at_printed(65.0, 65.04, 1, "round")
    assert judge.at_printed(1.0, None, 0, "round") is None


def _spec(**kw) -> judge.Spec:
    base = dict(paper="x", table="T", item="i", paper_value=10.106, paper_unit="G", key="x.k",
                compute=lambda conv, ch: 10.1025, unit=lambda c, ch: "G", kind="fixed", decimals=3)
    return judge.Spec(**{**base, **kw})


def test_a_zero_cost_attention_row_is_off() -> None:
    # EAM Table 4's shape: base 10.102, + attention 10.106; ours: the base network with nothing added
    spec = _spec(basis="increment", paper_base=10.102, base=lambda conv, ch: 10.1025, rounding="truncate")
    (row,) = judge.evaluate([spec])
    assert abs(row["delta_pct"]) < 0.1  # the total alone would pass any 1% test
    assert row["verdict"] == "off"
    assert row["paper_increment"] == pytest.approx(0.004) and row["increment"] == pytest.approx(0.0)
    assert "increment: ours" in row["reason"]


def test_a_figure_that_needs_another_configuration_is_never_plain_reproduced() -> None:
    values = {"default": 2.0, "other": 2.1, "far": 9.0}
    spec = _spec(paper_value=2.1, compute=lambda conv, ch: values[ch], family="f", choices=("default", "far", "other"))
    (row,) = judge.evaluate([spec])
    assert row["verdict"] == "reproduced-with" and row["configuration"] == "other"
    assert row["default_configuration"] == "default" and "attnbench's configuration (default) gives 2" in row["reason"]
    s = judge.summary([row])
    assert s["verdicts"]["reproduced"] == 0 and s["share_reproduced"] == 0.0


def test_summary_counts_parameter_flop_and_size_figures_only() -> None:
    mk = lambda v, q: {"paper": "x", "key": f"x.{v}.{q}", "verdict": v, "quantity": q, "convention": "macs",  # noqa: E731
                       "by_convention": {"macs": 1.0}}
    s = judge.summary([mk("reproduced", "flops"), mk("reproduced", "params"), mk("off", "size"),
                       mk("indicative", "speed"), mk("reproduced", "layers"), mk("not-determinable", "speed")])
    assert s["counted_rows"] == 3 and s["share_reproduced"] == pytest.approx(2 / 3)
    assert s["verdicts"] == {"reproduced": 3, "reproduced-with": 0, "indicative": 1, "off": 1, "not-determinable": 1}
    assert judge.summary([])["share_reproduced"] == 0.0


# --- the papers' rows ---------------------------------------------------------------------------------------


def test_every_row_has_verdict_basis_precision_and_convention(rows) -> None:
    assert {r["paper"] for r in rows} == {"banet", "sta", "eam", "w3"}  # STPA prints no complexity figure
    for r in rows:
        assert set(rp.FIELDS) <= set(r), r
        assert r["verdict"] in judge.VERDICTS and r["basis"] in judge.BASES
        assert isinstance(r["printed_decimals"], int) and r["rounding"] in ("round", "truncate") and r["convention"]
        if r["verdict"] != "reproduced":
            assert r["reason"], r
        if r["verdict"] == "not-determinable":
            assert r["value"] is None and r["delta_pct"] is None
        else:
            assert r["delta_pct"] == pytest.approx(100 * (r["value"] - r["paper_value"]) / r["paper_value"])
    for paper in {r["paper"] for r in rows}:  # one convention per paper
        assert len({r["convention"] for r in rows if r["paper"] == paper and r["by_convention"]}) <= 1


def test_eam_attention_rows_are_judged_on_their_increment(rows) -> None:
    eam = [r for r in rows if r["paper"] == "eam"]
    assert len(eam) == 30
    attention = [r for r in eam if not r["key"].endswith((".none.params", ".none.gflops"))]
    assert len(attention) == 24 and all(r["basis"] == "increment" for r in attention)
    flops = [r for r in eam if r["by_convention"]]
    assert {r["convention"] for r in flops} == {"fvcore+means"} and all(r["rounding"] == "truncate" for r in eam)
    # under plain fvcore (means uncounted) EAM's increment is ~0 and its rows would fail: the reading matters
    by_key = {r["key"]: r for r in eam}
    for r in (r for r in flops if ".eam." in r["key"]):
        assert r["verdict"] == "reproduced"
        base = by_key[r["key"].replace(".eam.", ".none.")]
        fv_increment = r["by_convention"]["fvcore"] - base["by_convention"]["fvcore"]  # in G
        assert abs(fv_increment) < 1e-4 < abs(r["paper_increment"])
    # the printed parameter counts are cut, not rounded: every one exact when cut
    ev = judge.rounding_evidence(eam)
    assert ev["rows"] == 15 and ev["truncate"] == 15 and ev["round"] < 15


def test_w3_rows_need_another_configuration_or_are_off(by_key) -> None:
    for key in ("w3.t6.w3", "w3.t1.w3-16f", "w3.text.extra-16f"):
        r = by_key[key]
        assert r["verdict"] == "reproduced-with" and "full temporal convs" in r["configuration"], r
        assert r["default_configuration"] == "ratio=16, depthwise temporal convs"
    for key in ("w3.text.extra-8f", "w3.text.extra-pct-8f"):
        assert by_key[key]["verdict"] == "off" and "inconsistent in the paper" in by_key[key]["reason"]
    nl = by_key["w3.t6.nl"]
    assert nl["verdict"] == "off" and "3 res4 blocks with full keys" in nl["reason"]
    assert "CBAM's own paper" in by_key["w3.t6.cbam"]["reason"]


def test_sta_table_iv_terms_and_the_chosen_r(by_key) -> None:
    fc, small = by_key["sta.t4.stc.mults.fc"], by_key["sta.t4.stc.mults.small"]
    assert fc["value"] == fc["paper_value"] == 1024**2 * (8**2 + 8 + 2) / 16
    assert small["value"] == small["paper_value"] == 1024 * (8 + 3)
    for r in (fc, small, by_key["sta.t4.stc.params"]):
        assert r["verdict"] == "reproduced" and r["evaluated_at"].startswith("r=16, chosen by attnbench")
        assert all(t["holds"] for t in r["tried"])  # the formula holds at every r tried, not only at ours


# --- speeds -------------------------------------------------------------------------------------------------


def _vps_row(network: str, preset: str, attn: str, vps: float) -> dict:
    return {"kind": "network", "network": network, "attn": attn, "preset": preset, "status": "ok", "vps": vps,
            "device_slug": "cuda-test-gpu", "settings": {"dtype": "bf16", "batch": 1},
            "fingerprint": {"gpu_name": "Test GPU", "device_type": "cuda"}}


def test_speed_rows_are_indicative_or_not_determinable(tmp_path) -> None:
    rows = {r["key"]: r for r in rp._reproduce("banet", tmp_path)}  # no results: nothing measured
    speed = [r for r in rows.values() if r["quantity"] == "speed"]
    assert len(speed) == 10 and all(r["verdict"] == "not-determinable" for r in speed)
    assert rows["banet.sec3c.R"]["verdict"] == "reproduced"
    path = tmp_path / "cuda-test-gpu" / "table-vi.jsonl"
    for attn, vps in (("none", 40.0), ("nl", 10.0), ("cs", 30.0)):
        jsonl.append_row(path, _vps_row("eco", "16f", attn, vps))
    jsonl.append_row(path, _vps_row("eco-lite", "16f", "none", 50.0))
    rows = {r["key"]: r for r in rp._reproduce("banet", tmp_path)}
    vi = [rows[f"banet.t6.vps.{k}"] for k in ("nl-over-none", "cs-over-none", "cs-over-nl")]
    assert [r["value"] for r in vi] == [0.25, 0.75, 3.0]
    assert rows["banet.t3.vps.eco-16f-over-eco-lite-16f"]["value"] == 0.8
    for r in vi + [rows["banet.t3.vps.eco-16f-over-eco-lite-16f"]]:
        assert r["verdict"] == "indicative" and "GTX 1080 Ti" in r["reason"] and "Test GPU, bf16" in r["reason"]
    assert rows["banet.t3.vps.banet-lite-4f-over-eco-lite-16f"]["verdict"] == "not-determinable"
    assert judge.summary(list(rows.values()))["counted_rows"] == 1  # only R counts toward the share


def test_a_reports_own_rows_come_first_wherever_it_writes(tmp_path) -> None:
    """A report writing outside results/ (``--out``) judges the speed figures by the rows it just measured,
    not by an older run under results/ (a GPU report once cited the committed CPU rows)."""
    results, own = tmp_path / "results", tmp_path / "elsewhere" / "cuda"
    for attn, vps in (("none", 40.0), ("nl", 10.0), ("cs", 30.0)):  # an older CUDA run under results/
        jsonl.append_row(results / "cuda-test-gpu" / "table-vi.jsonl", _vps_row("eco", "16f", attn, vps))
    for attn, vps in (("none", 40.0), ("nl", 20.0), ("cs", 30.0)):  # the report's own, on another CPU
        row = {**_vps_row("eco", "16f", attn, vps), "device_slug": "cpu-own", "fingerprint": {"cpu_model": "Own CPU"}}
        jsonl.append_row(own / "table-vi.jsonl", row)
    older = {r["key"]: r for r in rp._reproduce("banet", results)}["banet.t6.vps.nl-over-none"]
    assert older["value"] == 0.25 and "Test GPU" in older["reason"]  # CUDA preferred among runs under results/
    mine = {r["key"]: r for r in rp._reproduce("banet", results, prefer=own)}["banet.t6.vps.nl-over-none"]
    assert mine["value"] == 0.5 and "Own CPU, bf16, batch 1" in mine["reason"] and "Test GPU" not in mine["reason"]
    inside = {r["key"]: r for r in rp._reproduce("banet", results, prefer=results / "cuda-test-gpu")}
    assert inside["banet.t6.vps.nl-over-none"]["value"] == 0.25  # a folder under results/ is read once


# --- the command ----------------------------------------------------------------------------------------------


def test_reproduce_json_and_share_line(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["reproduce", "--paper", "banet", "--json"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) == 11 and all(r["kind"] == "paper-figure" for r in lines)
    md = tmp_path / "rows.md"
    result = runner.invoke(app, ["reproduce", "--paper", "banet", "--md", str(md), "--csv", str(tmp_path / "rows.csv")])
    assert result.exit_code == 0, result.output
    last = [line for line in result.stdout.splitlines() if line.strip()][-1]
    assert last.startswith("reproduced: 1 of 1 parameter, FLOP and size figures (100.0%); of all 11 rows:"), last
    assert md.exists() and "13.4" in md.read_text() and (tmp_path / "rows.csv").exists()


def test_unknown_paper() -> None:
    with pytest.raises(UsageError, match="valid choices: all, banet, eam, sta, stpa, w3"):
        rp.reproduce("nope")
    assert rp.reproduce("stpa") == []
    result = runner.invoke(app, ["reproduce", "--paper", "nope"])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "unknown paper 'nope'" in lines[0] and "valid choices: all, banet, eam, sta, stpa, w3" in lines[0]
    assert "Traceback" not in result.output
