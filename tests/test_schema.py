"""One schema: every command's --json names the same thing the same way, carries a schema version, and
states its units (README: "Output fields and units")."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from typer.testing import CliRunner

from attnbench.cli import app
from attnbench.defaults import SCHEMA

runner = CliRunner()
FAST = ("--reps", "1", "--target-s", "0.01", "--warmup-s", "0")
RETIRED = {"name", "variant", "largest_intermediate", "bytes_fp32", "ptflops_aten"}  # schema 1 spellings


def _json(*args: str) -> list[dict[str, Any]]:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    text = result.stdout.strip()
    try:
        return [json.loads(text)]
    except json.JSONDecodeError:
        return [json.loads(line) for line in text.splitlines()]


def _keys(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield f"{path}.{k}", v
            yield from _keys(v, f"{path}.{k}")
    elif isinstance(value, list):
        for item in value:
            yield from _keys(item, path)


def _check_common(record: dict[str, Any]) -> None:
    assert record["schema"] == SCHEMA and isinstance(record["kind"], str)
    for path, value in _keys(record):
        key = path.rsplit(".", 1)[-1]
        if path.count(".") == 1 or path.startswith((".rows", ".methods")):
            assert key not in RETIRED, path
        if path.startswith((".units", ".by_convention")):  # text; a paper figure's value in the paper's unit
            continue
        if key.endswith("_bytes") or key == "bytes":
            assert value is None or isinstance(value, int), path  # bytes are whole numbers of bytes
        assert not key.lower().endswith(("_mb", "_gb")), path  # MiB/GiB are for people; files hold bytes
        if key in ("flops", "macs", "params") and value is not None and not isinstance(value, dict):
            assert isinstance(value, int) and not isinstance(value, bool), path  # exact integers


def _check_block(r: dict[str, Any]) -> None:
    assert isinstance(r["module"], str) and isinstance(r["preset"], str)
    assert len(r["input_shape"]) == 5 and all(isinstance(v, int) for v in r["input_shape"])
    assert all(len(s) >= 1 for s in r["input_shapes"])


def _check_network(r: dict[str, Any]) -> None:
    assert {"network", "attn", "preset"} <= set(r)
    assert r["input_shape"][1] == 3 and len(r["input_shape"]) == 5


def test_list_flops_and_networks_share_fields() -> None:
    listed = _json("list")
    for r in listed:
        _check_common(r)
        assert {p["preset"] for p in r["presets"]} and all("preset_source" in p for p in r["presets"])
    flops = _json("flops", "-m", "cs", "-m", "nl", "--T", "4", "--counters", "exact,ptflops_aten")
    for r in flops:
        _check_common(r)
        _check_block(r)
        assert "ptflops-aten" in r["counted"] and r["units"]["flops"].startswith("FLOPs: a multiply-add counts 2")
        assert r["predicted_largest_intermediate"]["bytes"] == 4 * r["predicted_largest_intermediate"]["elements"]
    nets = _json("flops", "-n", "eco-lite", "-a", "cs", "--counters", "exact,torch")
    for r in nets:
        _check_common(r)
        _check_network(r)
        assert r["counted"]["torch"]["flops"] == 2 * r["counted"]["exact"]["macs"]  # --counters honoured


def test_speed_sweep_and_reproduce_share_fields() -> None:
    speed = _json("speed", "-m", "eca", "--preset", "16f-res5", *FAST, "--no-save", "--no-roofline")
    for r in speed:
        _check_common(r)
        _check_block(r)
        assert r["flops_unit"].startswith("FLOPs (multiply-add = 2)")
        assert isinstance(r["memory"]["working_bytes"], int)
    sweep = _json("sweep", "-m", "nl", "--module", "cs", "--T", "4,8", "--no-save")[0]
    _check_common(sweep)
    assert {r["module"] for r in sweep["rows"]} == {"nl", "cs"}
    for r in sweep["rows"]:
        _check_common(r)
        _check_block(r)
    figures = _json("reproduce", "--paper", "sta")
    for r in figures:
        _check_common(r)
        assert {"paper", "unit", "convention", "verdict"} <= set(r)


def test_network_speed_rows_name_networks_as_flops_does() -> None:
    from attnbench import api, bench
    from attnbench.measuring import device as dev

    case = api.resolve_network("eco-lite", "cs", "4f", size=64)  # small: one call is milliseconds on a CPU
    settings = bench.Settings(min_reps=1, target_s=0.01, max_warmup_s=0)
    row = bench.measure_target(bench.network_target(case), settings, dev.fingerprint("cpu"))
    _check_common(row)
    _check_network(row)
    assert (row["network"], row["attn"], row["preset"], row["custom"]) == ("eco-lite", "cs", "4f", True) and row["vps"] > 0
