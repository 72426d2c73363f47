"""glibc's malloc settings while CPU work is timed: set for the context, restored afterwards."""

from __future__ import annotations

import torch

from attnbench.measuring.malloc import MODES, cpu_malloc


def test_system_leaves_malloc_alone() -> None:
    with cpu_malloc("system") as mode:
        assert mode == "system"


def test_cached_mode_runs_and_restores() -> None:
    assert MODES == ("cached", "system")
    for _ in range(2):  # entering again after the defaults were restored works the same
        with cpu_malloc("cached") as mode:
            assert mode in ("cached", "system (mallopt unavailable)", "system (mallopt failed)")
            x = torch.ones(8 * 2**20)  # 32 MiB: served from the heap, not mapped afresh, in the cached mode
            assert float(x.sum()) == 8 * 2**20
            del x
