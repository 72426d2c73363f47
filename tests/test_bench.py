"""Speed runs on CPU: rows, OOM kept as a row, resume, the NL/CS ratio, and the CLI's error paths."""

import json

import torch
from torch import nn
from typer.testing import CliRunner

from attnbench import bench
from attnbench.api import resolve
from attnbench.cli import app
from attnbench.store import jsonl

FAST = bench.Settings(device="cpu", min_reps=3, target_s=0.01, max_warmup_s=0.05)


def tiny(name: str) -> bench.Target:
    return bench.block_target(resolve(name, sizes={"C": 32, "T": 2, "H": 4, "W": 4}))


def test_block_row_has_statistics_flops_and_memory(tmp_path) -> None:
    rows = bench.run([tiny("cs")], FAST, str(tmp_path / "s.jsonl"), resume=False)
    row = rows[0]
    assert row["status"] == "ok"
    assert row["timing"]["n"] >= 3 and row["timing"]["median_ms"] > 0
    assert {"p10_ms", "p90_ms", "iqr_ms", "std_ms", "noisy"} <= set(row["timing"])
    assert row["flops"] == resolve("cs", sizes={"C": 32, "T": 2, "H": 4, "W": 4}).spec.cost(
        resolve("cs", sizes={"C": 32, "T": 2, "H": 4, "W": 4}).shape).flops
    assert row["achieved"]["fraction_of_peak"] is None  # no peak on CPU
    assert row["memory"]["peak_allocated_bytes"] is None  # CUDA-only figure, marked not measured
    assert row["fingerprint"]["device_type"] == "cpu"
    assert json.loads((tmp_path / "s.jsonl").read_text().splitlines()[0])["key"] == row["key"]


def test_out_of_memory_is_a_row_and_the_run_goes_on(tmp_path) -> None:
    def explode() -> nn.Module:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 40.00 GiB")

    oom = bench.Target("block", "nl", "huge", ((1, 8, 2, 4, 4),), 1, explode)
    rows = bench.run([oom, tiny("nl")], FAST, str(tmp_path / "s.jsonl"), resume=False)
    assert [r["status"] for r in rows] == ["OOM", "ok"]
    assert len(list(jsonl.read_rows(tmp_path / "s.jsonl"))) == 2


def test_resume_skips_finished_rows_and_tolerates_a_torn_line(tmp_path) -> None:
    path = tmp_path / "s.jsonl"
    first = bench.run([tiny("se")], FAST, str(path), resume=False)
    with open(path, "a") as fh:
        fh.write('{"key": "torn')  # a run killed mid-write
    calls = []
    again = bench.run([tiny("se"), tiny("eca")], FAST, str(path), resume=True, on_row=calls.append)
    assert again[0] == first[0]
    keys = [r["key"] for r in jsonl.read_rows(path)]
    assert len(keys) == len(set(keys)) == 2


def test_latency_and_flop_ratio_of_nl_and_cs() -> None:
    rows = bench.run([tiny("nl"), tiny("cs")], FAST, None, resume=False)
    ratio = bench.latency_ratio(rows, "nl", "cs")
    assert ratio["latency_ratio"] > 0
    assert ratio["flop_ratio"] == rows[0]["flops"] / rows[1]["flops"]


def test_speed_cli_on_cpu_and_cuda_absent(tmp_path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["speed", "--device", "cpu", "-m", "eca", "--reps", "3", "--target-s", "0.01",
                              "--out", str(tmp_path / "r.jsonl"), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout.splitlines()[0])["module"] == "eca"
    if not torch.cuda.is_available():
        res = runner.invoke(app, ["speed", "--device", "cuda", "-m", "cs"])
        assert res.exit_code == 2
        assert "CUDA is not available" in res.output and "Traceback" not in res.output
    res = runner.invoke(app, ["speed", "--device", "cpu", "--dtype", "fp8", "-m", "cs"])
    assert res.exit_code == 2 and "valid choices" in res.output


def test_row_key_names_every_setting_that_changes_a_measurement() -> None:
    """Block options, precision, threads, timing, L2 flush, channels-last, repetitions and the device
    identity are in the key: `nl -o ratio=4 --T 8` and `nl --T 8` no longer share one."""
    fp = {"device_type": "cpu", "cpu_model": "AMD EPYC"}
    base = bench.block_target(resolve("nl", sizes={"T": 8}))
    other = bench.block_target(resolve("nl", sizes={"T": 8}, options={"ratio": "4"}))
    s = bench.Settings()
    keys = {base.key(s, fp), other.key(s, fp)}
    for changed in (dict(dtype="bf16"), dict(dtype="bf16", precision="autocast"), dict(threads=torch.get_num_threads() + 1), dict(min_reps=3),
                    dict(target_s=0.5), dict(channels_last=True), dict(batch=2), dict(compile=True)):
        keys.add(base.key(bench.Settings(**changed), fp))
    keys.add(base.key(s, {"device_type": "cuda", "gpu_name": "NVIDIA H100 80GB HBM3"}))
    keys.add(bench.block_target(resolve("nl", sizes={"T": 8}, options={"impl": "sdpa"})).key(s, fp))
    assert len(keys) == 12
    assert "impl=naive" in base.key(s, fp) and "cpu-amd-epyc" in base.key(s, fp) and "fp32" in base.key(s, fp)
    cuda = bench.Settings(device="cuda", flush_l2=True)
    assert base.key(cuda, fp) != base.key(bench.Settings(device="cuda"), fp)
    assert "timing=auto" in base.key(bench.Settings(device="cuda"), fp)
    assert "timing=graph" in base.key(bench.Settings(device="cuda", graphs=True), fp)
    assert "timing=isolated" in base.key(bench.Settings(device="cuda", timing="isolated"), fp)
    h100 = {"device_type": "cuda", "gpu_name": "NVIDIA H100 80GB HBM3", "torch_version": "2.11", "cuda_version": "13.0",
            "driver_version": "580"}
    assert base.key(s, h100) != base.key(s, {**h100, "driver_version": "575"})  # another driver: not reused


def test_a_failure_is_released_after_the_handler(monkeypatch) -> None:
    """Out-of-memory clean-up runs once the exception (whose traceback holds the failed call's tensors) is
    gone, so the memory can actually be returned."""
    import sys

    seen = []
    monkeypatch.setattr(bench, "release_memory", lambda: seen.append(sys.exc_info()[0]))

    def explode() -> nn.Module:
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 bytes")

    rows = bench.run([bench.Target("block", "nl", "huge", ((1, 8, 2, 4, 4),), 1, explode)], FAST, None, resume=False,
                     roofline=False)
    assert rows[0]["status"] == "OOM" and seen == [None]


def test_impl_sdpa_rows_and_the_ratio_per_kernel() -> None:
    rows = bench.run([tiny("nl"), tiny("cs"), bench.block_target(resolve("nl", sizes={"C": 32, "T": 2, "H": 4, "W": 4},
                                                                          options={"impl": "sdpa"}))],
                     FAST, None, resume=False, roofline=False)
    assert [r["impl"] for r in rows] == ["naive", "naive", "sdpa"]
    assert rows[2]["flops"] == rows[0]["flops"]  # the same closed form
    pred = rows[2]["memory_prediction"]
    assert pred["measured_metric"].startswith("cpu tensor peak") and 0.9 <= pred["predicted_over_measured"] <= 1.1
    assert bench.latency_ratio(rows, "nl", "cs", "naive")["impl"] == "naive"
    assert bench.latency_ratio(rows, "nl", "cs", "sdpa") is None  # no sdpa cs row


def test_roofline_is_measured_once_and_cached(tmp_path, monkeypatch) -> None:
    from attnbench.measuring import roofline

    monkeypatch.setenv(roofline.CACHE_ENV, str(tmp_path))
    calls = []
    real = roofline.measure_roofline
    monkeypatch.setattr(roofline, "measure_roofline", lambda *a, **k: (calls.append(1), real(*a, n=128, copy_bytes=2**20, target_s=0.01))[1])
    first = roofline.calibrate("cpu")
    again = roofline.calibrate("cpu")
    assert calls == [1] and not first["cached"] and again["cached"]
    assert again["matmul"]["flops_per_s"] == first["matmul"]["flops_per_s"] > 0
    assert first["matmul"]["flops"] == 2 * 128**3 and first["copy"]["bytes_per_s"] > 0
    assert (tmp_path / "roofline.json").exists()
    rows = bench.run([tiny("se")], FAST, None, resume=False)
    assert rows[0]["achieved"]["fraction_of_measured_matmul"] is not None
