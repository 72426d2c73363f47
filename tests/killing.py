"""Shared by the kill-and-resume tests: start an attnbench run, SIGKILL it once its results file holds some
rows, and read the file as a kill leaves it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any


def rows_of(path: Path) -> list[dict[str, Any]]:
    """The rows of a JSON-lines file, skipping a line torn by a kill."""
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return rows


def sigkill_after(cmd: list[str], out: Path, rows: int, timeout_s: float) -> tuple[list[dict[str, Any]], bool]:
    """Run ``cmd``, SIGKILL it when ``out`` holds ``rows`` rows (or after ``timeout_s``); returns the rows the
    file holds after the kill and whether the run was still going when it was killed."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        if out.exists() and len(rows_of(out)) >= rows:
            break
        time.sleep(0.05)
    killed_mid_run = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return rows_of(out), killed_mid_run
