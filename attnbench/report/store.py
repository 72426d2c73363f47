"""Results on disk: JSON lines appended one finished row at a time, so an interrupted run keeps every
finished row, and a run can skip rows already present (``--resume``)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from attnbench.errors import UsageError


def append_row(path: str | os.PathLike[str], row: dict[str, Any]) -> None:
    """Append one JSON line and flush it to disk before returning. A crash mid-write leaves at most one
    partial last line, which :func:`read_rows` skips."""
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(row, default=str) + "\n"
        if _ends_mid_line(target):  # a previous run died mid-write: start on a fresh line
            line = "\n" + line
        with open(target, "a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as err:
        raise UsageError(f"cannot write {target}: {err.strerror or err}") from None


def _ends_mid_line(path: Path) -> bool:
    if not path.exists() or path.stat().st_size == 0:
        return False
    with open(path, "rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) != b"\n"


def read_rows(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Rows of a JSON-lines file; a truncated (unparseable) line is skipped."""
    target = Path(path)
    if not target.exists():
        return
    with open(target, encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue


def done_keys(path: str | os.PathLike[str]) -> set[str]:
    return {row["key"] for row in read_rows(path) if "key" in row}
