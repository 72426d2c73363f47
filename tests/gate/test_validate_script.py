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
