"""The device's measured roofline: how fast it really multiplies matrices and moves memory.

A spec-sheet peak is a ceiling no kernel reaches; what a block achieves is better read against what the
same device does on the easiest possible work. :func:`calibrate` measures, once per device and dtype:

* **matmul**: an n x n by n x n product in the run's dtype (n = 8192 on CUDA, 1024 on CPU, 512 for
  fp16/bf16 on CPU; 2 n^3 FLOPs),
  under torch's current TF32 switches, timed with :func:`attnbench.measuring.timing.time_callable`;
* **matmul_tf32** (fp32 on CUDA): the same product with TF32 allowed, the rate fp32 matrix work reaches
  where cuDNN (on by default) or cuBLAS may use TF32;
* **copy**: ``dst.copy_(src)`` of a buffer far larger than the caches (1 GiB on CUDA, 128 MiB on CPU),
  counted as 2 x its bytes moved (read + write), in bytes per second.

The copy's rate is the **memory roof** (bytes per second) and the matmul's the **compute roof** (FLOP/s) of
the roofline a block is placed on (:func:`attainable_flops_per_s`, :func:`ridge_intensity`): a block of
arithmetic intensity I (FLOPs per byte moved) cannot run faster than min(matmul rate, I x copy rate).

Bytes moved (:func:`traffic_lower_bound`) are a **lower bound** built from tensor sizes: the inputs and the
parameters (and buffers) read once, the output written once and, where the block declares its largest
intermediate (``largest_intermediate`` beside its closed forms), that tensor written once and read once.
Real kernels move more (other intermediates, re-reads past the caches), so the intensity is an upper bound
and a point sits at or to the right of where its true traffic would put it.

The result is cached as JSON (``$ATTNBENCH_CACHE_DIR``, default ``~/.cache/attnbench``) under a key made of
what the figures depend on (the device's fingerprint identity, the dtype and, on CPU, the thread count), so
every later run on the same device reuses it; ``refresh=True`` measures again. Every record carries the
fingerprint it was measured with.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import torch

from attnbench.measuring import device as dev
from attnbench.measuring.timing import time_callable

CACHE_ENV = "ATTNBENCH_CACHE_DIR"
MATMUL_N = {"cuda": 8192, "cpu": 1024}
CPU_LOW_PRECISION_N = 512  # CPUs without bf16 matrix units run a 1024^3 bf16 product for tens of seconds
COPY_BYTES = {"cuda": 2**30, "cpu": 128 * 2**20}
IDENTITY = ("device_type", "gpu_name", "gpu_total_memory_bytes", "driver_version", "cuda_version", "torch_version",
            "cpu_model", "logical_cores", "torch_threads", "matmul_allow_tf32", "float32_matmul_precision")


def cache_path() -> Path:
    root = os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "attnbench")
    return Path(root) / "roofline.json"


def cache_key(fp: dict[str, Any], dtype: str) -> str:
    return "|".join(f"{k}={fp.get(k)}" for k in IDENTITY) + f"|dtype={dtype}"


def _read_cache(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_cache(path: Path, data: dict[str, Any]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1, default=str), encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        pass  # a cache that cannot be written only costs a re-measurement next time


def measure_roofline(device: str, dtype: str = "fp32", *, n: int | None = None, copy_bytes: int | None = None,
                     target_s: float = 0.5) -> dict[str, Any]:
    """Time the calibration matmul and copy on ``device`` now (see the module docstring)."""
    d = dev.resolve_device(device)
    where = dev.placement(d)
    # sized by where the tensors are (the fake-CUDA fixture keeps them on the CPU)
    n = n or (CPU_LOW_PRECISION_N if where.type == "cpu" and dtype != "fp32" else MATMUL_N[where.type])
    copy_bytes = copy_bytes or COPY_BYTES[where.type]
    torch_dtype = dev.resolve_dtype(dtype)
    gen = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(where, torch_dtype)
    b = torch.randn(n, n, generator=gen).to(where, torch_dtype)
    mm = time_callable(lambda: torch.mm(a, b), device=d, min_reps=5, target_s=target_s, max_warmup_s=1.0,
                       timing="pipelined", what=f"calibration matmul {n}^3", dtype=dtype)
    tf32 = None
    if dtype == "fp32" and where.type == "cuda":  # fp32 matrix work that may run on TF32 tensor cores
        old = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = True
        try:
            tf32 = time_callable(lambda: torch.mm(a, b), device=d, min_reps=5, target_s=target_s, max_warmup_s=1.0,
                                 timing="pipelined", what=f"calibration matmul {n}^3 (TF32)", dtype=dtype)
        finally:
            torch.backends.cuda.matmul.allow_tf32 = old
    del a, b
    elements = copy_bytes // 4
    src = torch.ones(elements, dtype=torch.float32, device=where)
    dst = torch.empty_like(src)
    cp = time_callable(lambda: dst.copy_(src), device=d, min_reps=5, target_s=target_s, max_warmup_s=1.0,
                       timing="pipelined", what=f"calibration copy {copy_bytes // 2**20} MiB", dtype="fp32")
    del src, dst
    flops = 2 * n**3
    moved = 2 * elements * 4
    return {
        "matmul": {"n": n, "dtype": dtype, "flops": flops, "median_ms": mm.median * 1e3, "n_samples": mm.n,
                   "flops_per_s": flops / mm.median, "tflops_per_s": flops / mm.median / 1e12},
        "matmul_tf32": None if tf32 is None else {
            "n": n, "dtype": "fp32 (TF32 allowed)", "flops": flops, "median_ms": tf32.median * 1e3, "n_samples": tf32.n,
            "flops_per_s": flops / tf32.median, "tflops_per_s": flops / tf32.median / 1e12},
        "copy": {"bytes": copy_bytes, "bytes_moved": moved, "median_ms": cp.median * 1e3, "n_samples": cp.n,
                 "bytes_per_s": moved / cp.median, "gib_per_s": moved / cp.median / 2**30},
        "units": {"flops": "FLOPs (multiply-add = 2)", "copy": "bytes read + bytes written per second"},
    }


def calibrate(device: str, dtype: str = "fp32", *, refresh: bool = False, fingerprint: dict[str, Any] | None = None) -> dict[str, Any]:
    """The device's measured roofline for ``dtype``, from the cache when this device has been calibrated
    before, else measured now and cached. The record says which (``cached``)."""
    fp = fingerprint or dev.fingerprint(device)
    key = cache_key(fp, dtype)
    path = cache_path()
    cache = _read_cache(path)
    if not refresh and isinstance(cache.get(key), dict) and "matmul" in cache[key]:
        return {**cache[key], "cached": True, "cache": str(path)}
    record = measure_roofline(device, dtype)
    record.update(fingerprint=fp, measured_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    cache = _read_cache(path)  # re-read: another run may have written meanwhile
    cache[key] = record
    _write_cache(path, cache)
    return {**record, "cached": False, "cache": str(path)}


# -- the roofline a block is placed on ---------------------------------------------------------------


def traffic_lower_bound(input_bytes: int, output_bytes: int, param_bytes: int,
                        largest_intermediate_bytes: int | None = None) -> dict[str, Any]:
    """Bytes one call moves at least: inputs and parameters read once, the output written once, and the
    declared largest intermediate (when given) written once and read once. Returns the total and its parts,
    with ``basis`` naming which of the two bounds it is."""
    inter = 2 * int(largest_intermediate_bytes) if largest_intermediate_bytes else 0
    total = int(input_bytes) + int(output_bytes) + int(param_bytes) + inter
    basis = ("inputs + parameters + output once, largest intermediate written and read once" if inter
             else "inputs + parameters + output once (no intermediate declared)")
    return {"bytes": total, "input_bytes": int(input_bytes), "output_bytes": int(output_bytes),
            "param_bytes": int(param_bytes), "intermediate_bytes": inter, "basis": basis,
            "unit": "bytes (lower bound on bytes moved per call)"}


def intensity(flops: float, bytes_moved: float) -> float | None:
    """Arithmetic intensity in FLOPs per byte (None when no bytes are moved)."""
    return flops / bytes_moved if bytes_moved > 0 else None


def attainable_flops_per_s(intensity_flop_per_byte: float, peak_flops_per_s: float, bytes_per_s: float) -> float:
    """The roofline: the most FLOP/s a kernel of this intensity can reach, min(compute roof, intensity x
    memory roof)."""
    return min(peak_flops_per_s, intensity_flop_per_byte * bytes_per_s)


def ridge_intensity(peak_flops_per_s: float, bytes_per_s: float) -> float:
    """FLOPs per byte where the memory roof meets the compute roof: below it a kernel is memory-bound."""
    return peak_flops_per_s / bytes_per_s
