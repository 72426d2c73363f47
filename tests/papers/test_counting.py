"""Counts kept between runs: read back instead of counted again, per version of the code, never fatal."""

import pytest

from attnbench.papers import counting


def test_counts_are_kept_and_read_back(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv(counting.CACHE_ENV, str(tmp_path))
    first = counting.Counter(persist=True)
    counted = first.network("eco-lite", "cs", "4f", size=64)
    first.save()
    (path,) = tmp_path.glob("counts-*.pickle")
    assert path == counting.cache_file()

    def no_counting(*a, **k):
        raise AssertionError("counted again")

    monkeypatch.setattr(counting, "_measure", no_counting)
    again = counting.Counter(persist=True).network("eco-lite", "cs", "4f", size=64)
    assert again.cost == counted.cost and again.params == counted.params and again.value("fvcore") == counted.value("fvcore")
    with pytest.raises(AssertionError, match="counted again"):
        counting.Counter().network("eco-lite", "cs", "4f", size=64)  # without persist nothing is read


def test_a_new_torch_or_code_version_starts_a_new_file(tmp_path, monkeypatch) -> None:
    import torch

    monkeypatch.setenv(counting.CACHE_ENV, str(tmp_path))
    before = counting.cache_file()
    monkeypatch.setattr(torch, "__version__", "0.0.0-test")
    assert counting.cache_file() != before and counting.cache_file().parent == tmp_path


def test_a_torn_file_is_counted_again_and_an_unwritable_folder_warns(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv(counting.CACHE_ENV, str(tmp_path))
    counting.cache_file().write_bytes(b"\x80\x04 torn")
    ctr = counting.Counter(persist=True)
    assert ctr.network("eco-lite", "none", "4f", size=64).params > 0
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv(counting.CACHE_ENV, str(blocker / "sub"))
    ctr = counting.Counter(persist=True)
    ctr.network("eco-lite", "none", "4f", size=64)
    with pytest.warns(Warning, match="counts not kept for the next run"):
        ctr.save()
