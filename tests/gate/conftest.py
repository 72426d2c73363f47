"""Baselines written once for all of the gate's tests (``snapshot`` through the CLI)."""

from pathlib import Path

import pytest

from .helpers import FAST, TINY, run


@pytest.fixture(scope="package")
def flops_baseline(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("gate") / "flops.json"
    result = run("snapshot", "--out", str(path), "--modules", "cs,se", "--presets", "banet,16f-res5")
    assert result.exit_code == 0, result.output
    return path


@pytest.fixture(scope="package")
def timed_baseline(tmp_path_factory) -> Path:
    """se at its smallest preset, 5 rounds of 0.02 s, on the CPU-time clock (snapshot's default on a CPU)."""
    path = tmp_path_factory.mktemp("gate") / "timed.json"
    result = run("snapshot", "--out", str(path), *TINY, "--device", "cpu", *FAST)
    assert result.exit_code == 0, result.output
    return path
