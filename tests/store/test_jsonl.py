"""Results files: unreadable lines skipped and counted, a run's keys need --resume or --overwrite, foreign
rows are never reused."""

import json
import warnings

import pytest

from attnbench.errors import AttnBenchWarning, UsageError
from attnbench.store import jsonl

FP = {"device_type": "cpu", "machine": "x86_64", "cpu_model": "AMD EPYC", "logical_cores": 2, "torch_threads": 2}


def _write(path, lines: list[bytes]) -> None:
    path.write_bytes(b"\n".join(lines) + b"\n")


def test_lines_that_are_not_rows_are_skipped_and_counted(tmp_path) -> None:
    path = tmp_path / "rows.jsonl"
    good = json.dumps({"key": "a", "module": "cs"}).encode()
    _write(path, [good, b"5", b"null", b"[1, 2]", b"\xff\xfe not utf-8", b'{"module": "nl"}', b"[" * 100_000,
                  b'{"key": 3}', b'{"key": "torn'])
    with pytest.warns(AttnBenchWarning, match=r"skipped 8 line\(s\).*line 2, 3, 4, 5, 6, \.\.\."):
        loaded = jsonl.load(path)
    assert [r["key"] for r in loaded.rows] == ["a"] and loaded.bad == [2, 3, 4, 5, 6, 7, 8, 9]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert jsonl.load(tmp_path / "missing.jsonl").rows == []
    with pytest.raises(UsageError, match="is a directory"):
        jsonl.load(tmp_path)


def test_a_key_already_in_the_file_needs_resume_or_overwrite(tmp_path) -> None:
    path = tmp_path / "rows.jsonl"
    _write(path, [json.dumps({"key": "a", "v": 1, "fingerprint": FP}).encode(), b"stray",
                  json.dumps({"key": "b", "v": 2, "fingerprint": FP}).encode()])
    with pytest.raises(UsageError, match="already holds 1 of the 2 rows of this run; pass --resume"):
        with jsonl.session(path, ["a", "c"], fingerprint=FP):
            pass
    with jsonl.session(path, ["a", "c"], resume=True, fingerprint=FP) as have:
        assert list(have) == ["a"] and have["a"]["v"] == 1
    with pytest.warns(AttnBenchWarning):
        with jsonl.session(path, ["a", "c"], overwrite=True, fingerprint=FP) as have:
            assert have == {}
            jsonl.append_row(path, {"key": "a", "v": 3})
    # the old row of "a" is gone once replaced; every other line, the unreadable one included, is kept as it was
    assert path.read_bytes().splitlines() == [b"stray", json.dumps({"key": "b", "v": 2, "fingerprint": FP}).encode(),
                                              json.dumps({"key": "a", "v": 3}).encode()]
    with jsonl.session(path, ["c"]):  # keys the file lacks: appended as usual
        jsonl.append_row(path, {"key": "c"})
    with pytest.raises(UsageError, match="give one"):
        with jsonl.session(path, ["a"], resume=True, overwrite=True):
            pass


def test_resume_refuses_rows_of_another_device(tmp_path) -> None:
    path = tmp_path / "rows.jsonl"
    other = {**FP, "logical_cores": 64}
    _write(path, [json.dumps({"key": "a", "fingerprint": other}).encode(), json.dumps({"key": "b"}).encode()])
    with pytest.raises(UsageError, match=r"row a cannot be reused: it was measured on another device \(logical_cores: 64 -> 2\)"):
        with jsonl.session(path, ["a"], resume=True, fingerprint=FP):
            pass
    with pytest.raises(UsageError, match="row b cannot be reused: it has no device fingerprint"):
        with jsonl.session(path, ["b"], resume=True, fingerprint=FP):
            pass
    # a run over several devices (Ray's --each-accelerator) gives each key its own device
    with jsonl.session(path, ["a"], resume=True, fingerprint={"a": other}.get) as have:
        assert list(have) == ["a"]
    with pytest.raises(UsageError, match="row a cannot be reused: it was measured on another device"):
        with jsonl.session(path, ["a"], resume=True, fingerprint={"a": FP}.get):
            pass
    cuda = {"device_type": "cuda", "gpu_name": "NVIDIA H100", "torch_version": "2.11"}
    assert "another device" in jsonl.mismatch({"fingerprint": cuda}, FP)
    assert jsonl.mismatch({"fingerprint": FP}, FP) is None and jsonl.mismatch({}, None) is None


def test_a_session_holds_the_lock(tmp_path) -> None:
    path = tmp_path / "rows.jsonl"
    with jsonl.session(path, ["a"]):
        with pytest.raises(UsageError, match="in use by another attnbench run"):
            with jsonl.session(path, ["b"]):
                pass
