"""CUDA code paths, run end to end on the fake GPU of attnbench.testing.fake_cuda (over CPU tensors).

These tests check control flow, not numbers: which branch runs, what a row records, that failures become
rows and the run goes on, that nothing synchronises inside a graph capture. Times come from the host clock
and "device memory" is the bytes of the CPU tensors created, so no figure here says anything about a GPU.
Every test name contains "cuda", so ``pytest -k cuda`` selects them; none is skipped for lack of a GPU.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from attnbench import bench, gate
from attnbench.api import resolve, resolve_network
from attnbench.cli import run
from attnbench.measuring.timing import build_workload, time_callable
from attnbench.store import jsonl
from attnbench.testing.fake_cuda import CAPTURE_ERROR, FakeCuda

pytestmark = pytest.mark.cuda
ROOT = Path(__file__).resolve().parents[1]
TINY = {"C": 32, "T": 2, "H": 6, "W": 6}
FAST = bench.Settings(device="cuda", min_reps=3, target_s=0.005, max_warmup_s=0.01)


def tiny(name: str, **options: str) -> bench.Target:
    return bench.block_target(resolve(name, sizes=TINY, options=options))


def test_speed_cuda_cli_end_to_end(fake_cuda: FakeCuda, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "speed.jsonl"
    code = run(["speed", "--device", "cuda", "-m", "nl", "-m", "cs", "--C", "32", "--T", "2", "--H", "6", "--W", "6",
                "--reps", "3", "--target-s", "0.005", "--warmup-s", "0.01", "--out", str(out), "--json"])
    assert code == 0, capsys.readouterr().err
    rows = list(jsonl.read_rows(out))
    assert [r["module"] for r in rows] == ["nl", "cs"] and all(r["status"] == "ok" for r in rows)
    for r in rows:
        # --timing auto (the default): CUDA-graph replay where the capture works
        assert r["timing"]["timer"] == "cuda_event" and r["timing_mode"] == r["timing"]["timing_mode"] == "graph"
        assert r["launch_bound"] is not None and r["memory"]["graph_pool_bytes"] == r["memory"]["working_bytes"]
        assert r["fingerprint"]["gpu_name"] == fake_cuda.name and r["fingerprint"]["driver_version"]
        assert r["device_state_after"]["sm_clock_mhz"] == 1980 and r["device_state_after"]["throttle_reasons"] == []
        assert r["achieved"]["peak_basis"] and r["achieved"]["fraction_of_measured_matmul"] is not None
        assert r["roofline"]["matmul"]["flops_per_s"] > 0
        pred = r["memory_prediction"]
        assert pred["measured_metric"] == "CUDA-graph pool allocated by the capture"
        assert pred["predicted_over_measured"] == pytest.approx(1.0, rel=0.1)  # the fake allocator tracks tensors
        assert ":cuda-nvidia-h100-80gb-hbm3/torch-" in r["key"] and "/driver-580.00.00" in r["key"] and "impl=naive" in r["key"]


def test_cuda_auto_timing_falls_back_to_pipelined_when_capture_fails(fake_cuda: FakeCuda) -> None:
    class Syncs(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            torch.cuda.synchronize()
            return x + 1

    t = bench.Target("block", "syncs", "x", ((1, 4),), 4, Syncs)
    row = bench.run([t], FAST, None, resume=False, roofline=False)[0]
    assert row["status"] == "ok" and row["timing_mode"] == "pipelined"
    assert row["timing"]["timing_note"].startswith("CUDA graph capture failed") and "pipelined instead" in row["timing"]["timing_note"]
    assert row["memory_prediction"] is None and row["memory"]["working_metric"] == "cuda peak_allocated_delta_bytes"


def test_cuda_graph_capture_failure_is_a_row_and_the_run_goes_on(fake_cuda: FakeCuda) -> None:
    class Syncs(nn.Module):  # synchronising inside a capture fails, as on a real GPU
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            torch.cuda.synchronize()
            return x + 1

    bad = bench.Target("block", "syncs", "x", ((1, 4),), 4, Syncs)
    rows = bench.run([bad, tiny("se")], bench.Settings(device="cuda", graphs=True, min_reps=3, target_s=0.005,
                                                       max_warmup_s=0.01), None, resume=False, roofline=False)
    assert rows[0]["status"].startswith("error: CUDA graph capture failed") and CAPTURE_ERROR in rows[0]["status"]
    assert rows[1]["status"] == "ok" and rows[1]["timing"]["timing_mode"] == "graph"
    # with graphs, memory is what the capture allocated (the graph's pool), not an eager call
    assert rows[1]["memory_prediction"]["measured_metric"].startswith("CUDA-graph pool")
    assert rows[1]["timing"]["graph_pool_bytes"] == rows[1]["memory_prediction"]["measured_bytes"] > 0


def test_cuda_pipelined_syncs_once_per_round_isolated_per_call(fake_cuda: FakeCuda, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    sync = torch.cuda.synchronize
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a, **k: (calls.append(1), sync(*a, **k))[1])
    x = torch.zeros(4)
    for mode, expect_per_call in (("pipelined", False), ("isolated", True)):
        calls.clear()
        m = time_callable(lambda: x + 1, device="cuda", timing=mode, min_reps=50, target_s=0.0, max_reps=50,
                          warmup_min=1, max_warmup_s=0.0)
        assert m.timing_mode == mode and m.n == 50
        total_calls = m.warmup_reps + m.n
        assert (len(calls) >= total_calls) is expect_per_call


def test_cuda_oom_is_a_row_released_outside_the_handler(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[object] = []

    def release() -> None:  # the exception (and the tensors its traceback holds) must be gone by now
        seen.append(sys.exc_info()[0])

    monkeypatch.setattr(bench, "release_memory", release)
    with FakeCuda(total_memory=64 * 2**20):
        big = bench.block_target(resolve("nl", sizes={"C": 32, "T": 8, "H": 28, "W": 28}))  # a 157 MB map
        rows = bench.run([big, tiny("eca")], FAST, None, resume=False, roofline=False)
    assert [r["status"] for r in rows] == ["OOM", "ok"]
    assert seen and all(exc is None for exc in seen)


def test_cuda_max_fit_naive_vs_sdpa(tmp_path: Path) -> None:
    with FakeCuda(total_memory=48 * 2**20):
        code = run(["sweep", "-m", "nl", "--T", "2", "--HW", "7", "--C", "32", "--device", "cuda", "--reps", "1",
                    "--target-s", "0.001", "--max-fit", "--max-fit-limit", "64", "--preset", "banet",
                    "--out", str(tmp_path / "a.jsonl")])
        assert code == 0
        # sdpa runs at the preset's T = 16 where naive does not even run at T = 4; searching up to 64 would
        # only add sdpa probes at T = 32 ... 64, each an attention over up to 50176 positions on the CPU
        code = run(["sweep", "-m", "nl", "--T", "2", "--HW", "7", "--C", "32", "--device", "cuda", "--reps", "1",
                    "--target-s", "0.001", "--max-fit", "--max-fit-limit", "16", "-o", "impl=sdpa",
                    "--out", str(tmp_path / "b.jsonl")])
        assert code == 0
    naive = [r for r in jsonl.read_rows(tmp_path / "a.jsonl") if r.get("kind") == "max-fit"][0]
    sdpa = [r for r in jsonl.read_rows(tmp_path / "b.jsonl") if r.get("kind") == "max-fit"][0]
    assert naive["failure"] == "OOM" and 1 <= naive["largest_fit"] < 64
    assert sdpa["impl"] == "sdpa" and (sdpa["largest_fit"] or 0) > naive["largest_fit"]
    assert "impl=sdpa" in sdpa["key"]


def test_table_vi_cuda_cli(fake_cuda: FakeCuda, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                           monkeypatch: pytest.MonkeyPatch) -> None:
    # control flow only: ECO-Lite on 64 x 64 frames (the full ECO at 224 x 224 takes most of a minute of CPU
    # arithmetic behind the fake device, at 64 x 64 twice as long as ECO-Lite: each op is sized on the meta
    # device first); tests/networks/test_eco.py checks that table-vi times the full ECO
    targets = bench.table_vi_targets
    monkeypatch.setattr(bench, "table_vi_targets", lambda impl, preset: targets(impl, "eco-lite", preset, size=64))
    code = run(["table-vi", "--device", "cuda", "--preset", "4f", "--reps", "1", "--target-s", "0.001",
                "--warmup-s", "0", "--impl", "sdpa", "--out", str(tmp_path / "t.jsonl"), "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    result = json.loads(captured.out)
    assert [m["status"] for m in result["methods"]] == ["ok", "ok", "ok"]
    assert result["settings"]["impl"] == "sdpa" and result["settings"]["precision"] == "fp32"
    assert result["summary"]["measured_cs_over_nl_speed"] > 0


def test_cuda_injected_slowdown_spins_the_gpu_and_can_be_captured(fake_cuda: FakeCuda, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CUDA slowdown is a GPU spin kernel (torch.cuda._sleep) sized on the call's GPU time, with no
    synchronisation inside the call, so a graph can capture it (before, its synchronize made every capture
    fail)."""
    monkeypatch.setenv(bench.INJECT_SLOWDOWN_ENV, "cs:0.5")
    work = build_workload(resolve("cs", sizes=TINY).build("cpu"), [(1, 32, 2, 6, 6)], device="cuda")
    slowed = bench.injected_slowdown("cs", work, "cuda")  # sized by timing the call as it will be compared
    assert slowed is not work
    before = fake_cuda.captures
    m = time_callable(slowed, device="cuda", cuda_graph=True, min_reps=3, target_s=0.0, max_warmup_s=0.0)
    assert m.timing_mode == "graph" and fake_cuda.captures == before + 2  # a throwaway capture, then the timed one


def test_network_flops_are_counted_lazily_cuda(fake_cuda: FakeCuda, monkeypatch: pytest.MonkeyPatch) -> None:
    counted: list[int] = []
    real = bench.count
    monkeypatch.setattr(bench, "count", lambda *a, **k: (counted.append(1), real(*a, **k))[1])
    monkeypatch.setattr(bench, "_NETWORK_FLOPS", {})
    t = bench.network_target(resolve_network("eco-lite", "cs", "4f", size=64))
    again = bench.network_target(resolve_network("eco-lite", "cs", "4f", size=64))
    assert counted == []  # making targets counts nothing (speed --device cuda starts timing at once)
    flops, by_cat = t.flops()
    assert flops > 0 and by_cat["matmul"] > 0 and counted == [1]
    assert again.flops()[0] == flops and counted == [1]  # once per shape


def test_gate_cuda_snapshot_and_check_detect_an_injected_slowdown(fake_cuda: FakeCuda, monkeypatch: pytest.MonkeyPatch) -> None:
    items = gate.select(["cs", "se"], "default", TINY)
    plan = gate.TimingPlan(device="cuda", rounds=5, round_s=0.01, min_reps=5, max_warmup_s=0.01).check()
    baseline = json.loads(json.dumps(gate.snapshot(items, plan, {}), default=str))
    assert baseline["fingerprint"]["device_type"] == "cuda" and baseline["fingerprint"]["driver_version"]
    monkeypatch.setenv(bench.INJECT_SLOWDOWN_ENV, "cs:1.0")
    report = gate.check(baseline, gate.CheckOptions(retries=1))
    failing = {f["key"] for f in report["findings"] if f["check"] == "latency" and f["failed"]}
    assert any(k.startswith("cs@") for k in failing), report["findings"]
    # on CUDA the raw times decide by default: the reference workload does not track a GPU's speed
    assert report["options"]["load_control"] is False
    assert {f["mode"] for f in report["findings"] if f["check"] == "latency" and "mode" in f} == {"raw"}
    # and the other blocks decide nothing there, so a suspect is re-measured without them
    assert all(f["peers"] == [] and f["peers_ratio"] is None for f in report["findings"] if f["check"] == "latency" and "mode" in f)


def test_gpu_check_script_cuda_dry_run(tmp_path: Path) -> None:
    import subprocess

    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gpu-check"), "--fake-cuda", "--blocks", "se,nl", "--networks",
         "eco-lite", "--budget-s", "25", "--gate-runs", "1", "--max-fit-limit", "16", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == sorted(["gpu-check.json", "README.md", "blocks.csv", "networks.csv", "table-vi.csv",
                            "max-fit.csv", "crosscheck.csv", "gate.csv"])
    doc = json.loads((tmp_path / "gpu-check.json").read_text())
    assert doc["fake_cuda"] and not doc["errors"]
    assert any(r.get("status") == "ok" and r.get("impl") == "sdpa" for r in doc["blocks"])
    assert "Fake CUDA" in (tmp_path / "README.md").read_text()
    for r in doc["networks"]:  # a best-batch search the budget cut short names no best batch
        cut = [x for x in doc["networks"] if x.get("search") == "best batch" and x["status"] == "not run: budget"
               and (x["network"], x["attn"]) == (r["network"], r["attn"])]
        assert not (cut and r.get("best_batch")), r


def test_gpu_check_script_cuda_only_the_sections_named(tmp_path: Path) -> None:
    import subprocess

    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gpu-check"), "--fake-cuda", "--only", "sdpa", "--budget-s", "20",
         "--out", str(tmp_path)], capture_output=True, text=True, timeout=300, cwd=tmp_path,
        env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads((tmp_path / "gpu-check.json").read_text())
    assert doc["sections"] == ["sdpa"] and doc["roofline"] == {} and doc["sdpa_backends"]
    assert all(doc[k] == [{"status": "not selected (--only)"}] for k in ("blocks", "networks", "table_vi", "gate"))
    bad = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu-check"), "--fake-cuda", "--only", "nope"],
                         capture_output=True, text=True, timeout=60, env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert bad.returncode == 2 and "unknown section nope" in bad.stderr


def test_gpu_check_gate_record_cuda_keeps_the_whole_finding() -> None:
    import importlib.util
    from importlib.machinery import SourceFileLoader

    loader = SourceFileLoader("gpu_check", str(ROOT / "scripts" / "gpu-check"))
    script = importlib.util.module_from_spec(importlib.util.spec_from_loader("gpu_check", loader))
    loader.exec_module(script)
    finding = {"key": "cs@banet", "check": "latency", "status": "unconfirmed", "failed": False, "raw_ratio": 1.104,
               "normalized_ratio": 1.02, "flags": ["raw"], "attempts": [{"flags": ["raw"]}, {"flags": []}],
               "detail": "looked slower (raw) but not over 2 measurements together: noise or machine load, not counted"}
    report = {"passed": True, "findings": [finding, {"key": "cs@banet", "check": "memory", "failed": False}],
              "timing": {"rank_test": {"alpha": 0.01}}}
    rec = script.gate_record(3, "injected", 0.1, report, "cs")
    assert rec["slowdown"] == 0.1 and rec["passed"] and rec["failing"] == []
    assert rec["finding"]["detail"] == finding["detail"] and rec["finding"]["attempts"] == finding["attempts"]
    assert rec["finding"]["raw_ratio"] == 1.104 and rec["finding"]["pooled"] is None
    md = script.summary_md({"fingerprint": {}, "command": "x", "wall_s": 1.0, "fake_cuda": True, "blocks": [],
                            "table_vi": [], "crosscheck": [], "networks": [], "max_fit": [], "errors": [],
                            "gate_injection": "10% slowdown of cs", "gate": [rec]})
    assert "detections: 0 of 1" in md and "missed run 3: raw ratio 1.104, normalized 1.020: looked slower" in md


def test_report_speed_and_roofline_cuda(fake_cuda: FakeCuda, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The report's timing sections on CUDA: labelled GPU, never CPU; with a budget each target is probed on
    the device first; the roofline has one point per block and kernel. Tiny shapes (control flow only)."""
    from attnbench.api import resolve as resolve_case
    from attnbench.measuring import roofline
    from attnbench.report import job, plots

    # the calibration itself is tested in test_speed_cuda_cli_end_to_end (whose cached record may be read here)
    measured = {"matmul": {"n": 8192, "dtype": "fp32", "flops_per_s": 5e13}, "matmul_tf32": None,
                "copy": {"bytes": 2**30, "bytes_per_s": 3e12}}
    monkeypatch.setattr(roofline, "measure_roofline", lambda *a, **k: measured)

    def plan(ctx, modules=None):
        out = []
        for group, name, impl, sizes in (("headline", "nl", "naive", TINY), ("sdpa", "nl", "sdpa", TINY),
                                         ("scan", "nl", "naive", {**TINY, "T": 4})):
            case = resolve_case(name, sizes=sizes, options={"impl": impl} if impl else None)
            out.append(job.Planned(bench.block_target(case), case, group))
        return out

    monkeypatch.setattr(job, "speed_plan", plan)
    monkeypatch.setattr(job, "speed_settings", lambda ctx, batch=1: FAST)
    for name in ("latency_vs_size", "memory_vs_size"):  # tested in tests/test_plots.py; the roofline's is drawn
        monkeypatch.setattr(plots, name, lambda *a, **k: None)
    r = job.run_report(job.ReportOptions(device="cuda", budget_s=600), tmp_path, sections=("speed", "roofline"))
    speed, roof = r.sections
    assert speed.status == "ok" and roof.status == "ok", (speed.error, roof.error)
    rows = json.loads((tmp_path / "speed.json").read_text())["rows"]
    assert len(rows) == 3 and all(x["status"] == "ok" and x["fingerprint"]["gpu_name"] == fake_cuda.name for x in rows)
    md = (tmp_path / "speed.md").read_text()
    assert f"Measured on GPU ({fake_cuda.name})" in md and "Measured on CPU" not in md
    assert f"| cuda ({fake_cuda.name}) " in md
    points = json.loads((tmp_path / "roofline.json").read_text())["points"]
    assert len(points) == 2  # naive and sdpa; the T scan's row is not a point
    svg = (tmp_path / "roofline.svg").read_text()
    assert f"Roofline on GPU ({fake_cuda.name})" in svg and "matmul" in svg and "CPU (" not in svg
    assert plots.is_png(tmp_path / "roofline.png")
