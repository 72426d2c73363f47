"""Statistics of Measurement, checked against values computed by hand."""

from __future__ import annotations

import dataclasses
import json
import math
import random

import pytest

from attnbench.measure.stats import (
    Measurement,
    iqr,
    is_noisy,
    mean,
    median,
    percentile,
    sample_std,
)


def test_odd_count_by_hand() -> None:
    # sorted 1..5: position h = 4q/100
    m = Measurement(samples_s=(5.0, 1.0, 4.0, 2.0, 3.0), what="x", batch=2)
    assert m.n == 5
    assert m.median == 3.0
    assert m.mean == 3.0
    assert m.std == pytest.approx(math.sqrt(2.5))  # squares 4+1+0+1+4 = 10, / (5-1)
    assert m.p10 == pytest.approx(1.4)  # h = 0.4: 1 + 0.4 * (2 - 1)
    assert m.p90 == pytest.approx(4.6)  # h = 3.6
    assert m.p25 == 2.0 and m.p75 == 4.0
    assert m.iqr == 2.0
    assert m.min == 1.0 and m.max == 5.0
    assert m.throughput == pytest.approx(2 / 3)
    assert m.noisy  # 2 / 3 > 0.10


def test_even_count_by_hand() -> None:
    xs = [4.0, 1.0, 3.0, 2.0]  # sorted 1..4: h = 3q/100
    assert median(xs) == 2.5
    assert percentile(xs, 10) == pytest.approx(1.3)
    assert percentile(xs, 90) == pytest.approx(3.7)
    assert percentile(xs, 25) == pytest.approx(1.75)
    assert percentile(xs, 75) == pytest.approx(3.25)
    assert iqr(xs) == pytest.approx(1.5)
    assert percentile(xs, 0) == 1.0 and percentile(xs, 100) == 4.0
    assert mean(xs) == 2.5
    assert sample_std(xs) == pytest.approx(math.sqrt(5 / 3))  # 2.25+0.25+0.25+2.25 = 5, / 3


def test_percentile_matches_numpy_linear() -> None:
    np = pytest.importorskip("numpy")
    rng = random.Random(1234)
    for n in (1, 2, 3, 7, 50):
        xs = [rng.uniform(1e-4, 2e-3) for _ in range(n)]
        for q in (0, 10, 25, 50, 75, 90, 100):
            assert percentile(xs, q) == pytest.approx(float(np.percentile(xs, q)), rel=1e-12)


def test_single_sample() -> None:
    m = Measurement(samples_s=(0.002,))
    assert m.n == 1 and m.median == 0.002 and m.p10 == 0.002 and m.p90 == 0.002
    assert m.std is None and m.iqr == 0.0 and not m.noisy
    assert m.to_dict()["std_ms"] is None


def test_noisy_flag() -> None:
    assert not is_noisy([10.0, 10.0, 10.0, 10.0, 11.0])  # IQR 0
    assert not is_noisy([0.95, 1.0, 1.05])  # IQR 1.025 - 0.975 = 0.05, / 1.0
    assert is_noisy([0.88, 1.0, 1.12])  # IQR 0.12
    assert is_noisy([1.0, 1.0, 1.1, 1.2, 1.2])  # IQR 0.2 / 1.1
    assert not Measurement(samples_s=(1.0, 1.01, 0.99, 1.0)).noisy
    assert not is_noisy([0.0, 0.0])
    assert is_noisy([0.0, 0.0, 0.0, 1.0, 1.0])


def test_to_dict_units_and_round_trip() -> None:
    m = Measurement(
        samples_s=(0.001, 0.002, 0.003), what="nonlocal", device="cpu", dtype="bf16", batch=4, threads=8,
        timer="perf_counter_ns", warmup_reps=7, warmup_converged=True,
    )
    d = m.to_dict()
    json.dumps(d)  # plain JSON
    assert d["median_ms"] == pytest.approx(2.0)
    assert d["mean_ms"] == pytest.approx(2.0)
    assert d["std_ms"] == pytest.approx(1.0)
    assert d["p10_ms"] == pytest.approx(1.2)
    assert d["p90_ms"] == pytest.approx(2.8)
    assert d["iqr_ms"] == pytest.approx(1.0)
    assert d["iqr_over_median"] == pytest.approx(0.5)
    assert d["noisy"] is True
    assert d["throughput_items_per_s"] == pytest.approx(2000.0)
    assert d["samples_ms"] == pytest.approx([1.0, 2.0, 3.0])
    assert (d["what"], d["device"], d["dtype"], d["batch"], d["threads"]) == ("nonlocal", "cpu", "bf16", 4, 8)
    back = Measurement.from_dict(d)
    assert back.samples_s == pytest.approx(m.samples_s)
    assert (back.what, back.dtype, back.batch, back.threads, back.warmup_reps) == ("nonlocal", "bf16", 4, 8, 7)
    assert "samples_ms" not in m.to_dict(samples=False)


def test_frozen_and_validated() -> None:
    m = Measurement(samples_s=[0.1, 0.2])  # a list is stored as a tuple
    assert m.samples_s == (0.1, 0.2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.what = "other"  # type: ignore[misc]
    for bad in ((), (-1.0,), (float("nan"),), (float("inf"),)):
        with pytest.raises(ValueError):
            Measurement(samples_s=bad)
    with pytest.raises(ValueError):
        Measurement(samples_s=(1.0,), batch=0)
    with pytest.raises(ValueError):
        percentile([1.0], 101)


# -- the exact Mann-Whitney U test ----------------------------------------------------------------------


def _brute_force_p(x: list[float], y: list[float], alternative: str) -> float:
    """The permutation p-value by enumerating every choice of which pooled values are x."""
    import itertools

    from attnbench.measure.stats import average_ranks

    pooled = x + y
    ranks, _ = average_ranks(pooled)
    m, n = len(x), len(pooled)
    observed, mean = sum(ranks[:m]), m * (n + 1) / 2
    hits = total = 0
    for chosen in itertools.combinations(range(n), m):
        s = sum(ranks[i] for i in chosen)
        total += 1
        if alternative == "greater":
            hits += s >= observed - 1e-9
        elif alternative == "less":
            hits += s <= observed + 1e-9
        else:
            hits += abs(s - mean) >= abs(observed - mean) - 1e-9
    return hits / total


def test_exact_p_matches_enumeration_with_and_without_ties() -> None:
    from attnbench.measure.stats import mann_whitney_u

    rng = random.Random(7)
    for _ in range(120):
        x = [rng.randint(0, 6) + 0.5 * (rng.random() < 0.3) for _ in range(rng.randint(1, 6))]
        y = [rng.randint(0, 6) for _ in range(rng.randint(1, 6))]
        for alternative in ("greater", "less", "two-sided"):
            r = mann_whitney_u(x, y, alternative, method="exact")
            assert r.method == "exact"
            expected = 1.0 if len(set(x + y)) < 2 else _brute_force_p(x, y, alternative)
            assert r.p_value == pytest.approx(expected, abs=1e-12), (x, y, alternative)


def test_exact_by_hand_and_auto_switch() -> None:
    from attnbench.measure.stats import EXACT_MAX_N, mann_whitney_u, subset_sum_counts

    # ranks 1..4, choose 2: sums 3 (1+2), 4 (1+3), 5 (1+4, 2+3), 6 (2+4), 7 (3+4)
    assert subset_sum_counts((1, 2, 3, 4), 2) == (0, 0, 0, 1, 1, 2, 1, 1)
    assert sum(subset_sum_counts(tuple(range(1, 21)), 10)) == math.comb(20, 10)
    # 5 rounds all slower than 5 others: 1 of C(10, 5) = 252 arrangements
    r = mann_whitney_u([6, 7, 8, 9, 10], [1, 2, 3, 4, 5], "greater")
    assert r.method == "exact" and r.p_value == pytest.approx(1 / 252)
    big = mann_whitney_u(list(range(EXACT_MAX_N)), [0.5], "greater")
    assert big.method == "asymptotic"  # more than EXACT_MAX_N values: the normal approximation
    assert mann_whitney_u(list(range(EXACT_MAX_N)), [0.5], "greater", method="exact").method == "exact"


def test_min_p_value_and_false_alarm_rate() -> None:
    from attnbench.measure.stats import false_alarm_rate, min_p_value

    assert min_p_value(5, 5) == pytest.approx(1 / 252)
    assert min_p_value(3, 3) == pytest.approx(1 / 20)
    # the exact test's real false-alarm rate is the largest attainable p-value not above alpha
    assert false_alarm_rate(5, 5, 0.01) == pytest.approx(2 / 252)
    assert false_alarm_rate(5, 5, 0.05) == pytest.approx(12 / 252)  # P(U >= 21): 1+1+2+3+5 arrangements
    assert false_alarm_rate(3, 3, 0.01) == 0.0  # unreachable: the test can never reject
    assert false_alarm_rate(40, 40, 0.01) == 0.01  # normal approximation above EXACT_MAX_N values
    with pytest.raises(ValueError):
        false_alarm_rate(5, 5, 0)
