"""The pure comparisons of ``check`` (attnbench.gate.compare): latency on per-round medians, alpha's
reachability, load control, confirmation by re-measuring, memory, FLOPs per category, devices, round spread."""

import copy
import random

import pytest

from attnbench import gate
from attnbench.errors import UsageError

OLD = [10.0, 10.1, 9.9, 10.05, 9.95]  # the medians of 5 rounds


def timing(rounds: list[list[float]]) -> dict:
    """A stored timing dict of the given rounds of per-call samples."""
    return {"samples_ms": [v for r in rounds for v in r], "round_sizes": [len(r) for r in rounds]}


def test_latency_needs_significance_and_effect_size() -> None:
    slower = gate.compare_latency(OLD, [v * 1.25 for v in OLD])  # every round slower: p = 1/252
    assert slower["status"] == "regression" and slower["failed"] and slower["ratio"] == pytest.approx(1.25)
    assert slower["p_slower"] == pytest.approx(1 / 252) and slower["p_method"] == "exact"
    small = gate.compare_latency(OLD, [v * 1.05 for v in OLD])  # significant, but only 5% slower
    assert small["p_slower"] <= 0.01 and small["status"] == "ok" and not small["failed"]
    few = gate.compare_latency([10, 11, 12], [13, 14, 15])  # 27% slower, but 3 vs 3 rounds: p >= 1/20
    assert few["ratio"] > 1.1 and few["p_slower"] == pytest.approx(1 / 20) and few["status"] == "ok"
    assert gate.compare_latency(OLD, OLD[::-1])["status"] == "ok"
    faster = gate.compare_latency(OLD, [v * 0.8 for v in OLD])
    assert faster["status"] == "improved" and not faster["failed"]
    custom = gate.compare_latency(OLD, [v * 1.25 for v in OLD], alpha=0.01, max_slowdown=1.3)
    assert custom["status"] == "ok"


def test_the_unit_is_the_round_not_the_call() -> None:
    """Thousands of per-call samples in 5 rounds are 5 units: the p-value cannot go below 1/252 however many
    calls were timed (pooled, the calls gave p-values like 1e-150, so alpha changed nothing)."""
    rng = random.Random(3)
    old = timing([[10 + rng.random() for _ in range(400)] for _ in range(5)])
    new = timing([[12.5 + rng.random() for _ in range(400)] for _ in range(5)])
    f = gate.latency_finding("x", old, None, new, None, gate.CheckOptions())
    assert f["unit"] == "round median" and f["n_baseline"] == 5 and f["n_current"] == 5
    assert f["raw_p_slower"] == pytest.approx(1 / 252) and f["status"] == "regression"
    assert len(f["baseline_rounds_ms"]) == 5
    # a slowdown in 2 of 5 rounds (a burst of load) is not significant at 0.01, whatever the calls say
    bursty = timing([[10 + rng.random() for _ in range(400)] for _ in range(3)] + [[15 + rng.random() for _ in range(400)] for _ in range(2)])
    assert gate.latency_finding("x", old, None, bursty, None, gate.CheckOptions(max_slowdown=1.0))["raw_p_slower"] > 0.01


def test_round_values_from_samples_and_round_sizes() -> None:
    # an old baseline without round_medians_ms: derived from samples_ms and round_sizes
    assert gate.round_values({"samples_ms": [1, 2, 3, 10, 20, 30, 40], "round_sizes": [3, 4]}) == [2, 25]
    assert gate.round_values({"samples_ms": [1, 2, 3], "round_medians_ms": [7.0]}) == [7.0]
    assert gate.round_values({"samples_ms": [1, 2, 3]}) == [2]
    assert gate.round_values(None) is None


def test_alpha_must_be_reachable_with_the_rounds() -> None:
    from attnbench.measuring.stats import false_alarm_rate, min_p_value

    assert min_p_value(5, 5) == pytest.approx(1 / 252)
    assert false_alarm_rate(5, 5, 0.01) == pytest.approx(2 / 252)  # the test's real size: 0.79%, not 1%
    assert false_alarm_rate(5, 5, 0.001) == 0.0
    assert gate.current_rounds(5, 0.01) == (5, "")
    rounds, note = gate.current_rounds(2, 0.01)  # 2 vs 2 rounds: p >= 1/6; 2 vs 13: 1/105
    assert rounds == 13 and "measured 13 rounds" in note and min_p_value(2, 13) <= 0.01 < min_p_value(2, 12)
    assert gate.current_rounds(5, 0.001) == (8, gate.current_rounds(5, 0.001)[1])  # C(13, 5) = 1287
    with pytest.raises(UsageError, match="--rounds 8 or more"):
        gate.current_rounds(5, 0.001, asked=5)
    with pytest.raises(UsageError, match="cannot be reached with a baseline of 1 round"):
        gate.current_rounds(1, 0.01)  # 1 vs 20 rounds: p >= 1/21


def test_normalization_per_round() -> None:
    # the second round ran on a machine twice as slow: per-round normalisation cancels it
    assert gate.normalized([2, 4], [1, 2]) == [2, 2]
    # a different number of rounds: the reference's median for every round
    assert gate.normalized([3, 6], [1.0, 2.0, 3.0]) == [1.5, 3.0]
    with pytest.raises(UsageError):
        gate.normalized([1.0], [0.0])


def test_load_control_needs_the_slowdown_relative_to_the_reference() -> None:
    old = timing([[v] * 3 for v in OLD])
    ref = timing([[v] * 3 for v in OLD])
    busy = timing([[v * 1.3] * 3 for v in OLD])  # everything 30% slower
    opts = gate.CheckOptions()
    f = gate.latency_finding("x", old, ref, busy, busy, opts)
    assert f["raw_ratio"] == pytest.approx(1.3) and f["normalized_ratio"] == pytest.approx(1.0)
    assert f["status"] == "ok" and f["mode"] == "raw+reference"
    assert gate.latency_finding("x", old, ref, busy, busy, gate.CheckOptions(load_control=False))["status"] == "regression"
    assert gate.latency_finding("x", old, ref, busy, ref, opts)["status"] == "regression"  # the block alone slower
    assert gate.latency_finding("x", old, ref, busy, busy, gate.CheckOptions(normalize=True))["status"] == "ok"


def test_the_load_control_has_its_own_level() -> None:
    """Relative to the reference the block must be slower at ``load_alpha`` (0.05), not ``alpha`` (0.01):
    10 baseline against 10 current rounds where the block is 25% slower in every round, its raw rank test
    at p < 1e-5, while the reference's rounds jitter so that the relative rank test gives 0.01 < p <= 0.05."""
    rng = random.Random(4)
    base = [10 + rng.random() for _ in range(10)]
    ref_old = [5 * (1 + 0.8 * rng.random()) for _ in range(10)]
    ref_new = [5 * (1 + 0.8 * rng.random()) for _ in range(10)]
    old, ref, new, nref = (timing([[v] for v in vs]) for vs in (base, ref_old, [v * 1.25 for v in base], ref_new))
    f = gate.latency_finding("x", old, ref, new, nref, gate.CheckOptions())
    assert f["raw_p_slower"] < 1e-5 and 0.01 < f["normalized_p_slower"] <= 0.05 and f["normalized_ratio"] > 1.1
    assert f["flags"] == ["raw", "normalized"] and f["status"] == "regression"
    strict = gate.latency_finding("x", old, ref, new, nref, gate.CheckOptions(load_alpha=0.01))
    assert strict["flags"] == ["raw"] and strict["status"] == "ok"
    # with --normalize the relative comparison is the only one, so it is held to alpha
    assert gate.latency_finding("x", old, ref, new, nref, gate.CheckOptions(normalize=True))["status"] == "ok"
    # unchanged code on a machine slower as a whole still passes: the raw test alone is not enough
    busy = timing([[v * 1.3] for v in base])
    assert gate.latency_finding("x", old, ref, busy, timing([[v * 1.3] for v in ref_old]), gate.CheckOptions())["status"] == "ok"
    with pytest.raises(UsageError, match="--load-alpha must be at least --alpha"):
        gate.CheckOptions(alpha=0.05, load_alpha=0.01).check()


def test_load_control_is_on_for_a_cpu_and_off_for_cuda_by_default() -> None:
    from attnbench.gate.checker import default_load_control

    assert default_load_control("cpu") and default_load_control(None)
    assert not default_load_control("cuda") and not default_load_control("cuda:1")
    old = timing([[v] * 3 for v in OLD])
    ref = timing([[v] * 3 for v in OLD])
    faster_ref = timing([[v * 0.85] * 3 for v in OLD])  # the reference alone got 15% faster (seen on an H200)
    slower = timing([[v * 1.1] * 3 for v in OLD])
    slower_ref = timing([[v * 1.1] * 3 for v in OLD])
    # the block 10% slower, the reference 10% slower too: relative to it, nothing changed
    assert gate.latency_finding("x", old, ref, slower, slower_ref, gate.CheckOptions(max_slowdown=1.05))["status"] == "ok"
    raw = gate.latency_finding("x", old, ref, slower, slower_ref, gate.CheckOptions(max_slowdown=1.05, load_control=False))
    assert raw["status"] == "regression" and raw["mode"] == "raw"
    # an unchanged block with a faster reference is slower relative to it alone: not a regression either way,
    # and not flagged at all (its raw times are not slower)
    f = gate.latency_finding("x", old, ref, old, faster_ref, gate.CheckOptions())
    assert f["normalized_status"] == "regression" and f["flags"] == [] and f["status"] == "ok"


def test_confirm_judges_the_pooled_measurements() -> None:
    both, raw, none = ["raw", "normalized"], ["raw"], []
    d = ["raw", "normalized"]
    assert gate.confirm([both], d, retries=2) == "pending"  # measure again
    assert gate.confirm([both, raw], d, retries=2, pooled=both) == "regression"
    assert gate.confirm([both, raw], d, retries=2, pooled=raw) == "regression"  # one full, every one flagged
    assert gate.confirm([both, none], d, retries=2, pooled=raw) == "pending"
    assert gate.confirm([raw, raw], d, retries=2, pooled=raw) == "pending"
    assert gate.confirm([both, none], d, retries=2, pooled=[]) == "unconfirmed"  # no slowdown left at all
    # slower relative to the reference in every measurement but significantly only all together (seen under
    # a CPU hog with cs 25% slower): a regression
    assert gate.confirm([raw, raw, raw], d, retries=2, pooled=both) == "regression"
    assert gate.confirm([raw, raw, raw], d, retries=2, pooled=raw) == "unconfirmed"  # re-measurements used up
    assert gate.confirm([both], d, retries=0) == "regression"
    assert gate.confirm([none], d, retries=0) == "ok"
    assert gate.confirm([none], d, retries=2) == "pending"  # a suspect by its median ratio alone
    assert gate.confirm([raw], ["raw"], retries=1) == "pending"
    assert gate.confirm([raw, raw], ["raw"], retries=1, pooled=raw) == "regression"


def test_a_suspect_is_flagged_or_above_the_ratio_and_pooling_joins_rounds() -> None:
    f = {"flags": [], "decisive": ["raw", "normalized"], "raw_ratio": 1.09, "normalized_ratio": 1.21}
    assert gate.looks_slower(f, 1.10) and not gate.looks_slower({**f, "normalized_ratio": 1.0}, 1.10)
    assert gate.looks_slower({**f, "normalized_ratio": 1.0, "flags": ["raw"]}, 1.10)
    a, b = timing([[1.0, 3.0], [2.0]]), timing([[5.0]])
    assert gate.round_values(gate.pool([a, b])) == [2.0, 2.0, 5.0] and gate.pool([a, None]) is None
    # five baseline rounds against three measurements of five, each 15% slower: together the rank test says more
    old = timing([[v] for v in OLD])
    slow = [timing([[v * 1.15] for v in OLD[i:] + OLD[:i]]) for i in (0, 3, 6)]
    assert gate.latency_finding("x", old, None, gate.pool(slow), None, gate.CheckOptions())["raw_p_slower"] < \
        gate.latency_finding("x", old, None, slow[0], None, gate.CheckOptions())["raw_p_slower"]


def test_memory_tolerance() -> None:
    assert gate.compare_memory(1000, 1050)["status"] == "ok"
    grown = gate.compare_memory(1000, 1051)
    assert grown["status"] == "regression" and grown["failed"] and grown["delta"] == 51
    assert gate.compare_memory(1000, 1100, tolerance=0.2)["status"] == "ok"
    assert gate.compare_memory(1000, 900)["status"] == "improved"
    assert gate.compare_memory(None, 900)["status"] == "skipped"


def test_flops_diff_per_category() -> None:
    old = {"convolution": {"mac": 100, "op": 10}, "softmax": {"mac": 0, "op": 50}, "linear": {"mac": 0, "op": 0}}
    new = copy.deepcopy(old)
    assert gate.compare_flops(old, new)["status"] == "ok"
    new["convolution"]["mac"] = 150
    new["softmax"]["op"] = 40
    f = gate.compare_flops(old, new)
    assert f["failed"] and f["baseline"] == 260 and f["current"] == 350 and f["delta"] == 90
    by = {c["category"]: c for c in f["categories"]}
    assert set(by) == {"convolution", "softmax"}
    assert (by["convolution"]["baseline_flops"], by["convolution"]["current_flops"], by["convolution"]["delta_flops"]) == (210, 310, 100)
    assert by["softmax"]["delta_flops"] == -10 and by["softmax"]["current_cells"] == {"mac": 0, "op": 40}
    assert gate.compare_params(5, 6) == {"check": "params", "status": "changed", "failed": True,
                                         "baseline": 5, "current": 6, "delta": 1}


def test_device_differences() -> None:
    a = {"device_type": "cpu", "machine": "x86_64", "cpu_model": "A", "logical_cores": 2, "torch_threads": 2}
    assert gate.device_differences(a, dict(a)) == []
    assert gate.device_differences(a, {**a, "cpu_model": "B"}) == ["cpu_model: A -> B"]
    g = {"device_type": "cuda", "gpu_name": "H100", "gpu_total_memory_bytes": 1, "compute_capability": "9.0"}
    assert gate.device_differences(g, {**g, "cpu_model": "other"}) == []
    assert gate.memory_comparable(a, {**a, "cpu_model": "B"}) and not gate.memory_comparable(a, g)


def test_an_unsteady_baseline_is_named() -> None:
    def doc(ref, block):
        return {"reference": {"timing": {"round_medians_ms": ref}},
                "entries": [{"key": "cs@x", "status": "ok", "timing": {"round_medians_ms": block}}]}

    steady = doc([20.0, 20.4, 19.9, 20.1, 20.2], [16.0, 16.1, 16.2, 15.9, 16.0])
    assert gate.unsteady(steady) is None and max(gate.round_spread(steady).values()) < 1.03
    drifted = doc([19.85, 20.29, 29.04, 30.94, 31.1], [16.08, 16.03, 22.19, 21.89, 22.49])  # a snapshot seen here
    why = gate.unsteady(drifted)
    assert why is not None and "reference x1.57" in why and "cs@x x1.40" in why


def test_peers_are_the_nearest_blocks_in_baseline_time_and_their_factors_are_per_round() -> None:
    medians = {"a": 1.0, "b": 2.0, "c": 4.0, "d": 0.5, "e": 100.0}
    assert gate.peers_for("a", medians) == ["b", "d", "c"]  # |log 2| = |log 0.5| < |log 4|; at most 3
    assert gate.peers_for("e", {"e": 1.0}) == [] and gate.peers_for("x", medians) == []
    rounds = {"b": [2.0, 4.0], "c": [4.0, 4.0], "d": [0.5, 1.5]}
    # per round, the median over the peers of round / baseline median: [1, 1, 1] and [2, 1, 3]
    assert gate.peer_factors(rounds, medians, ["b", "c", "d"]) == [1.0, 2.0]
    assert gate.peer_factors(rounds, medians, []) is None
    assert gate.peer_factors({**rounds, "c": [4.0]}, medians, ["b", "c"]) is None  # rounds do not line up
    assert gate.peer_factors(rounds, medians, ["b", "z"]) is None  # a peer not measured


def test_two_of_raw_reference_and_peers_decide() -> None:
    """10 rounds each; the four cases the peer comparison tells apart (each slowdown 25% or 30%)."""
    rng = random.Random(5)
    base = [10 + rng.random() for _ in range(10)]
    ref = [5 + 0.1 * rng.random() for _ in range(10)]
    ones = [1.0] * 10

    def finding(block, reference, factors):
        return gate.latency_finding("x", timing([[v] for v in base]), timing([[v] for v in ref]), timing([[v] for v in block]),
                                    timing([[v] for v in reference]), gate.CheckOptions(), peers=(ones, factors))

    # the block 25% slower while the machine ran 15% faster than during the baseline (the reference and the
    # other blocks too): its raw times hide it, the reference and the peers show it
    faster = finding([v * 1.25 * 0.85 for v in base], [v * 0.85 for v in ref], [0.85] * 10)
    assert faster["mode"] == "raw+reference+peers" and faster["flags"] == ["normalized", "peers"]
    assert faster["status"] == "regression" and faster["raw_status"] == "ok"
    # the machine 30% slower as a whole: raw alone, not a regression
    busy = finding([v * 1.3 for v in base], [v * 1.3 for v in ref], [1.3] * 10)
    assert busy["flags"] == ["raw"] and busy["status"] == "ok"
    # every block 30% slower (a change they share), the reference not: raw and reference
    shared = finding([v * 1.3 for v in base], ref, [1.3] * 10)
    assert shared["flags"] == ["raw", "normalized"] and shared["status"] == "regression"
    # an unchanged block whose reference alone got faster: relative to it alone, not a regression
    ref_fast = finding(base, [v * 0.7 for v in ref], ones)
    assert ref_fast["normalized_status"] == "regression" and ref_fast["flags"] == [] and ref_fast["status"] == "ok"
    # an unchanged block that ran 4% faster in its own times while the reference and its peers sped up more
    # (seen under a CPU hog: raw x0.957, reference x1.163, peers x1.160): flagged by none
    quicker = finding([v * 0.96 for v in base], [v * 0.8 for v in ref], [0.8] * 10)
    assert quicker["normalized_status"] == "regression" and quicker["peers_status"] == "regression"
    assert quicker["flags"] == [] and quicker["status"] == "ok"
    # and a block slower in its own times is never "improved", whatever the others did
    assert finding([v * 1.05 for v in base], [v * 1.5 for v in ref], [1.5] * 10)["status"] == "ok"
    # peer factors that do not line up with the rounds: the two-comparison rule of before
    assert finding(base, ref, [1.0] * 3)["mode"] == "raw+reference"
    # with --normalize only the reference decides, whatever the peers say
    f = gate.latency_finding("x", timing([[v] for v in base]), timing([[v] for v in ref]), timing([[v * 1.3] for v in base]),
                             timing([[v] for v in ref]), gate.CheckOptions(normalize=True), peers=(ones, ones))
    assert f["decisive"] == ["normalized"] and f["status"] == "regression"


def test_confirm_needs_two_of_three_comparisons() -> None:
    d = ["raw", "normalized", "peers"]
    assert gate.required(d) == 2 and gate.required(["raw", "normalized"]) == 2 and gate.required(["raw"]) == 1
    assert gate.confirm([["normalized", "peers"], ["peers"]], d, retries=2, pooled=["normalized", "peers"]) == "regression"
    assert gate.confirm([["normalized"], ["peers"]], d, retries=2, pooled=["peers"]) == "pending"
    assert gate.confirm([["raw"], ["raw"], ["raw"]], d, retries=2, pooled=["raw"]) == "unconfirmed"
    assert gate.confirm([["raw", "peers"], ["raw"]], d, retries=2, pooled=["raw"]) == "regression"  # one slower, each flagged
