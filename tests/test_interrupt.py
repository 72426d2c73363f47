"""A sweep killed with SIGKILL mid-run loses no finished row, and --resume completes it with every row once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

# 12 rows (2 blocks x 6 frame sizes) that each take a fraction of a second: what is checked is the kill between
# two rows and the resume, not the rows' sizes, so H = W sweeps tiny frames (T and C at the preset)
ARGS = ["sweep", "-m", "nl,cs", "--HW", "2,3,4,5,6,7", "--device", "cpu", "--reps", "2", "--target-s", "0.01"]


def _rows(path: Path) -> list[dict]:
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            pass  # a line torn by the kill
    return rows


def test_sigkill_then_resume_gives_every_row_exactly_once(tmp_path) -> None:
    out = tmp_path / "sweep.jsonl"
    cmd = [sys.executable, "-m", "attnbench", *ARGS, "--out", str(out), "--json"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if out.exists() and len(_rows(out)) >= 3:
            break
        time.sleep(0.05)
    killed_mid_run = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = _rows(out)
    assert before, "no row was finished before the kill"

    done = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    rows = _rows(out)
    keys = [r["key"] for r in rows]
    assert len(keys) == len(set(keys)), "a row appears twice"
    assert len(rows) == 12  # 2 blocks x 6 values of H = W
    assert {json.dumps(r, sort_keys=True) for r in before} <= {json.dumps(r, sort_keys=True) for r in rows}
    if killed_mid_run:
        assert len(before) < 12
