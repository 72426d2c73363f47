"""Results on disk: JSON lines appended one finished row at a time, so an interrupted run keeps every
finished row, and a run can skip rows already present (``--resume``).

A run writes through :func:`session`, which

* holds an advisory lock on the file for the whole run (two runs cannot append to one file);
* refuses to add a row whose key the file already holds, unless told what to do: ``resume`` reuses the old
  row (and refuses if it was measured on another device: see :func:`mismatch`), ``overwrite`` removes the
  old rows of this run's keys first (every other line of the file is kept as it was);
* skips lines that are not rows (a torn last line after a kill, stray values, bytes that are not UTF-8)
  with one warning that counts them, instead of failing.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attnbench.errors import AttnBenchWarning, UsageError
from attnbench.store import files
from attnbench.store.rows import upgrade


def append_row(path: str | os.PathLike[str], row: dict[str, Any]) -> None:
    """Append one JSON line and flush it to disk before returning. A crash mid-write leaves at most one
    partial last line, which :func:`load` skips."""
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(row, default=str) + "\n"
        if _ends_mid_line(target):  # a previous run died mid-write: start on a fresh line
            line = "\n" + line
        with open(target, "a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()
            if target.is_file():  # pipes and devices have nothing to sync
                os.fsync(fh.fileno())
    except BrokenPipeError:
        raise
    except OSError as err:
        raise UsageError(f"cannot write {target}: {err.strerror or err}") from None


def _ends_mid_line(path: Path) -> bool:
    if not path.is_file() or path.stat().st_size == 0:
        return False
    with open(path, "rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) != b"\n"


@dataclass
class Loaded:
    """The rows of a results file, and the line numbers (1-based) that were not rows."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    bad: list[int] = field(default_factory=list)
    lines: list[tuple[bytes, dict[str, Any] | None]] = field(default_factory=list)  # every line, as read

    def warn(self, path: str | os.PathLike[str], need: Iterable[str] = ()) -> None:
        if not self.bad:
            return
        shown = ", ".join(str(n) for n in self.bad[:5]) + (", ..." if len(self.bad) > 5 else "")
        fields = "".join(f", '{k}'" for k in need)
        warnings.warn(f"{path}: skipped {len(self.bad)} line(s) that are not result rows (line {shown}); a row is "
                      f"a JSON object{' with ' + fields[2:] if fields else ''} on one line", AttnBenchWarning,
                      stacklevel=3)


def load(path: str | os.PathLike[str] | None, need: Iterable[str] = ("key",), warn: bool = True) -> Loaded:
    """Read a JSON-lines results file. A line is a row when it is a JSON object whose ``need`` fields are
    strings; any other line (torn, ``5``, ``null``, ``[...]``, not UTF-8, a row without its key) is
    skipped and counted, with one warning. A missing file has no rows; a directory or an unreadable file
    is a one-line error."""
    need = tuple(need)
    out = Loaded()
    if path is None:
        return out
    target = Path(path)
    if not target.exists():
        return out
    if target.is_dir():
        raise UsageError(f"cannot read {target}: it is a directory")
    if not target.is_file() or files.open_descriptor(target) is not None:
        return out  # a pipe, a device, standard output: written to, never read back
    try:
        with open(target, "rb") as fh:
            raw_lines = fh.read().split(b"\n")
    except OSError as err:
        raise UsageError(f"cannot read {target}: {err.strerror or err}") from None
    for number, raw in enumerate(raw_lines, 1):
        row = _row(raw, need)
        out.lines.append((raw, row))
        if row is not None:
            out.rows.append(row)
        elif raw.strip():
            out.bad.append(number)
    if warn:
        out.warn(target, need)
    return out


def _row(raw: bytes, need: tuple[str, ...]) -> dict[str, Any] | None:
    try:
        value = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return None
    if not isinstance(value, dict) or any(not isinstance(value.get(k), str) for k in need):
        return None
    return upgrade(value)


def read_rows(path: str | os.PathLike[str] | None, need: Iterable[str] = ()) -> Iterator[dict[str, Any]]:
    """The rows of a results file (see :func:`load`; lines that are not rows are skipped with a warning)."""
    yield from load(path, need).rows


def mismatch(row: Mapping[str, Any], fingerprint: Mapping[str, Any] | None) -> str | None:
    """Why ``row`` may not be reused by a run on the device ``fingerprint`` (None if it may): a measured row
    must carry the fingerprint of the same device (same CPU model, cores and threads; or same GPU, driver,
    CUDA and torch). Analytic rows (``fingerprint`` None) need none."""
    if fingerprint is None:
        return None
    old = row.get("fingerprint")
    if not isinstance(old, Mapping):
        return "it has no device fingerprint"
    from attnbench.store.identity import identity_differences

    diff = identity_differences(old, fingerprint)
    return f"it was measured on another device ({'; '.join(diff)})" if diff else None


@contextmanager
def session(
    path: str | os.PathLike[str] | None, keys: Iterable[str], *, resume: bool = False, overwrite: bool = False,
    fingerprint: Mapping[str, Any] | Callable[[str], Mapping[str, Any] | None] | None = None, also: Iterable[str] = (),
    check: Callable[[Mapping[str, Any]], str | None] | None = None,
) -> Iterator[dict[str, dict[str, Any]]]:
    """Open the results file ``path`` for a run that will write the rows ``keys``; yields the rows to reuse
    (``resume``), by key. ``fingerprint``: the device the run measures on, or a function of the key giving
    it (a run over several devices). ``also``: keys a later session of the same command will write, checked
    now so that the command stops before measuring anything. See the module docstring. ``path`` None: nothing is read,
    locked or written.

    With ``overwrite`` an old row is removed only once its replacement has been written (when the session
    ends, Ctrl-C included): rows not measured again keep their old version. ``check(row)`` says why a row
    cannot be reused (fields missing or of the wrong type; see :mod:`attnbench.store.rows`): such rows
    are measured again, with one warning."""
    if path is None:
        yield {}
        return
    if resume and overwrite:
        raise UsageError("--resume reuses the rows in the file and --overwrite replaces them: give one")
    keys = list(dict.fromkeys([*keys, *also]))
    with files.locked(path):
        loaded = load(path)
        have = {r["key"]: r for r in loaded.rows}
        clash = [k for k in keys if k in have]
        if resume:
            for k in clash:
                why = mismatch(have[k], fingerprint(k) if callable(fingerprint) else fingerprint)
                if why:
                    raise UsageError(f"cannot resume from {path}: its row {k} cannot be reused: {why}; write to "
                                     f"another --out, or pass --overwrite to measure it again")
            bad = {k: why for k in clash if check is not None and (why := check(have[k]))}
            if bad:
                k, why = next(iter(bad.items()))
                warnings.warn(f"{path}: {len(bad)} row(s) of this run cannot be reused and are measured again "
                              f"(row {k}: {why})", AttnBenchWarning, stacklevel=3)
            yield {k: have[k] for k in clash if k not in bad}
            return
        if clash and not overwrite:
            raise UsageError(f"{path} already holds {len(clash)} of the {len(keys)} rows of this run; pass --resume to "
                             f"reuse them and run only the missing ones, or --overwrite to run them again "
                             f"(their old rows are removed)")
        complete = len(loaded.lines) - (1 if loaded.lines and loaded.lines[-1][0] == b"" else 0)
        try:
            yield {}
        finally:
            if clash:
                _drop_replaced(path, set(clash), complete)


def _drop_replaced(path: str | os.PathLike[str], keys: set[str], old_lines: int) -> None:
    """Remove the first ``old_lines`` lines' rows of ``keys`` that a later line has replaced; every other line
    is kept byte for byte."""
    now = load(path, warn=False)
    if not now.lines:
        return
    replaced = {row["key"] for _, row in now.lines[old_lines:] if row is not None} & keys
    if not replaced:
        return
    kept = [raw for i, (raw, row) in enumerate(now.lines)
            if not (i < old_lines and row is not None and row["key"] in replaced)]
    if kept and kept[-1] == b"":
        kept.pop()  # the empty piece after the last newline
    files.atomic_write(path, b"".join(raw + b"\n" for raw in kept))
