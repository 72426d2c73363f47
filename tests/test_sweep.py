"""Scaling sweeps: exponents on synthetic data, closed-form rows for nl/cs, skipped shapes, resume,
Ctrl-C, the largest-size search and the `attnbench sweep` command (all on CPU, no timing)."""

import json
import math
from fractions import Fraction

import pytest
from typer.testing import CliRunner

from attnbench import api
from attnbench import sweep as sw
from attnbench.store import jsonl


def fake_measure(calls: list, interrupt_at: int | None = None):
    """A stand-in for bench.measure_target: latency = FLOPs / 1e9 ms, no real timing."""

    def measure(case, settings, fingerprint):
        calls.append(case.shape)
        if interrupt_at is not None and len(calls) == interrupt_at:
            raise KeyboardInterrupt
        flops = case.spec.cost(case.shape, **case.options).flops
        return {"status": "ok", "timing": {"median_ms": flops / 1e9, "n": 3}, "memory": {"peak_allocated_bytes": 1024}}

    return measure


# -- growth exponents --------------------------------------------------------------------------------


def test_exponent_of_a_power_law_is_its_power() -> None:
    ts = [4, 8, 16, 32, 64]
    fit = sw.exponent(ts, [3 * t**2 for t in ts])
    assert fit["exponent"] == pytest.approx(2.0, abs=1e-12) and fit["r2"] == pytest.approx(1.0)
    assert fit["intercept"] == pytest.approx(math.log(3))
    assert sw.exponent(ts, [5 * t**1.5 for t in ts])["exponent"] == pytest.approx(1.5, abs=1e-12)
    assert sw.exponent(ts, [7.0] * 5)["exponent"] == 0.0
    assert sw.exponent([8], [1.0]) is None and sw.exponent([8, 8], [1.0, 2.0]) is None


def test_fit_exponents_per_block_axis_and_metric() -> None:
    rows = [{"module": "x", "axis": "T", "value": t, "status": "ok", "flops": 3 * t**2, "latency_ms": 0.5 * t,
             "input_shape": [1, 8, t, 4, 4]} for t in (2, 4, 8, 16)]
    # ran out of memory: its closed-form FLOPs still count, its (absent) latency does not
    rows.append({"module": "x", "axis": "T", "value": 32, "status": "OOM", "flops": 3 * 32**2, "latency_ms": None,
                 "input_shape": [1, 8, 32, 4, 4]})
    rows.append({"module": "x", "axis": "T", "value": 64, "status": "skipped", "input_shape": None})  # rejected
    fits = {(e["metric"]): e for e in sw.fit_exponents(rows)}
    assert fits["flops"]["exponent"] == pytest.approx(2.0) and fits["flops"]["points"] == 5
    assert fits["latency_ms"]["exponent"] == pytest.approx(1.0) and fits["latency_ms"]["to"] == 16
    assert fits["flops"]["last_segment_exponent"] == pytest.approx(2.0) and fits["flops"]["to"] == 32


# -- closed-form rows --------------------------------------------------------------------------------


def test_analytic_rows_for_nl_and_cs() -> None:
    result = sw.run_sweep(sw.plan(["nl", "cs"], {"T": [4, 8, 16], "HW": [14, 28]}))
    assert len(result.rows) == 10 and all(r["status"] == "ok" for r in result.rows)
    by = {(r["module"], r["axis"], r["value"]): r for r in result.rows}
    for (module, axis, value), r in by.items():
        case = api.resolve(module, None, sw.sizes_for(axis, value))
        assert r["input_shape"] == case.shape.as_list()
        assert r["flops"] == case.spec.cost(case.shape).flops and r["params"] == case.spec.params(case.shape)
        assert r["key"].endswith(":analytic") and "latency_ms" not in r
    # the other sizes stay at the BANet preset (C=96, T=16, 28x28)
    assert by[("nl", "T", 4)]["input_shape"] == [1, 96, 4, 28, 28]
    assert by[("cs", "HW", 14)]["input_shape"] == [1, 96, 16, 14, 14]
    # NL's attention map is (THW)^2 floats; BANet's R = 1/T + 1/H + 1/W exactly
    assert by[("nl", "T", 8)]["predicted_largest_intermediate"]["bytes"] == 4 * (8 * 28 * 28) ** 2
    assert Fraction(by[("cs", "T", 8)]["ratio_exact"]) == Fraction(1, 8) + Fraction(2, 28)
    exps = {(e["module"], e["axis"], e["metric"]): e for e in sw.fit_exponents(result.rows, ("flops", "largest_bytes"))}
    assert exps[("nl", "T", "largest_bytes")]["exponent"] == pytest.approx(2.0)
    assert exps[("nl", "HW", "largest_bytes")]["exponent"] == pytest.approx(4.0)
    assert 1.9 < exps[("nl", "T", "flops")]["exponent"] < 2.0 < exps[("nl", "HW", "flops")]["exponent"] < 4.0
    assert exps[("cs", "T", "flops")]["exponent"] < exps[("nl", "T", "flops")]["exponent"]


def test_crossover_of_nl_and_cs_over_t() -> None:
    rows = sw.run_sweep(sw.plan(["nl", "cs"], {"T": [1, 2, 4, 8, 16]})).rows
    (c,) = sw.crossovers(rows)
    flops = {(r["module"], r["value"]): r["flops"] for r in rows}
    ratio = [flops[("nl", t)] / flops[("cs", t)] for t in c["values"]]
    assert c["flop_ratio"] == pytest.approx(ratio)
    below = next(t for t, x in zip(c["values"], ratio) if x > 1)
    assert c["fast_below_slow_from"] == below and all(x > 1 for t, x in zip(c["values"], ratio) if t >= below)
    twice = [t for t, x in zip(c["values"], ratio) if x >= 2]
    assert c["factor_2_from"] == twice[0]
    # R = 1/T + 2/28: above 1 at T=1 only, so the correlation FLOPs cross there and nowhere else
    assert c["affinity_ratio_R"][0] > 1 and all(r < 1 for r in c["affinity_ratio_R"][1:])
    scan = c["analytic_scan"]
    assert scan["affinity_ratio_at_least_1_at"] == [1]
    assert scan["fast_below_slow_from"] == c["fast_below_slow_from"] and scan["factor_2_from"] == c["factor_2_from"]
    assert "T" in c["text"] and "2x" in c["text"]


# -- skipped shapes ----------------------------------------------------------------------------------


def test_rejected_shapes_are_skipped_rows_with_the_reason() -> None:
    rows = sw.run_sweep(sw.plan(["fa"], {"HW": [28, 224], "C": [64]})).rows
    by = {(r["axis"], r["value"]): r for r in rows}
    assert by[("HW", 28)]["status"] == "skipped" and "56" in by[("HW", 28)]["reason"]
    assert by[("C", 64)]["status"] == "skipped" and "C must be 3" in by[("C", 64)]["reason"]
    assert by[("HW", 224)]["status"] == "ok" and by[("HW", 224)]["flops"] > 0
    assert sw.fit_exponents(rows) == []  # one ok size per axis: nothing to fit


def test_cpu_points_too_big_for_memory_or_time_are_not_run(monkeypatch) -> None:
    calls: list = []
    monkeypatch.setattr(sw, "available_cpu_bytes", lambda: 64 * 2**20)
    rows = sw.run_sweep(sw.plan(["nl"], {"T": [1, 16]}), device="cpu", measure=fake_measure(calls)).rows
    assert [r["status"] for r in rows] == ["ok", "skipped"]
    assert "not run on CPU" in rows[1]["reason"] and len(calls) == 1
    assert rows[0]["latency_ms"] > 0 and rows[0]["peak_bytes"] == 1024
    monkeypatch.setattr(sw, "available_cpu_bytes", lambda: 2**40)
    rows = sw.run_sweep(sw.plan(["nl"], {"T": [1, 16]}), device="cpu", measure=fake_measure(calls), max_flops=10**9).rows
    assert [r["status"] for r in rows] == ["ok", "skipped"] and "not timed" in rows[1]["reason"] and len(calls) == 2


# -- resume and Ctrl-C ---------------------------------------------------------------------------------


def test_resume_runs_only_missing_rows_and_each_row_appears_once(tmp_path) -> None:
    path = str(tmp_path / "sweep.jsonl")
    points = sw.plan(["nl", "cs"], {"T": [4, 8, 16]})
    first_calls: list = []
    sw.run_sweep(points[:2], device="cpu", out_path=path, measure=fake_measure(first_calls))
    with open(path, "a") as fh:
        fh.write('{"key": "torn')  # a run killed mid-write
    calls: list = []
    result = sw.run_sweep(points, device="cpu", out_path=path, resume=True, measure=fake_measure(calls))
    assert len(first_calls) == 2 and len(calls) == len(points) - 2
    assert (result.reused, result.new) == (2, len(points) - 2)
    keys = [r["key"] for r in jsonl.read_rows(path)]
    assert sorted(keys) == sorted(r["key"] for r in result.rows) and len(set(keys)) == len(keys) == len(points)
    assert all(":cpu:fp32:threads=" in k and ":reps=5:target_s=0.5" in k for k in keys)
    again: list = []
    assert len(sw.run_sweep(points, device="cpu", out_path=path, resume=True, measure=fake_measure(again)).rows) == len(points)
    assert again == []


def test_keyboard_interrupt_keeps_finished_rows(tmp_path) -> None:
    path = str(tmp_path / "sweep.jsonl")
    points = sw.plan(["nl"], {"T": [2, 4, 8, 16]})
    result = sw.run_sweep(points, device="cpu", out_path=path, measure=fake_measure([], interrupt_at=3))
    assert result.interrupted and len(result.rows) == 2 and result.remaining == 2
    assert [r["value"] for r in jsonl.read_rows(path)] == [2, 4]
    assert result.summary_line().startswith("interrupted: kept 2 sweep rows") and "2 not run" in result.summary_line()


# -- the largest size that fits ----------------------------------------------------------------------


def probe_fitting_up_to(largest: int, seen: list):
    def probe(case):
        seen.append(case.shape.T)
        return ("ok", case.shape.T * 100) if case.shape.T <= largest else ("OOM", None)

    return probe


@pytest.mark.parametrize("largest,start", [(37, None), (5, 16), (16, 16), (1, 4)])
def test_max_fit_doubles_then_bisects(largest, start) -> None:
    seen: list = []
    r = sw.max_fit("nl", "T", probe=probe_fitting_up_to(largest, seen), start=start, limit=4096)
    assert r["largest_fit"] == largest and r["smallest_failing"] == largest + 1 and r["failure"] == "OOM"
    assert len(seen) == len(set(seen)) <= 2 + 2 * math.ceil(math.log2(4096))
    assert seen[0] == (start or 16)  # the preset's T (BANet: 16) by default


def test_max_fit_stops_at_the_limit_and_when_nothing_fits() -> None:
    r = sw.max_fit("cs", "T", probe=probe_fitting_up_to(10**9, []), limit=100)
    assert r["reached_limit"] and r["largest_fit"] == 100 and r["smallest_failing"] is None
    none = sw.max_fit("cs", "T", probe=probe_fitting_up_to(0, []), limit=100)
    assert none["largest_fit"] is None and "does not run" in sw.max_fit_text(none)


def test_real_measurement_and_probe_on_cpu(tmp_path) -> None:
    """The default measure (bench.measure_target) and the device probe, for real, on a cheap block (SE)."""
    rows = sw.run_sweep(sw.plan(["se"], {"T": [1, 2]}), device="cpu", min_reps=2, target_s=0.01,
                        out_path=str(tmp_path / "s.jsonl")).rows
    assert [r["status"] for r in rows] == ["ok", "ok"] and all(r["latency_ms"] > 0 for r in rows)
    assert all(":cpu:fp32:threads=" in r["key"] and ":reps=2:" in r["key"] and r["settings"]["min_reps"] == 2 for r in rows)
    r = sw.max_fit("se", "T", probe=sw.device_probe("cpu"), start=1, limit=2)
    assert r["largest_fit"] == 2 and r["reached_limit"] and [q["status"] for q in r["probes"]] == ["ok", "ok"]


# -- the command -----------------------------------------------------------------------------------


def cli(*args: str):
    from attnbench.cli import app

    return CliRunner().invoke(app, list(args))


def test_sweep_command_json_csv_md(tmp_path) -> None:
    out = tmp_path / "s.jsonl"
    result = cli("sweep", "--modules", "nl,cs", "--T", "4,8,16", "--HW", "14,28", "--json", "--out", str(out),
                 "--csv", str(tmp_path / "s.csv"), "--md", str(tmp_path / "s.md"))
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert len(doc["rows"]) == 10 and {c["axis"] for c in doc["crossovers"]} == {"T", "HW"}
    assert {(e["module"], e["axis"]) for e in doc["exponents"] if e["metric"] == "flops"} == {
        ("nl", "T"), ("nl", "HW"), ("cs", "T"), ("cs", "HW")}
    assert len(list(jsonl.read_rows(out))) == 10
    assert "FLOPs" in (tmp_path / "s.csv").read_text() and "Growth exponents" in (tmp_path / "s.md").read_text()
    human = cli("sweep", "--modules", "nl,cs", "--T", "4,8", "--out", str(out), "--resume")
    assert human.exit_code == 0 and "kept 4 sweep rows" in human.output and "0 new" in human.output


def test_sweep_command_ctrl_c_prints_what_was_kept(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(sw, "bench_measure", fake_measure([], interrupt_at=2))
    out = tmp_path / "s.jsonl"
    result = cli("sweep", "--modules", "cs", "--T", "2,4,8", "--device", "cpu", "--out", str(out))
    assert result.exit_code == 130
    assert "interrupted: kept 1 sweep rows" in result.output and len(list(jsonl.read_rows(out))) == 1


@pytest.mark.parametrize("args,needle", [
    (("--modules", "nope"), "valid choices"),
    (("--modules", ","), "comma list of blocks"),
    (("--T", "4,x"), "comma list"),
    (("--HW", "0"), ">= 1"),
    (("--max-fit",), "--max-fit needs --device cuda"),
    (("--max-fit-axis", "Q"), "--max-fit-axis"),
    (("--preset", "nope"), "valid choices"),
])
def test_sweep_command_bad_input_is_one_line(args, needle, tmp_path) -> None:
    result = cli("sweep", *args, "--out", str(tmp_path / "s.jsonl"))
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0], result.output
