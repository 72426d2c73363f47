"""The CLI end to end (Typer's CliRunner): outputs, JSON schema, error paths."""

import json

import pytest
from typer.testing import CliRunner

from attnbench.cli import app

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, list(args))


def test_bare_attnbench_prints_help_and_exits_0() -> None:
    result = runner.invoke(app, [], prog_name="attnbench")
    assert result.exit_code == 0 and "Usage: attnbench" in result.stdout and "flops" in result.stdout
    assert "error" not in result.output


def test_shell_completion_is_offered() -> None:
    result = runner.invoke(app, ["--show-completion", "bash"], prog_name="attnbench")
    assert result.exit_code == 0 and "_ATTNBENCH_COMPLETE" in result.stdout


def test_module_and_network_values_complete() -> None:
    from attnbench.commands.common import complete_module, complete_network

    assert {"eam", "eca"} <= set(complete_module("e")) and sorted(complete_network("eco")) == ["eco", "eco-lite", "eco-lite-released", "eco-released"]


def test_list_shows_blocks_and_presets() -> None:
    result = run("list", "--json")
    assert result.exit_code == 0
    records = [json.loads(line) for line in result.stdout.splitlines()]
    names = {r["module"] for r in records if r["kind"] == "block"}
    assert {"nl", "cs", "fa"} <= names
    networks = {r["network"]: r for r in records if r["kind"] == "network"}
    assert {"eco-lite", "tsm-r50"} <= set(networks) and "nl" in networks["eco-lite"]["attn"]


def test_flops_cs_t16_shows_ratio() -> None:
    result = run("flops", "--module", "cs", "--T", "16", "--counters", "exact,torch")
    assert result.exit_code == 0, result.output
    assert "13.39%" in result.stdout and "identity holds: True" in result.stdout


def test_flops_json_schema() -> None:
    result = run("flops", "-m", "cs", "-m", "nl", "--T", "8", "--json", "--counters", "exact,torch,ptflops")
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["module"] for r in records] == ["cs", "nl"]
    for r in records:
        assert r["input_shape"][2] == 8 and len(r["input_shape"]) == 5
        assert {"flops", "macs", "affinity_flops"} <= set(r["analytic"])
        assert r["counted"]["exact"]["flops"] == r["analytic"]["flops"]
        assert r["counted"]["torch"]["flops"] > 0 and "ptflops" in r["counted"]
        assert r["params"] == r["params_analytic"]
    assert abs(records[0]["analytic"]["ratio"] - (1 / 8 + 2 / 28)) < 1e-12


def test_flops_writes_csv_and_md(tmp_path) -> None:
    csv, md = tmp_path / "t.csv", tmp_path / "t.md"
    result = run("flops", "-m", "nl", "--counters", "exact", "--csv", str(csv), "--md", str(md))
    assert result.exit_code == 0, result.output
    assert "exact FLOPs" in csv.read_text() and md.read_text().startswith("| module")


def test_big_nonlocal_is_counted_without_allocating() -> None:
    result = run("flops", "--module", "nl", "--T", "64", "--H", "56", "--W", "56", "--counters", "exact,torch", "--json")
    assert result.exit_code == 0, result.output
    r = json.loads(result.stdout)
    assert r["analytic"]["affinity_flops"] == 48 * (64 * 56 * 56) ** 2 * 2


@pytest.mark.parametrize(
    "args,needle",
    [
        (("flops", "--module", "nope"), "valid choices"),
        (("flops", "--module", "cs", "--T", "0"), "T must be a positive integer"),
        (("flops", "--module", "cs", "--T", "-3"), "T must be a positive integer"),
        (("flops", "--module", "cs", "-o", "bogus=1"), "valid options"),
        (("flops", "--module", "cs", "-o", "order=XX"), "valid choices"),
        (("flops", "--module", "cs", "-o", "reduction=abc"), "takes a value of type int"),
        (("flops", "--module", "cs", "--preset", "nope"), "valid choices"),
        (("flops", "--module", "fa", "--C", "4"), "C must be 3"),
        (("flops", "--module", "cs", "--counters", "thop"), "valid choices"),
        (("flops",), "--module"),
        (("flops", "--module", "cs", "--md", "/"), "is a directory"),
        (("speed", "--device", "cpu", "--module", "eca", "--csv", "/"), "is a directory"),
    ],
)
def test_bad_input_is_one_line_exit_2(args, needle) -> None:
    result = run(*args)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0], result.output
    assert "Traceback" not in result.output


def test_malformed_value_through_the_console_script_is_one_line() -> None:
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "attnbench", "flops", "--module", "cs", "--T", "1.5"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "--T" in lines[0] and "Traceback" not in proc.stderr


def test_flops_for_networks_matches_closed_form_params() -> None:
    result = run("flops", "--network", "eco-lite", "--attn", "none", "--attn", "cs", "--counters", "exact", "--json")
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["attn"] for r in records] == ["none", "cs"]
    for r in records:
        assert r["params"] == r["params_analytic"] and not r["counted"]["exact"]["unhandled_ops"]
    # the network with one CS block costs exactly the plain network plus the block's closed form
    assert records[1]["counted"]["exact"]["flops"] == records[0]["counted"]["exact"]["flops"] + records[1]["attention_flops_analytic"]


@pytest.mark.parametrize(
    "args,needle",
    [
        (("flops", "--network", "nope"), "valid choices"),
        (("flops", "--network", "tsm-r50", "--attn", "cs"), "valid choices"),
        (("flops", "--network", "tsm-r50", "--C", "4"), "--C does not apply"),
        (("flops", "--module", "cs", "--attn", "nl"), "--network only"),
        (("speed", "--device", "cpu", "--network", "eco-lite", "--attn", "w3"), "valid choices"),
        (("table-vi", "--device", "cpu", "--batch", "0"), "--batch"),
    ],
)
def test_network_bad_input_is_one_line_exit_2(args, needle) -> None:
    result = run(*args)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0], result.output
