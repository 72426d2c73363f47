"""Validate the CI performance gate on this machine: false alarms on unchanged code, detections of an
injected slowdown of two sizes, idle or under a CPU hog.

1. ``attnbench snapshot`` writes one timed baseline of a small, fast block set;
2. ``attnbench check`` runs ``--runs`` times against it with the code unchanged (any failure is a
   false alarm), ``--inject-runs`` times with ``ATTNBENCH_INJECT_SLOWDOWN`` set to ``--inject`` (a
   test-only hook in ``attnbench/bench.py``; default: block cs 25% slower) and ``--small-inject-runs``
   times with ``--small-inject`` (default cs 10% slower, at the ``--max-slowdown 1.10`` threshold: the
   detection rate there is what it is, and is reported, not asserted). A detection is a failing check
   that names the injected block's latency. The kinds of run are interleaved, so that changes in the
   machine's load over the session fall on all of them;
3. ``--hog N`` starts N busy background processes (one core and memory bandwidth each): with
   ``--hog-mode always`` during every run (validation under a CPU hog), with ``alternate`` during every
   other block of 3 runs (changing load);
4. a JSON summary (counts and rates per kind, the false-alarm rate the check itself states for its rank
   test, every run's ratios and p-values, the machine's load) is written to ``--out-dir``/``NAME.json``.

The full validation at the gate's default settings (10 rounds of 0.15 s; about 26 minutes each on a 2-core
machine, re-measurements included; run them one after the other, on an otherwise idle machine; they
replace the summaries in ``results/gate-validation/``)::

    python scripts/validate_gate.py --runs 20 --inject-runs 10 --small-inject-runs 10 --modules cs,nl \
        --sizes C=96,T=8,H=20,W=20 --rounds 10 --round-s 0.15 --name cpu-amd-epyc-load-alpha
    python scripts/validate_gate.py --runs 20 --inject-runs 10 --small-inject-runs 10 --modules cs,nl \
        --sizes C=96,T=8,H=20,W=20 --rounds 10 --round-s 0.15 --hog 1 --hog-mode always --name cpu-amd-epyc-load-alpha-hog

(The other summaries there are earlier rules: ``--rounds 5 --round-s 0.3`` in ``*-default*``, then
``rounds10*``, ``pooled*``, ``pooled-or-consistent*``; each holds the command that made it.)

``--rejudge SUMMARY... [--load-alphas 0.01,0.05]`` measures nothing: it re-judges the recorded measurements
of summaries at other levels through the gate's own verdict (:func:`rejudge`; approximate, see there).

A smoke test of the script itself (about a minute): ``--runs 1 --inject-runs 1 --small-inject-runs 0
--rounds 5 --round-s 0.05 --out-dir /tmp/gate-smoke``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _run(cmd: list[str], env: dict[str, str] | None = None) -> tuple[int, str, str, float]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=900)
    return proc.returncode, proc.stdout, proc.stderr, time.perf_counter() - start


KINDS = ("clean", "injected", "small")


def _schedule(clean: int, injected: int, small: int = 0) -> list[str]:
    """``clean``, ``injected`` and ``small`` (injected, smaller slowdown) runs spread evenly over the session."""
    slots = []
    for kind, n in zip(KINDS, (clean, injected, small)):
        slots += [((i + 0.5) / n, KINDS.index(kind), kind) for i in range(n)]
    return [kind for _, _, kind in sorted(slots)]


HOG = """
import torch
torch.set_num_threads(1)
a = torch.randn(8 * 2**20)
b = torch.empty_like(a)
m = torch.randn(256, 256)
while True:  # memory traffic (64 MiB copies) and compute, like another job on the machine
    b.copy_(a)
    a.mul_(1.0000001)
    m = torch.tanh(m @ m)
"""


def _hogs(n: int) -> list[subprocess.Popen]:
    """``n`` busy background processes (the CPU hog)."""
    return [subprocess.Popen([sys.executable, "-c", HOG], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for _ in range(n)]


def _stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.wait(timeout=30)


def _latency_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    from attnbench.gate.compare import required

    rows = []
    for f in report.get("findings", []):
        if f["check"] != "latency" or "ratio" not in f:
            continue
        rows.append({
            "key": f["key"], "status": f["status"], "failed": f["failed"], "mode": f.get("mode"),
            "raw_ratio": f.get("raw_ratio"), "raw_p_slower": f.get("raw_p_slower"),
            "normalized_ratio": f.get("normalized_ratio"), "normalized_p_slower": f.get("normalized_p_slower"),
            "peers_ratio": f.get("peers_ratio"), "peers_p_slower": f.get("peers_p_slower"), "peers": f.get("peers"),
            "baseline_ms": f.get("baseline_ms"), "current_ms": f.get("current_ms"), "n_current": f.get("n_current"),
            "decisive": f.get("decisive"), "flags": f.get("flags"), "detail": f.get("detail"),
            "measurements": len(f.get("attempts") or [None]),
            # the first measurement alone was a regression: with --retries 0 this run would have failed
            "first_pass_alarm": bool(f.get("attempts")) and len(f["attempts"][0]["flags"]) >= required(f["decisive"]),
            "attempts": f.get("attempts"),
            "pooled": f.get("pooled"),  # all measurements' rounds together, which decide a suspect
        })
    return rows


def classify(i: int, kind: str, inject: str | None, rc: int, report: dict[str, Any]) -> dict[str, Any]:
    """One check run: what it flagged, and whether that is a detection (an injected run failing on the
    injected block's latency) or a false alarm (an unchanged run failing, or another block flagged)."""
    target = inject.partition(":")[0] if inject else None
    lat = _latency_rows(report)
    flagged = sorted(r["key"] for r in lat if r["failed"])
    other_failures = sorted(f"{f['key']}:{f['check']}:{f['status']}" for f in report.get("findings", [])
                            if f["failed"] and f["check"] != "latency")
    return {
        "i": i, "kind": kind, "inject": inject, "exit_code": rc, "flagged": flagged, "other_failures": other_failures,
        "first_pass_alarms": sorted(r["key"] for r in lat if r["first_pass_alarm"]),
        "re_measured": sorted(r["key"] for r in lat if r["measurements"] > 1),
        "detected": target is not None and rc == 1 and any(k.split("@")[0] == target for k in flagged),
        "first_pass_detected": target is not None and any(r["key"].split("@")[0] == target and r["first_pass_alarm"] for r in lat),
        "false_alarm": (target is None and rc != 0) or (target is not None and any(k.split("@")[0] != target for k in flagged)),
        "latency": lat,
    }


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts and rates per kind of run (see :func:`classify`)."""
    def rate(hits: int, n: int) -> float | None:
        return round(hits / n, 4) if n else None

    clean = [r for r in runs if r["kind"] == "clean"]
    out: dict[str, Any] = {
        "clean_runs": len(clean),
        "false_alarms": sum(r["false_alarm"] for r in clean),
        "false_alarm_rate": rate(sum(r["false_alarm"] for r in clean), len(clean)),
        "clean_runs_with_background_load": sum(bool(r.get("background_load")) for r in clean),
        "false_alarms_with_background_load": sum(r["false_alarm"] for r in clean if r.get("background_load")),
        "clean_runs_with_first_pass_alarm": sum(bool(r["first_pass_alarms"]) for r in clean),
        "clean_runs_with_re_measurement": sum(bool(r["re_measured"]) for r in clean),
    }
    for kind, prefix in (("injected", ""), ("small", "small_")):
        rs = [r for r in runs if r["kind"] == kind]
        out.update({
            f"{prefix}injected_runs": len(rs),
            f"{prefix}detections": sum(r["detected"] for r in rs),
            f"{prefix}detection_rate": rate(sum(r["detected"] for r in rs), len(rs)),
            f"{prefix}injected_runs_detected_in_first_pass": sum(r["first_pass_detected"] for r in rs),
            f"{prefix}injected_runs_with_other_blocks_flagged": sum(r["false_alarm"] for r in rs),
        })
    out["usage_or_internal_errors"] = sum(r["exit_code"] not in (0, 1) for r in runs)
    return out


def _flags(m: dict[str, Any], decisive: list[str], alpha: float, load_alpha: float, max_slowdown: float) -> list[str]:
    """The decisive comparisons that call one recorded measurement (or the pooled rounds) a regression at
    these levels, from its recorded p-values and ratios, by the gate's own :func:`~attnbench.gate.compare.level`
    and :func:`~attnbench.gate.compare.flagged`."""
    from attnbench.gate.compare import flagged, level
    from attnbench.gate.settings import CheckOptions

    opts = CheckOptions(alpha=alpha, load_alpha=load_alpha, max_slowdown=max_slowdown, normalize="raw" not in decisive)
    slower = {c: m.get(f"{c}_p_slower") is not None and m[f"{c}_p_slower"] <= level(c, opts)
              and (m.get(f"{c}_ratio") or 0) > max_slowdown for c in decisive}
    return flagged(decisive, slower, m.get("raw_ratio") or 0)


def rejudge(summary: dict[str, Any], alpha: float, load_alpha: float, max_slowdown: float = 1.10) -> dict[str, Any]:
    """The verdicts a summary's recorded measurements get at other levels, through the gate's own
    :func:`~attnbench.gate.compare.confirm`: each suspect's measurements and pooled rounds re-flagged from
    their recorded p-values and ratios. Approximate: the runs stopped re-measuring where the levels they
    ran with said so, so a verdict that would now want another measurement (``pending``) counts as a pass,
    and a block that was no suspect stays one that passed (it had no median ratio above max_slowdown, so
    no level flags it)."""
    from attnbench.gate.compare import confirm

    runs = []
    for r in summary["runs"]:
        target = r["inject"].partition(":")[0] if r.get("inject") else None
        failed = []
        for row in r["latency"]:
            if not row.get("attempts") or not row.get("pooled"):
                continue
            dec = list(row["decisive"])
            flags = [_flags(a, dec, alpha, load_alpha, max_slowdown) if a.get("raw_ratio") is not None else []
                     for a in row["attempts"]]
            pooled = _flags(row["pooled"], dec, alpha, load_alpha, max_slowdown)
            if confirm(flags, dec, len(flags) - 1, pooled) == "regression":
                failed.append(row["key"].split("@")[0])
        runs.append({"kind": r["kind"], "detected": target in failed,
                     "false_alarm": any(k != target for k in failed)})
    out = {"alpha": alpha, "load_alpha": load_alpha, "max_slowdown": max_slowdown}
    for kind in KINDS:
        rs = [r for r in runs if r["kind"] == kind]
        key = "false_alarms" if kind == "clean" else f"{kind}_detections"
        out[key] = f"{sum(r['false_alarm' if kind == 'clean' else 'detected'] for r in rs)}/{len(rs)}"
    out["other_blocks_flagged"] = sum(r["false_alarm"] for r in runs if r["kind"] != "clean")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20, help="check runs of unchanged code")
    ap.add_argument("--inject-runs", type=int, default=10, help="check runs with the injected slowdown")
    ap.add_argument("--inject", default="cs:0.25", help="NAME:FRACTION for ATTNBENCH_INJECT_SLOWDOWN")
    ap.add_argument("--small-inject-runs", type=int, default=0, help="check runs with the smaller injected slowdown")
    ap.add_argument("--small-inject", default="cs:0.10", help="NAME:FRACTION of the smaller injected slowdown")
    ap.add_argument("--modules", default="cs,nl")
    ap.add_argument("--presets", default=None, help="presets (default: each block's first, at --sizes)")
    ap.add_argument("--sizes", default="C=64,T=8,H=20,W=20", help="comma list of SIZE=VALUE, '' for the presets' shapes")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--clock", default="auto", choices=("auto", "wall", "cpu"))
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--round-s", type=float, default=0.4)
    ap.add_argument("--check-args", default="", help="extra arguments for every `attnbench check`, space separated")
    ap.add_argument("--out-dir", default="results/gate-validation")
    ap.add_argument("--name", default=None, help="file name stem of the summary (default: device slug and clock)")
    ap.add_argument("--hog", type=int, default=0,
                    help="background processes that load the machine (one core and memory bandwidth each)")
    ap.add_argument("--hog-mode", default="alternate", choices=("always", "alternate"),
                    help="always: the hog runs during every check run; alternate: during every other block of 3 runs")
    ap.add_argument("--rejudge", nargs="+", metavar="SUMMARY", default=None,
                    help="measure nothing: re-judge these summaries' recorded measurements at --alpha and each --load-alphas")
    ap.add_argument("--alpha", type=float, default=0.01, help="with --rejudge")
    ap.add_argument("--load-alphas", default="0.01,0.05", help="with --rejudge: comma list")
    args = ap.parse_args(argv)
    if args.rejudge:
        for path in args.rejudge:
            summary = json.loads(Path(path).read_text())
            for level in (float(x) for x in args.load_alphas.split(",")):
                print(json.dumps({"summary": os.path.basename(path), **rejudge(summary, args.alpha, level)}))
        return 0
    for name in ("runs", "inject_runs", "small_inject_runs", "hog"):
        if getattr(args, name) < 0:
            ap.error(f"--{name.replace('_', '-')} must be >= 0")
    for spec in (args.inject, args.small_inject):
        name, _, fraction = spec.partition(":")
        try:
            ok = bool(name) and float(fraction) > 0
        except ValueError:
            ok = False
        if not ok:
            ap.error(f"an injection is NAME:FRACTION with FRACTION > 0, got {spec!r}")

    out_dir = ROOT / args.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    py = [sys.executable, "-m", "attnbench"]
    sizes = []
    for pair in (p for p in args.sizes.split(",") if p.strip()):
        key, _, value = pair.partition("=")
        sizes += [f"--{key.strip()}", value.strip()]
    snap = py + ["snapshot", "--modules", args.modules, "--device", args.device, "--clock", args.clock,
                 "--rounds", str(args.rounds), "--round-s", str(args.round_s), *sizes]
    if args.presets:
        snap += ["--presets", args.presets]
    if args.threads is not None:
        snap += ["--threads", str(args.threads)]

    from attnbench import gate
    from attnbench.measuring.device import device_slug, fingerprint

    stem = args.name or f"{device_slug(fingerprint(args.device))}-{args.clock}"
    baseline = out_dir / f"{stem}.baseline.json"
    rc, out, err, secs = _run(snap + ["--out", str(baseline)])
    print(f"snapshot: rc={rc} {secs:.1f}s {out.strip()}", flush=True)
    if rc != 0:
        print(err, file=sys.stderr)
        return 2

    check = py + ["check", "--baseline", str(baseline), "--json", *args.check_args.split()]
    injections = {"clean": None, "injected": args.inject, "small": args.small_inject}
    runs: list[dict[str, Any]] = []
    started = time.time()
    hogs: list[subprocess.Popen] = []
    rank_test: dict[str, Any] | None = None
    try:
        for i, kind in enumerate(_schedule(args.runs, args.inject_runs, args.small_inject_runs)):
            loaded = bool(args.hog) and (args.hog_mode == "always" or (i // 3) % 2 == 1)
            if loaded and not hogs:
                hogs = _hogs(args.hog)
                time.sleep(1)
            elif not loaded and hogs:
                _stop(hogs)
                hogs = []
            env = dict(os.environ)
            env.pop("GITHUB_STEP_SUMMARY", None)
            env.pop("ATTNBENCH_INJECT_SLOWDOWN", None)
            if injections[kind]:
                env["ATTNBENCH_INJECT_SLOWDOWN"] = injections[kind]
            load_before = os.getloadavg()[0]
            rc, out, err, secs = _run(check, env)
            try:
                report = json.loads(out)
            except json.JSONDecodeError:
                report = {}
            rank_test = rank_test or (report.get("timing") or {}).get("rank_test")
            run = classify(i, kind, injections[kind], rc, report)
            run.update(background_load=args.hog if loaded else 0, seconds=round(secs, 1), load_before=load_before,
                       load_after=os.getloadavg()[0], stderr=err.strip()[-400:] if rc not in (0, 1) else "")
            runs.append(run)
            ratios = " ".join(f"{r['key'].split('@')[0]}:{r['status']}:raw x{r['raw_ratio']:.3f}"
                              + (f"/ref x{r['normalized_ratio']:.3f}" if r["normalized_ratio"] is not None else "")
                              + (f"/peers x{r['peers_ratio']:.3f}" if r["peers_ratio"] is not None else "")
                              + (f"[{r['measurements']}m]" if r["measurements"] > 1 else "") for r in run["latency"])
            print(f"[{i + 1:2d}] {kind:8s}{' +hog' if loaded else '     '} rc={rc} {secs:5.1f}s load={load_before:.1f} {ratios}"
                  + (f" {run['stderr']}" if run["stderr"] else ""), flush=True)
    finally:
        _stop(hogs)

    summary = {
        "what": "attnbench CI gate validation: repeated `check` runs of unchanged code (false alarms) and "
                "with injected slowdowns of two sizes (detections), against one timed baseline",
        "snapshot_command": " ".join(snap[2:] + ["--out", os.path.relpath(baseline, ROOT)]).replace(sys.executable, "python"),
        "check_command": " ".join(["attnbench"] + check[3:]).replace(str(ROOT) + "/", ""),
        "validation_command": " ".join(["python", "scripts/validate_gate.py", *(sys.argv[1:] if argv is None else argv)]),
        "baseline_settings": json.loads(baseline.read_text()).get("settings"),
        "baseline_round_spread": {k: round(v, 3) for k, v in gate.round_spread(json.loads(baseline.read_text())).items()},
        "rank_test_as_stated_by_check": rank_test,
        "inject": args.inject,
        "small_inject": args.small_inject,
        "background_load": (f"{args.hog} busy process(es) " + ("during every check run (not the snapshot)" if args.hog_mode == "always"
                            else "during every other block of 3 runs")) if args.hog else "none added",
        **summarize(runs),
        "seconds": round(time.time() - started, 1),
        "machine": {"logical_cores": os.cpu_count(), "load_avg_at_end": os.getloadavg()},
        "runs": runs,
    }
    path = out_dir / f"{stem}.json"
    from attnbench.store.files import atomic_write

    atomic_write(path, json.dumps(summary, indent=1) + "\n")
    print(f"false alarms: {summary['false_alarms']}/{summary['clean_runs']} (clean runs whose first measurement alone "
          f"would have failed: {summary['clean_runs_with_first_pass_alarm']}, re-measured: "
          f"{summary['clean_runs_with_re_measurement']}); detections at {args.inject}: {summary['detections']}/"
          f"{summary['injected_runs']}; at {args.small_inject}: {summary['small_detections']}/{summary['small_injected_runs']}; "
          f"errors: {summary['usage_or_internal_errors']}; {summary['seconds']:.0f}s; summary: {os.path.relpath(path, ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
