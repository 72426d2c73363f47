"""Dense peak FLOP/s of known GPUs, with sources, and how close a measurement comes to them.

Every figure is a *dense* peak (no 2:4 structured sparsity; vendor datasheets usually print the sparse
figure, twice the dense one, for tensor-core formats) at the boost clock the vendor quotes. ``fp32`` is
the non-tensor-core FP32 rate; ``tf32``, ``fp16`` and ``bf16`` are tensor-core rates where the GPU has
them. A GPU without a format (bf16 before Ampere, tf32 before Ampere) simply has no entry for it.

Which peak a run is rated against (:func:`achieved`)
----------------------------------------------------
A block's FLOPs are split by op category, and each category is rated against the peak of the units
that run it:

* convolutions (cuDNN): in an fp32 run, the TF32 tensor-core peak if ``torch.backends.cudnn.allow_tf32``
  (True by default), else the FP32 peak;
* linear layers and matrix products (cuBLAS, e.g. the attention maps' ``bmm``): in an fp32 run, the TF32
  peak only if ``torch.backends.cuda.matmul.allow_tf32`` (False by default), else the FP32 peak;
* in fp16/bf16 runs both use the tensor-core peak of that format;
* everything else (softmax, normalisation, pooling, element-wise) the FP32 CUDA-core peak.

The run's peak is then the rate at which its whole FLOP mix would run if every category ran at its own
peak: total FLOPs / sum over categories of (FLOPs / peak). Beside that spec-sheet figure, a row also
carries its fraction of the *measured* matrix-multiply rate of the device (:mod:`attnbench.measuring.roofline`).

MIG slices are not in the table (a slice has a fraction of the GPU's units), nor are GPUs not listed:
their peak is None with a note, never a wrong figure.
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
_NVL = ("NVIDIA H100 NVL and H200 NVL columns of the H100 / H200 datasheets (per GPU: FP32 60, TF32 835*, "
        "FP16/BF16 1,671* TFLOPS, * sparse, halved here)")
_GH200 = "NVIDIA GH200 Grace Hopper Superchip datasheet, the GPU's figures (as H100 SXM; sparse figures halved)"
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
        "h100-nvl", "NVIDIA H100 NVL",
        {"fp32": 60.0, "tf32": 417.5, "fp16": 835.5, "bf16": 835.5},
        _NVL, requires="H100 NVL", excludes="MIG",
    ),
    _gpu(
        "h200-nvl", "NVIDIA H200 NVL",
        {"fp32": 60.0, "tf32": 417.5, "fp16": 835.5, "bf16": 835.5},
        _NVL, requires="H200 NVL", excludes="MIG",
    ),
    _gpu(
        "gh200", "NVIDIA GH200 (Grace Hopper), GPU",
        {"fp32": 66.9, "tf32": 494.7, "fp16": 989.4, "bf16": 989.4},
        _GH200, requires="GH200", excludes="MIG",
    ),
    _gpu(
        "h100-pcie", "NVIDIA H100 PCIe",
        {"fp32": 51.2, "tf32": 378.0, "fp16": 756.0, "bf16": 756.0},
        f"{_HOPPER_WP}; {_H100_DS}", requires="H100 PCIE", excludes="NVL MIG",
    ),
    _gpu(
        "h100-sxm", "NVIDIA H100 SXM5",
        {"fp32": 66.9, "tf32": 494.7, "fp16": 989.4, "bf16": 989.4},
        f"{_HOPPER_WP}; {_H100_DS}", requires="H100", excludes="PCIE NVL MIG GH200",
    ),
    _gpu(
        "h200-sxm", "NVIDIA H200 SXM",
        {"fp32": 66.9, "tf32": 494.7, "fp16": 989.4, "bf16": 989.4},
        _H200_DS, requires="H200", excludes="NVL MIG GH200",
    ),
    _gpu(
        "a100", "NVIDIA A100 (SXM4 or PCIe, 40GB or 80GB)",
        {"fp32": 19.5, "tf32": 156.0, "fp16": 312.0, "bf16": 312.0},
        _A100_DS, requires="A100", excludes="MIG",
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


MATRIX_CATEGORIES = {"convolution": "cudnn", "linear": "cublas", "matmul": "cublas"}


def tf32_flags() -> dict[str, bool]:
    """torch's current TF32 switches: cuBLAS (matmul) and cuDNN (convolution)."""
    import torch

    return {"cublas": bool(torch.backends.cuda.matmul.allow_tf32), "cudnn": bool(torch.backends.cudnn.allow_tf32)}


def category_peak_dtype(gpu: GpuPeaks, dtype: str, category: str, tf32: dict[str, bool]) -> str:
    """Which of the GPU's peaks the FLOPs of one op category in a ``dtype`` run are rated against (see the
    module docstring)."""
    library = MATRIX_CATEGORIES.get(category)
    if library is None:
        return "fp32"
    if dtype != "fp32":
        return dtype
    return "tf32" if tf32.get(library) and "tf32" in gpu.tflops else "fp32"


def is_mig(gpu_name: str | None) -> bool:
    return bool(gpu_name) and "MIG" in _tokens(gpu_name or "")


def achieved(
    flops: int | float, median_s: float, gpu_name: str | None, dtype: str, *,
    by_category: dict[str, int] | None = None, tf32: dict[str, bool] | None = None,
    measured_matmul_flops_per_s: float | None = None,
) -> dict[str, Any]:
    """Achieved FLOP/s of a run doing ``flops`` in ``median_s`` seconds; its fraction of the spec-sheet peak
    for its FLOP mix (``by_category``: FLOPs per op category; None: all matrix work) under the TF32
    switches ``tf32`` (None: torch's current ones); and its fraction of the measured matmul rate."""
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
        "peak_basis": None,
        "tf32": None,
        "peak_flops_per_s": None,
        "peak_tflops_per_s": None,
        "peak_source": None,
        "fraction_of_peak": None,
        "measured_matmul_flops_per_s": measured_matmul_flops_per_s,
        "fraction_of_measured_matmul": None if not measured_matmul_flops_per_s else rate / measured_matmul_flops_per_s,
        "note": None,
    }
    gpu = find_gpu(gpu_name)
    if gpu is None:
        if is_mig(gpu_name):
            out["note"] = "MIG slice: no spec-sheet peak (a slice has a fraction of the GPU's units); see the measured matmul rate"
        else:
            out["note"] = "no peak known for this device" if gpu_name else "no GPU: spec-sheet peak not applicable"
        return out
    tf32 = tf32 if tf32 is not None else tf32_flags()
    mix = {k: v for k, v in (by_category or {"matmul": int(flops)}).items() if v}
    basis = {cat: category_peak_dtype(gpu, dtype, cat, tf32) for cat in mix}
    missing = sorted({d for d in basis.values() if d not in gpu.tflops})
    out["tf32"] = dict(tf32)
    if missing:
        out["note"] = f"{gpu.title} has no {', '.join(missing)} peak in the table (format not supported)"
        return out
    seconds_at_peak = sum(v / (gpu.tflops[basis[cat]] * TERA) for cat, v in mix.items())
    value = sum(mix.values()) / seconds_at_peak if seconds_at_peak else None
    out.update(
        peak_basis=basis,
        peak_flops_per_s=value,
        peak_tflops_per_s=None if value is None else value / TERA,
        peak_source=gpu.source,
        fraction_of_peak=None if not value else rate / value,
    )
    return out
