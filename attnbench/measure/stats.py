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
# where R_x is the sum of the ranks of x. Under the null hypothesis (both samples from one distribution)
# U has mean n_x n_y / 2 and, with tie groups of sizes t_k among the n = n_x + n_y values, variance
#
#     n_x n_y / 12 * ((n + 1) - sum_k (t_k^3 - t_k) / (n (n - 1)))
#
# The p-value uses the normal approximation with a continuity correction of 1/2 (good for n_x, n_y >=
# ~8, which timing runs exceed by far).

MW_ALTERNATIVES = ("greater", "less", "two-sided")


@dataclass(frozen=True)
class MannWhitney:
    """Result of :func:`mann_whitney_u`: U of the first sample, its null mean and standard deviation,
    the z score, the p-value and the alternative tested."""

    u: float
    n_x: int
    n_y: int
    mean_u: float
    std_u: float
    z: float
    p_value: float
    alternative: str

    @property
    def effect(self) -> float:
        """U / (n_x n_y): the probability that a random x exceeds a random y (ties counting 1/2)."""
        return self.u / (self.n_x * self.n_y)

    def to_dict(self) -> dict[str, Any]:
        return {
            "u": self.u, "n_x": self.n_x, "n_y": self.n_y, "mean_u": self.mean_u, "std_u": self.std_u,
            "z": self.z, "p_value": self.p_value, "alternative": self.alternative,
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


def mann_whitney_u(
    x: Iterable[float], y: Iterable[float], alternative: str = "greater", continuity: bool = True
) -> MannWhitney:
    """Mann-Whitney U test of samples ``x`` against ``y`` (normal approximation, tie-corrected).

    ``alternative="greater"``: x tends to be larger than y (for times: x is slower); ``"less"``: x tends
    to be smaller; ``"two-sided"``: either. When every value is tied the test has no information and
    the p-value is 1.
    """
    if alternative not in MW_ALTERNATIVES:
        raise ValueError(f"alternative must be one of {', '.join(MW_ALTERNATIVES)}, got {alternative!r}")
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
    if std_u == 0:
        return MannWhitney(u, n_x, n_y, mean_u, 0.0, 0.0, 1.0, alternative)
    if alternative == "greater":
        z = (u - mean_u - cc) / std_u
        p = _normal_sf(z)
    elif alternative == "less":
        z = (u - mean_u + cc) / std_u
        p = _normal_sf(-z)
    else:
        z = (abs(u - mean_u) - cc) / std_u
        p = min(1.0, 2 * _normal_sf(z))
    return MannWhitney(u, n_x, n_y, mean_u, std_u, z, p, alternative)
