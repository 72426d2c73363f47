"""`attnbench reproduce`: verdict logic, row schema, BANet's R, Table VI without and with a device run, CLI errors."""

import json

import pytest
from typer.testing import CliRunner

from attnbench.cli import app
from attnbench.errors import UsageError
from attnbench.papers import reproduce as rp
from attnbench.store import jsonl

runner = CliRunner()


# --- verdict logic ------------------------------------------------------------------------------------------


def test_one_percent_boundary() -> None:
    assert rp.verdict(100.0, 101.0) == "reproduced"  # exactly +1%
    assert rp.verdict(100.0, 99.0) == "reproduced"  # exactly -1%
    assert rp.verdict(38.466, 38.466 * 1.01) == "reproduced"  # +1% of an unround value
    assert rp.verdict(100.0, 101.001) == "off"
    assert rp.verdict(100.0, 98.999) == "off"
    assert rp.verdict(13.4, 13.392857) == "reproduced"  # BANet's R: 1/16 + 2/28 = 13.39%


def test_not_determinable_and_delta() -> None:
    assert rp.verdict(23.2, None) == "not determinable"
    assert rp.verdict(None, 1.0) == "not determinable"
    assert rp.delta_pct(None, 1.0) is None and rp.delta_pct(2.0, None) is None and rp.delta_pct(0.0, 1.0) is None
    assert rp.delta_pct(50.0, 51.0) == pytest.approx(2.0)  # (51 - 50) / 50


def test_summary_counts_and_share() -> None:
    rows = [{"paper": "x", "verdict": v, "convention": "macs", "by_convention": {"macs": 1.0}}
            for v in ("reproduced", "reproduced", "off", "not determinable")]
    s = rp.summary(rows)
    assert s["rows"] == 4
    assert s["verdicts"] == {"reproduced": 2, "off": 1, "not determinable": 1}
    assert s["share_reproduced"] == 0.5  # 2 of 4
    assert s["share_reproduced_of_determinable"] == pytest.approx(2 / 3)  # 2 of the 3 with a value
    assert s["by_paper"]["x"]["convention"] == "macs"
    assert rp.summary([])["share_reproduced"] == 0.0


def test_unknown_paper_raises_usage_error() -> None:
    with pytest.raises(UsageError, match="valid choices: all, banet, eam, sta, stpa, w3"):
        rp.reproduce("nope")


def test_stpa_has_no_rows() -> None:
    assert rp.reproduce("stpa") == []


# --- BANet: R, and Table VI with and without a device run ---------------------------------------------------


def _vps_row(attn: str, vps: float) -> dict:
    return {"kind": "network", "network": "eco-lite", "attn": attn, "preset": "16f", "status": "ok", "vps": vps,
            "device_slug": "cuda-test-gpu", "settings": {"dtype": "fp32", "batch": 1},
            "fingerprint": {"gpu_name": "Test GPU", "device_type": "cuda"}}


def test_banet_r_reproduced_and_table_vi_needs_a_device(tmp_path) -> None:
    rows = rp._reproduce("banet", tmp_path)  # no results/ here
    by_key = {r["key"]: r for r in rows}
    r = by_key["banet.sec3c.R"]
    assert r["verdict"] == "reproduced" and r["paper_value"] == 13.4
    assert r["value"] == pytest.approx(100 * (1 / 16 + 1 / 28 + 1 / 28))  # Eq. 7 from the counted products
    vps = [row for row in rows if row["table"] == "Table VI"]
    assert len(vps) == 3
    for row in vps:
        assert row["verdict"] == "not determinable" and row["value"] is None
        assert row["reason"] == "not determinable: needs a device run (attnbench table-vi)"
    assert [round(row["paper_value"], 3) for row in vps] == [round(8.1 / 23.2, 3), round(19.9 / 23.2, 3), round(19.9 / 8.1, 3)]


def test_table_vi_read_from_a_device_run(tmp_path) -> None:
    path = tmp_path / "cuda-test-gpu" / "table-vi.jsonl"
    for attn, vps in (("none", 40.0), ("nl", 10.0), ("cs", 30.0)):
        jsonl.append_row(path, _vps_row(attn, vps))
    rows = [r for r in rp._reproduce("banet", tmp_path) if r["table"] == "Table VI"]
    assert [r["value"] for r in rows] == [0.25, 0.75, 3.0]  # nl/none, cs/none, cs/nl
    assert all(r["verdict"] == "off" and "Test GPU" in r["reason"] for r in rows)


# --- the command ----------------------------------------------------------------------------------------------


def test_reproduce_all_json_schema(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # no results/: Table VI rows are not determinable
    result = runner.invoke(app, ["reproduce", "--paper", "all", "--json"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    assert len(rows) >= 50
    for r in rows:
        assert set(rp.FIELDS) <= set(r), r
        assert r["verdict"] in rp.VERDICTS
        assert isinstance(r["paper_value"], (int, float))
        if r["verdict"] != "reproduced":
            assert r["reason"], r
        if r["verdict"] == "not determinable":
            assert r["value"] is None and r["delta_pct"] is None
        else:
            assert r["delta_pct"] == pytest.approx(100 * (r["value"] - r["paper_value"]) / r["paper_value"])
        assert r["best_convention"] and isinstance(r["tried"], list)
    papers = {r["paper"] for r in rows}
    assert papers == {"banet", "sta", "eam", "w3"}  # STPA prints no complexity figure
    banet_r = next(r for r in rows if r["key"] == "banet.sec3c.R")
    assert banet_r["verdict"] == "reproduced"
    # one convention per paper
    for paper in papers:
        flop_rows = [r for r in rows if r["paper"] == paper and r["by_convention"]]
        assert len({r["convention"] for r in flop_rows}) <= 1
    # EAM's Table 4 GFLOPs are fvcore's MACs, to within 0.1%
    eam = [r for r in rows if r["paper"] == "eam" and r["by_convention"]]
    assert len(eam) == 15 and all(r["convention"] == "fvcore" and abs(r["delta_pct"]) < 0.1 for r in eam)
    s = rp.summary(rows)
    assert s["verdicts"]["not determinable"] == 3


def test_reproduce_table_and_share_line(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    md = tmp_path / "rows.md"
    result = runner.invoke(app, ["reproduce", "--paper", "banet", "--md", str(md), "--csv", str(tmp_path / "rows.csv")])
    assert result.exit_code == 0, result.output
    last = [line for line in result.stdout.splitlines() if line.strip()][-1]
    assert last.startswith("reproduced within 1%: 1 of 4 rows (25.0%)"), last
    assert md.exists() and "13.4" in md.read_text() and (tmp_path / "rows.csv").exists()


def test_bad_paper_is_one_line_exit_2() -> None:
    result = runner.invoke(app, ["reproduce", "--paper", "nope"])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "unknown paper 'nope'" in lines[0] and "valid choices: all, banet, eam, sta, stpa, w3" in lines[0]
    assert "Traceback" not in result.output
