"""Dense peak FLOP/s of known GPUs, with sources, and how close a measurement comes to them.

Every figure is a *dense* peak (no 2:4 structured sparsity; vendor datasheets usually print the sparse
figure, twice the dense one, for tensor-core formats) at the boost clock the vendor quotes. ``fp32`` is
the non-tensor-core FP32 rate; ``tf32``, ``fp16`` and ``bf16`` are tensor-core rates where the GPU has
them. A GPU without a format (bf16 before Ampere, tf32 before Ampere) simply has no entry for it.

TF32 and fp32 runs: on Ampere and later, torch may run fp32 matrix work on TF32 tensor cores.
cuBLAS matmuls do so only if ``torch.backends.cuda.matmul.allow_tf32`` is True (equivalently
``torch.set_float32_matmul_precision("high")`` or ``"medium"``; False by default), and cuDNN
convolutions do so if ``torch.backends.cudnn.allow_tf32`` is True (True by default). So an fp32 run of a
convolutional block on an A100/H100 normally does use TF32. :func:`achieved` therefore rates an fp32
run against the *TF32* peak whenever either switch allows TF32 and the GPU has a TF32 entry (the higher
peak, so the efficiency is never overstated), and against the FP32 peak otherwise; the dict it returns
says which (``peak_dtype``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from attnbench.errors import UsageError

PEAK_DTYPES = ("fp32", "tf32", "fp16", "bf16")
TERA = 1e12

_HOPPER_WP = "NVIDIA H100 Tensor Core GPU Architecture whitepaper (Hopper), dense figures"
_H100_DS = "NVIDIA H100 Tensor Core GPU datasheet (sparse figures halved)"
_H200_DS = "NVIDIA H200 Tensor Core GPU datasheet, H200 SXM (same compute as H100 SXM; sparse figures halved)"
_A100_DS = "NVIDIA A100 Tensor Core GPU datasheet (A100 40GB/80GB, PCIe and SXM list the same peaks)"
_V100_DS = "NVIDIA Tesla V100 GPU datasheet"
_PASCAL = (
    "NVIDIA GeForce GTX 1080 Ti specifications (3584 CUDA cores, 1582 MHz boost: 2 x 3584 x 1.582 GHz) "
    "and NVIDIA GeForce GTX 1080 whitepaper (GP10x FP16 at 1/64 of the FP32 rate)"
)


@dataclass(frozen=True)
class GpuPeaks:
    """Dense peaks (TFLOP/s) of one GPU model, the name tokens that identify it, and the sources."""

    key: str
    title: str
    tflops: dict[str, float]
    source: str
    requires: frozenset[str]
    excludes: frozenset[str] = frozenset()

    def matches(self, tokens: set[str]) -> bool:
        return self.requires <= tokens and not (self.excludes & tokens)


def _gpu(key: str, title: str, tflops: dict[str, float], source: str, requires: str, excludes: str = "") -> GpuPeaks:
    return GpuPeaks(key, title, tflops, source, frozenset(requires.split()), frozenset(excludes.split()))


# Most specific entries first: the first match wins.
GPUS: tuple[GpuPeaks, ...] = (
    _gpu(
        "h100-pcie", "NVIDIA H100 PCIe",
        {"fp32": 51.2, "tf32": 378.0, "fp16": 756.0, "bf16": 756.0},
        f"{_HOPPER_WP}; {_H100_DS}", requires="H100 PCIE", excludes="NVL",
    ),
    _gpu(
        "h100-sxm", "NVIDIA H100 SXM5",
        {"fp32": 66.9, "tf32": 494.7, "fp16": 989.4, "bf16": 989.4},
        f"{_HOPPER_WP}; {_H100_DS}", requires="H100", excludes="PCIE NVL",
    ),
    _gpu(
        "h200-sxm", "NVIDIA H200 SXM",
        {"fp32": 66.9, "tf32": 494.7, "fp16": 989.4, "bf16": 989.4},
        _H200_DS, requires="H200", excludes="NVL",
    ),
    _gpu(
        "a100", "NVIDIA A100 (SXM4 or PCIe, 40GB or 80GB)",
        {"fp32": 19.5, "tf32": 156.0, "fp16": 312.0, "bf16": 312.0},
        _A100_DS, requires="A100",
    ),
    _gpu(
        "v100-sxm2", "NVIDIA Tesla V100 SXM2",
        {"fp32": 15.7, "fp16": 125.0},
        f"{_V100_DS} (V100 SXM2: single precision 15.7 TFLOPS, tensor performance 125 TFLOPS)",
        requires="V100 SXM2",
    ),
    _gpu(
        "v100-pcie", "NVIDIA Tesla V100 PCIe",
        {"fp32": 14.0, "fp16": 112.0},
        f"{_V100_DS} (V100 PCIe: single precision 14 TFLOPS, tensor performance 112 TFLOPS)",
        requires="V100 PCIE",
    ),
    _gpu(
        "gtx-1080-ti", "NVIDIA GeForce GTX 1080 Ti",
        {"fp32": 11.34, "fp16": 11.34 / 64},
        _PASCAL, requires="1080 TI",
    ),
)


def _tokens(name: str) -> set[str]:
    return set(re.findall(r"[A-Z0-9]+", name.upper()))


def find_gpu(gpu_name: str | None) -> GpuPeaks | None:
    """The table entry for a GPU name as torch or NVML spell it (``"NVIDIA H100 80GB HBM3"``,
    ``"Tesla V100-SXM2-16GB"``, ``"NVIDIA A100-SXM4-80GB"``), or None if the model is not in the table."""
    if not gpu_name:
        return None
    tokens = _tokens(gpu_name)
    for gpu in GPUS:
        if gpu.matches(tokens):
            return gpu
    return None


def _check_dtype(dtype: str) -> None:
    if dtype not in PEAK_DTYPES:
        raise UsageError(f"unknown dtype '{dtype}' for peak FLOP/s; valid choices: {', '.join(PEAK_DTYPES)}")


def peak_flops(gpu_name: str | None, dtype: str) -> tuple[float, str] | None:
    """``(dense peak FLOP/s, source)`` for this GPU and dtype, or None if the GPU is unknown or lacks
    the format."""
    _check_dtype(dtype)
    gpu = find_gpu(gpu_name)
    if gpu is None or dtype not in gpu.tflops:
        return None
    return gpu.tflops[dtype] * TERA, gpu.source


def tf32_allowed() -> bool:
    """Whether torch, as now configured, lets fp32 matmuls or convolutions use TF32 tensor cores."""
    import torch

    return bool(torch.backends.cuda.matmul.allow_tf32) or bool(torch.backends.cudnn.allow_tf32)


def peak_dtype_for(gpu_name: str | None, dtype: str, tf32: bool | None = None) -> str:
    """Which peak an efficiency of a ``dtype`` run is rated against: ``tf32`` for fp32 runs that may use
    TF32 on a GPU with TF32 tensor cores, otherwise ``dtype`` itself. ``tf32=None`` reads torch's
    current switches (:func:`tf32_allowed`)."""
    _check_dtype(dtype)
    if dtype != "fp32":
        return dtype
    if tf32 is None:
        tf32 = tf32_allowed()
    gpu = find_gpu(gpu_name)
    if tf32 and gpu is not None and "tf32" in gpu.tflops:
        return "tf32"
    return "fp32"


def achieved(
    flops: int | float, median_s: float, gpu_name: str | None, dtype: str, *, tf32: bool | None = None
) -> dict[str, Any]:
    """Achieved FLOP/s of a run doing ``flops`` in ``median_s`` seconds, and its fraction of the dense
    peak. Peak fields are None (with a note) where the device is not in the table, e.g. on CPU."""
    _check_dtype(dtype)
    if median_s <= 0:
        raise ValueError(f"median time must be positive, got {median_s}")
    rate = float(flops) / median_s
    out: dict[str, Any] = {
        "flops": flops,
        "median_s": median_s,
        "achieved_flops_per_s": rate,
        "achieved_tflops_per_s": rate / TERA,
        "gpu_name": gpu_name,
        "dtype": dtype,
        "peak_dtype": None,
        "peak_flops_per_s": None,
        "peak_tflops_per_s": None,
        "peak_source": None,
        "fraction_of_peak": None,
        "note": None,
    }
    gpu = find_gpu(gpu_name)
    if gpu is None:
        out["note"] = "no peak known for this device" if gpu_name else "no GPU: peak not applicable"
        return out
    pdtype = peak_dtype_for(gpu_name, dtype, tf32)
    peak = peak_flops(gpu_name, pdtype)
    if peak is None:
        out["note"] = f"{gpu.title} has no {pdtype} peak in the table (format not supported)"
        return out
    value, source = peak
    out.update(
        peak_dtype=pdtype,
        peak_flops_per_s=value,
        peak_tflops_per_s=value / TERA,
        peak_source=source,
        fraction_of_peak=rate / value,
    )
    return out
