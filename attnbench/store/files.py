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
import sys
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


def open_descriptor(path: PathLike) -> int | None:
    """The already-open file descriptor a path names (``/dev/stdout`` 1, ``/dev/stderr`` 2, ``/dev/fd/N`` and
    ``/proc/self/fd/N`` N), else None. Such a path must be written through that descriptor: reopening it
    would truncate a file that standard output is redirected to (``>> log``), and renaming over it would
    replace that file."""
    text = os.path.normpath(str(path))
    named = {"/dev/stdout": 1, "/dev/stderr": 2, "/dev/stdin": 0}
    if text in named:
        return named[text]
    for prefix in ("/dev/fd/", "/proc/self/fd/", f"/proc/{os.getpid()}/fd/"):
        if text.startswith(prefix) and text[len(prefix):].isdigit():
            return int(text[len(prefix):])
    return None


def _write_descriptor(fd: int, raw: bytes) -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None and stream.fileno() == fd:
                stream.flush()  # what was printed before comes first
        except (OSError, ValueError, AttributeError):
            pass
    view = memoryview(raw)
    while view:
        view = view[os.write(fd, view):]


def atomic_write(path: PathLike, data: str | bytes) -> None:
    """Write ``data`` (text as UTF-8) to ``path``; see the module docstring for how."""
    target = _check_name(path)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    try:
        fd = open_descriptor(target)
        if fd is not None:
            _write_descriptor(fd, raw)
            return
        if target.is_dir():
            raise UsageError(f"cannot write {target}: it is a directory")
        if _special(target) or (target.is_symlink() and not target.exists()):
            with open(target, "wb") as fh:  # a device or pipe, or a dangling link: write through
                fh.write(raw)
            return
        real = Path(os.path.realpath(target))  # a link to a regular file: replace the file, keep the link
        if real.is_file() and real.stat().st_nlink > 1:
            with open(real, "r+b") as fh:  # hard-linked: a rename would split the names; rewrite in place
                fh.write(raw)
                fh.truncate()
            return
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
    except BrokenPipeError:
        raise  # the reader of a pipe has gone: the CLI ends quietly
    except OSError as err:
        raise UsageError(f"cannot write {target}: {_why(err)}") from None


def _default_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _nearest_folder(target: Path) -> Path:
    """The nearest existing ancestor of ``target`` (which is made, later, by the write); refused if it is
    not a folder or cannot be written into (no permission, read-only file system). Nothing is created."""
    parent = Path(os.path.abspath(target)).parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise UsageError(f"cannot write {target}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        why = "read-only file system" if _read_only(parent) else "permission denied"
        raise UsageError(f"cannot write {target}: {parent}: {why}")
    return parent


def _read_only(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):
        return False


def ensure_writable(*paths: PathLike | None) -> None:
    """Fail before any work if an output cannot be written: an empty name, a directory, an existing file
    without write permission, a folder on the way that is a file, cannot be written into or is on a
    read-only file system. Nothing is created (a run that then fails on other input leaves no folders)."""
    for path in paths:
        if path is None:
            continue
        target = _check_name(path)
        if open_descriptor(target) is not None:
            continue
        if target.is_dir():
            raise UsageError(f"cannot write {target}: it is a directory")
        if target.exists():
            if not os.access(target, os.W_OK):
                raise UsageError(f"cannot write {target}: permission denied")
            if _special(target):
                continue  # written through (e.g. /dev/null): nothing is made next to it
        _nearest_folder(Path(os.path.realpath(target)) if target.is_symlink() else target)


def ensure_writable_dir(path: PathLike) -> Path:
    """Fail before any work if ``path`` cannot be an output folder: an empty name, something that is not a
    folder, a folder that cannot be made or written into (read-only file system, no permission)."""
    if not str(path).strip():
        raise UsageError("an output folder name is empty")
    target = Path(path)
    if target.exists() and not target.is_dir():
        raise UsageError(f"cannot write into {target}: it is not a folder")
    if target.is_dir():
        if not os.access(target, os.W_OK | os.X_OK):
            why = "read-only file system" if _read_only(target) else "permission denied"
            raise UsageError(f"cannot write into {target}: {why}")
    else:
        _nearest_folder(target / "x")
    return target


def same_file(a: PathLike, b: PathLike) -> bool:
    """Whether two paths name one regular file (or would, once written); devices such as /dev/null may be
    shared by several outputs."""
    pa, pb = Path(a), Path(b)
    if _special(pa) or _special(pb) or open_descriptor(pa) is not None or open_descriptor(pb) is not None:
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


def _inode_lock(path: PathLike) -> Path | None:
    """A lock file named after the results file's device and inode, shared by all its names (hard links)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return Path(tempfile.gettempdir()) / "attnbench-locks" / f"{st.st_dev}-{st.st_ino}.lock"


@contextlib.contextmanager
def locked(path: PathLike | None, wait_s: float = 0.0) -> Iterator[None]:
    """Hold an advisory lock on the results file ``path`` while the block runs: a ``.NAME.lock`` file beside
    it, and when the file exists one named after its inode (so that a hard link is the same file). Another
    run holding either: wait up to ``wait_s`` seconds, then exit 2 with one line. ``None``, a device or a
    pipe: no lock."""
    if path is None or _special(Path(path)) or open_descriptor(path) is not None:
        yield
        return
    from filelock import FileLock, Timeout

    where = [lock_path(path)] + [p for p in [_inode_lock(path)] if p is not None]
    held: list[FileLock] = []
    try:
        for w in where:
            w.parent.mkdir(parents=True, exist_ok=True)
            lock = FileLock(str(w), timeout=wait_s)
            lock.acquire()
            held.append(lock)
    except Timeout:
        for lock in held:
            lock.release()
        raise UsageError(f"{path} is in use by another attnbench run (lock {where[0]}); wait for it to finish, "
                         f"or write to another file") from None
    except OSError as err:
        for lock in held:
            lock.release()
        raise UsageError(f"cannot lock {path}: {_why(err)}") from None
    try:
        yield
    finally:
        for lock in reversed(held):
            lock.release()
