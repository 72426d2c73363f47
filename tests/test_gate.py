"""The CI performance gate: the U test on hand-computed cases, the pure comparisons, snapshot and check
through the CLI (exit codes 0/1/2, FLOPs diffs, memory, the injected slowdown, the step summary), and the
project's own committed FLOPs baseline."""

import copy
import json
import math
import random
from pathlib import Path

import pytest
from typer.testing import CliRunner

from attnbench import bench, gate
from attnbench.api import resolve
from attnbench.cli import app
from attnbench.errors import UsageError
from attnbench.measure.stats import average_ranks, mann_whitney_u

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()
# one tiny block for timed runs: se at its smallest preset takes well under a millisecond per call
TINY = ("--modules", "se", "--presets", "16f-res5")
FAST = ("--rounds", "2", "--round-s", "0.05")


def run(*args: str):
    return runner.invoke(app, list(args))


def one_line(result) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert "Traceback" not in result.output
    return lines[0]


# -- Mann-Whitney U ------------------------------------------------------------------------------------


def test_average_ranks_share_tied_ranks() -> None:
    ranks, ties = average_ranks([10, 20, 10, 30, 20, 20])
    assert ranks == [1.5, 4.0, 1.5, 6.0, 4.0, 4.0]
    assert sorted(ties) == [2, 3]


def test_u_without_ties_by_hand() -> None:
    # every x beats every y: U = 3 * 4 = 12; mean 6; variance 3*4/12 * (7 + 1) = 8
    r = mann_whitney_u([5, 6, 7], [1, 2, 3, 4], "greater")
    assert r.u == 12 and r.mean_u == 6 and r.std_u == pytest.approx(math.sqrt(8))
    z = (12 - 6 - 0.5) / math.sqrt(8)
    assert r.z == pytest.approx(z)
    assert r.p_value == pytest.approx(0.5 * math.erfc(z / math.sqrt(2)))  # 0.0259
    assert r.p_value == pytest.approx(0.02592, abs=1e-5)
    less = mann_whitney_u([5, 6, 7], [1, 2, 3, 4], "less")
    assert less.p_value == pytest.approx(0.5 * math.erfc(-((12 - 6 + 0.5) / math.sqrt(8)) / math.sqrt(2)))  # P(Z < 2.298)
    assert less.p_value == pytest.approx(0.98922, abs=1e-5)
    assert mann_whitney_u([5, 6, 7], [1, 2, 3, 4], "two-sided").p_value == pytest.approx(2 * r.p_value)
    assert r.effect == 1.0


def test_u_with_ties_by_hand() -> None:
    # x = 3, 4, 5 vs y = 1, 2, 3: pairs won 2.5 + 3 + 3 = 8.5 (the tie 3 vs 3 counts one half).
    # Pooled ranks 1, 2, 3.5, 3.5, 5, 6: R_x = 3.5 + 5 + 6 = 14.5, U = 14.5 - 6 = 8.5.
    # One tie group of 2: variance = 9/12 * (7 - (8 - 2) / 30) = 0.75 * 6.8 = 5.1.
    r = mann_whitney_u([3, 4, 5], [1, 2, 3], "greater")
    assert r.u == 8.5 and r.std_u == pytest.approx(math.sqrt(5.1))
    assert r.p_value == pytest.approx(0.5 * math.erfc((8.5 - 4.5 - 0.5) / math.sqrt(5.1) / math.sqrt(2)))
    assert r.p_value == pytest.approx(0.06059, abs=1e-5)


def test_u_all_tied_has_no_evidence() -> None:
    assert mann_whitney_u([1, 1, 1], [1, 1], "greater").p_value == 1.0
    with pytest.raises(ValueError):
        mann_whitney_u([], [1.0])
    with pytest.raises(ValueError):
        mann_whitney_u([1.0], [1.0], "bigger")


def test_u_matches_scipy_where_installed() -> None:
    stats = pytest.importorskip("scipy.stats")
    rng = random.Random(1)
    for alternative in ("greater", "less", "two-sided"):
        for _ in range(50):
            x = [rng.randint(0, 12) for _ in range(rng.randint(2, 40))]
            y = [rng.randint(0, 12) + rng.random() * (rng.random() < 0.5) for _ in range(rng.randint(2, 40))]
            if len(set(x + y)) < 2:
                continue
            ours = mann_whitney_u(x, y, alternative)
            theirs = stats.mannwhitneyu(x, y, alternative=alternative, method="asymptotic", use_continuity=True)
            assert ours.u == pytest.approx(float(theirs.statistic))
            assert ours.p_value == pytest.approx(float(theirs.pvalue), rel=1e-9, abs=1e-12)


# -- the pure comparisons --------------------------------------------------------------------------------


OLD = [10 + 0.02 * i for i in range(60)]


def test_latency_needs_significance_and_effect_size() -> None:
    slower = gate.compare_latency(OLD, [v * 1.25 for v in OLD])
    assert slower["status"] == "regression" and slower["failed"] and slower["ratio"] == pytest.approx(1.25)
    small = gate.compare_latency(OLD, [v * 1.05 for v in OLD])  # significant, but only 5% slower
    assert small["p_slower"] < 0.01 and small["status"] == "ok" and not small["failed"]
    few = gate.compare_latency([10, 11, 12], [13, 14, 15])  # 27% slower, but 3 samples: p = 0.04
    assert few["ratio"] > 1.1 and few["p_slower"] > 0.01 and few["status"] == "ok"
    assert gate.compare_latency(OLD, OLD[::-1])["status"] == "ok"
    faster = gate.compare_latency(OLD, [v * 0.8 for v in OLD])
    assert faster["status"] == "improved" and not faster["failed"]
    custom = gate.compare_latency(OLD, [v * 1.25 for v in OLD], alpha=0.01, max_slowdown=1.3)
    assert custom["status"] == "ok"


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


def test_normalization_per_round() -> None:
    # the second round ran on a machine twice as slow: per-round normalisation cancels it
    assert gate.normalized([2, 2, 4, 4], [1, 1, 2, 2], [2, 2], [2, 2]) == [2, 2, 2, 2]
    # without round sizes: one reference median for the run
    assert gate.normalized([3, 6], [1.0, 2.0, 3.0]) == [1.5, 3.0]


def test_load_control_needs_the_slowdown_relative_to_the_reference() -> None:
    sizes = [30, 30]
    old = {"samples_ms": OLD, "round_sizes": sizes}
    ref = {"samples_ms": OLD, "round_sizes": sizes}
    busy = {"samples_ms": [v * 1.3 for v in OLD], "round_sizes": sizes}  # everything 30% slower
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


# -- snapshot and check through the CLI -------------------------------------------------------------------


@pytest.fixture(scope="module")
def flops_baseline(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("gate") / "flops.json"
    result = run("snapshot", "--out", str(path), "--modules", "cs,se", "--presets", "banet,16f-res5")
    assert result.exit_code == 0, result.output
    return path


def test_flops_snapshot_and_unchanged_check_pass(flops_baseline) -> None:
    doc = json.loads(flops_baseline.read_text())
    assert doc["schema"] == gate.SCHEMA and doc["timed"] is False and doc["fingerprint"] is None
    assert [e["key"] for e in doc["entries"]] == ["cs@banet", "se@16f-res5"]
    cs = doc["entries"][0]
    assert set(cs["flops"]["cells"]) == set(gate.CATEGORIES) and cs["params"] > 0
    assert cs["flops"]["total"] == gate.cells_flops(cs["flops"]["cells"])
    result = run("check", "--baseline", str(flops_baseline))
    assert result.exit_code == 0, result.output
    assert "PASS" in result.output


def _edited(src: Path, dst: Path, edit) -> Path:
    doc = json.loads(src.read_text())
    edit(doc)
    dst.write_text(json.dumps(doc))
    return dst


def test_flops_change_fails_with_a_readable_diff(flops_baseline, tmp_path, monkeypatch) -> None:
    def edit(doc):
        cells = doc["entries"][0]["flops"]["cells"]
        cells["convolution"]["mac"] -= 1000  # the code now does 1000 more MACs than the baseline says
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


def test_missing_preset_and_new_entries(flops_baseline, tmp_path) -> None:
    def edit(doc):
        doc["entries"][1]["preset"] = "gone"
        doc["entries"][1]["key"] = "se@gone"

    path = _edited(flops_baseline, tmp_path / "b.json", edit)
    report = json.loads(run("check", "--baseline", str(path), "--json").stdout)
    by = {(f["key"], f["check"]): f for f in report["findings"]}
    assert by[("se@gone", "entry")]["status"] == "missing" and by[("se@gone", "entry")]["failed"]
    assert by[("se@16f-res5", "entry")]["status"] == "new" and not by[("se@16f-res5", "entry")]["failed"]


@pytest.mark.parametrize(
    "content,needle",
    [
        (None, "no such file"),
        ("{not json", "not valid JSON"),
        ("[]", "JSON object"),
        ('{"schema": "other"}', "schema must be"),
        (json.dumps({"schema": gate.SCHEMA, "timed": False, "entries": []}), "non-empty list"),
        (json.dumps({"schema": gate.SCHEMA, "timed": False, "entries": [{"key": "cs@banet", "module": "cs", "preset": "banet",
                     "input_shape": [1, 2, 3], "params": 1, "flops": {"cells": {}}}]}), "input_shape"),
        (json.dumps({"schema": gate.SCHEMA, "timed": False, "entries": [{"key": "cs@banet", "module": "cs", "preset": "banet",
                     "input_shape": [1, 96, 16, 28, 28], "params": 1, "flops": {"cells": {"magic": {"mac": 1}}}}]}), "unknown op category"),
        (json.dumps({"schema": gate.SCHEMA, "timed": True, "entries": [{"key": "a", "module": "cs"}]}), "settings"),
    ],
)
def test_malformed_baseline_is_one_line_exit_2(tmp_path, content, needle) -> None:
    path = tmp_path / "baseline.json"
    if content is not None:
        path.write_text(content)
    result = run("check", "--baseline", str(path))
    assert result.exit_code == 2, result.output
    assert needle in one_line(result)


@pytest.mark.parametrize(
    "args,needle",
    [
        (("--alpha", "2"), "--alpha"),
        (("--max-slowdown", "0.9"), "--max-slowdown"),
        (("--memory-tolerance", "-1"), "--memory-tolerance"),
    ],
)
def test_bad_check_options_exit_2(flops_baseline, args, needle) -> None:
    result = run("check", "--baseline", str(flops_baseline), *args)
    assert result.exit_code == 2 and needle in one_line(result)


def test_bad_snapshot_options_exit_2(tmp_path) -> None:
    out = str(tmp_path / "x.json")
    assert "valid choices" in one_line(run("snapshot", "--out", out, "--modules", "cs", "--presets", "nope"))
    assert "valid choices" in one_line(run("snapshot", "--out", out, "--modules", "nope"))
    result = run("snapshot", "--out", out, *TINY, "--device", "cpu", "--clock", "cpu", "--threads", "2")
    assert result.exit_code == 2 and "--threads 1" in one_line(result)


# -- timed: latency and memory ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def timed_baseline(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("gate") / "timed.json"
    result = run("snapshot", "--out", str(path), *TINY, "--device", "cpu", "--clock", "wall", *FAST)
    assert result.exit_code == 0, result.output
    return path


def test_timed_snapshot_holds_samples_memory_reference_and_fingerprint(timed_baseline) -> None:
    doc = json.loads(timed_baseline.read_text())
    assert doc["timed"] and doc["fingerprint"]["device_type"] == "cpu" and doc["settings"]["rounds"] == 2
    assert doc["settings"]["clock"] == "wall"
    (entry,) = doc["entries"]
    t = entry["timing"]
    assert entry["status"] == "ok" and len(t["samples_ms"]) == t["n"] == sum(t["round_sizes"]) and t["rounds"] == 2
    assert {"median_ms", "iqr_ms", "p10_ms", "p90_ms"} <= set(t)
    assert entry["memory"]["peak_bytes"] > 0 and "tracked op by op" in entry["memory"]["metric"]
    assert doc["reference"]["status"] == "ok" and doc["reference"]["timing"]["median_ms"] > 0


def test_timed_check_unchanged_passes(timed_baseline) -> None:
    # a wide threshold: this asserts the plumbing (exit 0, findings present), not the noise level,
    # which scripts/validate_gate.py measures
    result = run("check", "--baseline", str(timed_baseline), "--max-slowdown", "20", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    checks = {f["check"]: f for f in report["findings"]}
    assert {"params", "flops", "latency", "memory"} <= set(checks)
    assert checks["memory"]["status"] == "ok"  # the op-by-op peak is exact
    assert checks["latency"]["mode"] == "raw+reference" and checks["latency"]["normalized_ratio"] is not None


def test_injected_slowdown_is_detected(timed_baseline, monkeypatch) -> None:
    monkeypatch.setenv(bench.INJECT_SLOWDOWN_ENV, "se:4")  # five times slower
    result = run("check", "--baseline", str(timed_baseline), "--max-slowdown", "2")
    assert result.exit_code == 1, result.output
    assert "latency regression" in result.output and "se@16f-res5" in result.output


def test_latency_and_memory_regressions_from_an_edited_baseline(timed_baseline, tmp_path) -> None:
    def edit(doc):
        e = doc["entries"][0]
        e["timing"]["samples_ms"] = [v / 10 for v in e["timing"]["samples_ms"]]  # "used to be 10x faster"
        e["memory"]["peak_bytes"] = e["memory"]["peak_bytes"] // 2

    path = _edited(timed_baseline, tmp_path / "b.json", edit)
    result = run("check", "--baseline", str(path), "--json", "--retries", "0", "--no-load-control")
    assert result.exit_code == 1, result.output
    by = {f["check"]: f for f in json.loads(result.stdout)["findings"]}
    assert by["latency"]["status"] == "regression" and by["latency"]["ratio"] > 5
    assert by["memory"]["status"] == "regression" and by["memory"]["ratio"] == pytest.approx(2, rel=0.01)
    assert run("check", "--baseline", str(path), "--flops-only").exit_code == 0


def test_other_device_is_not_compared_unless_normalized(timed_baseline, tmp_path) -> None:
    path = _edited(timed_baseline, tmp_path / "b.json", lambda d: d["fingerprint"].update(cpu_model="Other CPU 9000"))
    result = run("check", "--baseline", str(path), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["timing"]["device_differences"] and not report["timing"]["latency_compared"]
    lat = next(f for f in report["findings"] if f["check"] == "latency")
    assert lat["status"] == "skipped" and "--normalize" in lat["detail"]
    result = run("check", "--baseline", str(path), "--json", "--normalize", "--max-slowdown", "20")
    assert result.exit_code == 0, result.output
    lat = next(f for f in json.loads(result.stdout)["findings"] if f["check"] == "latency")
    assert lat["mode"] == "normalized" and lat["ratio"] > 0


def test_cpu_clock_detects_the_injected_slowdown(tmp_path, monkeypatch) -> None:
    path = tmp_path / "cpu.json"
    result = run("snapshot", "--out", str(path), *TINY, "--device", "cpu", *FAST)  # CPU: the cpu clock by default
    assert result.exit_code == 0, result.output
    doc = json.loads(path.read_text())
    assert doc["settings"]["clock"] == "cpu" and doc["settings"]["threads"] == 1 and doc["settings"]["malloc"] == "cached"
    assert doc["entries"][0]["timing"]["malloc"] in ("cached", "system (mallopt unavailable)")
    assert doc["entries"][0]["timing"]["timer"] == "thread_time_ns"
    monkeypatch.setenv(bench.INJECT_SLOWDOWN_ENV, "se:4")
    result = run("check", "--baseline", str(path), "--max-slowdown", "2", "--json")
    assert result.exit_code == 1, result.output
    lat = next(f for f in json.loads(result.stdout)["findings"] if f["check"] == "latency")
    assert lat["status"] == "regression" and lat["raw_ratio"] > 2


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
    import time as _time

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
            a = _time.thread_time_ns()
            work()
            b = _time.thread_time_ns()
            slowed()
            c = _time.thread_time_ns()
            ratios.append((c - b) / (b - a))
    finally:
        torch.set_num_threads(old)
    ratios.sort()
    assert 1.15 < ratios[len(ratios) // 2] < 1.40
    with pytest.raises(UsageError):
        bench.injected_slowdown("cs", work, "cpu", clock="sundial")
