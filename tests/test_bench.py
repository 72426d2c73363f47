"""Speed runs on CPU: rows, OOM kept as a row, resume, the NL/CS ratio, and the CLI's error paths."""

import json

import torch
from torch import nn
from typer.testing import CliRunner

from attnbench import bench
from attnbench.api import resolve
from attnbench.cli import app
from attnbench.report import store

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
    assert len(list(store.read_rows(tmp_path / "s.jsonl"))) == 2


def test_resume_skips_finished_rows_and_tolerates_a_torn_line(tmp_path) -> None:
    path = tmp_path / "s.jsonl"
    first = bench.run([tiny("se")], FAST, str(path), resume=False)
    with open(path, "a") as fh:
        fh.write('{"key": "torn')  # a run killed mid-write
    calls = []
    again = bench.run([tiny("se"), tiny("eca")], FAST, str(path), resume=True, on_row=calls.append)
    assert again[0] == first[0]
    keys = [r["key"] for r in store.read_rows(path)]
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
    assert json.loads(res.stdout.splitlines()[0])["name"] == "eca"
    if not torch.cuda.is_available():
        res = runner.invoke(app, ["speed", "--device", "cuda", "-m", "cs"])
        assert res.exit_code == 2
        assert "CUDA is not available" in res.output and "Traceback" not in res.output
    res = runner.invoke(app, ["speed", "--device", "cpu", "--dtype", "fp8", "-m", "cs"])
    assert res.exit_code == 2 and "valid choices" in res.output
