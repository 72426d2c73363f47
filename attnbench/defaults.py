"""Names and defaults the command line shows in its help, kept apart so that ``attnbench --help`` imports no
torch: the FLOP counters, and what ``attnbench sweep`` sweeps when not told."""

from __future__ import annotations

COUNTERS: tuple[str, ...] = ("exact", "torch", "fvcore", "ptflops", "ptflops-aten")
SWEEP_MODULES: tuple[str, ...] = ("nl", "cs")
SWEEP_VALUES: dict[str, tuple[int, ...]] = {"T": (4, 8, 16, 32, 64), "HW": (7, 14, 28, 56), "C": (64, 96, 256)}
SCHEMA = 2  # the version of every JSON object and results row the commands write (README: "Output fields and units")

# The performance gate (attnbench.gate.settings uses these; validated in results/gate-validation/)
GATE_ROUNDS = 10
GATE_ROUND_S = 0.15
GATE_ALPHA = 0.01
GATE_LOAD_ALPHA = 0.05  # the comparison relative to the reference, when it only rules out a machine slower as a whole
GATE_MAX_SLOWDOWN = 1.10
GATE_MEMORY_TOLERANCE = 0.05
GATE_RETRIES = 2
