"""Memory on CPU and out-of-memory handling (simulated)."""

from __future__ import annotations

import json

import pytest
import torch

from attnbench.errors import DeviceError
from attnbench.measuring import memory
from attnbench.measuring.memory import OOM, is_oom, measure_memory, run_guarded


def _raise(exc: BaseException):
    def fn():
        raise exc

    return fn


def test_cuda_oom_error_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    released: list[bool] = []
    monkeypatch.setattr(memory, "release_memory", lambda: released.append(True))
    err = torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
    assert run_guarded(_raise(err)) == (None, OOM)
    assert OOM == "OOM" and released == [True]


@pytest.mark.parametrize(
    "message",
    [
        "CUDA out of memory. Tried to allocate 2.00 GiB",
        "CUDA error: out of memory",
        "[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 bytes",
    ],
)
def test_runtime_error_saying_oom_is_caught(message: str) -> None:
    assert run_guarded(_raise(RuntimeError(message))) == (None, "OOM")


def test_memory_error_is_caught() -> None:
    assert run_guarded(_raise(MemoryError())) == (None, "OOM")


def test_other_errors_propagate() -> None:
    with pytest.raises(RuntimeError, match="shape mismatch"):
        run_guarded(_raise(RuntimeError("shape mismatch")))
    with pytest.raises(ValueError):
        run_guarded(_raise(ValueError("out of memory")))  # only RuntimeError/MemoryError count


def test_success_passes_result_through() -> None:
    assert run_guarded(lambda: 42) == (42, None)
    assert run_guarded(lambda: None) == (None, None)


def test_is_oom() -> None:
    assert is_oom(torch.cuda.OutOfMemoryError("x"))
    assert not is_oom(RuntimeError("expected scalar type Float"))
    assert not is_oom(KeyError("out of memory"))


def test_cpu_memory_report() -> None:
    size = 32 * 2**20  # 32 MiB of float32, written so it is resident

    def fn() -> float:
        return float(torch.ones(size // 4).sum())

    report = measure_memory(fn, device="cpu")
    d = report.to_dict()
    json.dumps(d)
    assert report.device == "cpu"
    for field in ("peak_allocated_bytes", "peak_reserved_bytes", "device_used_bytes", "peak_allocated_delta_bytes"):
        assert d[field] is None
    assert any("whole process" in n for n in report.notes)
    assert any("not measured" in n for n in report.notes)
    if report.rss_peak_bytes is None:
        pytest.skip("process RSS not measurable here")
    assert report.rss_peak_bytes > 0 and report.rss_peak_delta_bytes is not None


def test_cpu_memory_sees_a_fresh_buffer_in_a_fresh_process() -> None:
    """In a fresh process (no memory kept resident by earlier tests or allocator settings) a 32 MiB buffer
    written during the call shows in the peak-RSS delta."""
    import subprocess
    import sys

    code = (
        "import json, torch\n"
        "from attnbench.measuring.memory import measure_memory\n"
        "size = 32 * 2**20\n"
        "r = measure_memory(lambda: float(torch.ones(size // 4).sum()), device='cpu')\n"
        "print(json.dumps({'method': r.rss_method, 'delta': r.rss_peak_delta_bytes}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    if not out["method"] or "clear_refs" not in out["method"]:
        pytest.skip("peak RSS cannot be reset here")
    assert out["delta"] >= 16 * 2**20  # at least half of the buffer was resident during the call


def test_cpu_memory_runs_under_inference_mode() -> None:
    seen: list[bool] = []
    measure_memory(lambda: seen.append(torch.is_inference_mode_enabled()), device="cpu")
    assert seen == [True]


def test_cuda_memory_absent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceError, match="CUDA is not available on this machine"):
        measure_memory(lambda: None, device="cuda")
