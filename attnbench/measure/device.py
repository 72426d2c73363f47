"""Which device a run uses, and a fingerprint of the machine to store beside every measurement.

:func:`resolve_device` turns the CLI's ``--device`` into a ``torch.device`` (raising
:class:`~attnbench.errors.UsageError` for an unknown name and :class:`~attnbench.errors.DeviceError`
when CUDA is asked for but absent). :func:`resolve_dtype` does the same for ``--dtype``.

:func:`fingerprint` records what a result depends on: GPU model, memory, driver, CUDA and cuDNN
versions, current and maximum SM clocks (from NVML, read lazily through ``pynvml``), compute capability,
TF32 settings, torch and Python versions, CPU model, core and thread counts. It deliberately records no
host name, user name, IP address or serial number, so results can be shared.
"""

from __future__ import annotations

import os
import platform
import re
import sys
from typing import Any

import torch

from attnbench.errors import DeviceError, UsageError

DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
}
DEVICE_CHOICES = ("cpu", "cuda", "cuda:N")


def resolve_dtype(name: str) -> torch.dtype:
    """The torch dtype for ``fp32``, ``fp16`` or ``bf16``; UsageError otherwise."""
    if name not in DTYPES:
        raise UsageError(f"unknown dtype '{name}'; valid choices: {', '.join(DTYPES)}")
    return DTYPES[name]


def resolve_device(name: str | torch.device) -> torch.device:
    """``cpu``, ``cuda`` or ``cuda:N`` as a torch.device, checked against this machine."""
    text = str(name).strip().lower()
    if text == "cpu":
        return torch.device("cpu")
    match = re.fullmatch(r"cuda(?::(\d+))?", text)
    if match is None:
        raise UsageError(f"unknown device '{name}'; valid choices: {', '.join(DEVICE_CHOICES)}")
    if not torch.cuda.is_available():
        why = (
            "this torch build has no CUDA support"
            if torch.version.cuda is None
            else "torch found no usable CUDA device or driver"
        )
        raise DeviceError(f"CUDA is not available on this machine; {why}; use --device cpu")
    index = int(match.group(1)) if match.group(1) is not None else torch.cuda.current_device()
    count = torch.cuda.device_count()
    if index >= count:
        raise DeviceError(f"CUDA device {index} does not exist; this machine has {count} (0..{count - 1})")
    return torch.device("cuda", index)


# -- NVML ----------------------------------------------------------------------------------------


def nvml_handle(index: int) -> tuple[Any, Any]:
    """``(pynvml module, handle)`` for torch's CUDA device ``index``; raises on any NVML failure.

    torch numbers devices after ``CUDA_VISIBLE_DEVICES``, NVML does not, so the device is found by its
    UUID (or PCI bus id) where torch gives one, and by index only as a last resort.
    """
    import pynvml  # lazy: nvidia-ml-py, present but unusable on machines without a driver

    pynvml.nvmlInit()
    props = torch.cuda.get_device_properties(index)
    uuid = getattr(props, "uuid", None)
    if uuid is not None:
        text = str(uuid)
        for candidate in (text, f"GPU-{text}"):
            try:
                return pynvml, pynvml.nvmlDeviceGetHandleByUUID(candidate)
            except pynvml.NVMLError:
                pass
    bus, dev, domain = (getattr(props, a, None) for a in ("pci_bus_id", "pci_device_id", "pci_domain_id"))
    if bus is not None and dev is not None and domain is not None:
        try:
            return pynvml, pynvml.nvmlDeviceGetHandleByPciBusId(f"{domain:08x}:{bus:02x}:{dev:02x}.0")
        except pynvml.NVMLError:
            pass
    if os.environ.get("CUDA_VISIBLE_DEVICES"):
        raise RuntimeError("cannot match the torch device to an NVML device under CUDA_VISIBLE_DEVICES")
    return pynvml, pynvml.nvmlDeviceGetHandleByIndex(index)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _nvml_facts(index: int) -> dict[str, Any]:
    facts: dict[str, Any] = {
        "driver_version": None,
        "sm_clock_mhz": None,
        "max_sm_clock_mhz": None,
        "nvml_error": None,
    }
    try:
        nvml, handle = nvml_handle(index)
        facts["driver_version"] = _text(nvml.nvmlSystemGetDriverVersion())
        facts["sm_clock_mhz"] = int(nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_SM))
        facts["max_sm_clock_mhz"] = int(nvml.nvmlDeviceGetMaxClockInfo(handle, nvml.NVML_CLOCK_SM))
    except Exception as exc:  # NVML is optional: record why it failed instead
        facts["nvml_error"] = f"{type(exc).__name__}: {exc}"
    return facts


# -- CPU -----------------------------------------------------------------------------------------


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what ``platform`` says."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            fields: dict[str, str] = {}
            for line in f:
                key, sep, value = line.partition(":")
                if sep and key.strip() not in fields and value.strip():
                    fields[key.strip()] = value.strip()
        for key in ("model name", "Model", "Hardware", "cpu model", "cpu"):
            if key in fields:
                return fields[key]
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def tf32_settings() -> dict[str, Any]:
    """Whether fp32 matmuls (cuBLAS) and convolutions (cuDNN) may use TF32 tensor cores."""
    return {
        "matmul_allow_tf32": bool(torch.backends.cuda.matmul.allow_tf32),
        "cudnn_allow_tf32": bool(torch.backends.cudnn.allow_tf32),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
    }


def fingerprint(device: str | torch.device = "cpu") -> dict[str, Any]:
    """What the machine is, as a JSON-able dict; GPU fields are None on CPU. No host name is recorded."""
    dev = resolve_device(device)
    fp: dict[str, Any] = {
        "device": str(dev),
        "device_type": dev.type,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "python_implementation": sys.implementation.name,
        "os": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        "cpu_model": cpu_model(),
        "logical_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "gpu_name": None,
        "gpu_total_memory_bytes": None,
        "gpu_multiprocessors": None,
        "gpu_l2_cache_bytes": None,
        "compute_capability": None,
        "cuda_version": torch.version.cuda,
        "cudnn_version": None,
        "driver_version": None,
        "sm_clock_mhz": None,
        "max_sm_clock_mhz": None,
        "nvml_error": None,
        **tf32_settings(),
    }
    if dev.type == "cuda":
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        fp.update(
            gpu_name=props.name,
            gpu_total_memory_bytes=int(props.total_memory),
            gpu_multiprocessors=int(props.multi_processor_count),
            gpu_l2_cache_bytes=getattr(props, "L2_cache_size", None),
            compute_capability=f"{props.major}.{props.minor}",
            cudnn_version=torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        )
        fp.update(_nvml_facts(index))
    return fp


def slugify(text: str) -> str:
    """Lower case, trademarks dropped, every run of other characters turned into one hyphen."""
    text = re.sub(r"\((r|tm|c)\)", " ", text.lower())
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-") or "unknown"


def device_slug(fp: dict[str, Any]) -> str:
    """A short file-name-safe name: ``cpu-<cpu model>`` or ``cuda-<gpu name>``."""
    if fp.get("device_type") == "cuda" and fp.get("gpu_name"):
        return f"cuda-{slugify(fp['gpu_name'])}"
    return f"cpu-{slugify(fp.get('cpu_model') or 'unknown')}"
