"""How ``snapshot`` times and what ``check`` tolerates: :class:`TimingPlan` and :class:`CheckOptions`,
each with a ``check()`` that turns a bad value into a one-line :class:`~attnbench.errors.UsageError`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from attnbench import cases
from attnbench import defaults as D
from attnbench.errors import UsageError, check_range, unknown
from attnbench.gate import schema
from attnbench.measuring import device as dev
from attnbench.measuring.malloc import MODES as MALLOC_MODES

CLOCKS = schema.CLOCKS
REFERENCE_KEY = "reference"  # the reference workload's key among the measured targets


Progress = Callable[[str], None]


@dataclass(frozen=True)
class TimingPlan:
    """How latency is measured: on which device and dtype, with how many torch threads (None: torch's
    default), in how many interleaved rounds of ``round_s`` seconds of timed calls each (at least
    ``min_reps`` calls per round), and with which clock.

    ``clock="wall"`` (default) compares the per-call latencies of :func:`attnbench.measuring.timing.time_callable`
    (``perf_counter`` on CPU, CUDA events on a GPU). ``clock="cpu"`` (CPU only, one torch thread)
    compares the CPU time the calling thread spends per call (``time.thread_time_ns`` between the starts
    of consecutive timed calls, so everything a call does in that thread is included): on a shared
    machine, time spent waiting while other processes run is not counted, so their load does not read
    as a slowdown of the block.
    """

    device: str = "cpu"
    dtype: str = "fp32"
    threads: int | None = None
    rounds: int = D.GATE_ROUNDS  # validated on a drifting 2-core VM: see results/gate-validation/
    round_s: float = D.GATE_ROUND_S
    min_reps: int = 5
    max_warmup_s: float = 0.3
    clock: str = "wall"
    malloc: str = "system"
    timing: str = "auto"  # CUDA: graph replay where the capture works (see attnbench.measuring.timing)

    def check(self, local: bool = True) -> "TimingPlan":
        """The plan's bounds, and (``local``) its device on this machine; on Ray only its name is checked
        here (the workers have the devices)."""
        if local:
            device = dev.resolve_device(self.device)
        else:
            from attnbench.distributed import check_device

            import torch

            device = torch.device(check_device(self.device))
        dev.resolve_dtype(self.dtype)
        check_range("--rounds", self.rounds, 1, schema.MAX_ROUNDS)
        check_range("--round-s", self.round_s, 0, schema.MAX_ROUND_S, low_open=True)
        check_range("min_reps", self.min_reps, 1, schema.MAX_MIN_REPS)
        check_range("max_warmup_s", self.max_warmup_s, 0, schema.MAX_WARMUP_S)
        if self.rounds * (self.round_s + self.max_warmup_s) > schema.MAX_TIMED_S_PER_BLOCK:
            raise UsageError(f"--rounds x (--round-s + warm-up) is {self.rounds * (self.round_s + self.max_warmup_s):.4g} s "
                             f"per block, more than the {schema.MAX_TIMED_S_PER_BLOCK:.0f} s allowed")
        check_range("--threads", self.threads, 1, schema.MAX_THREADS)
        if self.timing not in schema.TIMING_MODES:
            raise unknown("timing mode", self.timing, schema.TIMING_MODES)
        if self.malloc not in MALLOC_MODES:
            raise unknown("malloc mode", self.malloc, MALLOC_MODES)
        if self.clock not in CLOCKS:
            raise unknown("clock", self.clock, CLOCKS)
        if self.clock == "cpu":
            if device.type != "cpu":
                raise UsageError("--clock cpu needs --device cpu (GPU work is timed with CUDA events)")
            if self.threads != 1:
                raise UsageError("--clock cpu needs --threads 1 (the CPU time of one thread is measured)")
            if self.min_reps < 2:
                raise UsageError("--clock cpu needs at least 2 timed calls per round")
        return self


@dataclass(frozen=True)
class CheckOptions:
    """Thresholds of ``check``. ``retries``: how often a block that looks slower may be measured again
    (see :func:`confirm`). ``load_control``: on the same device, a block is
    slower only if it is slower both in its own times and relative to the reference workload of the
    same rounds (a machine that is slower as a whole is not a regression), or either of those and relative
    to its peers, the other blocks of the same rounds (:func:`~attnbench.gate.compare.latency_finding`);
    the raw and peer comparisons are tested at
    ``alpha``, the relative one at ``load_alpha``: it only has to rule out that the machine as a whole got
    slower, and its units (a block's round median over the reference's) carry the noise of both, so at
    ``alpha`` it missed real slowdowns (``results/gate-validation/``). None (the default): on for a
    CPU, off for CUDA, where the reference workload does not track the device's speed (on an H200 its
    round medians moved by up to 16% between unchanged checks while cs@banet's moved by under 0.5%, and
    with it on 4 of 10 runs with cs 10% slower passed, their raw ratios as large as the caught runs';
    ``results/cuda-nvidia-h200/gpu-check*/``). ``normalize``: compare
    reference-normalised times only (for different devices). ``allow_device_mismatch``: a timed
    baseline from another device is checked without its latency (otherwise that is a usage error).
    ``device``/``rounds``/``round_s`` override the baseline's (None: as in the baseline; with the
    baseline's rounds, more rounds are measured if ``alpha`` needs them, see :func:`current_rounds`)."""

    alpha: float = D.GATE_ALPHA
    load_alpha: float = D.GATE_LOAD_ALPHA
    max_slowdown: float = D.GATE_MAX_SLOWDOWN
    memory_tolerance: float = D.GATE_MEMORY_TOLERANCE
    normalize: bool = False
    load_control: bool | None = None
    flops_only: bool = False
    allow_device_mismatch: bool = False
    retries: int = D.GATE_RETRIES
    device: str | None = None
    rounds: int | None = None
    round_s: float | None = None

    def check(self) -> "CheckOptions":
        if not 0 < self.alpha < 1:
            raise UsageError(f"--alpha must be between 0 and 1, got {self.alpha}")
        if not self.alpha <= self.load_alpha < 1:
            raise UsageError(f"--load-alpha must be at least --alpha ({self.alpha:g}) and below 1, got {self.load_alpha}")
        check_range("--max-slowdown", self.max_slowdown, 1, 100)  # a ratio of medians
        check_range("--memory-tolerance", self.memory_tolerance, 0, 100)  # a fraction of the baseline's peak
        check_range("--retries", self.retries, 0, 10)
        check_range("--rounds", self.rounds, 1, schema.MAX_ROUNDS)
        check_range("--round-s", self.round_s, 0, schema.MAX_ROUND_S, low_open=True)
        return self
