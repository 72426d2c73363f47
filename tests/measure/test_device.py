"""Fingerprint contents, privacy and device slugs."""

from __future__ import annotations

import json
import socket

import pytest
import torch

from attnbench.errors import DeviceError
from attnbench.measure.device import device_slug, fingerprint, slugify


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
