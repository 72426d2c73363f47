"""Which device a run uses, and a fingerprint of the machine to store beside every measurement.

:func:`resolve_device` turns the CLI's ``--device`` into a ``torch.device`` (raising
:class:`~attnbench.errors.UsageError` for an unknown name and :class:`~attnbench.errors.DeviceError`
when CUDA is asked for but absent). :func:`resolve_dtype` does the same for ``--dtype``.

:func:`fingerprint` records what a result depends on: GPU model, memory, driver, CUDA and cuDNN
versions, compute capability, MIG mode, power limit, current and maximum clocks and clock-throttle reasons
(from NVML, read lazily through ``pynvml``: the ``[gpu]`` extra, ``nvidia-ml-py``; without it these
fields are None and ``nvml_error`` says why), TF32 and cuDNN settings (``benchmark``, ``deterministic``),
torch and Python versions, CPU model (``py-cpuinfo``), core and thread counts, and the load average. It
deliberately records no host name, user name, IP address or serial number, so results can be shared.
:func:`device_state` reads the clocks, power, temperature and throttle reasons again; a speed row
records it after its timed loop, when the GPU is warm (an idle GPU reports its idle clock).

:func:`placement` is where a run's tensors live: the device itself. It is the one seam the fake-CUDA
test fixture (:mod:`attnbench.testing.fake_cuda`) replaces, to run "cuda" code paths over CPU tensors.
"""

from __future__ import annotations

import functools
import os
import platform
import re
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
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


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run with ``n`` torch CPU threads (None: leave as is), restoring the previous count afterwards."""
    if n is None:
        yield
        return
    if n < 1:
        raise UsageError(f"--threads must be >= 1, got {n}")
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def placement(device: str | torch.device) -> torch.device:
    """The torch device a run's modules and tensors are put on (see the module docstring)."""
    return device if isinstance(device, torch.device) else torch.device(device)


# -- NVML ----------------------------------------------------------------------------------------


class NvmlUnavailable(RuntimeError):
    """The ``pynvml`` module (package ``nvidia-ml-py``, the ``[gpu]`` extra) is not installed."""


def nvml_handle(index: int) -> tuple[Any, Any]:
    """``(pynvml module, handle)`` for torch's CUDA device ``index``; raises on any NVML failure
    (:class:`NvmlUnavailable` without ``pynvml``).

    torch numbers devices after ``CUDA_VISIBLE_DEVICES``, NVML does not, so the device is found by its
    UUID (or PCI bus id) where torch gives one, and by index only as a last resort.
    """
    try:
        import pynvml  # lazy: optional, and present but unusable on machines without a driver
    except ImportError:
        raise NvmlUnavailable('nvidia-ml-py is not installed (pip install "attnbench[gpu]")') from None

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


# NVML's clock-event ("throttle") reason bits, by value (the constants' names changed across pynvml versions).
THROTTLE_REASONS = {
    0x1: "gpu_idle", 0x2: "applications_clocks_setting", 0x4: "sw_power_cap", 0x8: "hw_slowdown",
    0x10: "sync_boost", 0x20: "sw_thermal_slowdown", 0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown", 0x100: "display_clock_setting",
}


STATE_FIELDS = ("sm_clock_mhz", "mem_clock_mhz", "power_w", "power_limit_w", "temperature_c", "throttle_reasons",
                "nvml_error")
NVML_FIELDS = ("driver_version", "cuda_driver_version", "max_sm_clock_mhz", "max_mem_clock_mhz", "mig_mode",
               "nvml_error") + tuple(f"{k}_at_start" for k in STATE_FIELDS if k != "nvml_error")


def _decode_reasons(mask: int) -> list[str]:
    return [name for bit, name in THROTTLE_REASONS.items() if mask & bit] + (
        [f"unknown_0x{mask & ~sum(THROTTLE_REASONS):x}"] if mask & ~sum(THROTTLE_REASONS) else [])


def _optional(read: Any) -> Any:
    try:
        return read()
    except Exception:  # noqa: BLE001 - a field NVML does not support on this GPU stays None
        return None


def device_state(index: int) -> dict[str, Any]:
    """Clocks (MHz), power draw and limit (W), temperature (C) and the clock-throttle reasons now, from
    NVML; fields NVML cannot give are None, and ``nvml_error`` says why when NVML itself failed."""
    state: dict[str, Any] = dict.fromkeys(STATE_FIELDS)
    try:
        nvml, handle = nvml_handle(index)
    except Exception as exc:  # NVML is optional: record why it failed instead
        state["nvml_error"] = f"{type(exc).__name__}: {exc}"
        return state
    state["sm_clock_mhz"] = _optional(lambda: int(nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_SM)))
    state["mem_clock_mhz"] = _optional(lambda: int(nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_MEM)))
    state["power_w"] = _optional(lambda: nvml.nvmlDeviceGetPowerUsage(handle) / 1000)
    state["power_limit_w"] = _optional(lambda: nvml.nvmlDeviceGetEnforcedPowerLimit(handle) / 1000)
    state["temperature_c"] = _optional(lambda: int(nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU)))
    reader = getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons", None) or getattr(
        nvml, "nvmlDeviceGetCurrentClocksThrottleReasons", None)
    mask = _optional(lambda: int(reader(handle))) if reader else None
    state["throttle_reasons"] = None if mask is None else _decode_reasons(mask)
    return state


def _nvml_facts(index: int) -> dict[str, Any]:
    facts: dict[str, Any] = dict.fromkeys(NVML_FIELDS)
    try:
        nvml, handle = nvml_handle(index)
        facts["driver_version"] = _text(nvml.nvmlSystemGetDriverVersion())
    except Exception as exc:  # NVML is optional: record why it failed instead
        facts["nvml_error"] = f"{type(exc).__name__}: {exc}"
        return facts
    cuda = _optional(lambda: int(nvml.nvmlSystemGetCudaDriverVersion()))
    facts["cuda_driver_version"] = None if cuda is None else f"{cuda // 1000}.{cuda % 1000 // 10}"
    facts["max_sm_clock_mhz"] = _optional(lambda: int(nvml.nvmlDeviceGetMaxClockInfo(handle, nvml.NVML_CLOCK_SM)))
    facts["max_mem_clock_mhz"] = _optional(lambda: int(nvml.nvmlDeviceGetMaxClockInfo(handle, nvml.NVML_CLOCK_MEM)))
    mig = _optional(lambda: nvml.nvmlDeviceGetMigMode(handle))
    facts["mig_mode"] = None if mig is None else bool(mig[0])
    state = device_state(index)
    facts.update({f"{k}_at_start": v for k, v in state.items() if k != "nvml_error"})
    return facts


# -- CPU -----------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's model name as py-cpuinfo reads it (``brand_raw``: on Linux /proc/cpuinfo's model name,
    elsewhere the registry, sysctl or the CPUID brand string), else what ``platform`` says. Read once per
    process: py-cpuinfo takes about a second (it runs in a subprocess), so it is imported only here."""
    try:
        import cpuinfo

        info = cpuinfo.get_cpu_info()
        brand = str(info.get("brand_raw") or info.get("hardware_raw") or "").strip()
    except Exception:  # noqa: BLE001 - an architecture py-cpuinfo does not know, a failing subprocess
        brand = ""
    return brand or platform.processor() or platform.machine() or "unknown"


def tf32_settings() -> dict[str, Any]:
    """Whether fp32 matmuls (cuBLAS) and convolutions (cuDNN) may use TF32 tensor cores, and cuDNN's
    autotuning and determinism switches."""
    return {
        "matmul_allow_tf32": bool(torch.backends.cuda.matmul.allow_tf32),
        "cudnn_allow_tf32": bool(torch.backends.cudnn.allow_tf32),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "cudnn_deterministic": bool(torch.backends.cudnn.deterministic),
    }


def load_average() -> float | None:
    """The 1-minute load average (runnable processes), or None where the OS has none."""
    try:
        return float(os.getloadavg()[0])
    except (OSError, AttributeError):
        return None


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
        "load_avg_1m": load_average(),
        "gpu_name": None,
        "gpu_total_memory_bytes": None,
        "gpu_multiprocessors": None,
        "gpu_l2_cache_bytes": None,
        "compute_capability": None,
        "cuda_version": torch.version.cuda,
        "cudnn_version": None,
        **dict.fromkeys(NVML_FIELDS),
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


# Which fingerprints are one device for timing: kept with the results files that compare them (the bottom layer)
from attnbench.store.identity import CPU_IDENTITY, CUDA_IDENTITY, identity_differences  # noqa: E402,F401

