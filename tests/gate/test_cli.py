"""``attnbench snapshot`` and ``attnbench check`` through the CLI: exit codes 0/1/2, FLOPs diffs, memory, the
injected slowdown, the step summary, other devices, text from files printed inert, and the project's own
committed FLOPs baseline.

Timed tests use the CPU-time clock (the default of ``snapshot`` on a CPU: time spent descheduled while
other processes run is not counted), thresholds far from the effects they assert, and the gate's
re-measurement, so that a loaded machine cannot fail them; they use one tiny block and short rounds."""

import json

import pytest

from attnbench import bench, gate

from .helpers import FAST, ROOT, TINY, edited, one_line, run


def test_flops_snapshot_and_unchanged_check_pass(flops_baseline) -> None:
    doc = json.loads(flops_baseline.read_text())
    assert doc["schema"] == gate.SCHEMA and doc["timed"] is False and doc["fingerprint"] is None
    assert [e["key"] for e in doc["entries"]] == ["cs@banet", "se@16f-res5"]
    cs = doc["entries"][0]
    assert set(cs["flops"]["cells"]) == set(gate.CATEGORIES) and cs["params"] > 0
    assert cs["flops"]["total"] == gate.cells_flops(cs["flops"]["cells"])
    assert gate.snapshot_problem(doc) is None
    result = run("check", "--baseline", str(flops_baseline))
    assert result.exit_code == 0, result.output
    assert "PASS" in result.output and "NOT compared" not in result.output


def test_flops_change_fails_with_a_readable_diff(flops_baseline, tmp_path, monkeypatch) -> None:
    def edit(doc):
        flops = doc["entries"][0]["flops"]
        flops["cells"]["convolution"]["mac"] -= 1000  # the code now does 1000 more MACs than the baseline says
        flops["macs"] -= 1000  # (consistently: a self-contradicting baseline is malformed)
        flops["total"] -= 2000
        flops["by_category"]["convolution"] -= 2000
        doc["entries"][1]["params"] += 3

    path = edited(flops_baseline, tmp_path / "b.json", edit)
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    result = run("check", "--baseline", str(path))
    assert result.exit_code == 1, result.output
    out = result.output
    assert "FAIL" in out and "cs@banet: FLOPs by op category" in out and "convolution" in out
    assert "+2,000" in out  # delta in FLOPs (a MAC is 2 FLOPs), old and new shown beside it
    assert "regenerate the baseline" in out
    text = summary.read_text()
    assert text.startswith("earlier step\n")  # appended, not overwritten
    assert "attnbench performance gate: FAILED" in text and "| cs@banet | convolution |" in text
    assert "| se@16f-res5 | params |" in text and "+2,000" in text

    result = run("check", "--baseline", str(path), "--json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert not report["passed"] and report["summary"]["failures"] == 2
    flops = next(f for f in report["findings"] if f["check"] == "flops" and f["failed"])
    (cat,) = flops["categories"]
    assert cat["category"] == "convolution" and cat["delta_flops"] == 2000
    assert cat["current_flops"] - cat["baseline_flops"] == 2000
    params = next(f for f in report["findings"] if f["check"] == "params" and f["failed"])
    assert params["key"] == "se@16f-res5" and params["delta"] == -3


def test_passing_check_writes_a_passing_summary(flops_baseline, tmp_path, monkeypatch) -> None:
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    result = run("check", "--baseline", str(flops_baseline), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["passed"] is True
    assert "attnbench performance gate: passed" in summary.read_text()


@pytest.mark.parametrize(
    "key",
    ["[bold red]pwn[/]", "[/oops]", "\x1b[2J\x1b[HPASS: 9 entries, no regressions FAKE PASS", "a|b `x` <img src=y> [l](http://z)\nnext"],
)
def test_text_from_a_baseline_is_printed_inert(flops_baseline, tmp_path, monkeypatch, key) -> None:
    """A key is data: Rich markup shows as its characters, control characters are escaped (a key cannot
    clear the terminal or fake a verdict line), and in the Markdown summary nothing renders as markup."""
    def edit(doc):
        doc["entries"][0]["key"] = key
        doc["entries"][0]["flops"]["cells"]["convolution"]["op"] += 1  # a FLOPs change: the key is printed in tables too
        doc["entries"][0]["flops"]["by_category"]["convolution"] += 1
        doc["entries"][0]["flops"]["total"] += 1

    path = edited(flops_baseline, tmp_path / "b.json", edit)
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    result = run("check", "--baseline", str(path))
    assert result.exit_code == 1, result.output  # the FLOPs change, not a crash on markup
    out = result.output
    assert "\x1b" not in out and "Traceback" not in out and "internal error" not in out
    shown = key.replace("\x1b", "\\x1b").replace("\n", "\\n")
    assert shown in out  # printed as the characters it holds
    lines = out.splitlines()
    assert not any(line.startswith("PASS") for line in lines)
    text = summary.read_text()
    assert "\x1b" not in text and "<img" not in text and "`x`" not in text
    if "<img" in key:
        assert "&lt;img" in text and "\\[l\\](http" in text and "a\\|b" in text
    assert "[bold red]pwn[/]" not in text or "\\[bold red\\]" in text
    report = json.loads(run("check", "--baseline", str(path), "--json").stdout)  # JSON carries it as JSON
    assert any(f["key"] == key for f in report["findings"])


def test_bad_check_options_exit_2(flops_baseline) -> None:
    for args, needle in ((("--alpha", "2"), "--alpha"), (("--max-slowdown", "0.9"), "--max-slowdown"),
                         (("--memory-tolerance", "-1"), "--memory-tolerance"), (("--round-s", "1e6"), "--round-s"),
                         (("--rounds", "0"), "--rounds")):
        result = run("check", "--baseline", str(flops_baseline), *args)
        assert result.exit_code == 2 and needle in one_line(result)


def test_bad_snapshot_options_exit_2(tmp_path) -> None:
    out = str(tmp_path / "x.json")
    assert "valid choices" in one_line(run("snapshot", "--out", out, "--modules", "cs", "--presets", "nope"))
    assert "valid choices" in one_line(run("snapshot", "--out", out, "--modules", "nope"))
    result = run("snapshot", "--out", out, *TINY, "--device", "cpu", "--clock", "cpu", "--threads", "2")
    assert result.exit_code == 2 and "--threads 1" in one_line(result)
    result = run("snapshot", "--out", out, *TINY, "--device", "cpu", "--round-s", "1e6")
    assert result.exit_code == 2 and "--round-s" in one_line(result)


def test_snapshot_checks_out_before_any_work(tmp_path, monkeypatch) -> None:
    """An unwritable --out fails at once (it failed after all the timing, 24 s, before)."""
    def no_work(*_a, **_k):
        raise AssertionError("the snapshot started working before checking --out")

    monkeypatch.setattr(gate, "snapshot", no_work)
    monkeypatch.setattr(gate, "select", no_work)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for out in (str(blocker / "x.json"), str(tmp_path), ""):
        result = run("snapshot", "--out", out, *TINY, "--device", "cpu", *FAST)
        assert result.exit_code == 2, result.output
        assert "cannot write" in one_line(result) or "empty" in one_line(result)


def test_snapshot_writes_atomically(tmp_path, monkeypatch) -> None:
    path = tmp_path / "base.json"
    path.write_text("old\n")
    real = gate.snapshot
    monkeypatch.setattr(gate, "snapshot", lambda *a, **k: {**real(*a, **k), "bad": {1, 2}})  # json.dumps fails
    result = run("snapshot", "--out", str(path), *TINY)
    assert result.exit_code != 0 and path.read_text() == "old\n"  # the old baseline is left whole
    assert [p.name for p in tmp_path.iterdir()] == ["base.json"]  # and no temporary file


@pytest.mark.parametrize("sizes", [("--T", "100000", "--H", "4096", "--W", "4096"), ("--T", "99999999999999999999")])
def test_huge_sizes_are_one_line_or_counted(tmp_path, sizes) -> None:
    """Sizes beyond what torch can index: either counted (closed forms, attnbench.api) and checked, or one
    line and exit code 2; never a traceback or exit 1."""
    path = tmp_path / "huge.json"
    result = run("snapshot", "--out", str(path), "--modules", "nl", *sizes)
    assert result.exit_code in (0, 2), result.output
    if result.exit_code == 2:
        assert "nl@" in one_line(result) and not path.exists()
        return
    check = run("check", "--baseline", str(path))
    assert check.exit_code == 0, check.output


def test_check_of_a_baseline_with_huge_sizes(flops_baseline, tmp_path) -> None:
    """A (consistent) custom entry at a size torch cannot index: one line and exit 2 if it cannot be counted,
    else an ordinary FLOPs comparison (the zero counts stored here then differ: exit 1)."""
    def edit(doc):
        e = doc["entries"][1]
        e.update(key="se@huge", preset=None, base_preset="16f-res5", input_shape=[1, 2048, 99999999999999999999, 7, 7],
                 flops={"total": 0, "macs": 0, "by_category": {}, "cells": {}})

    path = edited(flops_baseline, tmp_path / "b.json", edit)
    result = run("check", "--baseline", str(path))
    assert result.exit_code in (1, 2) and "Traceback" not in result.output, result.output
    if result.exit_code == 2:
        assert "se@huge" in one_line(result)
    else:
        assert "se@huge" in result.output and "FLOPs" in result.output


# -- timed: latency and memory ------------------------------------------------------------------------------


def test_timed_snapshot_holds_samples_memory_reference_and_fingerprint(timed_baseline) -> None:
    doc = json.loads(timed_baseline.read_text())
    assert doc["timed"] and doc["fingerprint"]["device_type"] == "cpu" and doc["settings"]["rounds"] == 5
    assert doc["settings"]["clock"] == "cpu" and doc["settings"]["threads"] == 1 and doc["settings"]["malloc"] == "cached"
    (entry,) = doc["entries"]
    t = entry["timing"]
    assert entry["status"] == "ok" and len(t["samples_ms"]) == t["n"] == sum(t["round_sizes"]) and t["rounds"] == 5
    assert t["round_medians_ms"] == pytest.approx(gate.round_values(t), rel=1e-12)  # = derived from the samples
    assert t["timer"] == "thread_time_ns" and t["malloc"] in ("cached", "system (mallopt unavailable)")
    assert {"median_ms", "iqr_ms", "p10_ms", "p90_ms"} <= set(t)
    assert entry["memory"]["peak_bytes"] > 0 and "tracked op by op" in entry["memory"]["metric"]
    assert doc["reference"]["status"] == "ok" and doc["reference"]["timing"]["median_ms"] > 0
    assert gate.snapshot_problem(doc) is None


def test_timed_check_unchanged_passes(timed_baseline) -> None:
    """Plumbing, not noise (scripts/validate_gate.py measures that): exit 0 and every finding present. Safe
    under load: the CPU-time clock does not count time spent descheduled, x20 is far from any noise, and a
    block that looks slower is measured again before it could fail."""
    result = run("check", "--baseline", str(timed_baseline), "--max-slowdown", "20", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    checks = {f["check"]: f for f in report["findings"]}
    assert {"params", "flops", "latency", "memory"} <= set(checks)
    assert checks["memory"]["status"] == "ok"  # the op-by-op peak is exact
    lat = checks["latency"]
    assert lat["mode"] == "raw+reference" and lat["normalized_ratio"] is not None and lat["unit"] == "round median"
    rt = report["timing"]["rank_test"]
    assert (rt["baseline_rounds"], rt["current_rounds"]) == (5, 5) and rt["false_alarm_rate"] == pytest.approx(2 / 252)
    assert report["not_compared"] == []


def test_injected_slowdown_is_detected(timed_baseline, monkeypatch) -> None:
    monkeypatch.setenv(bench.INJECT_SLOWDOWN_ENV, "se:4")  # five times slower, on the compared (CPU-time) clock
    result = run("check", "--baseline", str(timed_baseline), "--max-slowdown", "2")
    assert result.exit_code == 1, result.output
    assert "latency regression" in result.output and "se@16f-res5" in result.output
    assert "U test on per-round medians (5 vs 5 rounds)" in " ".join(result.output.split())  # the caption says what is tested


def test_latency_and_memory_regressions_from_an_edited_baseline(timed_baseline, tmp_path) -> None:
    def edit(doc):
        e = doc["entries"][0]
        e["timing"]["samples_ms"] = [v / 100 for v in e["timing"]["samples_ms"]]  # "used to be 100x faster"
        e["timing"].pop("round_medians_ms")  # an old baseline: derived from samples_ms and round_sizes
        e["memory"]["peak_bytes"] = e["memory"]["peak_bytes"] // 2

    path = edited(timed_baseline, tmp_path / "b.json", edit)
    result = run("check", "--baseline", str(path), "--json", "--retries", "0", "--no-load-control")
    assert result.exit_code == 1, result.output
    by = {f["check"]: f for f in json.loads(result.stdout)["findings"]}
    # 100x, with room for this shared machine to run the check up to 10x faster or slower than the snapshot
    assert by["latency"]["status"] == "regression" and by["latency"]["ratio"] > 10
    assert by["latency"]["p_slower"] == pytest.approx(1 / 252)
    assert by["memory"]["status"] == "regression" and by["memory"]["ratio"] == pytest.approx(2, rel=0.01)
    assert run("check", "--baseline", str(path), "--flops-only").exit_code == 0


def test_unreachable_alpha_is_refused(timed_baseline) -> None:
    result = run("check", "--baseline", str(timed_baseline), "--alpha", "0.001", "--rounds", "5")
    assert result.exit_code == 2 and "--rounds 8 or more" in one_line(result)


def test_other_device_is_a_usage_error_unless_allowed(timed_baseline, tmp_path, monkeypatch) -> None:
    """A baseline timed elsewhere used to pass ("skipped", "no regressions", exit 0) without comparing latency."""
    path = edited(timed_baseline, tmp_path / "b.json", lambda d: d["fingerprint"].update(cpu_model="Other CPU 9000"))
    result = run("check", "--baseline", str(path))
    assert result.exit_code == 2
    line = one_line(result)
    assert "another device" in line and "Other CPU 9000" in line and "--allow-device-mismatch" in line

    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    result = run("check", "--baseline", str(path), "--allow-device-mismatch")
    assert result.exit_code == 0, result.output
    verdict = [line for line in result.output.splitlines() if line.startswith(("PASS", "FAIL"))]
    assert verdict and verdict[0].startswith("PASS (NOT compared: latency: the baseline was timed on another device")
    assert summary.read_text().splitlines()[0].startswith("## attnbench performance gate: passed (NOT compared: latency")
    report = json.loads(run("check", "--baseline", str(path), "--allow-device-mismatch", "--json").stdout)
    assert not report["timing"]["latency_compared"] and report["timing"]["memory_compared"]
    assert report["not_compared"] and report["not_compared"][0].startswith("latency")
    lat = next(f for f in report["findings"] if f["check"] == "latency")
    assert lat["status"] == "skipped"

    # --normalize compares across devices: allowed, and latency is compared
    result = run("check", "--baseline", str(path), "--json", "--normalize", "--max-slowdown", "20")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    lat = next(f for f in report["findings"] if f["check"] == "latency")
    assert lat["mode"] == "normalized" and lat["ratio"] > 0 and report["not_compared"] == []
    # nothing device-dependent is compared with --flops-only
    assert run("check", "--baseline", str(path), "--flops-only").exit_code == 0


# -- the project's own baseline --------------------------------------------------------------------------


def test_committed_cpu_flops_baseline_holds() -> None:
    """Every block at every preset still has the parameters and exact FLOPs in the committed baseline.
    If a change is intended: attnbench snapshot --out results/baseline/cpu-flops.json"""
    result = run("check", "--baseline", str(ROOT / "results" / "baseline" / "cpu-flops.json"))
    assert result.exit_code == 0, result.output
