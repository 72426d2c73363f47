"""Which device fingerprints are the same device for timing: rows measured on one may be reused (``--resume``)
and baselines compared (the gate) only on the same. Pure functions of the fingerprint dicts that
:func:`attnbench.measuring.device.fingerprint` writes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

CPU_IDENTITY = ("device_type", "machine", "cpu_model", "logical_cores", "torch_threads")
CUDA_IDENTITY = ("device_type", "gpu_name", "gpu_total_memory_bytes", "compute_capability", "driver_version",
                 "cuda_version", "torch_version")


def identity_differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """What makes two fingerprints different devices for timing ("cpu_model: A -> B"); empty if none. A CPU
    is its model, cores and torch threads; a GPU its model, memory, compute capability and software stack."""
    keys = CUDA_IDENTITY if "cuda" in (old.get("device_type"), new.get("device_type")) else CPU_IDENTITY
    return [f"{k}: {old.get(k)} -> {new.get(k)}" for k in keys if old.get(k) != new.get(k)]
