"""Peak FLOP/s table lookups and efficiency."""

from __future__ import annotations

import pytest

from attnbench.errors import UsageError
from attnbench.measuring.peaks import GPUS, PEAK_DTYPES, achieved, find_gpu, peak_flops

T = 1e12


@pytest.mark.parametrize(
    "name,dtype,tflops",
    [
        ("NVIDIA H100 80GB HBM3", "bf16", 989.4),
        ("NVIDIA H100 80GB HBM3", "fp16", 989.4),
        ("NVIDIA H100 80GB HBM3", "tf32", 494.7),
        ("NVIDIA H100 80GB HBM3", "fp32", 66.9),
        ("NVIDIA H100 PCIe", "bf16", 756.0),
        ("NVIDIA H100 PCIe", "fp32", 51.2),
        ("NVIDIA H200", "bf16", 989.4),
        ("NVIDIA H200", "fp32", 66.9),
        ("NVIDIA A100-SXM4-80GB", "fp32", 19.5),
        ("NVIDIA A100-SXM4-80GB", "tf32", 156.0),
        ("NVIDIA A100-SXM4-80GB", "bf16", 312.0),
        ("NVIDIA A100 80GB PCIe", "fp16", 312.0),
        ("Tesla V100-SXM2-16GB", "fp32", 15.7),
        ("Tesla V100-SXM2-32GB", "fp16", 125.0),
        ("Tesla V100-PCIE-16GB", "fp16", 112.0),
        ("NVIDIA GeForce GTX 1080 Ti", "fp32", 11.34),
        ("NVIDIA GeForce GTX 1080 Ti", "fp16", 11.34 / 64),
        ("NVIDIA H100 NVL", "bf16", 835.5),
        ("NVIDIA H100 NVL", "fp32", 60.0),
        ("NVIDIA H200 NVL", "tf32", 417.5),
        ("NVIDIA GH200 480GB", "bf16", 989.4),
    ],
)
def test_known_peaks(name: str, dtype: str, tflops: float) -> None:
    found = peak_flops(name, dtype)
    assert found is not None
    value, source = found
    assert value == pytest.approx(tflops * T)
    assert "NVIDIA" in source


@pytest.mark.parametrize(
    "name,dtype",
    [
        ("Tesla V100-SXM2-16GB", "bf16"),  # no bf16 before Ampere
        ("Tesla V100-SXM2-16GB", "tf32"),
        ("NVIDIA GeForce GTX 1080 Ti", "bf16"),
        ("NVIDIA H100 80GB HBM3 MIG 1g.10gb", "bf16"),  # a MIG slice is not the full GPU
        ("NVIDIA H200 MIG 3g.71gb", "fp32"),
        ("NVIDIA A100-SXM4-40GB MIG 2g.10gb", "fp32"),
        ("Tesla V100S-PCIE-32GB", "fp32"),
        ("NVIDIA GeForce GTX 1080", "fp32"),
        ("NVIDIA GeForce RTX 4090", "fp16"),
        (None, "fp32"),
        ("", "fp32"),
    ],
)
def test_unknown_is_none(name: str | None, dtype: str) -> None:
    assert peak_flops(name, dtype) is None


def test_table_is_sane() -> None:
    keys = [g.key for g in GPUS]
    assert len(keys) == len(set(keys))
    for gpu in GPUS:
        assert gpu.source and set(gpu.tflops) <= set(PEAK_DTYPES) and "fp32" in gpu.tflops
        for dtype in ("tf32", "fp16", "bf16"):
            if dtype in gpu.tflops and gpu.key != "gtx-1080-ti":  # tensor cores beat plain FP32
                assert gpu.tflops[dtype] > gpu.tflops["fp32"], (gpu.key, dtype)
        if "tf32" in gpu.tflops:  # dense tensor-core ratios: 16-bit is twice TF32
            assert gpu.tflops["bf16"] == pytest.approx(2 * gpu.tflops["tf32"], rel=0.01)
    assert find_gpu("H100 SXM").key == "h100-sxm"
    assert find_gpu("NVIDIA H100 NVL").key == "h100-nvl" and find_gpu("NVIDIA H200 NVL").key == "h200-nvl"
    assert find_gpu("NVIDIA GH200 480GB").key == "gh200"
    assert find_gpu("h100-pcie").key == "h100-pcie"
    assert peak_flops("NVIDIA GeForce GTX 1080 Ti", "fp16")[0] < peak_flops("NVIDIA GeForce GTX 1080 Ti", "fp32")[0]


def test_unknown_dtype() -> None:
    with pytest.raises(UsageError, match="valid choices: fp32, tf32, fp16, bf16"):
        peak_flops("NVIDIA H100 80GB HBM3", "fp8")


def test_achieved_fraction() -> None:
    d = achieved(156e12, 1.0, "NVIDIA A100-SXM4-80GB", "bf16")
    assert d["achieved_flops_per_s"] == pytest.approx(156e12)
    assert d["achieved_tflops_per_s"] == pytest.approx(156.0)
    assert d["peak_basis"] == {"matmul": "bf16"} and d["fraction_of_peak"] == pytest.approx(0.5)
    assert d["peak_source"]
    half = achieved(1e9, 2e-3, "NVIDIA H100 80GB HBM3", "fp16")
    assert half["achieved_flops_per_s"] == pytest.approx(5e11)
    assert half["fraction_of_peak"] == pytest.approx(5e11 / 989.4e12)


def test_achieved_on_cpu_has_no_peak() -> None:
    d = achieved(2e9, 0.5, None, "fp32")
    assert d["achieved_flops_per_s"] == pytest.approx(4e9)
    assert d["peak_flops_per_s"] is None and d["fraction_of_peak"] is None and d["note"]
    d = achieved(2e9, 0.5, "NVIDIA GeForce RTX 4090", "fp32")
    assert d["fraction_of_peak"] is None and "no peak" in d["note"]
    d = achieved(2e9, 0.5, "Tesla V100-SXM2-16GB", "bf16")
    assert d["fraction_of_peak"] is None and "bf16" in d["note"]
    with pytest.raises(ValueError):
        achieved(1, 0.0, None, "fp32")


def test_fp32_peak_per_category_follows_each_library_switch() -> None:
    """cuDNN convolutions may use TF32 (on by default), cuBLAS matmuls only when allowed (off by default):
    each category is rated against its own peak, and the run's peak is the harmonic mix."""
    a100 = "NVIDIA A100-SXM4-80GB"
    default = {"cublas": False, "cudnn": True}
    d = achieved(9.75e12, 1.0, a100, "fp32", by_category={"matmul": 10**12}, tf32=default)
    assert d["peak_basis"] == {"matmul": "fp32"} and d["fraction_of_peak"] == pytest.approx(0.5)
    d = achieved(78e12, 1.0, a100, "fp32", by_category={"convolution": 10**12}, tf32=default)
    assert d["peak_basis"] == {"convolution": "tf32"} and d["fraction_of_peak"] == pytest.approx(0.5)
    d = achieved(78e12, 1.0, a100, "fp32", by_category={"matmul": 10**12}, tf32={"cublas": True, "cudnn": True})
    assert d["peak_basis"] == {"matmul": "tf32"}
    # 1 TFLOP of convolution at 156 TFLOP/s (TF32) and 1 TFLOP of matmul at 19.5 (FP32): 2 / (1/156 + 1/19.5)
    mix = achieved(1.0, 1.0, a100, "fp32", by_category={"convolution": 10**12, "matmul": 10**12, "softmax": 0}, tf32=default)
    assert mix["peak_tflops_per_s"] == pytest.approx(2 / (1 / 156.0 + 1 / 19.5))
    # non-matrix work is rated at the FP32 CUDA-core peak, whatever the dtype
    d = achieved(1.0, 1.0, a100, "bf16", by_category={"matmul": 10**12, "softmax": 10**12}, tf32=default)
    assert d["peak_basis"] == {"matmul": "bf16", "softmax": "fp32"}
    assert achieved(1.0, 1.0, "Tesla V100-SXM2-16GB", "fp32", tf32={"cublas": True, "cudnn": True})["peak_basis"] == {"matmul": "fp32"}


def test_fraction_of_measured_matmul_and_mig_note() -> None:
    d = achieved(4e12, 1.0, "NVIDIA H100 80GB HBM3 MIG 1g.10gb", "bf16", measured_matmul_flops_per_s=8e12)
    assert d["fraction_of_measured_matmul"] == pytest.approx(0.5)
    assert d["fraction_of_peak"] is None and "MIG" in d["note"]
