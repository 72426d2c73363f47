"""Statistics of Measurement, checked against values computed by hand."""

from __future__ import annotations

import collections
import dataclasses
import itertools
import json
import math
import random

import pytest

from attnbench.measuring.stats import (
    EXACT_MAX_N,
    MW_METHODS,
    Measurement,
    choose_method,
    false_alarm_rate,
    iqr,
    is_noisy,
    mann_whitney_u,
    mean,
    median,
    min_p_value,
    percentile,
    sample_std,
    samples_with_u,
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


# -- the Mann-Whitney U test (scipy's, through mann_whitney_u) ----------------------------------------


def _u(x: list[float], y: list[float]) -> float:
    return sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in x for b in y)


def test_u_without_ties_by_hand() -> None:
    # every x beats every y: U = 3 * 4 = 12. Exact: of the C(7, 3) = 35 equally likely ways to place the
    # x among the 7 values, one is this extreme.
    exact = mann_whitney_u([5, 6, 7], [1, 2, 3, 4], "greater")
    assert exact.u == 12 and exact.method == "exact" and exact.p_value == pytest.approx(1 / 35)
    assert exact.effect == 1.0 and (exact.n_x, exact.n_y) == (3, 4)
    assert mann_whitney_u([5, 6, 7], [1, 2, 3, 4], "less").p_value == 1.0
    assert mann_whitney_u([5, 6, 7], [1, 2, 3, 4], "two-sided").p_value == pytest.approx(2 / 35)
    # normal approximation: mean 6, variance 3*4/12 * (7 + 1) = 8, continuity correction 1/2
    r = mann_whitney_u([5, 6, 7], [1, 2, 3, 4], "greater", method="asymptotic")
    z = (12 - 6 - 0.5) / math.sqrt(8)
    assert r.method == "asymptotic" and r.p_value == pytest.approx(0.5 * math.erfc(z / math.sqrt(2)))  # 0.0259
    assert r.p_value == pytest.approx(0.02592, abs=1e-5)
    less = mann_whitney_u([5, 6, 7], [1, 2, 3, 4], "less", method="asymptotic")
    assert less.p_value == pytest.approx(0.98922, abs=1e-5)  # P(Z < (12 - 6 + 0.5) / sqrt(8))
    assert mann_whitney_u([5, 6, 7], [1, 2, 3, 4], "two-sided", method="asymptotic").p_value == pytest.approx(2 * r.p_value)


def test_u_with_ties_by_hand() -> None:
    # x = 3, 4, 5 vs y = 1, 2, 3: pairs won 2.5 + 3 + 3 = 8.5 (the tie 3 vs 3 counts one half).
    # Pooled ranks 1, 2, 3.5, 3.5, 5, 6: R_x = 3.5 + 5 + 6 = 14.5, U = 14.5 - 6 = 8.5.
    # "auto" with ties in small samples: every arrangement counted. Of the 20 choices of 3 ranks, only
    # {3.5, 5, 6} (twice: either 3.5) reaches 14.5.
    r = mann_whitney_u([3, 4, 5], [1, 2, 3], "greater")
    assert r.u == 8.5 and r.method == "permutation" and r.p_value == pytest.approx(2 / 20)
    # normal approximation: one tie group of 2, variance = 9/12 * (7 - (8 - 2) / 30) = 0.75 * 6.8 = 5.1
    a = mann_whitney_u([3, 4, 5], [1, 2, 3], "greater", method="asymptotic")
    assert a.p_value == pytest.approx(0.5 * math.erfc((8.5 - 4.5 - 0.5) / math.sqrt(5.1) / math.sqrt(2)))
    assert a.p_value == pytest.approx(0.06059, abs=1e-5)
    # many arrangements: the normal approximation, as scipy's "auto" chooses with ties
    assert mann_whitney_u([1, 2, 2, 3] * 3, [2, 3, 3, 4] * 3, "greater").method == "asymptotic"


def _brute_force_p(x: list[float], y: list[float], alternative: str) -> float:
    """The permutation p-value, enumerating every choice of which pooled values are x."""
    pooled, n_x = x + y, len(x)
    observed = _u(x, y)
    us = [_u([pooled[i] for i in c], [pooled[i] for i in range(len(pooled)) if i not in c])
          for c in itertools.combinations(range(len(pooled)), n_x)]
    if alternative == "greater":
        return sum(u >= observed for u in us) / len(us)
    return sum(u <= observed for u in us) / len(us)


def test_tied_p_matches_enumeration() -> None:
    rng = random.Random(7)
    for _ in range(40):
        x = [rng.randint(0, 6) + 0.5 * (rng.random() < 0.3) for _ in range(rng.randint(2, 6))]
        y = [rng.randint(0, 6) for _ in range(rng.randint(2, 6))]
        for alternative in ("greater", "less"):
            r = mann_whitney_u(x, y, alternative)
            expected = 1.0 if len(set(x + y)) < 2 else _brute_force_p(x, y, alternative)
            assert r.p_value == pytest.approx(expected, abs=1e-12), (x, y, alternative)


def test_u_all_tied_has_no_evidence() -> None:
    for method in MW_METHODS:
        assert mann_whitney_u([1, 1, 1], [1, 1], "greater", method=method).p_value == 1.0
    with pytest.raises(ValueError):
        mann_whitney_u([], [1.0])
    with pytest.raises(ValueError):
        mann_whitney_u([1.0], [1.0], "bigger")
    with pytest.raises(ValueError):
        mann_whitney_u([1.0], [1.0], method="magic")
    with pytest.raises(ValueError):
        mann_whitney_u([1.0, float("nan")], [1.0])


def test_exact_p_matches_enumeration_without_ties() -> None:
    """The exact one-sided p-value is the fraction of the C(n, n_x) equally likely choices of which pooled
    values are x whose U is at least the observed one (counted here by brute force)."""
    rng = random.Random(7)
    for _ in range(60):
        n_x, n_y = rng.randint(1, 6), rng.randint(1, 6)
        pooled = rng.sample(range(100), n_x + n_y)
        x, y = pooled[:n_x], pooled[n_x:]
        observed = _u(x, y)
        r = mann_whitney_u(x, y, "greater")
        assert r.method == "exact" and r.u == observed
        assert r.p_value == pytest.approx(_brute_force_p(x, y, "greater"), abs=1e-12), (x, y)
        assert mann_whitney_u(x, y, "less").p_value == pytest.approx(_brute_force_p(x, y, "less"), abs=1e-12)


def test_auto_method() -> None:
    # exact without ties at the gate's 10 against 10 rounds (scipy's own "auto" would approximate there)
    assert choose_method(10, 10, ties=False) == "exact"
    assert mann_whitney_u(range(10, 20), range(10), "greater").method == "exact"
    assert choose_method(8, 8, ties=True) == "permutation"  # C(16, 8) = 12870 arrangements
    assert choose_method(10, 10, ties=True) == "asymptotic"
    assert choose_method(1, 5, ties=True) == "asymptotic"  # scipy's permutation test needs 2 values a sample
    assert choose_method(EXACT_MAX_N, 9, ties=False) == "asymptotic"  # many values: the normal approximation
    assert choose_method(EXACT_MAX_N, 8, ties=False) == "exact"  # as scipy's "auto": one sample of <= 8
    big = mann_whitney_u(range(EXACT_MAX_N), [x + 0.5 for x in range(9)], "greater")
    assert big.method == "asymptotic" and 0 < big.p_value < 1e-3


def test_samples_with_u() -> None:
    for n_x in range(1, 5):
        for n_y in range(1, 5):
            for u in range(n_x * n_y + 1):
                x, y = samples_with_u(n_x, n_y, u)
                assert len(x) == n_x and len(y) == n_y and len(set(x + y)) == n_x + n_y and _u(x, y) == u
    with pytest.raises(ValueError):
        samples_with_u(2, 2, 5)


def _rate_by_enumeration(n_x: int, n_y: int, alpha: float) -> tuple[float, float]:
    """(false-alarm rate, smallest p-value) of mann_whitney_u at ``alpha`` under the null hypothesis,
    counted over all C(n_x + n_y, n_x) equally likely rank arrangements (U = R_x - n_x (n_x + 1) / 2)."""
    counts = collections.Counter(sum(c) - n_x * (n_x + 1) // 2 for c in itertools.combinations(range(1, n_x + n_y + 1), n_x))
    p = {u: mann_whitney_u(*samples_with_u(n_x, n_y, u), "greater").p_value for u in counts}
    total = math.comb(n_x + n_y, n_x)
    return sum(c for u, c in counts.items() if p[u] <= alpha) / total, min(p.values())


@pytest.mark.parametrize(("n_x", "n_y", "alpha"), [(10, 10, 0.01), (10, 5, 0.01), (5, 5, 0.01), (5, 5, 0.05), (13, 2, 0.01)])
def test_false_alarm_rate_is_the_tests_real_size(n_x: int, n_y: int, alpha: float) -> None:
    """What ``check`` states (the gate's default: 10 current against 10 baseline rounds, 0.93% at alpha
    0.01) is the share of equally likely arrangements of unchanged code for which the test rejects."""
    rate, smallest = _rate_by_enumeration(n_x, n_y, alpha)
    assert false_alarm_rate(n_x, n_y, alpha) == pytest.approx(rate, rel=1e-9)
    assert min_p_value(n_x, n_y) == pytest.approx(smallest, rel=1e-9)
    assert min_p_value(n_x, n_y) == pytest.approx(1 / math.comb(n_x + n_y, n_x), rel=1e-9)
    assert rate <= alpha


def test_min_p_value_and_false_alarm_rate() -> None:
    assert min_p_value(5, 5) == pytest.approx(1 / 252)
    assert min_p_value(3, 3) == pytest.approx(1 / 20)
    # the exact test's real false-alarm rate is the largest attainable p-value not above alpha
    assert false_alarm_rate(5, 5, 0.01) == pytest.approx(2 / 252)
    assert false_alarm_rate(5, 5, 0.05) == pytest.approx(12 / 252)  # P(U >= 21): 1+1+2+3+5 arrangements
    assert false_alarm_rate(10, 10, 0.01) == pytest.approx(0.00927, abs=5e-6)  # README: 0.93%
    assert false_alarm_rate(3, 3, 0.01) == 0.0  # unreachable: the test can never reject
    # beyond EXACT_MAX_N values the p-value is approximate, and so is the rate: about alpha
    assert 0.0099 < false_alarm_rate(1000, 20, 0.01) <= 0.01
    with pytest.raises(ValueError):
        false_alarm_rate(5, 5, 0)
