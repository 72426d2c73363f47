"""Statistics of a timing run: raw samples kept, summaries derived.

A :class:`Measurement` holds every per-call time (in seconds) as measured, plus the labels needed to
read it later (what was timed, on which device, in which dtype, at which batch size, with how many CPU
threads). All summaries (median, mean, spread, percentiles, throughput) are derived from the samples on
demand, so a saved measurement can always be re-summarised and nothing is ever averaged away.

Percentiles are numpy's (:func:`numpy.percentile`, ``method="linear"``: linear interpolation between
closest ranks): for sorted samples ``x[0..n-1]`` the q-th percentile sits at position
``h = (n - 1) * q / 100`` and is ``x[floor(h)] + (h - floor(h)) * (x[floor(h) + 1] - x[floor(h)])``.
The standard deviation is the sample one (divisor ``n - 1``); it is None for a single sample.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

# A measurement whose interquartile range exceeds this fraction of its median is flagged noisy.
NOISY_IQR_OVER_MEDIAN = 0.10

_MS = 1e3  # seconds -> milliseconds


def _checked(samples: Iterable[float]) -> list[float]:
    values = [float(s) for s in samples]
    if not values:
        raise ValueError("no samples")
    for v in values:
        if not math.isfinite(v) or v < 0:
            raise ValueError(f"a time sample must be finite and >= 0, got {v!r}")
    return values


def percentile(samples: Iterable[float], q: float) -> float:
    """The q-th percentile (0 <= q <= 100) by linear interpolation between closest ranks
    (:func:`numpy.percentile`, ``method="linear"``)."""
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be in [0, 100], got {q}")
    return float(np.percentile(_checked(samples), q, method="linear"))


def median(samples: Iterable[float]) -> float:
    return percentile(samples, 50)


def mean(samples: Iterable[float]) -> float:
    xs = _checked(samples)
    return math.fsum(xs) / len(xs)


def sample_std(samples: Iterable[float]) -> float | None:
    """Sample standard deviation (divisor n - 1); None when there is only one sample."""
    xs = _checked(samples)
    if len(xs) < 2:
        return None
    m = math.fsum(xs) / len(xs)
    return math.sqrt(math.fsum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def iqr(samples: Iterable[float]) -> float:
    """Interquartile range: 75th minus 25th percentile."""
    xs = _checked(samples)
    return percentile(xs, 75) - percentile(xs, 25)


def is_noisy(samples: Iterable[float], threshold: float = NOISY_IQR_OVER_MEDIAN) -> bool:
    """True when IQR / median exceeds ``threshold``. A zero median is noisy only if the IQR is not zero."""
    xs = _checked(samples)
    med = median(xs)
    spread = iqr(xs)
    if med == 0:
        return spread > 0
    return spread / med > threshold


@dataclass(frozen=True)
class Measurement:
    """Raw per-call times of one timed callable, with labels; every statistic is derived.

    ``samples_s`` are per-call times in seconds, in the order measured (warm-up calls excluded).
    ``batch`` is the number of items (videos) one call processes; throughput is ``batch / median``.
    ``threads`` is ``torch.get_num_threads()`` during the run. ``timer`` names the clock used
    (``"perf_counter_ns"`` on CPU, ``"cuda_event"`` on CUDA). ``warmup_reps`` is how many untimed calls
    preceded the samples and ``warmup_converged`` whether warm-up stopped because timings stabilised
    (False: it stopped at its time cap). ``timing_mode`` says how calls were timed (``per-call`` on CPU;
    ``pipelined``, ``isolated`` or ``graph`` on CUDA; see :mod:`attnbench.measuring.timing`),
    ``first_call_s`` is the first call's time (with torch.compile: the compile time), and
    ``graph_pool_bytes`` the memory a CUDA-graph capture allocated (None without graphs), ``timing_note``
    why the mode differs from the one asked for, and ``launch_bound`` whether (CUDA, pipelined or graph)
    the host's launching, not the GPU, set the pace of most timed rounds.
    """

    samples_s: tuple[float, ...]
    what: str = ""
    device: str = "cpu"
    dtype: str = "fp32"
    batch: int = 1
    threads: int | None = None
    timer: str = ""
    warmup_reps: int = 0
    warmup_converged: bool | None = None
    cuda_graph: bool = False
    flush_l2: bool = False
    timing_mode: str = ""
    first_call_s: float | None = None
    graph_pool_bytes: int | None = None
    timing_note: str = ""
    launch_bound: bool | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "samples_s", tuple(_checked(self.samples_s)))
        if isinstance(self.batch, bool) or not isinstance(self.batch, int) or self.batch < 1:
            raise ValueError(f"batch must be a positive integer, got {self.batch!r}")

    # -- derived statistics, all in seconds ------------------------------------------------------
    @property
    def n(self) -> int:
        return len(self.samples_s)

    @property
    def median(self) -> float:
        return median(self.samples_s)

    @property
    def mean(self) -> float:
        return mean(self.samples_s)

    @property
    def std(self) -> float | None:
        return sample_std(self.samples_s)

    @property
    def min(self) -> float:
        return min(self.samples_s)

    @property
    def max(self) -> float:
        return max(self.samples_s)

    @property
    def p10(self) -> float:
        return percentile(self.samples_s, 10)

    @property
    def p25(self) -> float:
        return percentile(self.samples_s, 25)

    @property
    def p75(self) -> float:
        return percentile(self.samples_s, 75)

    @property
    def p90(self) -> float:
        return percentile(self.samples_s, 90)

    @property
    def iqr(self) -> float:
        return iqr(self.samples_s)

    @property
    def iqr_over_median(self) -> float | None:
        med = self.median
        return None if med == 0 else self.iqr / med

    @property
    def noisy(self) -> bool:
        return is_noisy(self.samples_s)

    @property
    def throughput(self) -> float | None:
        """Items (videos) per second at the median latency; None if the median is zero."""
        med = self.median
        return None if med == 0 else self.batch / med

    # -- serialisation ---------------------------------------------------------------------------
    def to_dict(self, samples: bool = True) -> dict[str, Any]:
        """Plain JSON-able dict; times in milliseconds, units in the key names."""
        std = self.std
        out: dict[str, Any] = {
            "what": self.what,
            "device": self.device,
            "dtype": self.dtype,
            "batch": self.batch,
            "threads": self.threads,
            "timer": self.timer,
            "cuda_graph": self.cuda_graph,
            "flush_l2": self.flush_l2,
            "timing_mode": self.timing_mode,
            "first_call_ms": None if self.first_call_s is None else self.first_call_s * _MS,
            "graph_pool_bytes": self.graph_pool_bytes,
            "timing_note": self.timing_note,
            "launch_bound": self.launch_bound,
            "warmup_reps": self.warmup_reps,
            "warmup_converged": self.warmup_converged,
            "n": self.n,
            "median_ms": self.median * _MS,
            "mean_ms": self.mean * _MS,
            "std_ms": None if std is None else std * _MS,
            "min_ms": self.min * _MS,
            "max_ms": self.max * _MS,
            "p10_ms": self.p10 * _MS,
            "p90_ms": self.p90 * _MS,
            "iqr_ms": self.iqr * _MS,
            "iqr_over_median": self.iqr_over_median,
            "noisy": self.noisy,
            "throughput_items_per_s": self.throughput,
        }
        if samples:
            out["samples_ms"] = [s * _MS for s in self.samples_s]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Measurement":
        """Rebuild from :meth:`to_dict` output (which must include ``samples_ms``)."""
        if "samples_ms" not in data:
            raise ValueError("cannot rebuild a Measurement without its samples_ms")
        return cls(
            samples_s=tuple(float(s) / _MS for s in data["samples_ms"]),
            what=data.get("what", ""),
            device=data.get("device", "cpu"),
            dtype=data.get("dtype", "fp32"),
            batch=int(data.get("batch", 1)),
            threads=data.get("threads"),
            timer=data.get("timer", ""),
            warmup_reps=int(data.get("warmup_reps", 0)),
            warmup_converged=data.get("warmup_converged"),
            cuda_graph=bool(data.get("cuda_graph", False)),
            flush_l2=bool(data.get("flush_l2", False)),
            timing_mode=data.get("timing_mode", ""),
            first_call_s=None if data.get("first_call_ms") is None else float(data["first_call_ms"]) / _MS,
            graph_pool_bytes=data.get("graph_pool_bytes"),
            timing_note=data.get("timing_note", ""),
            launch_bound=data.get("launch_bound"),
        )


def summarise(samples: Sequence[float], **labels: Any) -> Measurement:
    """A :class:`Measurement` of the given samples (seconds) with the given labels."""
    return Measurement(samples_s=tuple(samples), **labels)


# -- comparing two sets of samples: the Mann-Whitney U test ---------------------------------------
#
# Used by the CI performance gate (attnbench.gate) to ask "are the new times stochastically larger than
# the baseline's?"; the test itself is scipy's (scipy.stats.mannwhitneyu).
#
# U of the first sample x counts the pairs (x_i, y_j) with x_i > y_j, a tie counting one half. Under the
# null hypothesis (the n = n_x + n_y values are exchangeable: independent and from one distribution)
# every choice of which n_x of the pooled values are x is equally likely, C(n, n_x) choices in all.
#
# Which p-value (see choose_method):
# * exact (scipy's method="exact": the null distribution of U counted exactly) when there are no ties
#   and at most EXACT_MAX_N values in all. With few values the p-value can take only few values: its
#   smallest one-sided value is 1 / C(n, n_x) (5 against 5: 1/252 = 0.004), so a significance level
#   below that can never be reached (min_p_value). scipy's own "auto" switches to the normal
#   approximation as soon as both samples exceed 8 values, i.e. at the gate's default of 10 against 10
#   rounds; its exact count takes milliseconds up to 50 against 50 values (but ~1 s at 200 against 200,
#   ~40 s at 400 against 400), so it is used up to EXACT_MAX_N values.
# * with ties, at least 2 values in each sample and at most PERMUTATION_MAX_ARRANGEMENTS ways to choose
#   the x (up to 8 against 8 values): scipy's permutation test over every arrangement
#   (method=PermutationMethod), exact with ties, which scipy's exact count ignores. scipy recommends it
#   for small tied samples, where the normal approximation can give p-values below any the arrangements
#   can (3 equal values against 3 larger equal ones: 0.023 < 1/20).
# * otherwise what scipy's "auto" chooses: the normal approximation with the tie correction of the
#   variance and a continuity correction of 1/2 (exact still, without ties, when one sample has at most
#   8 values). Round medians of a fine-grained clock are practically never tied.
#
# The test assumes independent values. Consecutive per-call times of one run are not (a slow stretch of
# the machine makes many consecutive calls slow), so the gate tests one value per independent unit: the
# median of each interleaved measurement round (attnbench.gate).

MW_ALTERNATIVES = ("greater", "less", "two-sided")
MW_METHODS = ("auto", "exact", "permutation", "asymptotic")
EXACT_MAX_N = 100  # "auto" is exact without ties up to this many values in all (the gate: 10 + 10 rounds)
PERMUTATION_MAX_ARRANGEMENTS = 20_000  # "auto" with ties enumerates up to this many arrangements (~0.3 s)
_SCIPY_EXACT_MAX = 8  # scipy's "auto" is exact (without ties) while one sample has at most this many values


@dataclass(frozen=True)
class MannWhitney:
    """Result of :func:`mann_whitney_u`: U of the first sample, the sample sizes, the p-value, the
    alternative tested and how the p-value was computed (``exact``, ``permutation`` or ``asymptotic``)."""

    u: float
    n_x: int
    n_y: int
    p_value: float
    alternative: str
    method: str

    @property
    def effect(self) -> float:
        """U / (n_x n_y): the probability that a random x exceeds a random y (ties counting 1/2)."""
        return self.u / (self.n_x * self.n_y)

    def to_dict(self) -> dict[str, Any]:
        return {"u": self.u, "n_x": self.n_x, "n_y": self.n_y, "p_value": self.p_value,
                "alternative": self.alternative, "method": self.method, "prob_x_greater": self.effect}


def choose_method(n_x: int, n_y: int, ties: bool) -> str:
    """The p-value ``method="auto"`` uses (see the comment above :data:`EXACT_MAX_N`)."""
    if ties:
        few = min(n_x, n_y) >= 2 and math.comb(n_x + n_y, n_x) <= PERMUTATION_MAX_ARRANGEMENTS  # scipy needs 2+
        return "permutation" if few else "asymptotic"
    return "exact" if n_x + n_y <= EXACT_MAX_N or min(n_x, n_y) <= _SCIPY_EXACT_MAX else "asymptotic"


def mann_whitney_u(
    x: Iterable[float], y: Iterable[float], alternative: str = "greater", continuity: bool = True,
    method: str = "auto",
) -> MannWhitney:
    """Mann-Whitney U test of samples ``x`` against ``y`` (:func:`scipy.stats.mannwhitneyu`).

    ``alternative="greater"``: x tends to be larger than y (for times: x is slower); ``"less"``: x tends
    to be smaller; ``"two-sided"``: either (with ``permutation``: twice the smaller one-sided p-value).
    ``method``: ``exact`` (the exact null distribution of U; not corrected for ties), ``permutation``
    (every arrangement of the pooled values counted, ties included), ``asymptotic`` (normal
    approximation, tie-corrected, continuity correction if ``continuity``) or ``auto``
    (:func:`choose_method`). When every value is tied the test has no information and the p-value is 1.
    """
    if alternative not in MW_ALTERNATIVES:
        raise ValueError(f"alternative must be one of {', '.join(MW_ALTERNATIVES)}, got {alternative!r}")
    if method not in MW_METHODS:
        raise ValueError(f"method must be one of {', '.join(MW_METHODS)}, got {method!r}")
    xs, ys = np.asarray(list(x), dtype=float), np.asarray(list(y), dtype=float)
    if not xs.size or not ys.size:
        raise ValueError("both samples need at least one value")
    if not (np.isfinite(xs).all() and np.isfinite(ys).all()):
        raise ValueError("samples must be finite")
    pooled = np.concatenate([xs, ys])
    used = choose_method(xs.size, ys.size, np.unique(pooled).size < pooled.size) if method == "auto" else method
    from scipy import stats as scipy_stats  # lazy: ~0.5 s to import, and only the gate's check needs it

    how = scipy_stats.PermutationMethod(n_resamples=np.inf) if used == "permutation" else used
    res = scipy_stats.mannwhitneyu(xs, ys, use_continuity=continuity, alternative=alternative, method=how)
    p = 1.0 if pooled.min() == pooled.max() else float(res.pvalue)
    return MannWhitney(float(res.statistic), int(xs.size), int(ys.size), p, alternative, used)


def samples_with_u(n_x: int, n_y: int, u: int) -> tuple[list[float], list[float]]:
    """Samples of ``n_x`` and ``n_y`` distinct values whose U (pairs with x above y) is ``u``: y = 0, 1,
    ..., n_y - 1; of the x (ascending), the top u // n_y lie above every y, one more above u % n_y of
    them, the rest below all."""
    if not 0 <= u <= n_x * n_y:
        raise ValueError(f"U must be between 0 and {n_x * n_y}, got {u}")
    above, rest = divmod(u, n_y)
    beats = [0] * (n_x - above - (1 if rest else 0)) + ([rest] if rest else []) + [n_y] * above
    xs = [b - 1 + (i + 1) / (n_x + 1) for i, b in enumerate(beats)]  # between y = b - 1 and y = b
    return xs, [float(j) for j in range(n_y)]


@functools.lru_cache(maxsize=256)
def _p_at(n_x: int, n_y: int, u: int, method: str) -> float:
    """The one-sided (``greater``) p-value of U = ``u`` for ``n_x`` against ``n_y`` values without ties."""
    xs, ys = samples_with_u(n_x, n_y, u)
    return mann_whitney_u(xs, ys, "greater", method=method).p_value


def min_p_value(n_x: int, n_y: int) -> float:
    """The smallest one-sided p-value the test (``method="auto"``) can give for ``n_x`` against ``n_y``
    values: every x above every y, 1 / C(n_x + n_y, n_x) where it is exact. A significance level below it
    can never be reached."""
    if n_x < 1 or n_y < 1:
        raise ValueError("both samples need at least one value")
    return _p_at(n_x, n_y, n_x * n_y, choose_method(n_x, n_y, False))


def false_alarm_rate(n_x: int, n_y: int, alpha: float) -> float:
    """The false-alarm rate of the one-sided test (``method="auto"``) at level ``alpha`` for ``n_x``
    against ``n_y`` exchangeable values without ties: P(p <= alpha) under the null hypothesis. The test
    rejects when U reaches the smallest u* whose p-value is <= ``alpha``, so the rate is P(U >= u*), 0 if
    no u* exists. Where the p-value is exact (:func:`choose_method`) that is the largest attainable
    p-value not above ``alpha``, often well below ``alpha``; beyond, it is the normal approximation of
    P(U >= u*), about ``alpha``."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be between 0 and 1, got {alpha}")
    if n_x < 1 or n_y < 1:
        raise ValueError("both samples need at least one value")
    method = choose_method(n_x, n_y, False)
    lo, hi = 0, n_x * n_y  # p falls as U grows: find the smallest U with p <= alpha
    if _p_at(n_x, n_y, hi, method) > alpha:
        return 0.0
    while lo < hi:
        mid = (lo + hi) // 2
        if _p_at(n_x, n_y, mid, method) <= alpha:
            hi = mid
        else:
            lo = mid + 1
    return _p_at(n_x, n_y, lo, method)
