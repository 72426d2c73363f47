"""Statistics of a timing run: raw samples kept, summaries derived.

A :class:`Measurement` holds every per-call time (in seconds) as measured, plus the labels needed to
read it later (what was timed, on which device, in which dtype, at which batch size, with how many CPU
threads). All summaries (median, mean, spread, percentiles, throughput) are derived from the samples on
demand, so a saved measurement can always be re-summarised and nothing is ever averaged away.

Percentiles use linear interpolation between closest ranks, the same definition as numpy's default
(``method="linear"``): for sorted samples ``x[0..n-1]`` the q-th percentile sits at position
``h = (n - 1) * q / 100`` and is ``x[floor(h)] + (h - floor(h)) * (x[floor(h) + 1] - x[floor(h)])``.
The standard deviation is the sample one (divisor ``n - 1``); it is None for a single sample.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

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
    """The q-th percentile (0 <= q <= 100) by linear interpolation between closest ranks (numpy's
    default)."""
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be in [0, 100], got {q}")
    xs = sorted(_checked(samples))
    h = (len(xs) - 1) * q / 100
    lo = math.floor(h)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (h - lo) * (xs[hi] - xs[lo])


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
    ``pipelined``, ``isolated`` or ``graph`` on CUDA; see :mod:`attnbench.measure.timing`),
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
# the baseline's?". Written from the textbook definition; no scipy needed.
#
# U of the first sample x counts the pairs (x_i, y_j) with x_i > y_j, a tie counting one half. With
# average ranks over the pooled samples (ties share the mean of their ranks) U = R_x - n_x (n_x + 1) / 2,
# where R_x is the sum of the ranks of x. Under the null hypothesis (the n = n_x + n_y values are
# exchangeable: independent and from one distribution) every choice of which n_x of the pooled values are
# x is equally likely, C(n, n_x) choices in all.
#
# * Exact p-value (``method="exact"``, and ``"auto"`` when n <= EXACT_MAX_N): the fraction of those
#   C(n, n_x) choices whose rank sum is at least as extreme as the observed one, counted exactly (ties
#   included: the permutation distribution of the average ranks). With few values the p-value can only
#   take few values; its smallest one-sided value is 1 / C(n, n_x) (5 against 5 values: 1/252 = 0.004), so
#   a significance level below that can never be reached (see :func:`min_p_value`).
# * Normal approximation (``"asymptotic"``, and ``"auto"`` for larger n): U has mean n_x n_y / 2 and, with
#   tie groups of sizes t_k, variance  n_x n_y / 12 * ((n + 1) - sum_k (t_k^3 - t_k) / (n (n - 1))),
#   with a continuity correction of 1/2.
#
# The test assumes independent values. Consecutive per-call times of one run are not (a slow stretch of
# the machine makes many consecutive calls slow), so the gate tests one value per independent unit: the
# median of each interleaved measurement round (attnbench.gate).

MW_ALTERNATIVES = ("greater", "less", "two-sided")
MW_METHODS = ("auto", "exact", "asymptotic")
EXACT_MAX_N = 50  # "auto" counts the exact distribution up to this many pooled values


@dataclass(frozen=True)
class MannWhitney:
    """Result of :func:`mann_whitney_u`: U of the first sample, its null mean and standard deviation,
    the z score, the p-value, the alternative tested and how the p-value was computed (``exact`` or
    ``asymptotic``)."""

    u: float
    n_x: int
    n_y: int
    mean_u: float
    std_u: float
    z: float
    p_value: float
    alternative: str
    method: str = "asymptotic"

    @property
    def effect(self) -> float:
        """U / (n_x n_y): the probability that a random x exceeds a random y (ties counting 1/2)."""
        return self.u / (self.n_x * self.n_y)

    def to_dict(self) -> dict[str, Any]:
        return {
            "u": self.u, "n_x": self.n_x, "n_y": self.n_y, "mean_u": self.mean_u, "std_u": self.std_u,
            "z": self.z, "p_value": self.p_value, "alternative": self.alternative, "method": self.method,
            "prob_x_greater": self.effect,
        }


def average_ranks(values: Sequence[float]) -> tuple[list[float], list[int]]:
    """1-based ranks of ``values`` (ties get the mean of the ranks they span) and the sizes of the tie
    groups (every group of equal values, size >= 2)."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    ties: list[int] = []
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        rank = (i + j) / 2 + 1  # mean of the 1-based ranks i+1 .. j+1
        for k in range(i, j + 1):
            ranks[order[k]] = rank
        if j > i:
            ties.append(j - i + 1)
        i = j + 1
    return ranks, ties


def _normal_sf(z: float) -> float:
    """P(Z > z) for a standard normal Z."""
    return 0.5 * math.erfc(z / math.sqrt(2))


@functools.lru_cache(maxsize=128)
def subset_sum_counts(scores: tuple[int, ...], m: int) -> tuple[int, ...]:
    """``counts[s]``: how many of the C(len(scores), m) ways to choose m of the (non-negative integer)
    ``scores`` have the sum s. Counted with one generating polynomial per subset size, each held in a
    Python integer (one coefficient per fixed-width field), so adding a score is a shift and an add."""
    if m < 0 or m > len(scores) or any(s < 0 for s in scores):
        raise ValueError("need 0 <= m <= len(scores) and scores >= 0")
    width = 8 * (len(scores) // 8 + 1)  # bits per coefficient: every count is <= C(n, m) < 2**n
    poly = [1] + [0] * m  # poly[k]: sum over k-subsets of x**sum
    for i, score in enumerate(scores):
        for k in range(min(i + 1, m), 0, -1):
            if poly[k - 1]:
                poly[k] += poly[k - 1] << (score * width)
    top = sum(sorted(scores)[len(scores) - m:]) if m else 0
    raw = poly[m].to_bytes((top + 1) * width // 8, "little")
    step = width // 8
    return tuple(int.from_bytes(raw[i:i + step], "little") for i in range(0, len(raw), step))


def _exact_p(ranks: Sequence[float], n_x: int, alternative: str) -> float:
    """Exact permutation p-value of the rank sum of the first ``n_x`` of ``ranks`` (average ranks)."""
    doubled = [round(2 * r) for r in ranks]  # average ranks are multiples of 1/2
    observed = sum(doubled[:n_x])
    counts = subset_sum_counts(tuple(sorted(doubled)), n_x)
    total = math.comb(len(doubled), n_x)
    if alternative == "greater":
        hits = sum(counts[observed:])
    elif alternative == "less":
        hits = sum(counts[:observed + 1])
    else:
        mean2 = n_x * (len(doubled) + 1)  # twice the null mean of the rank sum
        dist = abs(observed - mean2)
        hits = sum(c for s, c in enumerate(counts) if abs(s - mean2) >= dist)
    return min(1.0, hits / total)


def mann_whitney_u(
    x: Iterable[float], y: Iterable[float], alternative: str = "greater", continuity: bool = True,
    method: str = "auto",
) -> MannWhitney:
    """Mann-Whitney U test of samples ``x`` against ``y``.

    ``alternative="greater"``: x tends to be larger than y (for times: x is slower); ``"less"``: x tends
    to be smaller; ``"two-sided"``: either. ``method``: ``exact`` (the permutation distribution of the
    ranks, ties included), ``asymptotic`` (normal approximation, tie-corrected, continuity correction if
    ``continuity``) or ``auto`` (exact up to :data:`EXACT_MAX_N` values in all). When every value is tied
    the test has no information and the p-value is 1.
    """
    if alternative not in MW_ALTERNATIVES:
        raise ValueError(f"alternative must be one of {', '.join(MW_ALTERNATIVES)}, got {alternative!r}")
    if method not in MW_METHODS:
        raise ValueError(f"method must be one of {', '.join(MW_METHODS)}, got {method!r}")
    xs, ys = [float(v) for v in x], [float(v) for v in y]
    if not xs or not ys:
        raise ValueError("both samples need at least one value")
    if not all(math.isfinite(v) for v in xs + ys):
        raise ValueError("samples must be finite")
    n_x, n_y = len(xs), len(ys)
    n = n_x + n_y
    ranks, ties = average_ranks(xs + ys)
    u = math.fsum(ranks[:n_x]) - n_x * (n_x + 1) / 2
    mean_u = n_x * n_y / 2
    tie_term = sum(t**3 - t for t in ties) / (n * (n - 1)) if n > 1 else 0.0
    var_u = n_x * n_y / 12 * ((n + 1) - tie_term)
    std_u = math.sqrt(var_u) if var_u > 0 else 0.0
    cc = 0.5 if continuity else 0.0
    exact = method == "exact" or (method == "auto" and n <= EXACT_MAX_N)
    used = "exact" if exact else "asymptotic"
    if std_u == 0:
        return MannWhitney(u, n_x, n_y, mean_u, 0.0, 0.0, 1.0, alternative, used)
    if alternative == "greater":
        z = (u - mean_u - cc) / std_u
        p = _normal_sf(z)
    elif alternative == "less":
        z = (u - mean_u + cc) / std_u
        p = _normal_sf(-z)
    else:
        z = (abs(u - mean_u) - cc) / std_u
        p = min(1.0, 2 * _normal_sf(z))
    if exact:
        p = _exact_p(ranks, n_x, alternative)
    return MannWhitney(u, n_x, n_y, mean_u, std_u, z, p, alternative, used)


def min_p_value(n_x: int, n_y: int) -> float:
    """The smallest one-sided p-value the exact test can give for ``n_x`` against ``n_y`` values: every x
    above every y, 1 / C(n_x + n_y, n_x). A significance level below it can never be reached."""
    if n_x < 1 or n_y < 1:
        raise ValueError("both samples need at least one value")
    return 1 / math.comb(n_x + n_y, n_x)


def false_alarm_rate(n_x: int, n_y: int, alpha: float) -> float:
    """The false-alarm rate of the one-sided test at level ``alpha`` for ``n_x`` against ``n_y``
    exchangeable values without ties: P(p <= alpha) under the null hypothesis. With the exact method
    this is the largest attainable p-value not above ``alpha`` (0 if none is), often well below
    ``alpha``; with the normal approximation (``auto`` above :data:`EXACT_MAX_N` values) it is about
    ``alpha``."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be between 0 and 1, got {alpha}")
    n = n_x + n_y
    if n > EXACT_MAX_N:
        return alpha
    counts = subset_sum_counts(tuple(range(2, 2 * n + 1, 2)), n_x)
    total = math.comb(n, n_x)
    size, tail = 0.0, 0
    for c in reversed(counts):  # P(rank sum >= s), from the top down
        tail += c
        if tail / total > alpha:
            break
        size = tail / total
    return size
