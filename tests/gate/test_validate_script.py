"""scripts/validate_gate.py: its schedule and its summary of false alarms and detections."""

import importlib.util

import pytest

from .helpers import ROOT


def _validate_script():
    spec = importlib.util.spec_from_file_location("validate_gate", ROOT / "scripts" / "validate_gate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_validation_script_schedule_and_summary() -> None:
    v = _validate_script()
    plan = v._schedule(4, 2, 2)
    assert sorted(plan) == sorted(["clean"] * 4 + ["injected"] * 2 + ["small"] * 2)
    assert plan[:3] != ["clean"] * 3  # interleaved, not one kind after another
    def report(failed_keys):
        return {"findings": [{"key": k, "check": "latency", "status": "regression" if k in failed_keys else "ok",
                              "failed": k in failed_keys, "ratio": 1.0, "decisive": ["raw"],
                              "attempts": [{"flags": ["raw"]}] if k in failed_keys else None}
                             for k in ("cs@banet", "nl@banet")]}
    runs = [v.classify(0, "clean", None, 0, report([])), v.classify(1, "clean", None, 1, report(["nl@banet"])),
            v.classify(2, "injected", "cs:0.25", 1, report(["cs@banet"])), v.classify(3, "small", "cs:0.10", 0, report([])),
            v.classify(4, "small", "cs:0.10", 1, report(["cs@banet", "nl@banet"]))]
    s = v.summarize(runs)
    assert (s["clean_runs"], s["false_alarms"], s["false_alarm_rate"]) == (2, 1, 0.5)
    assert (s["injected_runs"], s["detections"], s["detection_rate"]) == (1, 1, 1.0)
    assert (s["small_injected_runs"], s["small_detections"], s["small_injected_runs_with_other_blocks_flagged"]) == (2, 1, 1)
    with pytest.raises(SystemExit):
        v.main(["--inject", "cs"])  # NAME:FRACTION


def test_rejudge_applies_the_gates_verdict_at_other_levels(tmp_path, capsys) -> None:
    """--rejudge re-flags recorded measurements from their p-values and ratios and asks the gate's confirm():
    a 25% slowdown whose pooled rounds are slower relative to the reference at p 0.03 is caught at
    load_alpha 0.05, not at 0.01; an unchanged block slower in raw times only (the machine) is caught at neither."""
    import json

    v = _validate_script()

    def m(raw_p, raw_r, norm_p, norm_r):
        return {"raw_p_slower": raw_p, "raw_ratio": raw_r, "normalized_p_slower": norm_p, "normalized_ratio": norm_r}

    def row(key, *ms, pooled):
        return {"key": key, "decisive": ["raw", "normalized"], "attempts": list(ms), "pooled": pooled}

    summary = {"runs": [
        {"kind": "injected", "inject": "cs:0.25", "latency": [
            row("cs@x", m(1e-4, 1.3, 0.04, 1.25), m(1e-4, 1.3, 0.06, 1.2), pooled=m(1e-6, 1.3, 0.03, 1.22)),
            {"key": "nl@x", "decisive": ["raw", "normalized"], "attempts": None, "pooled": None}]},
        {"kind": "clean", "inject": None, "latency": [
            row("nl@x", m(1e-4, 1.2, 0.6, 0.95), m(1e-3, 1.15, 0.7, 0.93), pooled=m(1e-6, 1.18, 0.65, 0.94))]},
    ]}
    strict, loose = (v.rejudge(summary, 0.01, level) for level in (0.01, 0.05))
    assert (strict["injected_detections"], strict["false_alarms"]) == ("0/1", "0/1")
    assert (loose["injected_detections"], loose["false_alarms"], loose["other_blocks_flagged"]) == ("1/1", "0/1", 0)
    path = tmp_path / "s.json"
    path.write_text(json.dumps(summary))
    assert v.main(["--rejudge", str(path), "--load-alphas", "0.05"]) == 0
    assert json.loads(capsys.readouterr().out)["injected_detections"] == "1/1"
