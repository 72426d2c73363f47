"""The CI performance gate: the pure comparisons (on per-round medians),
the baseline schema (every malformed baseline is one line and exit code 2), snapshot and check through the
CLI (exit codes 0/1/2, FLOPs diffs, memory, the injected slowdown, the step summary, other devices,
text from files printed inert), and the project's own committed FLOPs baseline.

Timed tests use the CPU-time clock (the default of ``snapshot`` on a CPU: time spent descheduled while
other processes run is not counted), thresholds far from the effects they assert, and the gate's
re-measurement, so that a loaded machine cannot fail them; they use one tiny block and short rounds."""

import copy
import importlib.util
import json
import os
import random
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from attnbench import api, bench, gate
from attnbench import baseline_schema as schema
from attnbench.api import resolve
from attnbench.cli import app
from attnbench.errors import UsageError

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()
# one tiny block for timed runs: se at its smallest preset takes well under a millisecond per call
TINY = ("--modules", "se", "--presets", "16f-res5")
# 5 rounds: the fewest for which the rank test on round medians can reach alpha = 0.01 (1/252)
FAST = ("--rounds", "5", "--round-s", "0.02")


def run(*args: str):
    return runner.invoke(app, list(args))


def one_line(result) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert "Traceback" not in result.output
    return lines[0]


# -- the pure comparisons (on per-round medians) ------------------------------------------------------------


OLD = [10.0, 10.1, 9.9, 10.05, 9.95]  # the medians of 5 rounds


def timing(rounds: list[list[float]]) -> dict:
    """A stored timing dict of the given rounds of per-call samples."""
    return {"samples_ms": [v for r in rounds for v in r], "round_sizes": [len(r) for r in rounds]}


def test_latency_needs_significance_and_effect_size() -> None:
    slower = gate.compare_latency(OLD, [v * 1.25 for v in OLD])  # every round slower: p = 1/252
    assert slower["status"] == "regression" and slower["failed"] and slower["ratio"] == pytest.approx(1.25)
    assert slower["p_slower"] == pytest.approx(1 / 252) and slower["p_method"] == "exact"
    small = gate.compare_latency(OLD, [v * 1.05 for v in OLD])  # significant, but only 5% slower
    assert small["p_slower"] <= 0.01 and small["status"] == "ok" and not small["failed"]
    few = gate.compare_latency([10, 11, 12], [13, 14, 15])  # 27% slower, but 3 vs 3 rounds: p >= 1/20
    assert few["ratio"] > 1.1 and few["p_slower"] == pytest.approx(1 / 20) and few["status"] == "ok"
    assert gate.compare_latency(OLD, OLD[::-1])["status"] == "ok"
    faster = gate.compare_latency(OLD, [v * 0.8 for v in OLD])
    assert faster["status"] == "improved" and not faster["failed"]
    custom = gate.compare_latency(OLD, [v * 1.25 for v in OLD], alpha=0.01, max_slowdown=1.3)
    assert custom["status"] == "ok"


def test_the_unit_is_the_round_not_the_call() -> None:
    """Thousands of per-call samples in 5 rounds are 5 units: the p-value cannot go below 1/252 however many
    calls were timed (pooled, the calls gave p-values like 1e-150, so alpha changed nothing)."""
    rng = random.Random(3)
    old = timing([[10 + rng.random() for _ in range(400)] for _ in range(5)])
    new = timing([[12.5 + rng.random() for _ in range(400)] for _ in range(5)])
    f = gate.latency_finding("x", old, None, new, None, gate.CheckOptions())
    assert f["unit"] == "round median" and f["n_baseline"] == 5 and f["n_current"] == 5
    assert f["raw_p_slower"] == pytest.approx(1 / 252) and f["status"] == "regression"
    assert len(f["baseline_rounds_ms"]) == 5
    # a slowdown in 2 of 5 rounds (a burst of load) is not significant at 0.01, whatever the calls say
    bursty = timing([[10 + rng.random() for _ in range(400)] for _ in range(3)] + [[15 + rng.random() for _ in range(400)] for _ in range(2)])
    assert gate.latency_finding("x", old, None, bursty, None, gate.CheckOptions(max_slowdown=1.0))["raw_p_slower"] > 0.01


def test_round_values_from_samples_and_round_sizes() -> None:
    # an old baseline without round_medians_ms: derived from samples_ms and round_sizes
    assert gate.round_values({"samples_ms": [1, 2, 3, 10, 20, 30, 40], "round_sizes": [3, 4]}) == [2, 25]
    assert gate.round_values({"samples_ms": [1, 2, 3], "round_medians_ms": [7.0]}) == [7.0]
    assert gate.round_values({"samples_ms": [1, 2, 3]}) == [2]
    assert gate.round_values(None) is None


def test_alpha_must_be_reachable_with_the_rounds() -> None:
    from attnbench.measure.stats import false_alarm_rate, min_p_value

    assert min_p_value(5, 5) == pytest.approx(1 / 252)
    assert false_alarm_rate(5, 5, 0.01) == pytest.approx(2 / 252)  # the test's real size: 0.79%, not 1%
    assert false_alarm_rate(5, 5, 0.001) == 0.0
    assert gate.current_rounds(5, 0.01) == (5, "")
    rounds, note = gate.current_rounds(2, 0.01)  # 2 vs 2 rounds: p >= 1/6; 2 vs 13: 1/105
    assert rounds == 13 and "measured 13 rounds" in note and min_p_value(2, 13) <= 0.01 < min_p_value(2, 12)
    assert gate.current_rounds(5, 0.001) == (8, gate.current_rounds(5, 0.001)[1])  # C(13, 5) = 1287
    with pytest.raises(UsageError, match="--rounds 8 or more"):
        gate.current_rounds(5, 0.001, asked=5)
    with pytest.raises(UsageError, match="cannot be reached with a baseline of 1 round"):
        gate.current_rounds(1, 0.01)  # 1 vs 20 rounds: p >= 1/21


def test_normalization_per_round() -> None:
    # the second round ran on a machine twice as slow: per-round normalisation cancels it
    assert gate.normalized([2, 4], [1, 2]) == [2, 2]
    # a different number of rounds: the reference's median for every round
    assert gate.normalized([3, 6], [1.0, 2.0, 3.0]) == [1.5, 3.0]
    with pytest.raises(UsageError):
        gate.normalized([1.0], [0.0])


def test_load_control_needs_the_slowdown_relative_to_the_reference() -> None:
    old = timing([[v] * 3 for v in OLD])
    ref = timing([[v] * 3 for v in OLD])
    busy = timing([[v * 1.3] * 3 for v in OLD])  # everything 30% slower
    opts = gate.CheckOptions()
    f = gate.latency_finding("x", old, ref, busy, busy, opts)
    assert f["raw_ratio"] == pytest.approx(1.3) and f["normalized_ratio"] == pytest.approx(1.0)
    assert f["status"] == "ok" and f["mode"] == "raw+reference"
    assert gate.latency_finding("x", old, ref, busy, busy, gate.CheckOptions(load_control=False))["status"] == "regression"
    assert gate.latency_finding("x", old, ref, busy, ref, opts)["status"] == "regression"  # the block alone slower
    assert gate.latency_finding("x", old, ref, busy, busy, gate.CheckOptions(normalize=True))["status"] == "ok"


def test_confirm_needs_a_consistent_slowdown() -> None:
    both, raw, none = ["raw", "normalized"], ["raw"], []
    d = ["raw", "normalized"]
    assert gate.confirm([both], d, retries=2) == "pending"  # measure again
    assert gate.confirm([both, raw], d, retries=2) == "regression"
    assert gate.confirm([raw, both], d, retries=2) == "regression"
    assert gate.confirm([both, none], d, retries=2) == "unconfirmed"  # not slower at all the second time
    assert gate.confirm([raw, raw, raw], d, retries=2) == "unconfirmed"  # never slower relative to the reference
    assert gate.confirm([both], d, retries=0) == "regression"
    assert gate.confirm([none], d, retries=2) == "ok"
    assert gate.confirm([raw], ["raw"], retries=1) == "pending"
    assert gate.confirm([raw, raw], ["raw"], retries=1) == "regression"


def test_memory_tolerance() -> None:
    assert gate.compare_memory(1000, 1050)["status"] == "ok"
    grown = gate.compare_memory(1000, 1051)
    assert grown["status"] == "regression" and grown["failed"] and grown["delta"] == 51
    assert gate.compare_memory(1000, 1100, tolerance=0.2)["status"] == "ok"
    assert gate.compare_memory(1000, 900)["status"] == "improved"
    assert gate.compare_memory(None, 900)["status"] == "skipped"


def test_flops_diff_per_category() -> None:
    old = {"convolution": {"mac": 100, "op": 10}, "softmax": {"mac": 0, "op": 50}, "linear": {"mac": 0, "op": 0}}
    new = copy.deepcopy(old)
    assert gate.compare_flops(old, new)["status"] == "ok"
    new["convolution"]["mac"] = 150
    new["softmax"]["op"] = 40
    f = gate.compare_flops(old, new)
    assert f["failed"] and f["baseline"] == 260 and f["current"] == 350 and f["delta"] == 90
    by = {c["category"]: c for c in f["categories"]}
    assert set(by) == {"convolution", "softmax"}
    assert (by["convolution"]["baseline_flops"], by["convolution"]["current_flops"], by["convolution"]["delta_flops"]) == (210, 310, 100)
    assert by["softmax"]["delta_flops"] == -10 and by["softmax"]["current_cells"] == {"mac": 0, "op": 40}
    assert gate.compare_params(5, 6) == {"check": "params", "status": "changed", "failed": True,
                                         "baseline": 5, "current": 6, "delta": 1}


def test_device_differences() -> None:
    a = {"device_type": "cpu", "machine": "x86_64", "cpu_model": "A", "logical_cores": 2, "torch_threads": 2}
    assert gate.device_differences(a, dict(a)) == []
    assert gate.device_differences(a, {**a, "cpu_model": "B"}) == ["cpu_model: A -> B"]
    g = {"device_type": "cuda", "gpu_name": "H100", "gpu_total_memory_bytes": 1, "compute_capability": "9.0"}
    assert gate.device_differences(g, {**g, "cpu_model": "other"}) == []
    assert gate.memory_comparable(a, {**a, "cpu_model": "B"}) and not gate.memory_comparable(a, g)


def test_injected_slowdown_is_off_unless_set(monkeypatch) -> None:
    def work() -> int:
        return 7

    monkeypatch.delenv(bench.INJECT_SLOWDOWN_ENV, raising=False)
    assert bench.injected_slowdown("cs", work, "cpu") is work
    monkeypatch.setenv(bench.INJECT_SLOWDOWN_ENV, "nl:0.5")
    assert bench.injected_slowdown("cs", work, "cpu") is work
    slowed = bench.injected_slowdown("nl", work, "cpu")
    assert slowed is not work and slowed() == 7
    monkeypatch.setenv(bench.INJECT_SLOWDOWN_ENV, "nl=0.5")
    with pytest.raises(UsageError):
        bench.injected_slowdown("nl", work, "cpu")


def test_cpu_peak_memory_is_deterministic() -> None:
    t = bench.block_target(resolve("nl", sizes={"C": 16, "T": 2, "H": 6, "W": 6}))
    plan = gate.TimingPlan()
    first, second = gate.cpu_peak_bytes(t, plan, 1), gate.cpu_peak_bytes(t, plan, 1)
    attention = 4 * (2 * 6 * 6) ** 2  # the THW x THW affinity matrix in fp32 is alive at the peak
    assert first == second and first > attention


def test_selection_keys() -> None:
    items = gate.select(["cs", "nl"], "banet", {})
    assert [i.key for i in items] == ["cs@banet", "nl@banet"]
    custom = gate.select(["cs"], "all", {"T": 4})
    assert "cs@1x96x4x28x28" in [i.key for i in custom]
    assert any(i.key.startswith("cs@1x96x4x28x28[order=") for i in custom)
    with pytest.raises(UsageError):
        gate.select(["cs"], "nope", {})


def test_timing_plan_bounds() -> None:
    for bad in ({"rounds": 0}, {"rounds": 1001}, {"round_s": 0}, {"round_s": 1e6}, {"min_reps": 10**6},
                {"max_warmup_s": -1}, {"threads": 0}, {"rounds": 1000, "round_s": 59}, {"timing": "sundial"}):
        with pytest.raises(UsageError):
            gate.TimingPlan(**bad).check()
    for bad in ({"rounds": 0}, {"round_s": 1e6}, {"retries": -1}, {"alpha": 0}):
        with pytest.raises(UsageError):
            gate.CheckOptions(**bad).check()


def test_uncountable_sizes_are_one_line(monkeypatch) -> None:
    """Whatever counting raises at absurd sizes (torch's size overflow, an int64 overflow) becomes one
    line and exit code 2, in snapshot and in check."""
    def boom(*_a, **_k):
        raise RuntimeError("Storage size calculation overflowed with sizes=[1, 1677721600000]\nsecond line")

    monkeypatch.setattr(api, "flops_report", boom)
    with pytest.raises(UsageError, match=r"cannot count .*se@16f-res5.*RuntimeError: Storage size calculation overflowed") as e:
        gate.static_record(resolve("se", "16f-res5"), "se@16f-res5")
    assert "\n" not in str(e.value)


# -- reading a baseline: the schema -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def flops_baseline(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("gate") / "flops.json"
    result = run("snapshot", "--out", str(path), "--modules", "cs,se", "--presets", "banet,16f-res5")
    assert result.exit_code == 0, result.output
    return path


def _edited(src: Path, dst: Path, edit) -> Path:
    doc = json.loads(src.read_text())
    edit(doc)
    dst.write_text(json.dumps(doc))
    return dst


def _set(path: str, value):
    """An edit that sets ``a.b.0.c`` (dots, list indices as numbers) to ``value``."""
    def edit(doc):
        *parents, last = path.split(".")
        node = doc
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node[p]
        node[int(last) if isinstance(node, list) else last] = value
    return edit


def _malformed(result, *needles: str) -> str:
    assert result.exit_code == 2, result.output
    line = one_line(result)
    assert "malformed" in line or "cannot read" in line or "not valid JSON" in line, line
    for needle in needles:
        assert needle in line, line
    return line


@pytest.mark.parametrize(
    "content,needle",
    [
        (None, "no such file"),
        ("{not json", "not valid JSON"),
        ("[]", "JSON object"),
        ('{"schema": "other"}', "schema"),
        (json.dumps({"schema": gate.SCHEMA, "timed": False, "entries": []}), "entries"),
        (json.dumps({"schema": gate.SCHEMA, "timed": False, "entries": [{"key": "cs@banet", "module": "cs", "preset": "banet",
                     "input_shape": [1, 2, 3], "params": 1, "flops": {"total": 0, "macs": 0, "by_category": {}, "cells": {}}}]}),
         "input_shape"),
        (json.dumps({"schema": gate.SCHEMA, "timed": False, "entries": [{"key": "cs@banet", "module": "cs", "preset": "banet",
                     "input_shape": [1, 96, 16, 28, 28], "params": 1,
                     "flops": {"total": 2, "macs": 1, "by_category": {}, "cells": {"magic": {"mac": 1}}}}]}), "unknown op category"),
        (json.dumps({"schema": gate.SCHEMA, "timed": True, "entries": [{"key": "a", "module": "cs", "preset": "banet", "input_shape": [1, 96, 16, 28, 28],
                     "params": 1, "flops": {"total": 0, "macs": 0, "by_category": {}, "cells": {}}}]}), "settings"),
        ('{"schema": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested too deeply"),  # RecursionError
        ('{"x": ' + "9" * 5000 + "}", "not valid JSON"),  # more digits than Python converts to an int
        ("\xff\xfe", "not UTF-8"),
    ],
)
def test_malformed_baseline_is_one_line_exit_2(tmp_path, content, needle) -> None:
    path = tmp_path / "baseline.json"
    if content is not None:
        path.write_bytes(content.encode("latin-1") if content.startswith("\xff") else content.encode())
    result = run("check", "--baseline", str(path))
    assert result.exit_code == 2, result.output
    assert needle in one_line(result)


def test_baseline_file_must_be_a_regular_file_of_bounded_size(tmp_path, monkeypatch) -> None:
    if os.path.exists("/dev/zero"):  # reading it would never end (MemoryError before)
        assert "not a regular file" in _malformed(run("check", "--baseline", "/dev/zero"))
    assert "directory" in _malformed(run("check", "--baseline", str(tmp_path)))
    big = tmp_path / "big.json"
    big.write_text(json.dumps({"pad": "x" * 2000}))
    monkeypatch.setattr(schema, "MAX_FILE_BYTES", 1000)
    assert "more than" in _malformed(run("check", "--baseline", str(big)))


def test_timed_baseline_schema(timed_baseline, tmp_path) -> None:
    """Wrong types and out-of-bounds values anywhere in a timed baseline: one line naming the field."""
    cases = [
        ("settings.threads", "two", "settings.threads"),
        ("settings.threads", 0, "settings.threads"),
        ("settings.min_reps", 2.5, "settings.min_reps"),
        ("settings.min_reps", 10**9, "settings.min_reps"),
        ("settings.max_warmup_s", "long", "settings.max_warmup_s"),
        ("settings.round_s", 1e6, "settings.round_s"),  # would make check run for days
        ("settings.rounds", 5.0, "settings.rounds"),
        ("settings.clock", "sundial", "settings.clock"),
        ("entries.0.timing.round_sizes", [2.5, 1], "round_sizes"),  # a TypeError before
        ("entries.0.timing.round_sizes", ["a"], "round_sizes"),
        ("entries.0.timing.round_sizes", [1, 1], "round_sizes add up to"),
        ("entries.0.timing.samples_ms", [-1.0], "samples_ms"),
        ("entries.0.timing.round_medians_ms", [1.0, 2.0, 3.0, 4.0, 5.0], "round_medians_ms[0]"),
        ("entries.0.memory.peak_bytes", -5, "peak_bytes"),
        ("entries.0.memory.peak_bytes", True, "peak_bytes"),
        ("entries.0.status", None, "needs a 'status'"),
        ("entries.0.module", "ze", "unknown module 'ze'"),  # misspelt: malformed, not a regression
        ("entries.0.preset", "16f-res55", "unknown preset"),
        ("entries.0.options", {"r": "lots"}, "option r"),
        ("fingerprint.device_type", "abacus", "fingerprint.device_type"),
        ("fingerprint.cpu_model", {"nested": [[[1]]]}, "fingerprint.cpu_model"),
        ("reference.timing", None, "reference"),
        ("selection.modules", ["nope"], "unknown module 'nope'"),
    ]
    for field, value, needle in cases:
        path = _edited(timed_baseline, tmp_path / "b.json", _set(field, value))
        line = _malformed(run("check", "--baseline", str(path)), needle)
        assert line.startswith(f"error: baseline {path} is malformed: "), line
    path = _edited(timed_baseline, tmp_path / "nan.json", _set("entries.0.timing.samples_ms", [float("nan")] * 5))
    _malformed(run("check", "--baseline", str(path)), "samples_ms")


def test_a_baseline_that_contradicts_itself_is_malformed(flops_baseline, tmp_path) -> None:
    """The gate compares the per-category cells; a stored total, MAC count or category figure that does not
    follow from them means the file was edited or corrupted, and is refused."""
    for field, needle in (("total", "total is"), ("macs", "macs is"), ("by_category.convolution", "by_category.convolution")):
        def edit(doc, field=field):
            node = doc["entries"][0]["flops"]
            *parents, last = field.split(".")
            for p in parents:
                node = node[p]
            node[last] += 1000
        path = _edited(flops_baseline, tmp_path / "b.json", edit)
        _malformed(run("check", "--baseline", str(path)), "entries[0] (cs@banet).flops", needle, "contradicts itself")
    # a fully consistent edit is a real difference: exit 1, not 2 (test_flops_change_fails_with_a_readable_diff)


def test_misspelt_module_or_preset_is_malformed_not_a_regression(flops_baseline, tmp_path) -> None:
    def edit(doc):
        doc["entries"][1]["preset"] = "gone"
        doc["entries"][1]["key"] = "se@gone"

    path = _edited(flops_baseline, tmp_path / "b.json", edit)
    _malformed(run("check", "--baseline", str(path)), "entries[1] (se@gone)", "unknown preset", "attnbench snapshot")
    path = _edited(flops_baseline, tmp_path / "m.json", _set("entries.0.module", "cz"))
    _malformed(run("check", "--baseline", str(path)), "unknown module 'cz'")
    # the Python API refuses it too
    with pytest.raises(UsageError, match="malformed"):
        gate.check(json.loads(path.read_text()), gate.CheckOptions())


def test_new_entries_are_noted(flops_baseline, tmp_path) -> None:
    path = _edited(flops_baseline, tmp_path / "b.json", lambda doc: doc["entries"].pop(1))
    report = json.loads(run("check", "--baseline", str(path), "--json").stdout)
    by = {(f["key"], f["check"]): f for f in report["findings"]}
    assert by[("se@16f-res5", "entry")]["status"] == "new" and not by[("se@16f-res5", "entry")]["failed"]
    assert report["passed"]


# -- snapshot and check through the CLI -------------------------------------------------------------------


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

    path = _edited(flops_baseline, tmp_path / "b.json", edit)
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

    path = _edited(flops_baseline, tmp_path / "b.json", edit)
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

    path = _edited(flops_baseline, tmp_path / "b.json", edit)
    result = run("check", "--baseline", str(path))
    assert result.exit_code in (1, 2) and "Traceback" not in result.output, result.output
    if result.exit_code == 2:
        assert "se@huge" in one_line(result)
    else:
        assert "se@huge" in result.output and "FLOPs" in result.output


# -- timed: latency and memory ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def timed_baseline(tmp_path_factory) -> Path:
    """se at its smallest preset, 5 rounds of 0.02 s, on the CPU-time clock (snapshot's default on a CPU)."""
    path = tmp_path_factory.mktemp("gate") / "timed.json"
    result = run("snapshot", "--out", str(path), *TINY, "--device", "cpu", *FAST)
    assert result.exit_code == 0, result.output
    return path


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
        e["timing"]["samples_ms"] = [v / 10 for v in e["timing"]["samples_ms"]]  # "used to be 10x faster"
        e["timing"].pop("round_medians_ms")  # an old baseline: derived from samples_ms and round_sizes
        e["memory"]["peak_bytes"] = e["memory"]["peak_bytes"] // 2

    path = _edited(timed_baseline, tmp_path / "b.json", edit)
    result = run("check", "--baseline", str(path), "--json", "--retries", "0", "--no-load-control")
    assert result.exit_code == 1, result.output
    by = {f["check"]: f for f in json.loads(result.stdout)["findings"]}
    assert by["latency"]["status"] == "regression" and by["latency"]["ratio"] > 5
    assert by["latency"]["p_slower"] == pytest.approx(1 / 252)
    assert by["memory"]["status"] == "regression" and by["memory"]["ratio"] == pytest.approx(2, rel=0.01)
    assert run("check", "--baseline", str(path), "--flops-only").exit_code == 0


def test_unreachable_alpha_is_refused(timed_baseline) -> None:
    result = run("check", "--baseline", str(timed_baseline), "--alpha", "0.001", "--rounds", "5")
    assert result.exit_code == 2 and "--rounds 8 or more" in one_line(result)


def test_other_device_is_a_usage_error_unless_allowed(timed_baseline, tmp_path, monkeypatch) -> None:
    """A baseline timed elsewhere used to pass ("skipped", "no regressions", exit 0) without comparing latency."""
    path = _edited(timed_baseline, tmp_path / "b.json", lambda d: d["fingerprint"].update(cpu_model="Other CPU 9000"))
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


def test_injected_slowdown_is_sized_on_the_compared_clock(monkeypatch) -> None:
    """With the CPU-time clock the busy-wait is sized on thread CPU time and measured on it: 25% asked is
    25% seen (before, it was sized on wall time and a 25% injection measured x1.405). Interleaved calls,
    median of per-call ratios; only the calling thread's CPU time counts, so load cannot move it much."""
    import torch

    x = torch.randn(256, 256, generator=torch.Generator().manual_seed(0))

    def work() -> torch.Tensor:
        return torch.tanh(x @ x)

    monkeypatch.setenv(bench.INJECT_SLOWDOWN_ENV, "cs:0.25")
    slowed = bench.injected_slowdown("cs", work, "cpu", clock="cpu")
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ratios = []
        for _ in range(40):
            a = time.thread_time_ns()
            work()
            b = time.thread_time_ns()
            slowed()
            c = time.thread_time_ns()
            ratios.append((c - b) / (b - a))
    finally:
        torch.set_num_threads(old)
    ratios.sort()
    assert 1.15 < ratios[len(ratios) // 2] < 1.40
    with pytest.raises(UsageError):
        bench.injected_slowdown("cs", work, "cpu", clock="sundial")


# -- scripts/validate_gate.py ---------------------------------------------------------------------------


def _validate_script():
    spec = importlib.util.spec_from_file_location("validate_gate", ROOT / "scripts" / "validate_gate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_validation_script_schedule_and_summary() -> None:
    v = _validate_script()
    plan = v._schedule(4, 2, 2)
    assert sorted(plan) == sorted(["clean"] * 4 + ["injected"] * 2 + ["small"] * 2)
    assert plan[:3] != ["clean"] * 3  # interleaved, not one kind after another
    def report(failed_keys):
        return {"findings": [{"key": k, "check": "latency", "status": "regression" if k in failed_keys else "ok",
                              "failed": k in failed_keys, "ratio": 1.0, "decisive": ["raw"],
                              "attempts": [{"flags": ["raw"]}] if k in failed_keys else None}
                             for k in ("cs@banet", "nl@banet")]}
    runs = [v.classify(0, "clean", None, 0, report([])), v.classify(1, "clean", None, 1, report(["nl@banet"])),
            v.classify(2, "injected", "cs:0.25", 1, report(["cs@banet"])), v.classify(3, "small", "cs:0.10", 0, report([])),
            v.classify(4, "small", "cs:0.10", 1, report(["cs@banet", "nl@banet"]))]
    s = v.summarize(runs)
    assert (s["clean_runs"], s["false_alarms"], s["false_alarm_rate"]) == (2, 1, 0.5)
    assert (s["injected_runs"], s["detections"], s["detection_rate"]) == (1, 1, 1.0)
    assert (s["small_injected_runs"], s["small_detections"], s["small_injected_runs_with_other_blocks_flagged"]) == (2, 1, 1)
    with pytest.raises(SystemExit):
        v.main(["--inject", "cs"])  # NAME:FRACTION


def test_an_unsteady_baseline_is_named() -> None:
    def doc(ref, block):
        return {"reference": {"timing": {"round_medians_ms": ref}},
                "entries": [{"key": "cs@x", "status": "ok", "timing": {"round_medians_ms": block}}]}

    steady = doc([20.0, 20.4, 19.9, 20.1, 20.2], [16.0, 16.1, 16.2, 15.9, 16.0])
    assert gate.unsteady(steady) is None and max(gate.round_spread(steady).values()) < 1.03
    drifted = doc([19.85, 20.29, 29.04, 30.94, 31.1], [16.08, 16.03, 22.19, 21.89, 22.49])  # a snapshot seen here
    why = gate.unsteady(drifted)
    assert why is not None and "reference x1.57" in why and "cs@x x1.40" in why


def test_a_pass_on_an_unsteady_machine_says_latency_was_inconclusive() -> None:
    report = {"passed": True, "summary": {"entries": 2, "failures": 0, "by_status": {}}, "not_compared": [],
              "options": {}, "findings": [],
              "timing": {"inconclusive": ["cs@x (round medians spread x1.40)"]}}
    line = gate.headline(report)
    assert line.startswith("PASS (latency inconclusive") and "cs@x (round medians spread x1.40)" in line
    assert gate.spread_of([16.0, 22.4, 0.0]) == pytest.approx(1.4) and gate.spread_of([3.0]) == 1.0
