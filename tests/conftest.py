"""Suite-wide settings: a private cache directory (the measured roofline is cached there, not in ~/.cache),
the attnbench CLI's click command built once for the session, and the ``fake_cuda`` fixture that runs CUDA
code paths over CPU tensors (see attnbench.testing.fake_cuda)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator

import pytest
import typer.main
import typer.testing

from attnbench.testing.fake_cuda import FakeCuda

os.environ.setdefault("ATTNBENCH_CACHE_DIR", tempfile.mkdtemp(prefix="attnbench-test-cache-"))


@pytest.fixture
def fake_cuda() -> Iterator[FakeCuda]:
    """A fake H100 (2 GiB of "device memory") for the duration of one test. Tests using it check control
    flow, not numbers."""
    with FakeCuda() as fake:
        yield fake


@pytest.fixture(scope="session", autouse=True)
def _cli_command_built_once() -> Iterator[None]:
    """Typer turns the app into a click command on every call (``app(...)``, ``CliRunner.invoke``): about
    60 ms of signature and type-hint evaluation per in-process invocation, hundreds of times in this suite.
    The program does it once per process; here it is done once per session. The command is the same
    object graph either way (built from the same registered functions; click makes a new context for
    every invocation), so what each test sees is unchanged."""
    from attnbench.cli import app

    build = typer.main.get_command
    command = build(app)

    def get_command(typer_instance: typer.Typer):  # other Typer apps are built as before
        return command if typer_instance is app else build(typer_instance)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(typer.main, "get_command", get_command)
        mp.setattr(typer.testing, "_get_command", get_command)
        yield
