"""`attnbench report`: the folder it writes, failing sections recorded, resume, the reproduce section with
and without attnbench.papers.reproduce, and the timing sections (speed within a budget, the roofline) on fake
measurements (a virtual clock: the budget is checked exactly, and no test times a real block)."""

import json
import re
import sys
import types
from dataclasses import asdict
from pathlib import Path

import pytest
from typer.testing import CliRunner

from attnbench.report import job, plots


SEEN: dict = {}  # what the report passed to the fake reproduce


def fake_reproduce() -> types.ModuleType:
    """A stand-in for attnbench.papers.reproduce (tested on its own), so these tests stay fast."""
    fake = types.ModuleType("attnbench.papers.reproduce")
    row = {"paper": "banet", "table": "Eq. 7", "item": "R", "paper_value": 13.4, "value": 13.39, "unit": "%",
           "convention": "ratio", "delta_pct": -0.07, "verdict": "reproduced", "reason": "", "key": "banet.r",
           "quantity": "flops"}
    off = {**row, "item": "F_CS", "paper_value": 2.0, "value": 2.5, "delta_pct": 25.0, "verdict": "off", "reason": "convention",
           "key": "banet.f"}
    def reproduce(paper: str = "all", prefer=None) -> list[dict]:
        SEEN["prefer"] = prefer  # the report passes its own folder: its measured rows come first
        return [row, off]

    fake.reproduce = reproduce
    from attnbench.papers.judge import summary

    fake.summary = summary
    return fake


def use_fake_reproduce(mp: pytest.MonkeyPatch) -> None:
    import attnbench.papers as papers

    fake = fake_reproduce()
    mp.setitem(sys.modules, "attnbench.papers.reproduce", fake)
    mp.setattr(papers, "reproduce", fake, raising=False)


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory):
    from attnbench.cli import app

    out = tmp_path_factory.mktemp("report")
    with pytest.MonkeyPatch.context() as mp:
        use_fake_reproduce(mp)
        result = CliRunner().invoke(app, ["report", "--quick", "--out", str(out)])
    return out, result


def test_quick_report_writes_index_tables_and_plots(quick_report) -> None:
    out, result = quick_report
    assert result.exit_code == 0, result.output
    index = (out / "README.md").read_text()
    for stem in ("list", "flops", "network-flops", "sweep"):
        for ext in ("md", "csv", "json"):
            assert (out / f"{stem}.{ext}").stat().st_size > 0, f"{stem}.{ext}"
        assert f"[{stem}.md]({stem}.md)" in index
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs and all(plots.is_png(out / p) for p in pngs)
    assert all((out / p).with_suffix(".svg").stat().st_size > 0 for p in pngs)  # every PNG has its SVG
    assert f"![{pngs[0]}]({pngs[0]}) ([SVG]({pngs[0][:-4]}.svg))" in index
    for target in re.findall(r"\]\(([^)]+)\)", index):  # every link is relative and resolves in the folder
        assert not target.startswith("/") and (out / target).exists(), target
    assert "| speed | not run |" in index and "| roofline | not run |" in index  # --quick on a CPU times nothing
    assert "| reproduce | ok |" in index and "reproduced: 1 of 2 parameter, FLOP and size figures (50.0%)" in index
    assert Path(SEEN["prefer"]) == out  # the speed figures are judged by this report's own rows first
    sweep = json.loads((out / "sweep.json").read_text())
    assert {e["module"] for e in sweep["exponents"]} == {"nl", "cs"} and sweep["crossovers"]
    assert any("exponent" in line for line in sweep["summary"])
    assert not list(out.glob(".*.tmp"))  # atomic writes leave no temporary files


def test_failing_section_is_recorded_and_the_job_goes_on(tmp_path, monkeypatch) -> None:
    def boom(ctx):
        raise RuntimeError("simulated failure\nsecond line not shown")

    monkeypatch.setitem(job.RUNNERS, "flops", boom)
    r = job.run_report(job.ReportOptions(mode="quick"), tmp_path, sections=("list", "flops", "sweep"))
    status = {s.name: s for s in r.sections}
    assert status["flops"].status == "failed" and status["flops"].error == "RuntimeError: simulated failure"
    assert status["list"].status == "ok" and status["sweep"].status == "ok"
    index = (tmp_path / "README.md").read_text()
    assert "| flops | failed: RuntimeError: simulated failure |" in index and "second line" not in index
    assert (tmp_path / "sweep.md").exists() and not (tmp_path / "flops.md").exists()


def test_resume_skips_sections_whose_files_exist(tmp_path, monkeypatch) -> None:
    job.run_report(job.ReportOptions(mode="quick"), tmp_path, sections=("list", "sweep"))
    summary = json.loads((tmp_path / "sweep.json").read_text())["summary"]

    def must_not_run(ctx, **_):
        raise AssertionError("ran again")

    monkeypatch.setitem(job.RUNNERS, "list", must_not_run)
    monkeypatch.setitem(job.RUNNERS, "sweep", must_not_run)
    r = job.run_report(job.ReportOptions(mode="quick", resume=True), tmp_path, sections=("list", "sweep"))
    assert [s.status for s in r.sections] == ["kept", "kept"]
    assert r.sections[1].summary == summary and {"sweep-flops-T.png", "sweep-flops-T.svg"} <= set(r.sections[1].files)
    assert "| sweep | kept |" in (tmp_path / "README.md").read_text()


def test_reproduce_section_with_and_without_the_module(tmp_path, monkeypatch) -> None:
    import attnbench.papers as papers

    monkeypatch.delattr(papers, "reproduce", raising=False)
    monkeypatch.setitem(sys.modules, "attnbench.papers.reproduce", None)  # importing it raises ImportError
    r = job.run_report(job.ReportOptions(mode="quick"), tmp_path / "a", sections=("reproduce",))
    assert r.sections[0].status == "unavailable" and "not importable" in r.sections[0].summary[0]
    assert "not importable" in (tmp_path / "a" / "README.md").read_text()

    use_fake_reproduce(monkeypatch)
    r = job.run_report(job.ReportOptions(mode="quick"), tmp_path / "b", sections=("reproduce",))
    summary = r.sections[0].summary
    assert r.sections[0].status == "ok" and "reproduced: 1 of 2 parameter, FLOP and size figures (50.0%)" in summary
    assert "banet: reproduced 1 of 2; convention -" in summary
    assert any(line.startswith("off: banet Eq. 7 F_CS: paper 2, ours 2.5 % (+25.00%)") for line in summary)
    assert "13.39" in (tmp_path / "b" / "reproduce.csv").read_text()
    assert (tmp_path / "b" / "reproduce.md").read_text().count("| banet ") == 2


def test_report_rejects_quick_and_full_together(tmp_path) -> None:
    from attnbench.cli import app

    result = CliRunner().invoke(app, ["report", "--quick", "--full", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "not both" in result.output


# -- the timing sections, on fake measurements ---------------------------------------------------------

FAKE_ROOF = {"matmul": {"n": 1024, "dtype": "fp32", "flops": 2 * 1024**3, "median_ms": 20.0, "n_samples": 5,
                        "flops_per_s": 1e11, "tflops_per_s": 0.1},
             "matmul_tf32": None,
             "copy": {"bytes": 128 * 2**20, "bytes_moved": 256 * 2**20, "median_ms": 12.5, "n_samples": 5,
                      "bytes_per_s": 2e10, "gib_per_s": 18.6},
             "units": {}}


def call_seconds(t) -> float:
    """A fake machine: NL naive is slow (10 s a call at the BANet preset, scaling with FLOPs), every other
    block takes its FLOPs at 20 GFLOP/s."""
    flops = t.flops()[0]
    return flops / 31.5e9 * 10.0 if (t.name, t.options.get("impl")) == ("nl", "naive") else flops / 20e9


def fake_timing(monkeypatch, clock: list[float]) -> None:
    """Fake calibration, probe and measurement: each measurement advances ``clock`` by what the budget
    predicts for it (unscaled), and its row says one call takes ``call_seconds``."""
    from attnbench import bench
    from attnbench.measuring import budget as bud
    from attnbench.measuring import roofline as rl

    monkeypatch.setattr(rl, "measure_roofline", lambda *a, **k: FAKE_ROOF)
    monkeypatch.setattr(bud, "busy_cores", lambda interval_s=0.5: 0.0)

    def probe(p) -> float:  # one call of the target, on the virtual clock
        clock[0] += call_seconds(p.target)
        return call_seconds(p.target)

    def measure_target(t, s, fp, *, roofline=None, tensor_peak=True, clock_name="wall"):
        call = call_seconds(t)
        clock[0] += bud.predicted_measurement_s(call, min_reps=s.min_reps, target_s=s.target_s,
                                                max_warmup_s=s.max_warmup_s, device_type=s.device_type)
        flops = t.flops()[0] * s.batch
        row = {"schema": 2, "key": t.key(s, fp), "kind": t.kind, **t.identity(), "options": dict(t.options),
               "impl": t.options.get("impl"), "precision": s.precision_label, "timing_mode": "per-call",
               "input_shape": [s.batch, *t.input_shapes[0][1:]], "input_shapes": [[s.batch, *x[1:]] for x in t.input_shapes],
               "settings": asdict(s), "threads": s.threads, "load_avg_1m": 0.5, "logical_cores": 2, "flops": flops,
               "status": "ok", "timing": {"median_ms": call * 1e3, "n": 3, "p10_ms": call * 1e3, "p90_ms": call * 1e3,
                                          "iqr_ms": 0.0},
               "memory": {}, "memory_prediction": {"bytes": 2**20, "measured_bytes": 2**20,
                                                   "measured_metric": "cpu tensor peak (fake)"},
               "achieved": {"achieved_tflops_per_s": flops / call / 1e12}}
        if t.largest:
            row["predicted_largest_intermediate"] = {"what": t.largest[0], "bytes": t.largest[1] * 4}
        return row

    monkeypatch.setattr(bench, "measure_target", measure_target)
    real_budget, real_time = bud.Budget, job.time_within_budget
    monkeypatch.setattr(bud, "Budget", lambda total_s: real_budget(total_s, clock=lambda: clock[0]))
    monkeypatch.setattr(job, "time_within_budget", lambda ctx, plan, settings, budget, on_step=None, probe=None:
                        real_time(ctx, plan, settings, budget, on_step, probe=probe_fn))
    probe_fn = probe


def few_blocks(monkeypatch, modules=("nl", "cs", "se", "eca")) -> None:
    real = job.speed_plan
    monkeypatch.setattr(job, "speed_plan", lambda ctx, modules_=None: real(ctx, list(modules)))


def test_speed_keeps_to_its_budget_and_lists_what_did_not_fit(tmp_path, monkeypatch) -> None:
    clock = [0.0]
    fake_timing(monkeypatch, clock)
    few_blocks(monkeypatch)
    budget = 60.0
    r = job.run_report(job.ReportOptions(budget_s=budget), tmp_path, sections=("speed",))
    doc = json.loads((tmp_path / "speed.json").read_text())
    timed = {(x.get("module"), x.get("impl"), x["input_shapes"][0][2]) for x in doc["rows"]}
    skipped = {(x.get("module"), x.get("impl"), x["input_shape"][2]) for x in doc["not_run"]}
    # NL naive at the BANet preset: 10 s a call, ~12 calls: more than the budget, so listed, not run; the
    # cheaper targets after it still run; nothing is dropped silently
    assert ("nl", "naive", 16) in skipped and ("cs", "naive", 16) in timed and ("se", None, 8) in timed
    plan = job.speed_plan(job.make_context(job.ReportOptions(budget_s=budget, threads=1), tmp_path / "x"))
    keys = {(p.target.name, p.target.options.get("impl"), p.target.input_shapes[0][2]) for p in plan}
    assert timed | skipped == keys and not timed & skipped
    assert doc["timing_s"] <= budget - job.PLOT_RESERVE_S  # the virtual clock: every measurement's cost counted
    assert all(x["reason"] and x["status"] == "not run: budget" for x in doc["not_run"])
    summary = r.sections[0].summary
    assert any(line.startswith("not run, did not fit in the 60 s budget: nl naive @ banet") for line in summary)
    md = (tmp_path / "speed.md").read_text()
    assert "## Not run: did not fit in the time budget" in md and "| nl naive @ banet " in md
    assert "cpu" in md and "threads" in md and "load (1 min)" in md  # every row says where it ran


def test_speed_and_roofline_sections_write_tables_and_plots(tmp_path, monkeypatch) -> None:
    clock = [0.0]
    fake_timing(monkeypatch, clock)
    few_blocks(monkeypatch)
    drawn: dict[str, list] = {}

    def stub(name):  # latency and memory plots are drawn in tests/test_plots.py; here: what they are given
        def draw(rows, path, title, **kw):
            drawn[name] = [r for r in rows if r.get("status") == "ok"]
            for p in (path, plots.svg_path(path)):
                open(p, "wb").write(plots.PNG_SIGNATURE if str(p).endswith(".png") else b"<svg/>")
            return str(path)
        return draw

    monkeypatch.setattr(plots, "latency_vs_size", stub("latency"))
    monkeypatch.setattr(plots, "memory_vs_size", stub("memory"))
    steps: list[str] = []
    r = job.run_report(job.ReportOptions(budget_s=1000.0), tmp_path, sections=("speed", "roofline"),
                       on_event=lambda kind, name, res: steps.append(name) if kind == "step" else None)
    speed, roof = r.sections
    assert speed.status == "ok" and roof.status == "ok", (speed.error, roof.error)
    assert any(s.startswith("speed 1/") for s in steps)
    # NL/CS latency ratio beside the FLOP ratio, per kernel
    assert any(line.startswith("NL/CS at the BANet preset, naive: latency ") and "FLOPs 6.18x" in line for line in speed.summary)
    assert any(line.startswith("NL/CS at the BANet preset, sdpa: ") for line in speed.summary)
    assert "| naive " in (tmp_path / "speed.md").read_text().split("latency ratio beside FLOP ratio")[1]
    for png in ("latency-vs-T.png", "memory-vs-T.png", "roofline.png"):
        assert plots.is_png(tmp_path / png) and (tmp_path / png).with_suffix(".svg").exists(), png
    assert {"latency-vs-T.svg", "memory-vs-T.svg"} <= set(speed.files) and "roofline.svg" in roof.files
    # NL and CS, both kernels, at every T of the scan (4, 8, 16): 12 rows, the preset's T=16 from the headline
    assert len(drawn["latency"]) == len(drawn["memory"]) == 12 and "CPU" in speed.summary[0]
    # one roofline point per timed block at its first preset (and kernel), not per T of the scan
    doc = json.loads((tmp_path / "speed.json").read_text())
    firsts = [x for x in doc["rows"] if not x.get("custom")]
    points = json.loads((tmp_path / "roofline.json").read_text())["points"]
    assert len(points) == len(firsts) == 6  # nl, cs x naive, sdpa; se; eca
    by = {(p["module"], p["impl"]): p for p in points}
    assert by[("nl", "naive")]["intensity (FLOP/byte)"] < by[("nl", "sdpa")]["intensity (FLOP/byte)"]  # the map's bytes
    assert all(p["min. bytes moved"] > 0 and p["achieved FLOP/s"] > 0 for p in points)
    index = (tmp_path / "README.md").read_text()
    assert "![roofline.png](roofline.png) ([SVG](roofline.svg))" in index and "| roofline | ok |" in index


def test_budget_zero_and_quick_time_nothing(tmp_path) -> None:
    ctx = job.make_context(job.ReportOptions(budget_s=0), tmp_path)
    assert not ctx.measure and "--budget-s 0" in job.applies(ctx, "speed")
    quick = job.make_context(job.ReportOptions(mode="quick"), tmp_path)
    assert not quick.measure and quick.budget_s == job.DEFAULT_CPU_BUDGET_S
    default = job.make_context(job.ReportOptions(), tmp_path)
    assert default.measure and default.budget_s == job.DEFAULT_CPU_BUDGET_S
    assert job.make_context(job.ReportOptions(mode="full"), tmp_path).budget_s is None  # --full: no limit


def test_cli_budget_help_names_the_default() -> None:
    from attnbench.commands import report

    assert report.DEFAULT_BUDGET_HELP == job.DEFAULT_CPU_BUDGET_S


def test_cpu_table_vi_reads_stored_rows_and_never_times_the_networks(tmp_path, monkeypatch) -> None:
    """Without --full a CPU report reads Table VI rows `attnbench table-vi` measured in the folder, whatever their
    repetition settings, and times nothing; with no network row it says how to measure them."""
    from attnbench import bench, cases
    from attnbench.store import jsonl

    def no_timing(*a, **k):
        raise AssertionError("timed on a CPU report")

    monkeypatch.setattr(bench, "run", no_timing)
    (tmp_path / "a").mkdir()
    r = job.run_report(job.ReportOptions(threads=1), tmp_path / "a", sections=("table-vi",))  # no table-vi.jsonl
    assert r.sections[0].status == "not run"
    ctx = job.make_context(job.ReportOptions(threads=1), tmp_path / "b")
    other = bench.Settings(device="cpu", min_reps=7, target_s=2.0, max_warmup_s=1.0, threads=2)  # another run's settings
    vps = {"none": 2.0, "nl": 1.0, "cs": 1.8}
    for m, ms in (("nl", 80.0), ("cs", 10.0)):
        t = bench.block_target(cases.resolve(m, "banet"))
        jsonl.append_row(tmp_path / "b" / "table-vi.jsonl", {"key": t.key(other, ctx.fingerprint), "kind": "block", "module": m,
                                                             "status": "ok", "flops": t.flops()[0], "timing": {"median_ms": ms}})
    for a, v in vps.items():
        t = bench.network_target(cases.resolve_network("eco", a, "16f"))
        jsonl.append_row(tmp_path / "b" / "table-vi.jsonl", {"key": t.key(other, ctx.fingerprint), "kind": "network", "network": "eco",
                                                             "attn": a, "status": "ok", "flops": 10**9, "vps": v})
    r = job.run_report(job.ReportOptions(threads=1), tmp_path / "b", sections=("table-vi",))
    assert r.sections[0].status == "ok", r.sections[0].error
    assert r.sections[0].summary[0].startswith("CS:NL speed ratio: paper 2.46 (GTX 1080 Ti), measured 1.80 on cpu (")
