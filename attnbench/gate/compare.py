"""The comparisons of ``check``, as pure functions of numbers: one finding (a dict) per check.

* parameters and FLOPs exactly, FLOPs per op category (:func:`compare_params`, :func:`compare_flops`);
* latency on per-round medians: the one-sided Mann-Whitney U test
  (:func:`attnbench.measuring.stats.mann_whitney_u`, scipy's) *and* a minimum median ratio
  (:func:`compare_latency`), in raw times and relative to the reference workload
  (:func:`latency_finding`), with re-measurements judged by :func:`confirm`;
* how many rounds make ``alpha`` reachable (:func:`current_rounds`), and how steady a baseline's rounds
  were (:func:`round_spread`, :func:`unsteady`);
* peak memory within a tolerance (:func:`compare_memory`)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from attnbench.errors import UsageError
from attnbench.flops.cost import CATEGORIES, KINDS
from attnbench.gate import schema
from attnbench.gate.settings import REFERENCE_KEY, CheckOptions
from attnbench.measuring import device as dev
from attnbench.measuring.stats import mann_whitney_u, median, min_p_value
from attnbench.text import clean

MAX_AUTO_ROUNDS = 20  # check measures at most this many rounds on its own to make alpha reachable


# -- parameters and FLOPs ------------------------------------------------------------------------------


def finding(key: str, **fields: Any) -> dict[str, Any]:
    return {"key": key, **fields}


def _cell(cells: Mapping[str, Mapping[str, int]], category: str, kind: str) -> int:
    return int((cells.get(category) or {}).get(kind, 0))


def cells_flops(cells: Mapping[str, Mapping[str, int]]) -> int:
    return sum(2 * _cell(cells, c, "mac") + _cell(cells, c, "op") for c in cells)


def compare_params(old: int, new: int) -> dict[str, Any]:
    same = int(old) == int(new)
    return {"check": "params", "status": "ok" if same else "changed", "failed": not same,
            "baseline": int(old), "current": int(new), "delta": int(new) - int(old)}


def compare_flops(old_cells: Mapping[str, Mapping[str, int]], new_cells: Mapping[str, Mapping[str, int]]) -> dict[str, Any]:
    """Exact comparison of two ``Cost.to_dict()`` cell maps; ``categories`` lists every op category
    that changed with its baseline, current and delta FLOPs (multiply-add = 2) and its cells."""
    categories = []
    for c in sorted(set(old_cells) | set(new_cells), key=lambda c: (CATEGORIES + (c,)).index(c)):
        old = {k: _cell(old_cells, c, k) for k in KINDS}
        new = {k: _cell(new_cells, c, k) for k in KINDS}
        if old != new:
            of, nf = 2 * old["mac"] + old["op"], 2 * new["mac"] + new["op"]
            categories.append({"category": c, "baseline_flops": of, "current_flops": nf, "delta_flops": nf - of,
                               "baseline_cells": old, "current_cells": new})
    old_total, new_total = cells_flops(old_cells), cells_flops(new_cells)
    return {"check": "flops", "status": "changed" if categories else "ok", "failed": bool(categories),
            "baseline": old_total, "current": new_total, "delta": new_total - old_total, "categories": categories}


def compare_config(key: str, old_shape: list[int], old_options: Mapping[str, Any], new_shape: list[int],
                   new_options: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A changed input shape or a changed option value fails (the block is measured at another
    configuration); an option that was added or removed is only noted (its default may change nothing,
    and if it does, the FLOPs say so)."""
    changed = {k: [old_options[k], new_options[k]] for k in old_options if k in new_options and old_options[k] != new_options[k]}
    if old_shape != list(new_shape) or changed:
        what = ([f"input shape {old_shape} -> {list(new_shape)}"] if old_shape != list(new_shape) else []) + \
               [f"{k}: {a} -> {b}" for k, (a, b) in changed.items()]
        return [finding(key, check="config", status="changed", failed=True,
                         baseline={"input_shape": old_shape, "options": dict(old_options)},
                         current={"input_shape": list(new_shape), "options": dict(new_options)},
                         detail="the preset changed: " + "; ".join(what))]
    added, removed = sorted(set(new_options) - set(old_options)), sorted(set(old_options) - set(new_options))
    if added or removed:
        what = ([f"added {', '.join(added)}"] if added else []) + ([f"removed {', '.join(removed)}"] if removed else [])
        return [finding(key, check="config", status="options", failed=False, detail="block options " + "; ".join(what))]
    return []


# -- latency and memory --------------------------------------------------------------------------------


def compare_latency(old_ms: Sequence[float], new_ms: Sequence[float], alpha: float = 0.01,
                    max_slowdown: float = 1.10) -> dict[str, Any]:
    """Regression iff the one-sided U test (new > old) gives p <= ``alpha`` and median(new)/median(old)
    > ``max_slowdown``; improvement iff the mirrored conditions hold. The values must be independent
    units, one per measurement round (the gate passes per-round medians, :func:`round_values`), in any
    one unit of time; the p-value is exact for up to 50 values in all."""
    old_med, new_med = median(old_ms), median(new_ms)
    ratio = new_med / old_med if old_med > 0 else (1.0 if new_med == 0 else math.inf)
    slower = mann_whitney_u(new_ms, old_ms, "greater")
    faster = mann_whitney_u(new_ms, old_ms, "less")
    if slower.p_value <= alpha and ratio > max_slowdown:
        status = "regression"
    elif faster.p_value <= alpha and ratio < 1 / max_slowdown:
        status = "improved"
    else:
        status = "ok"
    return {"check": "latency", "status": status, "failed": status == "regression",
            "baseline": old_med, "current": new_med, "ratio": ratio,
            "p_slower": slower.p_value, "p_faster": faster.p_value, "u": slower.u, "p_method": slower.method,
            "prob_slower": slower.effect, "n_baseline": len(old_ms), "n_current": len(new_ms)}


def compare_memory(old: int | None, new: int | None, tolerance: float = 0.05) -> dict[str, Any]:
    """Regression iff ``new`` exceeds ``old`` by more than ``tolerance`` (a fraction of ``old``)."""
    if old is None or new is None:
        return {"check": "memory", "status": "skipped", "failed": False, "baseline": old, "current": new,
                "detail": "peak memory not measured in the " + ("baseline" if old is None else "current run")}
    limit = old * (1 + tolerance)
    status = "regression" if new > limit else ("improved" if new < old * (1 - tolerance) else "ok")
    return {"check": "memory", "status": status, "failed": status == "regression", "baseline": int(old),
            "current": int(new), "delta": int(new) - int(old),
            "ratio": (new / old) if old else (1.0 if new == 0 else math.inf), "tolerance": tolerance}


def round_values(t: Mapping[str, Any] | None) -> list[float] | None:
    """The test units of a timing: the median of each measurement round (ms). From ``samples_ms`` and
    ``round_sizes`` (a stored baseline's are validated to add up; stored ``round_medians_ms``, checked
    against them when read, are not needed), else ``round_medians_ms``, else the samples' median as a
    single round; None without samples."""
    if not t or not t.get("samples_ms"):
        return None
    samples, sizes = list(t["samples_ms"]), t.get("round_sizes")
    if sizes and sum(sizes) == len(samples) and all(n >= 1 for n in sizes):
        return schema.round_medians(samples, sizes)
    if t.get("round_medians_ms"):
        return list(t["round_medians_ms"])
    return [median(samples)]


def normalized(values_ms: Sequence[float], reference_ms: Sequence[float]) -> list[float]:
    """Per-round medians of a block divided by the reference workload's median of the same round
    (measured seconds apart, so load that changes from round to round cancels). With a different number
    of rounds, every value is divided by the median of the reference's rounds."""
    if len(values_ms) == len(reference_ms):
        pairs = list(zip(values_ms, reference_ms))
    else:
        pairs = [(v, median(reference_ms)) for v in values_ms]
    if any(ref <= 0 for _, ref in pairs):
        raise UsageError("the reference workload's median time is zero; cannot normalize")
    return [v / ref for v, ref in pairs]


def current_rounds(baseline_rounds: int, alpha: float, asked: int | None = None) -> tuple[int, str]:
    """How many rounds ``check`` measures, and a note when that is not simply the baseline's (or
    ``asked``). The rank test of ``baseline_rounds`` against n current round medians can give no
    one-sided p-value below 1 / C(baseline_rounds + n, n); an ``alpha`` below it could never be reached,
    so a latency regression could never fail the build. With ``asked`` rounds that is a usage error;
    without, n is raised (up to :data:`MAX_AUTO_ROUNDS`) until ``alpha`` is reachable."""
    def reachable(n: int) -> bool:
        return min_p_value(baseline_rounds, n) <= alpha

    need = next((n for n in range(1, MAX_AUTO_ROUNDS + 1) if reachable(n)), None)
    fix = f"--rounds {need} or more" if need else "a baseline with more rounds (`attnbench snapshot --rounds 5`)"
    if asked is not None:
        if not reachable(asked):
            p = min_p_value(baseline_rounds, asked)
            raise UsageError(f"--alpha {alpha:g} cannot be reached: with {baseline_rounds} baseline and {asked} current rounds "
                             f"the smallest p-value of the rank test on round medians is 1/{math.comb(baseline_rounds + asked, asked)} "
                             f"= {p:.3g}; use {fix}, or --alpha {p:.3g} or more")
        return asked, ""
    if reachable(baseline_rounds):
        return baseline_rounds, ""
    if need is None:
        p = min_p_value(baseline_rounds, MAX_AUTO_ROUNDS)
        raise UsageError(f"--alpha {alpha:g} cannot be reached with a baseline of {baseline_rounds} round(s): even against "
                         f"{MAX_AUTO_ROUNDS} current rounds the smallest p-value of the rank test on round medians is {p:.3g}; "
                         f"use {fix}, or --alpha {p:.3g} or more")
    return need, (f"the baseline's {baseline_rounds} rounds against as many current rounds cannot reach alpha {alpha:g} "
                  f"(smallest p-value {min_p_value(baseline_rounds, baseline_rounds):.3g}); measured {need} rounds")


device_differences = dev.identity_differences


def memory_comparable(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Peak memory depends on the device kind (and on CUDA on the GPU model), not on the CPU model."""
    if old.get("device_type") != new.get("device_type"):
        return False
    return old.get("device_type") != "cuda" or old.get("gpu_name") == new.get("gpu_name")


MAX_PEERS = 3  # the other blocks a block is compared with (those of the nearest baseline times)


def peers_for(key: str, medians: Mapping[str, float]) -> list[str]:
    """The blocks ``key`` is compared with (its peers): up to :data:`MAX_PEERS` of the other blocks whose
    baseline median time (``medians``, ms) is nearest its own on a log scale."""
    if key not in medians or medians[key] <= 0:
        return []
    own = math.log(medians[key])
    others = [k for k, m in medians.items() if k != key and m > 0]
    return sorted(others, key=lambda k: (abs(math.log(medians[k]) - own), k))[:MAX_PEERS]


def peer_factors(rounds: Mapping[str, Sequence[float] | None], medians: Mapping[str, float],
                 peers: Sequence[str]) -> list[float] | None:
    """How fast the machine ran for the ``peers`` in each round: per round, the median over the peers of
    their round median divided by their baseline median (``medians``). None without peers, or when a peer
    is missing or its rounds do not line up with the others'."""
    series = [rounds.get(p) for p in peers]
    if not peers or any(not s for s in series) or len({len(s) for s in series}) != 1:  # type: ignore[arg-type]
        return None
    return [median([s[j] / medians[p] for p, s in zip(peers, series)]) for j in range(len(series[0]))]  # type: ignore[index]


def level(comparison: str, opts: CheckOptions) -> float:
    """The significance level of one comparison: ``load_alpha`` for the one relative to the reference when
    it is a load control (not ``normalize``), else ``alpha``."""
    return opts.load_alpha if comparison == "normalized" and not opts.normalize else opts.alpha


def flagged(decisive: Sequence[str], slower: Mapping[str, bool], raw_ratio: float) -> list[str]:
    """The decisive comparisons that call a measurement slower (``slower[c]``); under load control (more
    than one decides) none when the block is not slower in its own times (raw median ratio not above 1)."""
    if len(decisive) > 1 and raw_ratio <= 1:
        return []
    return [c for c in decisive if slower.get(c)]


def required(decisive: Sequence[str]) -> int:
    """How many of the decisive comparisons must call a measurement slower: two when the load is
    controlled (two of raw, relative to the reference and relative to the peers), else the one."""
    return min(2, len(decisive))


def latency_finding(key: str, old: Mapping[str, Any], old_ref: Mapping[str, Any] | None, new: Mapping[str, Any],
                    new_ref: Mapping[str, Any] | None, opts: CheckOptions,
                    peers: tuple[Sequence[float] | None, Sequence[float] | None] | None = None) -> dict[str, Any]:
    """Compare one measurement of a block's latency with the baseline (``{"samples_ms", "round_sizes"}``
    of both and of their reference workloads). The units compared are the per-round medians
    (:func:`round_values`). Two comparisons: ``raw`` (the round medians themselves) and ``normalized``
    (each round median divided by the reference workload's median of the same round). Which of them
    decide (``decisive``):

    * ``opts.normalize``: the normalised one (different devices);
    * else, with ``opts.load_control`` and both references: both, and a third when ``peers`` (the peer
      factors of :func:`peer_factors` for the baseline's rounds and for these) line up with the rounds:
      ``peers``, each round median divided by how fast the other blocks ran in that round. A regression
      needs two of them (:func:`required`): raw (at ``opts.alpha``) and relative to the reference (at
      ``opts.load_alpha``; it only has to rule out a machine slower as a whole), or either with the peers
      (at ``opts.alpha``). Raw and peers: the reference alone sped up; reference and peers: the machine
      ran faster than during the baseline, so the raw times hid the slowdown; raw and reference: every
      block slowed (a change they share). A block whose raw median ratio is not above 1 is flagged by
      none (under a CPU hog an unchanged nl ran 4% faster in raw times, yet x1.16 slower relative to the
      reference and to cs, which had sped up more), and one not below 1 is not ``improved``;
    * else the raw one.

    ``flags`` lists the decisive comparisons that call it a regression; ``status`` is ``regression``
    when :func:`required` of them do (``improved`` likewise)."""
    old_v, new_v = round_values(old), round_values(new)
    if not old_v or not new_v:
        raise UsageError(f"{clean(key)}: no latency samples to compare")
    raw = compare_latency(old_v, new_v, opts.alpha, opts.max_slowdown)
    norm = None
    old_rv, new_rv = round_values(old_ref), round_values(new_ref)
    if old_rv and new_rv:  # a load control only, at its own level; the only comparison with normalize
        norm = compare_latency(normalized(old_v, old_rv), normalized(new_v, new_rv), level("normalized", opts),
                               opts.max_slowdown)
    if opts.normalize and norm is None:
        raise UsageError("--normalize needs the reference workload's samples of both runs")
    peer = None
    old_f, new_f = peers or (None, None)
    if old_f and new_f and len(old_f) == len(old_v) and len(new_f) == len(new_v) and min(*old_f, *new_f) > 0:
        peer = compare_latency([v / f for v, f in zip(old_v, old_f)], [v / f for v, f in zip(new_v, new_f)],
                               opts.alpha, opts.max_slowdown)
    if opts.normalize:
        f, mode, decisive = dict(norm), "normalized", ["normalized"]
    elif opts.load_control is not False and norm is not None:  # None: the CPU default (check resolves it)
        f, mode, decisive = dict(raw), "raw+reference", ["raw", "normalized"]
        if peer is not None:
            mode, decisive = "raw+reference+peers", ["raw", "normalized", "peers"]
    else:
        f, mode, decisive = dict(raw), "raw", ["raw"]
    by = {"raw": raw, "normalized": norm, "peers": peer}
    flags = flagged(decisive, {c: by[c]["status"] == "regression" for c in decisive}, raw["ratio"])
    improved = [c for c in decisive if by[c]["status"] == "improved"]
    if len(decisive) > 1 and raw["ratio"] >= 1:  # load control: not faster in its own times
        improved = []
    status = ("regression" if len(flags) >= required(decisive)
              else "improved" if len(improved) >= required(decisive) else "ok")
    f.update(status=status, failed=status == "regression", mode=mode, decisive=decisive, flags=flags, unit="round median",
             normalized=opts.normalize, baseline_ms=raw["baseline"], current_ms=raw["current"], raw_ratio=raw["ratio"],
             raw_p_slower=raw["p_slower"], raw_status=raw["status"], normalized_ratio=norm["ratio"] if norm else None,
             normalized_p_slower=norm["p_slower"] if norm else None, normalized_status=norm["status"] if norm else None,
             peers_ratio=peer["ratio"] if peer else None, peers_p_slower=peer["p_slower"] if peer else None,
             peers_status=peer["status"] if peer else None,
             baseline_rounds_ms=old_v, current_rounds_ms=new_v)
    return finding(key, **f)


def confirm(flags: Sequence[Sequence[str]], decisive: Sequence[str], retries: int,
            pooled: Sequence[str] | None = None) -> str:
    """The verdict on a suspect block measured ``len(flags)`` times, ``flags[j]`` being the decisive
    comparisons that called measurement j a regression and ``pooled`` those that call the round medians
    of all its measurements together a regression (:func:`pool`; None: the single measurement's). "Slower"
    below means by :func:`required` of the decisive comparisons (two of them under load control).

    * ``regression``, after at least one re-measurement (none if ``retries`` is 0): the pooled rounds are
      slower, or one measurement was slower and every measurement was flagged by at least one comparison. Pooling lets a real slowdown through on a loaded machine: under a
      CPU hog a 25% slowdown of cs was slower relative to the reference in each of three measurements
      (x1.25, x1.14, x1.10) but never significantly in one alone (p 0.04, 0.02, 0.10 at alpha 0.01). The
      second rule keeps a slowdown whose raw times fade as the machine speeds up between measurements
      (seen idle: raw x1.17 then x0.94, relative to the reference x1.32 then x1.31);
    * ``unconfirmed``: a re-measurement shows no slowdown at all and the pooled rounds none either, or the
      re-measurements are used up;
    * ``pending`` while another measurement is needed;
    * ``ok``: a single measurement with no flags when no re-measurement is allowed (``retries`` 0)."""
    n, need = len(flags), required(decisive)
    pooled = list(flags[0]) if pooled is None and n == 1 else list(pooled or [])
    if len(pooled) >= need and (n >= 2 or retries == 0):
        return "regression"
    if n >= 2 and all(flags) and any(len(f) >= need for f in flags):
        return "regression"
    if retries == 0 and n == 1 and not flags[0]:
        return "ok"
    if n >= 2 and not flags[-1] and not pooled:
        return "unconfirmed"
    return "pending" if n <= retries else "unconfirmed"


def looks_slower(f: Mapping[str, Any], max_slowdown: float) -> bool:
    """A first measurement worth measuring again: a decisive comparison flags it, or its median ratio is
    above ``max_slowdown`` without the rank test agreeing (yet)."""
    ratios = {"raw": f.get("raw_ratio"), "normalized": f.get("normalized_ratio"), "peers": f.get("peers_ratio")}
    return bool(f.get("flags")) or any((ratios.get(c) or 0) > max_slowdown for c in f.get("decisive") or [])


def pool(timings: Sequence[Mapping[str, Any] | None]) -> dict[str, Any] | None:
    """The round medians of several measurements as one timing (one sample per round), for the rank test
    on all of a block's (or the reference's) measurements together; None if any is missing."""
    values: list[float] = []
    for t in timings:
        v = round_values(t)
        if not v:
            return None
        values += v
    return {"samples_ms": values, "round_sizes": [1] * len(values)}


# -- how steady the machine was ------------------------------------------------------------------------


STEADY_SPREAD = 1.10  # largest max/min of a baseline's round medians that lets a 25% slowdown stand out


def round_spread(doc: Mapping[str, Any]) -> dict[str, float]:
    """How steady a timed baseline was: for the reference workload and every timed entry, the largest round
    median over the smallest. On a quiet machine this is a few percent; when the machine's speed changes
    during the snapshot (another tenant of a virtual machine, frequency scaling) it can be 1.4, and then a
    slowdown smaller than that cannot be told from the machine's own drift."""
    out: dict[str, float] = {}
    timed = [(REFERENCE_KEY, (doc.get("reference") or {}).get("timing"))] + [
        (e["key"], e.get("timing")) for e in doc.get("entries", []) if e.get("status") == "ok"]
    for key, timing in timed:
        meds = (timing or {}).get("round_medians_ms") or []
        if len([m for m in meds if m > 0]) >= 2:
            out[key] = spread_of(meds)
    return out


def spread_of(values: Sequence[float]) -> float:
    """Largest over smallest of the positive values (1.0 for fewer than two)."""
    vals = [v for v in values if v > 0]
    return max(vals) / min(vals) if len(vals) >= 2 else 1.0


def unsteady(doc: Mapping[str, Any], limit: float = STEADY_SPREAD) -> str | None:
    """One line when a timed baseline's rounds spread more than ``limit`` (see :func:`round_spread`)."""
    spread = round_spread(doc)
    bad = {k: v for k, v in spread.items() if v > limit}
    if not bad:
        return None
    worst = ", ".join(f"{k} x{v:.2f}" for k, v in sorted(bad.items(), key=lambda kv: -kv[1])[:3])
    return (f"the machine's speed changed while the baseline was measured (round medians spread {worst}, more than "
            f"x{limit:.2f}): slowdowns smaller than that cannot be told from drift; take the snapshot again on a "
            f"quiet machine")
