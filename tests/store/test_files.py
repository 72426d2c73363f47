"""Output files: write-through for devices and links, no temporary file left, same-file refusal, lock."""

import errno
import os
import stat

import pytest

from attnbench.errors import UsageError
from attnbench.store import files


def test_atomic_write_replaces_a_regular_file_with_its_mode(tmp_path) -> None:
    target = tmp_path / "t.csv"
    target.write_text("old")
    os.chmod(target, 0o640)
    files.atomic_write(target, "new")
    assert target.read_text() == "new" and stat.S_IMODE(target.stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.csv"]


def test_atomic_write_follows_a_link_and_keeps_it(tmp_path) -> None:
    real = tmp_path / "real.md"
    real.write_text("old")
    link = tmp_path / "link.md"
    link.symlink_to(real)
    files.atomic_write(link, "through the link")
    assert link.is_symlink() and real.read_text() == "through the link"
    dangling = tmp_path / "dangling.md"
    dangling.symlink_to(tmp_path / "made-by-the-write.md")
    files.atomic_write(dangling, "x")
    assert dangling.is_symlink() and (tmp_path / "made-by-the-write.md").read_text() == "x"


def test_atomic_write_writes_through_devices_and_pipes(tmp_path) -> None:
    files.atomic_write("/dev/null", "nothing")
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        files.atomic_write(fifo, "through the pipe")
        assert os.read(reader, 100) == b"through the pipe"
    finally:
        os.close(reader)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


def test_a_failed_write_leaves_the_old_file_and_no_temporary_file(tmp_path, monkeypatch) -> None:
    target = tmp_path / "keep.json"
    target.write_text("precious")

    def full_disk(*_a, **_k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "replace", full_disk)
    with pytest.raises(UsageError, match="No space left"):
        files.atomic_write(target, "new")
    assert target.read_text() == "precious" and sorted(p.name for p in tmp_path.iterdir()) == ["keep.json"]


def test_distinct_refuses_two_outputs_that_are_one_file(tmp_path) -> None:
    a = tmp_path / "rows.jsonl"
    a.write_text("")
    link = tmp_path / "alias.csv"
    link.symlink_to(a)
    with pytest.raises(UsageError, match="--out and --csv name the same file"):
        files.distinct({"--out": str(a), "--csv": str(a)})
    with pytest.raises(UsageError, match="--out and --md"):
        files.distinct({"--out": str(a), "--csv": None, "--md": str(link)})
    with pytest.raises(UsageError, match="same file"):
        files.distinct({"--out": str(tmp_path / "new.jsonl"), "--csv": str(tmp_path / "." / "new.jsonl")})
    files.distinct({"--csv": "/dev/null", "--md": "/dev/null"})  # a device may take several outputs
    files.distinct({"--out": str(a), "--csv": str(tmp_path / "other.csv")})


def test_ensure_writable_names_the_problem_and_makes_nothing(tmp_path, monkeypatch) -> None:
    with pytest.raises(UsageError, match="empty"):
        files.ensure_writable("")
    with pytest.raises(UsageError, match="is a directory"):
        files.ensure_writable(tmp_path)
    files.ensure_writable("/dev/null", "/dev/stdout", tmp_path / "sub" / "x.csv")
    assert not (tmp_path / "sub").exists()  # checked, not made
    (tmp_path / "afile").touch()
    with pytest.raises(UsageError, match="afile is not a folder"):
        files.ensure_writable(tmp_path / "afile" / "x.csv")
    with pytest.raises(UsageError, match="it is not a folder"):
        files.ensure_writable_dir(tmp_path / "afile")
    with pytest.raises(UsageError, match="empty"):
        files.ensure_writable_dir("")
    monkeypatch.setattr(files.os, "access", lambda *_a, **_k: False)
    monkeypatch.setattr(files, "_read_only", lambda _p: True)
    with pytest.raises(UsageError, match="read-only file system"):
        files.ensure_writable(tmp_path / "y.csv")
    with pytest.raises(UsageError, match="read-only file system"):
        files.ensure_writable_dir(tmp_path)


def test_the_lock_refuses_a_second_holder(tmp_path) -> None:
    path = tmp_path / "speed.jsonl"
    with files.locked(path):
        with pytest.raises(UsageError, match="in use by another attnbench run"):
            with files.locked(path):
                pass
    with files.locked(path):  # released
        pass
    with files.locked(None), files.locked("/dev/null"):
        pass


def test_hard_links_share_the_lock_and_stay_linked(tmp_path) -> None:
    first = tmp_path / "h1.jsonl"
    first.write_text('{"key": "a"}\n')
    second = tmp_path / "h2.jsonl"
    os.link(first, second)
    with files.locked(first):
        with pytest.raises(UsageError, match="in use by another attnbench run"):
            with files.locked(second):
                pass
    files.atomic_write(second, "rewritten\n")
    assert first.read_text() == "rewritten\n" and first.stat().st_nlink == 2
