"""Blocks from outside the package: `--module FILE.py:CLASS` and the `attnbench.blocks` entry-point group."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from typer.testing import CliRunner

from attnbench.cli import app

ROOT = Path(__file__).resolve().parents[2]
TOY = "tests/fixtures/toy_blocks.py"
runner = CliRunner()


def _run(*args: str):
    return runner.invoke(app, list(args))


def _one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    return lines[0]


def test_flops_of_a_class_in_a_file() -> None:
    result = _run("flops", "--module", f"{TOY}:TinyAttention", "--T", "16", "-o", "heads=2", "--json")
    assert result.exit_code == 0, result.output
    rec = json.loads(result.stdout)
    assert rec["module"] == f"{TOY}:TinyAttention" and rec["closed_forms"] == [] and rec["analytic"] is None
    assert rec["input_shape"] == [1, 64, 16, 14, 14] and rec["options"] == {"heads": 2}
    tokens, c = 16 * 14 * 14, 64
    # qkv and proj: tokens x C x 3C and tokens x C x C MACs; attention: two tokens x tokens x C/heads per head
    assert rec["counted"]["exact"]["macs"] == tokens * c * 3 * c + tokens * c * c + 2 * tokens * tokens * c
    assert rec["params"] == (2 * c) + (c * 3 * c + 3 * c) + (c * c + c)
    table = _run("flops", "--module", f"{TOY}:TinyAttention", "--T", "4", "--counters", "exact")
    assert table.exit_code == 0 and "none declared" in table.stdout


def test_a_blockspec_in_a_file_keeps_its_closed_forms() -> None:
    rec = json.loads(_run("flops", "--module", f"{TOY}:GATED_POOL", "--json", "--counters", "exact").stdout)
    assert rec["module"] == f"{TOY}:GATED_POOL" and rec["preset"] == "small" and rec["counted"]["exact"]["equals_analytic"]
    assert rec["closed_forms"] == ["flops", "params"]
    assert rec["params"] == rec["params_analytic"] == 32 * 32 + 32


def test_speed_of_a_class_in_a_file(tmp_path) -> None:
    result = _run("speed", "--module", f"{TOY}:GatedPool", "--C", "8", "--T", "2", "--H", "4", "--W", "4",
                  "--reps", "1", "--target-s", "0.01", "--warmup-s", "0", "--no-roofline", "--no-save", "--json")
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout.splitlines()[0])
    assert row["status"] == "ok" and row["flops_unit"].endswith("counted") and row["flops"] > 0


def test_bad_file_references_are_one_line_errors(tmp_path) -> None:
    assert "no such file" in _one_line_error(_run("flops", "-m", "nowhere.py:X"))
    line = _one_line_error(_run("flops", "-m", f"{TOY}:Missing"))
    assert "GatedPool" in line and "TinyAttention" in line and "GATED_POOL" in line
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('boom\\nsecond line')\n")
    assert "RuntimeError: boom" in _one_line_error(_run("flops", "-m", f"{broken}:X"))
    needs = tmp_path / "needs.py"
    needs.write_text("from torch import nn\nclass B(nn.Module):\n    def __init__(self, c, k):\n        super().__init__()\n")
    assert "'k' has no default" in _one_line_error(_run("flops", "-m", f"{needs}:B"))
    assert "option heads" in _one_line_error(_run("flops", "-m", f"{TOY}:TinyAttention", "-o", "heads=two"))


def _install_plugin(site: Path, entry: str, module_text: str) -> dict[str, str]:
    """An installed distribution, as pip leaves one in site-packages: the package and its .dist-info."""
    (site / "toy_plugin").mkdir(parents=True)
    (site / "toy_plugin" / "__init__.py").write_text(module_text)
    info = site / "toy_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[attnbench.blocks]\n{entry}\n")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}


PLUGIN = '''
from torch import nn
from attnbench.blocks.registry import BlockSpec


class Doubler(nn.Module):
    """Doubles its input."""

    def __init__(self, channels):
        super().__init__()

    def forward(self, x):
        return 2 * x


SPEC = BlockSpec(name="doubler", title="Doubler (plugin)", paper="toy plugin", build=lambda s: Doubler(s.C))
'''


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "attnbench.entry", *args], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=120)


def test_a_plugin_distribution_shows_up_in_list(tmp_path) -> None:
    env = _install_plugin(tmp_path / "site", "doubler = toy_plugin:SPEC", PLUGIN)
    with ThreadPoolExecutor(max_workers=2) as pool:  # two fresh programs side by side (each imports torch)
        listing = pool.submit(_cli, env, "list", "--json")
        counting = pool.submit(_cli, env, "flops", "-m", "doubler", "--json", "--counters", "exact")
        listed, counted = listing.result(), counting.result()
    assert listed.returncode == 0, listed.stderr
    rec = next(json.loads(line) for line in listed.stdout.splitlines() if '"doubler"' in line)
    assert rec["origin"] == "toy-plugin" and rec["closed_forms"] == []
    assert counted.returncode == 0, counted.stderr
    assert json.loads(counted.stdout)["counted"]["exact"]["flops"] == 64 * 8 * 14 * 14  # one multiply per element


def test_a_broken_plugin_is_a_warning_not_a_crash(tmp_path) -> None:
    env = _install_plugin(tmp_path / "site", "broken = toy_plugin:NOT_THERE", PLUGIN)
    listed = _cli(env, "list", "--json")
    assert listed.returncode == 0 and "nl" in listed.stdout
    assert "plugin block 'broken' from toy-plugin not loaded" in listed.stderr


def test_unhandled_ops_are_named_in_every_output(tmp_path) -> None:
    args = ("--module", f"{TOY}:Spectral", "--C", "4", "--T", "2", "--H", "4", "--W", "4")
    table = _run("flops", *args, "--counters", "exact", "--csv", str(tmp_path / "f.csv"), "--md", str(tmp_path / "f.md"))
    assert table.exit_code == 0 and "_fft_r2c" in table.stdout
    assert "_fft_r2c" in (tmp_path / "f.csv").read_text() and "_fft_r2c" in (tmp_path / "f.md").read_text()
    speed = _run("speed", *args, "--reps", "1", "--target-s", "0.01", "--warmup-s", "0", "--no-roofline", "--no-save",
                 "--json")
    assert json.loads(speed.stdout.splitlines()[0])["unhandled_ops"] == {"_fft_r2c": 1}
    sweep = json.loads(_run("sweep", "-m", f"{TOY}:Spectral", "--T", "2", "--no-save", "--json").stdout)
    assert sweep["rows"][0]["unhandled_ops"] == {"_fft_r2c": 1} and sweep["rows"][0]["flops_source"] == "counted"


def test_a_failing_user_block_is_a_one_line_error() -> None:
    assert "boom in forward" in _one_line_error(_run("flops", "-m", f"{TOY}:Broken", "--counters", "exact"))
    assert "takes one video" in _one_line_error(_run("flops", "-m", f"{TOY}:TwoInputs", "--counters", "exact"))
    line = _one_line_error(_run("speed", "-m", f"{TOY}:Broken", "--reps", "1", "--no-roofline", "--no-save"))
    assert "boom in forward" in line
    assert "no parameters that require grad" in _one_line_error(
        _run("flops", "-m", f"{TOY}:Double", "--backward", "--counters", "exact"))


def test_a_cost_without_params_keeps_its_cost() -> None:
    rec = json.loads(_run("flops", "-m", f"{TOY}:COST_ONLY", "--json", "--counters", "exact").stdout)
    assert rec["closed_forms"] == ["flops"] and rec["analytic"]["flops"] == rec["counted"]["exact"]["flops"]
    assert rec["params_analytic"] is None and rec["counted"]["exact"]["equals_analytic"]


def test_odd_paths_and_text_stay_as_given(tmp_path) -> None:
    odd = tmp_path / "a:b,c"
    odd.mkdir()
    (odd / "blk.py").write_text((ROOT / TOY).read_text())
    ref = f"{odd}/blk.py:GatedPool"
    rec = json.loads(_run("flops", "-m", ref, "--json", "--counters", "exact").stdout)
    assert rec["module"] == ref
    sweep = _run("sweep", "-m", ref, "--T", "2", "--no-save", "--json")
    assert sweep.exit_code == 0 and json.loads(sweep.stdout)["rows"][0]["module"] == ref
    assert ":x:" in _one_line_error(_run("flops", "-m", "/nowhere/:x:.py:A"))  # no emoji, no markup
    two = [json.loads(line)["module"] for line in
           _run("flops", "-m", f"{TOY}:GatedPool", "-m", f"{ROOT / TOY}:GatedPool", "--json", "--counters", "exact")
           .stdout.splitlines()]
    assert two == [f"{TOY}:GatedPool", f"{ROOT / TOY}:GatedPool"]  # each row named as it was asked for


def test_a_snapshot_of_a_file_block_checks_from_another_folder(tmp_path, monkeypatch) -> None:
    base = tmp_path / "base.json"
    assert _run("snapshot", "-m", f"{TOY}:GatedPool", "-m", "se", "--presets", "default", "--out", str(base)).exit_code == 0
    monkeypatch.chdir(tmp_path)
    result = _run("check", "--baseline", str(base), "--flops-only")
    assert result.exit_code == 0, result.output


def test_titles_are_the_class_own_docstring() -> None:
    from attnbench.blocks.external import from_file

    assert from_file(f"{TOY}:Broken").title == "Broken"  # no docstring: not nn.Module's
    assert from_file(f"{TOY}:GatedPool").title.startswith("Gated global pooling")


def test_a_plugin_loads_whole_or_not_at_all(tmp_path) -> None:
    plugin = PLUGIN + "\nMIXED = [SPEC, 3]\n"
    env = _install_plugin(tmp_path / "site", "mixed = toy_plugin:MIXED", plugin)
    listed = _cli(env, "list", "--json")
    assert listed.returncode == 0 and "not loaded" in listed.stderr and '"doubler"' not in listed.stdout
