"""``check``: validate a baseline, count and measure again what it holds, and compare (:mod:`.compare`).

Latency is compared only between runs on the same device unless ``normalize`` is set; a block that looks
slower is measured again (up to ``retries`` times) and fails only when :func:`~attnbench.gate.compare.confirm`
says so; a pass whose rounds spread more than :data:`~attnbench.gate.compare.STEADY_SPREAD` is marked
inconclusive. The report is a plain dict (schema :data:`REPORT_SCHEMA`)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, replace
from typing import Any

from attnbench import bench, cases
from attnbench.errors import UsageError
from attnbench.gate.baseline import environment, snapshot_problem
from attnbench.gate.cases import resolve_entry, select, static_record
from attnbench.gate.compare import (
    STEADY_SPREAD,
    compare_config,
    compare_flops,
    compare_memory,
    compare_params,
    confirm,
    current_rounds,
    device_differences,
    finding,
    latency_finding,
    looks_slower,
    memory_comparable,
    peer_factors,
    peers_for,
    pool,
    required,
    round_spread,
    round_values,
    spread_of,
    unsteady,
)
from attnbench.gate.rounds import Timed, batch_of, measure, reference_target
from attnbench.gate.settings import REFERENCE_KEY, CheckOptions, Progress, TimingPlan
from attnbench.measuring import device as dev
from attnbench.measuring.device import torch_threads
from attnbench.measuring.stats import false_alarm_rate, median, min_p_value
from attnbench.text import clean

REPORT_SCHEMA = "attnbench.check/1"


def _static_findings(entry: Mapping[str, Any], case: cases.Case) -> list[dict[str, Any]]:
    key = entry["key"]
    out = []
    out += compare_config(key, entry["input_shape"], entry.get("options") or {}, case.shape.as_list(), dict(case.options))
    now = static_record(case, key)
    out.append(finding(key, **compare_params(entry["params"], now["params"])))
    out.append(finding(key, **compare_flops(entry["flops"]["cells"], now["flops"]["cells"])))
    return out


def _samples(t: Mapping[str, Any] | Timed | None) -> dict[str, Any] | None:
    """``{"samples_ms", "round_sizes", "round_medians_ms"}`` of a stored timing dict or a :class:`Timed`;
    None if absent."""
    if t is None:
        return None
    if isinstance(t, Timed):
        return ({"samples_ms": t.samples_ms, "round_sizes": t.round_sizes, "round_medians_ms": t.round_medians_ms}
                if t.samples_ms else None)
    return ({"samples_ms": t["samples_ms"], "round_sizes": t.get("round_sizes"), "round_medians_ms": t.get("round_medians_ms")}
            if t.get("samples_ms") else None)


def check(baseline: Mapping[str, Any], opts: CheckOptions, progress: Progress | None = None) -> dict[str, Any]:
    """Validate ``baseline`` (:mod:`attnbench.gate.schema`), re-measure what it holds and compare;
    returns the report (``passed`` False on any regression; ``not_compared`` lists what a timed baseline
    held that this check did not compare)."""
    opts.check()
    why = snapshot_problem(baseline)
    if why:
        raise UsageError(f"baseline is malformed: {why}")
    if opts.load_control is None:  # resolved here, so the report's options say which it was
        device = opts.device or (baseline.get("settings") or {}).get("device")
        opts = replace(opts, load_control=default_load_control(device))
    findings: list[dict[str, Any]] = []
    by_key: dict[str, cases.Case] = {}
    for entry in baseline["entries"]:
        key = entry["key"]
        if progress:
            progress(f"counting {key}")
        try:
            case = resolve_entry(entry)
        except UsageError as e:  # validated above, so only if the registry changed meanwhile
            raise UsageError(f"baseline entry {clean(key)} is malformed: {e}") from None
        by_key[key] = case
        findings += _static_findings(entry, case)
    findings += _new_entries(baseline)

    timing_info: dict[str, Any] = {"compared": False}
    not_compared: list[str] = []
    if baseline["timed"] and not opts.flops_only:
        timing_info = _check_timing(baseline, by_key, opts, findings, progress)
        not_compared = list(timing_info.get("not_compared") or [])
    elif baseline["timed"]:
        timing_info["reason"] = "--flops-only"
        not_compared = ["latency and memory (--flops-only)"]
    else:
        timing_info["reason"] = "the baseline holds parameters and FLOPs only (no timing)"

    failures = [f for f in findings if f["failed"]]
    return {
        "schema": REPORT_SCHEMA,
        "passed": not failures,
        "not_compared": not_compared,
        "baseline": {"created_utc": baseline.get("created_utc"), "timed": baseline["timed"],
                     "entries": len(baseline["entries"]), "environment": baseline.get("environment"),
                     "settings": baseline.get("settings")},
        "environment": environment(),
        "options": asdict(opts),
        "timing": timing_info,
        "summary": {
            "entries": len(baseline["entries"]),
            "failures": len(failures),
            "not_compared": not_compared,
            "by_status": _count(f"{f['check']}:{f['status']}" for f in findings),
        },
        "findings": findings,
    }


def default_load_control(device: str | None) -> bool:
    """Load control is on by default on a CPU (other processes share its cores) and off on CUDA: there the
    reference workload's round medians moved by up to 16% between unchanged checks on an idle H200 while
    the block's moved by under 0.5%; with the slowdown also asked for relative to it, 4 of 10 runs with
    cs 10% slower passed although their raw ratios (x1.104-x1.106) were those of the runs caught
    (``results/cuda-nvidia-h200/gpu-check*/``). A whole-GPU slowdown (throttling, another
    process) is then a raw slowdown, and re-measuring (``retries``) is what tells a passing one apart."""
    return not str(device or "cpu").startswith("cuda")


def _count(values: Iterator[str] | Sequence[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return dict(sorted(out.items()))


def _new_entries(baseline: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Cases the baseline's selection covers today but the baseline lacks (a note, not a failure)."""
    sel = baseline.get("selection") or {}
    try:
        items = select(sel.get("modules"), sel.get("presets"), sel.get("sizes"))
    except (UsageError, TypeError, AttributeError):
        return []
    have = {e["key"] for e in baseline["entries"]}
    return [finding(it.key, check="entry", status="new", failed=False,
                     detail="not in the baseline; re-run `attnbench snapshot` to include it")
            for it in items if it.key not in have]


def _mismatch(differences: Sequence[str]) -> str:
    return f"the baseline was timed on another device ({clean('; '.join(differences))})"


def _check_timing(baseline: Mapping[str, Any], by_key: Mapping[str, cases.Case], opts: CheckOptions,
                  findings: list[dict[str, Any]], progress: Progress | None) -> dict[str, Any]:
    s = dict(baseline["settings"])
    plan = TimingPlan(device=opts.device or s["device"], dtype=s["dtype"], threads=s.get("threads"),
                      rounds=opts.rounds or s["rounds"], round_s=opts.round_s or s["round_s"],
                      clock=s.get("clock", "wall"), malloc=s.get("malloc", "system"),
                      min_reps=s.get("min_reps", TimingPlan.min_reps), timing=s.get("timing", "auto"),
                      max_warmup_s=s.get("max_warmup_s", TimingPlan.max_warmup_s)).check()
    old_fp = baseline["fingerprint"]
    with torch_threads(plan.threads):
        new_fp = dev.fingerprint(plan.device)
        differences = device_differences(old_fp, new_fp)
        if differences and not opts.normalize and not opts.allow_device_mismatch:
            raise UsageError(f"{_mismatch(differences)}, so its latency cannot be compared here; pass --normalize to compare "
                             f"it relative to the reference workload, --allow-device-mismatch to check without latency, "
                             f"or --flops-only")
        latency_ok = not differences or opts.normalize
        memory_ok = memory_comparable(old_fp, new_fp)
        ref_entry = baseline.get("reference") or {}
        ref_old = _samples(ref_entry.get("timing")) if ref_entry.get("status") == "ok" else None
        info: dict[str, Any] = {"compared": latency_ok or memory_ok, "plan": asdict(plan), "fingerprint": new_fp,
                                "device_differences": differences, "latency_compared": latency_ok,
                                "memory_compared": memory_ok, "not_compared": []}
        info["baseline_round_spread"] = round_spread(baseline)
        info["baseline_unsteady"] = unsteady(baseline)
        if not latency_ok:
            info["not_compared"].append(f"latency: {_mismatch(differences)}")
        if not memory_ok:
            info["not_compared"].append(f"memory: {_mismatch(differences)}")
        if opts.normalize and not ref_old:
            raise UsageError("--normalize needs the reference workload's samples in the baseline, which has none")
        entries = {e["key"]: e for e in baseline["entries"]}
        timed = [k for k, e in entries.items() if k in by_key and e.get("status") == "ok"]
        for k, e in entries.items():
            if e.get("status") not in (None, "ok"):
                findings.append(finding(k, check="latency", status="skipped", failed=False,
                                         detail=f"not timed in the baseline ({clean(e['status'])})"))
        if not timed:
            info.update(compared=False, latency_compared=False, memory_compared=False,
                        reason="no entry of the baseline was timed", not_compared=[])
            return info
        if latency_ok:
            rounds, note = current_rounds(int(s["rounds"]), opts.alpha, opts.rounds)
            plan = replace(plan, rounds=rounds).check()
            info["plan"] = asdict(plan)
            info["rank_test"] = {
                "unit": "median of each measurement round", "baseline_rounds": int(s["rounds"]), "current_rounds": rounds,
                "alpha": opts.alpha, "min_p_value": min_p_value(rounds, int(s["rounds"])),
                "false_alarm_rate": false_alarm_rate(rounds, int(s["rounds"]), opts.alpha), "note": note}
        if not (latency_ok or memory_ok):
            for k in timed:
                findings.append(finding(k, check="latency", status="skipped", failed=False,
                                         detail=f"{_mismatch(differences)}; pass --normalize to compare"))
            return info

        targets = [(REFERENCE_KEY, reference_target(), 1)] + [(k, bench.block_target(by_key[k]), batch_of(by_key[k])) for k in timed]
        # latency not comparable: one short round only, for the memory figures
        mplan = plan if latency_ok else replace(plan, rounds=1, round_s=0.01, min_reps=2)
        results = measure(targets, mplan, new_fp, progress, memory=memory_ok)
        ref_new = _samples(results[REFERENCE_KEY])
        info["reference_ms"] = {"baseline_median": median(round_values(ref_old)) if ref_old else None,
                                "current_median": median(round_values(ref_new)) if ref_new else None}
        if opts.normalize and not ref_new:
            raise UsageError(f"the reference workload failed in this run ({clean(results[REFERENCE_KEY].status)}); cannot --normalize")
        # Peers (under load control only: elsewhere they decide nothing, and re-measuring them would be
        # wasted): each block is also compared relative to how fast up to MAX_PEERS other blocks (the
        # nearest in baseline time) ran in the same rounds, the baseline's rounds and these alike.
        base_rounds = {k: round_values(_samples(entries[k]["timing"])) for k in timed}
        base_med = {k: median(v) for k, v in base_rounds.items() if v}
        ok_now = {k: base_med[k] for k in timed if results[k].status == "ok" and k in base_med}
        use_peers = latency_ok and opts.load_control is not False and not opts.normalize
        peers_of = {k: peers_for(k, ok_now) if use_peers else [] for k in ok_now}

        def factors(rounds: dict[str, list[float] | None], k: str) -> list[float] | None:
            return peer_factors(rounds, base_med, peers_of.get(k) or [])

        base_f = {k: factors(base_rounds, k) for k in ok_now}
        now_rounds = {k: round_values(_samples(results[k])) for k in ok_now}
        latency: dict[str, dict[str, Any]] = {}
        for k in timed:
            res = results[k]
            if res.status != "ok":
                findings.append(finding(k, check="latency", status="error", failed=True,
                                         detail=f"timed in the baseline, fails now: {res.status}"))
                continue
            if latency_ok:
                latency[k] = latency_finding(k, _samples(entries[k]["timing"]), ref_old, _samples(res), ref_new, opts,
                                             peers=(base_f.get(k), factors(now_rounds, k)))
                latency[k]["peers"] = peers_of.get(k) or []
            else:
                findings.append(finding(k, check="latency", status="skipped", failed=False,
                                         detail=f"{_mismatch(differences)}; not compared (--allow-device-mismatch)"))
            if memory_ok:
                mem = compare_memory((entries[k].get("memory") or {}).get("peak_bytes"), res.peak_bytes, opts.memory_tolerance)
                mem["metric"] = res.memory_metric
                findings.append(finding(k, **mem))

        # A block that looks slower (flagged by a decisive comparison, or a median ratio above
        # max_slowdown) is measured again, up to opts.retries times, and the round medians of all its
        # measurements are compared together (pool); see confirm() for the verdict. A slowdown caused by
        # the block itself persists, a burst of load from other processes rarely does.
        suspects = [k for k, f in latency.items() if looks_slower(f, opts.max_slowdown)]
        base_of = {k: _samples(entries[k]["timing"]) for k in suspects}
        # (block, reference, peer factors) per measurement
        measured_k = {k: [(_samples(results[k]), ref_new, factors(now_rounds, k))] for k in suspects}
        pooled: dict[str, dict[str, Any]] = {}

        def flags_of(k: str) -> list[list[str]]:
            return [a["flags"] for a in latency[k]["attempts"]]

        def judge(k: str) -> str:
            blocks, refs, fs = ([m[i] for m in measured_k[k]] for i in range(3))
            pooled_f = [x for f in fs for x in f] if all(fs) else None  # type: ignore[union-attr]
            pooled[k] = latency_finding(k, base_of[k], ref_old, pool(blocks), pool(refs) if all(refs) else None, opts,
                                        peers=(base_f.get(k), pooled_f))
            return confirm(flags_of(k), latency[k]["decisive"], opts.retries, pooled[k]["flags"])

        for k in suspects:
            latency[k]["attempts"] = [_attempt(latency[k])]
        for attempt in range(opts.retries):
            pending = [k for k in suspects if judge(k) == "pending"]
            if not pending:
                break
            with_peers = list(dict.fromkeys(pending + [b for k in pending for b in peers_of.get(k) or []]))
            again = measure([(REFERENCE_KEY, reference_target(), 1)] + [(k, bench.block_target(by_key[k]), batch_of(by_key[k])) for k in with_peers],
                            plan, new_fp, (lambda m: progress(f"re-measuring ({attempt + 1}) {m}")) if progress else None, memory=False)
            ref_again = _samples(again[REFERENCE_KEY]) or ref_new
            again_rounds = {b: round_values(_samples(again[b])) if again[b].status == "ok" else None for b in with_peers}
            for k in pending:
                if again[k].status != "ok":  # counted as a measurement that shows no slowdown
                    latency[k]["attempts"].append({"status": clean(again[k].status), "flags": []})
                    continue
                f_again = factors(again_rounds, k)
                f = latency_finding(k, base_of[k], ref_old, _samples(again[k]), ref_again, opts,
                                    peers=(base_f.get(k), f_again))
                latency[k]["attempts"].append(_attempt(f))
                measured_k[k].append((_samples(again[k]), ref_again, f_again))
        for k in suspects:
            f, flags = latency[k], flags_of(k)
            verdict = judge(k)
            n = len(flags)
            pf = pooled[k]
            f["pooled"] = {"measurements": len(measured_k[k]), "rounds": pf["n_current"], "flags": pf["flags"],
                           **{name: pf[name] for name in COMPARED}}
            if verdict == "ok":
                continue
            if verdict == "regression":
                together = len(pf["flags"]) >= required(f["decisive"])
                f.update(status="regression", failed=True,
                         detail=("slower (no re-measurement)" if n == 1
                                 else f"slower over {n} measurements ({pf['n_current']} rounds together)" if together
                                 else f"slower in each of {n} measurements, in one by {required(f['decisive'])} comparisons"))
            else:
                why = ", ".join(sorted({c for fl in flags for c in fl})) or f"median ratio above {opts.max_slowdown:g}"
                f.update(status="unconfirmed", failed=False,
                         detail=f"looked slower ({why}) but not over {n} measurement{'s' if n > 1 else ''} together: "
                                f"noise or machine load, not counted")
        # A block that passes although its rounds (in the baseline or now) spread more than a slowdown worth
        # catching has not been shown to be unchanged: the verdict says so instead of passing silently.
        base_spread = info["baseline_round_spread"]
        ref_now = spread_of(results[REFERENCE_KEY].round_medians_ms)
        info["inconclusive"] = []
        for k, f in latency.items():
            spreads = {"baseline": base_spread.get(k, 1.0), "current": spread_of(results[k].round_medians_ms)}
            if f["mode"] != "raw":  # the reference's rounds decide too
                spreads.update(reference_baseline=base_spread.get(REFERENCE_KEY, 1.0), reference_current=ref_now)
            f["round_spread"] = spreads
            worst = max(spreads.values())
            if not f["failed"] and worst > STEADY_SPREAD:
                f["inconclusive"] = True
                info["inconclusive"].append(f"{k} (round medians spread x{worst:.2f})")
        findings += latency.values()
        info["first_pass_alarms"] = sum(1 for f in latency.values()
                                        if len(f.get("attempts", [{}])[0].get("flags") or []) >= required(f["decisive"]))
        info["suspects"] = len(suspects)
    return info


COMPARED = ("raw_ratio", "raw_p_slower", "normalized_ratio", "normalized_p_slower", "peers_ratio", "peers_p_slower")


def _attempt(f: Mapping[str, Any]) -> dict[str, Any]:
    return {k: f.get(k) for k in ("status", "flags", *COMPARED, "baseline_ms", "current_ms", "n_current")}
