"""Fingerprint contents, privacy, device slugs, and its optional sources: NVML (the [gpu] extra) and py-cpuinfo."""

from __future__ import annotations

import json
import platform
import socket
import subprocess
import sys

import pytest
import torch

from attnbench.errors import DeviceError
from attnbench.measuring.device import (
    NVML_FIELDS,
    cpu_model,
    device_slug,
    device_state,
    fingerprint,
    slugify,
)


def test_cpu_fingerprint_fields() -> None:
    fp = fingerprint("cpu")
    json.dumps(fp)
    assert fp["device"] == "cpu" and fp["device_type"] == "cpu"
    assert fp["torch_version"] == torch.__version__
    assert fp["python_version"].count(".") == 2
    assert fp["cpu_model"]
    assert fp["logical_cores"] >= 1
    assert fp["torch_threads"] == torch.get_num_threads()
    for key in ("gpu_name", "gpu_total_memory_bytes", "driver_version", "cuda_version", "cudnn_version",
                "sm_clock_mhz_at_start", "max_sm_clock_mhz", "throttle_reasons_at_start", "compute_capability",
                "cudnn_benchmark", "load_avg_1m", "mig_mode"):
        assert key in fp
    assert fp["gpu_name"] is None


def test_fingerprint_has_no_hostname() -> None:
    fp = fingerprint("cpu")
    host = socket.gethostname()
    text = json.dumps(fp)
    assert not any("host" in k or "node" in k for k in fp)
    assert host not in [v for v in fp.values() if isinstance(v, str)]
    if len(host) >= 4:  # a very short name (e.g. "vm", "gpu") can occur by chance in other text
        assert host not in text
    else:
        assert f'"{host}"' not in text


def test_fingerprint_cuda_absent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceError, match="CUDA is not available on this machine"):
        fingerprint("cuda")


def test_slugs() -> None:
    assert device_slug({"device_type": "cuda", "gpu_name": "NVIDIA H100 80GB HBM3"}) == "cuda-nvidia-h100-80gb-hbm3"
    assert device_slug({"device_type": "cuda", "gpu_name": "Tesla V100-SXM2-16GB"}) == "cuda-tesla-v100-sxm2-16gb"
    assert (
        device_slug({"device_type": "cpu", "cpu_model": "Intel(R) Xeon(R) Platinum 8480+ CPU @ 2.00GHz"})
        == "cpu-intel-xeon-platinum-8480-cpu-2-00ghz"
    )
    assert device_slug({"device_type": "cpu", "cpu_model": ""}) == "cpu-unknown"
    assert slugify("AMD EPYC 7763 64-Core Processor") == "amd-epyc-7763-64-core-processor"
    fp = fingerprint("cpu")
    assert device_slug(fp) == "cpu-" + slugify(fp["cpu_model"])


# -- optional sources: NVML (the [gpu] extra) and py-cpuinfo ----------------------------------------


@pytest.mark.cuda
def test_fingerprint_reads_nvml_when_installed_cuda(fake_cuda) -> None:
    fp = fingerprint("cuda")
    assert fp["gpu_name"] == fake_cuda.name and fp["driver_version"] == fake_cuda.driver
    assert fp["nvml_error"] is None and fp["sm_clock_mhz_at_start"] == 1980


@pytest.mark.cuda
def test_fingerprint_without_pynvml_says_nvml_is_unavailable_cuda(fake_cuda, monkeypatch: pytest.MonkeyPatch) -> None:
    """nvidia-ml-py is the [gpu] extra: without it a CUDA fingerprint still has everything torch knows,
    its NVML fields are None, and nvml_error says what to install."""
    monkeypatch.setitem(sys.modules, "pynvml", None)  # `import pynvml` raises ImportError
    fp = fingerprint("cuda")
    json.dumps(fp)
    assert fp["gpu_name"] == fake_cuda.name and fp["compute_capability"] is not None
    assert fp["nvml_error"].startswith("NvmlUnavailable: nvidia-ml-py is not installed")
    assert '"attnbench[gpu]"' in fp["nvml_error"]
    assert all(fp[k] is None for k in NVML_FIELDS if k != "nvml_error")
    state = device_state(0)
    assert state["nvml_error"] == fp["nvml_error"] and all(v is None for k, v in state.items() if k != "nvml_error")


def test_cpu_model_is_read_once_and_never_empty() -> None:
    first = cpu_model()
    assert first and first == fingerprint("cpu")["cpu_model"]
    assert cpu_model.cache_info().currsize == 1 and cpu_model() is first


def test_cpu_model_without_cpuinfo_falls_back_to_platform(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cpuinfo", None)
    cpu_model.cache_clear()
    try:
        assert cpu_model() == (platform.processor() or platform.machine() or "unknown")
    finally:
        cpu_model.cache_clear()


def test_help_imports_no_heavy_library() -> None:
    """torch takes about 2 s, py-cpuinfo about a second and scipy.stats half of one: `attnbench --help`
    loads none of them (nor pandas or matplotlib); a command imports what it uses when it runs."""
    code = ("import sys\nsys.argv = ['attnbench', '--help']\nfrom attnbench.entry import main\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print('loaded:', sorted(m for m in ('cpuinfo', 'scipy', 'torch', 'pandas', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120).stdout
    assert "loaded: []" in out, out
