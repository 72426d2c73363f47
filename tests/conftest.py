"""Suite-wide settings: a private cache directory (the measured roofline is cached there, not in ~/.cache),
and the ``fake_cuda`` fixture that runs CUDA code paths over CPU tensors (see attnbench.testing.fake_cuda)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator

import pytest

from attnbench.testing.fake_cuda import FakeCuda

os.environ.setdefault("ATTNBENCH_CACHE_DIR", tempfile.mkdtemp(prefix="attnbench-test-cache-"))


@pytest.fixture
def fake_cuda() -> Iterator[FakeCuda]:
    """A fake H100 (2 GiB of "device memory") for the duration of one test. Tests using it check control
    flow, not numbers."""
    with FakeCuda() as fake:
        yield fake
