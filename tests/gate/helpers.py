"""Shared by the gate's tests: the CLI runner, one-line error checks, edited copies of a baseline."""

import json
from pathlib import Path

from typer.testing import CliRunner

from attnbench.cli import app

ROOT = Path(__file__).resolve().parents[2]
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


def edited(src: Path, dst: Path, edit) -> Path:
    doc = json.loads(src.read_text())
    edit(doc)
    dst.write_text(json.dumps(doc))
    return dst


def setter(path: str, value):
    """An edit that sets ``a.b.0.c`` (dots, list indices as numbers) to ``value``."""
    def edit(doc):
        *parents, last = path.split(".")
        node = doc
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node[p]
        node[int(last) if isinstance(node, list) else last] = value
    return edit


def malformed(result, *needles: str) -> str:
    assert result.exit_code == 2, result.output
    line = one_line(result)
    assert "malformed" in line or "cannot read" in line or "not valid JSON" in line, line
    for needle in needles:
        assert needle in line, line
    return line
