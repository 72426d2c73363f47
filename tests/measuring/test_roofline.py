"""The roofline a block is placed on: bytes moved (a lower bound), intensity, the attainable rate, the ridge."""

import pytest

from attnbench.measuring import roofline as rl


def test_traffic_lower_bound_adds_the_declared_intermediate_twice() -> None:
    # NL at the BANet preset, fp32: input and output 1x96x16x28x28 x 4 B; 18,864 parameters; the 12544^2 map
    io = 96 * 16 * 28 * 28 * 4
    plain = rl.traffic_lower_bound(io, io, 18_864 * 4)
    assert plain["bytes"] == 2 * io + 18_864 * 4 and plain["intermediate_bytes"] == 0
    assert "no intermediate" in plain["basis"]
    with_map = rl.traffic_lower_bound(io, io, 18_864 * 4, 12_544**2 * 4)
    assert with_map["bytes"] == plain["bytes"] + 2 * 12_544**2 * 4  # written once, read once
    assert "largest intermediate" in with_map["basis"] and "lower bound" in with_map["unit"]


def test_intensity_attainable_and_ridge() -> None:
    peak, bw = 100e9, 20e9  # 100 GFLOP/s, 20 GB/s: ridge at 5 FLOP/byte
    assert rl.ridge_intensity(peak, bw) == 5.0
    assert rl.intensity(1000, 250) == 4.0 and rl.intensity(1, 0) is None
    assert rl.attainable_flops_per_s(1.0, peak, bw) == 20e9  # memory-bound: intensity x bandwidth
    assert rl.attainable_flops_per_s(50.0, peak, bw) == peak  # compute-bound: the matmul roof
    assert rl.attainable_flops_per_s(5.0, peak, bw) == pytest.approx(peak)  # both at the ridge
