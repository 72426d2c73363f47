"""Writing output files without losing anything.

* :func:`atomic_write` replaces a regular file through a temporary file in the same folder and a rename, so
  a reader never sees half a file and a failed write leaves the old file (and no temporary file) behind. A
  symbolic link is followed: its target is replaced and the link stays a link. Anything that is not a
  regular file (``/dev/null``, ``/dev/stdout``, a pipe) is written through, never replaced.
* :func:`ensure_writable` checks every output before any work starts; :func:`distinct` refuses two
  outputs that are the same file (``--out x --csv x`` would otherwise overwrite the results with the table).
* :func:`locked` holds an advisory lock (``filelock``) on a results file for a whole run, so two runs
  cannot append to one file at once.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

from attnbench.errors import UsageError

PathLike = str | os.PathLike[str]


def _why(err: OSError) -> str:
    return err.strerror or str(err)


def _check_name(path: PathLike) -> Path:
    if not str(path).strip():
        raise UsageError("an output file name is empty")
    return Path(path)


def _special(path: Path) -> bool:
    """An existing thing that is not a regular file once links are followed (a device, a pipe, a socket)."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    return not stat.S_ISREG(mode) and not stat.S_ISDIR(mode)


def atomic_write(path: PathLike, data: str | bytes) -> None:
    """Write ``data`` (text as UTF-8) to ``path``; see the module docstring for how."""
    target = _check_name(path)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    try:
        if target.is_dir():
            raise UsageError(f"cannot write {target}: it is a directory")
        if _special(target) or (target.is_symlink() and not target.exists()):
            with open(target, "wb") as fh:  # a device or pipe, or a dangling link: write through
                fh.write(raw)
            return
        real = Path(os.path.realpath(target))  # a link to a regular file: replace the file, keep the link
        real.parent.mkdir(parents=True, exist_ok=True)
        mode = stat.S_IMODE(real.stat().st_mode) if real.exists() else _default_mode()
        fd, tmp = tempfile.mkstemp(dir=real.parent, prefix=f".{real.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(raw)
            os.chmod(tmp, mode)
            os.replace(tmp, real)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    except OSError as err:
        raise UsageError(f"cannot write {target}: {_why(err)}") from None


def _default_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def ensure_writable(*paths: PathLike | None) -> None:
    """Fail before any work if an output cannot be written: an empty name, a directory, an existing file
    without write permission, a folder that cannot be made or written (read-only file system)."""
    for path in paths:
        if path is None:
            continue
        target = _check_name(path)
        if target.is_dir():
            raise UsageError(f"cannot write {target}: it is a directory")
        if target.exists():
            if not os.access(target, os.W_OK):
                raise UsageError(f"cannot write {target}: permission denied")
            if _special(target):
                continue  # written through (e.g. /dev/null): nothing is made next to it
        real = Path(os.path.realpath(target))
        try:
            real.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=real.parent):
                pass
        except OSError as err:
            raise UsageError(f"cannot write {target}: {_why(err)}") from None


def ensure_writable_dir(path: PathLike) -> Path:
    """Fail before any work if ``path`` cannot be an output folder: an empty name, an existing file, a
    folder that cannot be made or written into (read-only file system, no permission). Makes it."""
    target = _check_name(path)
    if target.exists() and not target.is_dir():
        raise UsageError(f"cannot write into {target}: it is a file, not a folder")
    try:
        target.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=target):
            pass
    except OSError as err:
        raise UsageError(f"cannot write into {target}: {_why(err)}") from None
    return target


def same_file(a: PathLike, b: PathLike) -> bool:
    """Whether two paths name one regular file (or would, once written); devices such as /dev/null may be
    shared by several outputs."""
    pa, pb = Path(a), Path(b)
    if _special(pa) or _special(pb):
        return False
    if pa.exists() and pb.exists():
        return os.path.samefile(pa, pb)
    return os.path.realpath(pa) == os.path.realpath(pb)


def distinct(outputs: Mapping[str, PathLike | None]) -> None:
    """Refuse (exit 2) when two of the named outputs (``{"--out": ..., "--csv": ...}``) are one file."""
    given = [(name, p) for name, p in outputs.items() if p is not None and str(p).strip()]
    for i, (name_a, a) in enumerate(given):
        for name_b, b in given[i + 1:]:
            if same_file(a, b):
                raise UsageError(f"{name_a} and {name_b} name the same file ({a}); the second would overwrite the first")


def lock_path(path: PathLike) -> Path:
    real = Path(os.path.realpath(path))
    return real.with_name(f".{real.name}.lock")


@contextlib.contextmanager
def locked(path: PathLike | None, wait_s: float = 0.0) -> Iterator[None]:
    """Hold an advisory lock on the results file ``path`` (a ``.NAME.lock`` file beside it) while the block
    runs. Another run holding it: wait up to ``wait_s`` seconds, then exit 2 with one line. ``None``: no
    file, no lock."""
    if path is None or _special(Path(path)):
        yield
        return
    from filelock import FileLock, Timeout

    where = lock_path(path)
    try:
        where.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(where), timeout=wait_s)
        lock.acquire()
    except Timeout:
        raise UsageError(f"{path} is in use by another attnbench run (lock {where}); wait for it to finish, "
                         f"or write to another file") from None
    except OSError as err:
        raise UsageError(f"cannot lock {path}: {_why(err)}") from None
    try:
        yield
    finally:
        lock.release()
