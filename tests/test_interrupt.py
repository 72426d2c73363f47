"""A sweep killed with SIGKILL mid-run loses no finished row, and --resume completes it with every row once."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.killing import rows_of, sigkill_after

# 12 rows (2 blocks x 6 frame sizes) that each take a fraction of a second: what is checked is the kill between
# two rows and the resume, not the rows' sizes, so H = W sweeps tiny frames (T and C at the preset)
ARGS = ["sweep", "-m", "nl,cs", "--HW", "2,3,4,5,6,7", "--device", "cpu", "--reps", "2", "--target-s", "0.01"]


def test_sigkill_then_resume_gives_every_row_exactly_once(tmp_path) -> None:
    out = tmp_path / "sweep.jsonl"
    cmd = [sys.executable, "-m", "attnbench", *ARGS, "--out", str(out), "--json"]
    before, killed_mid_run = sigkill_after(cmd, out, rows=3, timeout_s=240)
    assert before, "no row was finished before the kill"

    done = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    rows = rows_of(out)
    keys = [r["key"] for r in rows]
    assert len(keys) == len(set(keys)), "a row appears twice"
    assert len(rows) == 12  # 2 blocks x 6 values of H = W
    assert {json.dumps(r, sort_keys=True) for r in before} <= {json.dumps(r, sort_keys=True) for r in rows}
    if killed_mid_run:
        assert len(before) < 12
