"""The CI performance gate: ``attnbench snapshot`` writes a baseline, ``attnbench check`` compares with it.

What is compared, and how
-------------------------
* **Parameters and FLOPs** are exact integers (the exact counter on the meta device, kept as the
  per-op-category cells of :class:`~attnbench.flops.cost.Cost`), so any change at all fails, and the
  report shows baseline, current and delta for every op category that moved.
* **Latency** is compared on independent units: the **median of each measurement round** (one value
  per round and block; the rounds are interleaved, and each builds and warms up the block afresh). The
  per-call samples of one round are not independent (a slow stretch of the machine slows many
  consecutive calls), so a test on the pooled calls gives p-values like 1e-150 that mean nothing; the
  rounds are the units that are. A block is slower only when *both* hold: a one-sided Mann-Whitney U
  test of the current round medians against the baseline's (scipy's; an exact p-value when no two round
  medians are equal, :func:`~attnbench.measuring.stats.mann_whitney_u`) gives p <= ``alpha`` (default
  0.01), *and* the ratio of the medians of the round medians exceeds ``max_slowdown`` (default 1.10).
  (The idea of pairing a rank test with a minimum effect size is asv's; this code is our own.)
* **What alpha can mean with few rounds.** With n baseline and m current rounds the smallest one-sided
  p-value is 1 / C(n + m, n): 1/252 = 0.004 for 5 against 5. ``check`` refuses an ``alpha`` that the
  rounds cannot reach (``--rounds N`` explicitly), or, when the rounds come from the baseline, measures
  as many more current rounds as needed (up to :data:`MAX_AUTO_ROUNDS`) and says so. The false-alarm
  rate of the rank test alone is then exact and printed (:func:`~attnbench.measuring.stats.false_alarm_rate`):
  10 against 10 rounds (the default) at alpha 0.01: 0.93% per block and measurement (5 against 5: 2/252 =
  0.79%), if rounds of unchanged code are exchangeable. Ten short rounds rather than five long ones: on a
  machine whose speed drifts, one odd round then no longer hides a real slowdown (with 5 against 5, p <=
  0.01 needs every current round above every baseline round). Under load control (below) a block
  fails on two comparisons, and every pair of them holds one tested at alpha (raw or peers), so the
  rate is at most twice that (1.9%); the ratio threshold and the re-measurement lower it: a block fails
  only if a second, independent measurement is slower too, so for unchanged code that happens with
  about the square of that rate (~4e-4 per block) unless the machine's speed drifts.
* **Memory**: the call's peak working memory (CUDA: the caching allocator's peak minus what was
  allocated before the call; CPU: the peak of the bytes held by tensors created during the call,
  tracked op by op, which unlike the process RSS is deterministic) may grow by at most
  ``memory_tolerance`` (default 5%).

How latency is measured, so that unchanged code does not alarm
---------------------------------------------------------------
* **Interleaved rounds.** Every block is measured in ``rounds`` short rounds (each builds the block
  afresh, warms it up and times it for ``round_s`` seconds through :func:`attnbench.bench.measure_target`),
  and the rounds of all blocks are interleaved (round-robin, the order rotated each round), so a burst
  of load from another process spreads over all blocks instead of landing on one block's whole sample.
* **A reference workload as load control.** A fixed, seeded workload (a 32-channel 3x3x3 convolution
  and a 512x512x512 matmul) is measured in the same rounds and stored in the snapshot. Each block's
  round medians are also compared after dividing each by the reference's median of the same round. On the
  same device a block is slower only if it is slower both in its own times and relative to the
  reference: when the whole machine is slower (the reference too), that is load, not a regression.
  The relative comparison is a control, tested at its own level ``load_alpha`` (default 0.05; at least
  ``alpha``): its units carry the noise of the block and of the reference, and on a VM whose rounds
  spread x1.2-1.7 it missed a 25% slowdown that the raw times showed at p < 0.001 when it was held to
  0.01 too.
* **Peers.** The reference is not the blocks: when the VM's speed changed, its times fell by up to 32%
  where an unchanged nl's fell by 15-17%. So each block is also compared relative to up to three other blocks of
  the baseline (those nearest in baseline time, :func:`~attnbench.gate.compare.peers_for`): each round
  median divided by how fast its peers ran in that round (:func:`~attnbench.gate.compare.peer_factors`),
  tested at ``alpha``. Under load control a block is slower when two of the three comparisons say so
  (:func:`~attnbench.gate.compare.required`): raw and reference (every block slowed, a change they
  share), reference and peers (the machine ran faster than during the baseline, so the raw times hid
  the slowdown: under a CPU hog a 25% slowdown of cs showed raw x1.02-1.17 but x1.31-1.48 relative to
  the reference), or raw and peers (the reference alone sped up). Every pair holds one test at
  ``alpha``, so false alarms on unchanged code stay bounded by twice it (above).
  With ``--normalize`` (different devices) only the normalised comparison counts.
* **Re-measuring suspects.** A block that looks slower (flagged by a deciding comparison, or a median
  ratio above ``max_slowdown``) is measured again with its peers (up to ``retries`` times, default 2),
  and the round medians of all its measurements are tested together (:func:`~attnbench.gate.compare.pool`).
  It fails, after at least one re-measurement, if those pooled rounds are slower (by two comparisons
  under load control), or if one measurement was and every measurement was flagged by at least one
  comparison (:func:`~attnbench.gate.compare.confirm`);
  otherwise it is reported as ``unconfirmed`` and does not fail the build.
* **Allocator.** On CPU, ``--malloc cached`` (the default of ``snapshot`` on a CPU device) keeps
  glibc from mapping and unmapping large blocks on every call (:func:`attnbench.measuring.malloc.cpu_malloc`):
  for blocks with big intermediates, kernel page faults otherwise make up half the time and vary by
  ~25% over minutes.
* **Clock.** ``--clock cpu`` (a snapshot setting, CPU only, one torch thread) compares the calling
  thread's CPU time per call instead of wall time, so time spent descheduled while other processes run
  is not counted; on a shared CI machine this removes most of the noise (:mod:`attnbench.measuring.clocks`;
  see :class:`TimingPlan`).

Latency is compared only between runs on the same device (CPU model, cores and torch threads; or GPU
model), unless ``normalize`` is set. A timed baseline from another device is a usage error (exit 2)
unless ``--allow-device-mismatch`` is given, and then the summary's first line says that latency was not
compared (a check that passes without comparing latency must not look like one that compared it).
Memory is compared on the same kind of device (any CPU, or the same GPU model).

Reading a baseline
------------------
The whole document is validated against a declared schema (:mod:`attnbench.gate.schema`, pydantic)
before anything in it is used: types, bounds on everything that sets how long a check runs, internal
consistency (FLOP totals against their cells, round sizes against the samples), and blocks, presets
and options known to the code. Every problem is one line and exit code 2. Everything read from the file
is printed through :func:`attnbench.text.plain` or :func:`attnbench.text.clean` (no Rich markup, no
terminal control characters), and into the Markdown summary escaped.

Validating the gate
-------------------
``ATTNBENCH_INJECT_SLOWDOWN="cs:0.25"`` (read in :func:`attnbench.bench.injected_slowdown`) makes one
block ~25% slower. It exists only to validate this gate (tests and ``scripts/validate_gate.py``).

The package
-----------
The gate compares; it measures through :mod:`attnbench.bench` and :mod:`attnbench.measuring`.

* :mod:`.settings` -- :class:`TimingPlan` (how ``snapshot`` times) and :class:`CheckOptions` (what ``check`` tolerates);
* :mod:`.cases` -- which cases a baseline covers, their keys, their exact parameters and FLOPs;
* :mod:`.rounds` -- interleaved measurement rounds and the reference workload (:class:`Timed` per target);
* :mod:`.baseline` -- :func:`snapshot` writes a baseline, :func:`load_baseline` reads one;
* :mod:`.schema` -- the baseline document's declared schema (pydantic) and the safe reading of its file;
* :mod:`.compare` -- the comparisons and verdicts, pure functions of numbers;
* :mod:`.checker` -- :func:`check`: validate, re-measure, compare, re-measure suspects;
* :mod:`.render` -- the report as text and as the Markdown step summary.
"""

from __future__ import annotations

from attnbench.bench import INJECT_SLOWDOWN_ENV
from attnbench.flops.cost import CATEGORIES, KINDS
from attnbench.gate import schema
from attnbench.gate.baseline import (
    SCHEMA,
    environment,
    load_baseline,
    snapshot,
    snapshot_problem,
)
from attnbench.gate.cases import (
    Item,
    entry_key,
    parse_list,
    resolve_entry,
    select,
    static_record,
)
from attnbench.gate.checker import (
    REPORT_SCHEMA,
    check,
)
from attnbench.gate.compare import (
    MAX_AUTO_ROUNDS,
    STEADY_SPREAD,
    cells_flops,
    compare_config,
    compare_flops,
    compare_latency,
    compare_memory,
    compare_params,
    confirm,
    current_rounds,
    device_differences,
    latency_finding,
    looks_slower,
    peer_factors,
    peers_for,
    required,
    memory_comparable,
    normalized,
    pool,
    round_spread,
    round_values,
    spread_of,
    unsteady,
)
from attnbench.gate.render import (
    append_step_summary,
    compared_text,
    finding_cells,
    fmt_change,
    fmt_value,
    headline,
    markdown_summary,
    notable,
    verdict,
)
from attnbench.gate.rounds import (
    REFERENCE_FLOPS,
    REFERENCE_WHAT,
    Timed,
    cpu_peak_bytes,
    measure,
    reference_target,
)
from attnbench.gate.settings import (
    CLOCKS,
    MALLOC_MODES,
    REFERENCE_KEY,
    CheckOptions,
    Progress,
    TimingPlan,
)
from attnbench.measuring.device import CPU_IDENTITY, CUDA_IDENTITY

SIZES = schema.SIZES

__all__ = [
    "CATEGORIES",
    "CLOCKS",
    "CPU_IDENTITY",
    "CUDA_IDENTITY",
    "INJECT_SLOWDOWN_ENV",
    "KINDS",
    "MALLOC_MODES",
    "MAX_AUTO_ROUNDS",
    "REFERENCE_FLOPS",
    "REFERENCE_KEY",
    "REFERENCE_WHAT",
    "REPORT_SCHEMA",
    "SCHEMA",
    "SIZES",
    "STEADY_SPREAD",
    "CheckOptions",
    "Item",
    "Progress",
    "Timed",
    "TimingPlan",
    "append_step_summary",
    "cells_flops",
    "check",
    "compare_config",
    "compare_flops",
    "compare_latency",
    "compare_memory",
    "compare_params",
    "compared_text",
    "confirm",
    "cpu_peak_bytes",
    "current_rounds",
    "device_differences",
    "entry_key",
    "environment",
    "finding_cells",
    "fmt_change",
    "fmt_value",
    "headline",
    "latency_finding",
    "looks_slower",
    "peer_factors",
    "peers_for",
    "required",
    "load_baseline",
    "markdown_summary",
    "measure",
    "memory_comparable",
    "normalized",
    "notable",
    "parse_list",
    "pool",
    "reference_target",
    "resolve_entry",
    "round_spread",
    "round_values",
    "schema",
    "select",
    "snapshot",
    "snapshot_problem",
    "spread_of",
    "static_record",
    "unsteady",
    "verdict",
]
