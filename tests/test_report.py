"""`attnbench report`: the folder it writes, failing sections recorded, resume, and the reproduce section with
and without attnbench.papers.reproduce."""

import json
import re
import sys
import types

import pytest
from typer.testing import CliRunner

from attnbench.report import job, plots


def fake_reproduce() -> types.ModuleType:
    """A stand-in for attnbench.papers.reproduce (tested on its own), so these tests stay fast."""
    fake = types.ModuleType("attnbench.papers.reproduce")
    row = {"paper": "banet", "table": "Eq. 7", "item": "R", "paper_value": 13.4, "value": 13.39, "unit": "%",
           "convention": "ratio", "delta_pct": -0.07, "verdict": "reproduced", "reason": "", "key": "banet.r",
           "quantity": "flops"}
    off = {**row, "item": "F_CS", "paper_value": 2.0, "value": 2.5, "delta_pct": 25.0, "verdict": "off", "reason": "convention",
           "key": "banet.f"}
    fake.reproduce = lambda paper="all": [row, off]
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
    assert f"![{pngs[0]}]({pngs[0]})" in index
    for target in re.findall(r"\]\(([^)]+)\)", index):  # every link is relative and resolves in the folder
        assert not target.startswith("/") and (out / target).exists(), target
    assert "| speed | not run |" in index  # no CUDA here and no --device: nothing timed
    assert "| reproduce | ok |" in index and "reproduced: 1 of 2 parameter, FLOP and size figures (50.0%)" in index
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
    assert r.sections[1].summary == summary and "sweep-flops-T.png" in r.sections[1].files
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


def test_speed_section_reads_rows_by_their_schema_2_names(tmp_path, monkeypatch) -> None:
    """The speed section's progress and summary name blocks and networks as rows do (module; network, attn)."""
    from attnbench import bench

    def fake_run(targets, settings, path, resume, on_row=None, **_kw):
        rows = [{"kind": "block", "module": "nl", "preset": "banet", "status": "ok", "flops": 62,
                 "input_shapes": [[1, 96, 16, 28, 28]], "settings": {"dtype": "fp32"}, "timing": {"median_ms": 8.0}},
                {"kind": "block", "module": "cs", "preset": "banet", "status": "ok", "flops": 10,
                 "input_shapes": [[1, 96, 16, 28, 28]], "settings": {"dtype": "fp32"}, "timing": {"median_ms": 2.0}},
                {"kind": "network", "network": "eco-lite", "attn": "cs", "preset": "16f", "status": "ok", "flops": 9,
                 "input_shapes": [[1, 3, 16, 224, 224]], "settings": {"dtype": "fp32"}, "vps": 19.9,
                 "timing": {"median_ms": 50.0}}]
        for row in rows:
            on_row(row)
        return rows

    monkeypatch.setattr(bench, "run", fake_run)
    steps: list[str] = []
    ctx = job.make_context(job.ReportOptions(mode="quick", device="cpu"), tmp_path)
    result = job.section_speed(ctx, on_step=steps.append)
    assert steps[-1].endswith("3/15: eco-lite")
    assert "NL/CS at the BANet preset: latency 4.00x, FLOPs 6.20x" in result.summary
    assert "eco-lite cs@16f: 19.9 videos/s" in result.summary
