"""Reading a baseline (attnbench.gate.schema): every malformed baseline is one line and exit code 2."""

import json
import os

import pytest

from attnbench import gate
from attnbench.errors import UsageError
from attnbench.gate import schema

from .helpers import edited, malformed, one_line, run, setter


@pytest.mark.parametrize(
    "content,needle",
    [
        (None, "no such file"),
        ("{not json", "not valid JSON"),
        ("[]", "JSON object"),
        ('{"schema": "other"}', "schema"),
        (json.dumps({"schema": gate.SCHEMA, "timed": False, "entries": []}), "entries"),
        (json.dumps({"schema": gate.SCHEMA, "timed": False, "entries": [{"key": "cs@banet", "module": "cs", "preset": "banet",
                     "input_shape": [1, 2, 3], "params": 1, "flops": {"total": 0, "macs": 0, "by_category": {}, "cells": {}}}]}),
         "input_shape"),
        (json.dumps({"schema": gate.SCHEMA, "timed": False, "entries": [{"key": "cs@banet", "module": "cs", "preset": "banet",
                     "input_shape": [1, 96, 16, 28, 28], "params": 1,
                     "flops": {"total": 2, "macs": 1, "by_category": {}, "cells": {"magic": {"mac": 1}}}}]}), "unknown op category"),
        (json.dumps({"schema": gate.SCHEMA, "timed": True, "entries": [{"key": "a", "module": "cs", "preset": "banet", "input_shape": [1, 96, 16, 28, 28],
                     "params": 1, "flops": {"total": 0, "macs": 0, "by_category": {}, "cells": {}}}]}), "settings"),
        ('{"schema": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested too deeply"),  # RecursionError
        ('{"x": ' + "9" * 5000 + "}", "not valid JSON"),  # more digits than Python converts to an int
        ("\xff\xfe", "not UTF-8"),
    ],
)
def test_malformed_baseline_is_one_line_exit_2(tmp_path, content, needle) -> None:
    path = tmp_path / "baseline.json"
    if content is not None:
        path.write_bytes(content.encode("latin-1") if content.startswith("\xff") else content.encode())
    result = run("check", "--baseline", str(path))
    assert result.exit_code == 2, result.output
    assert needle in one_line(result)


def test_baseline_file_must_be_a_regular_file_of_bounded_size(tmp_path, monkeypatch) -> None:
    if os.path.exists("/dev/zero"):  # reading it would never end (MemoryError before)
        assert "not a regular file" in malformed(run("check", "--baseline", "/dev/zero"))
    assert "directory" in malformed(run("check", "--baseline", str(tmp_path)))
    big = tmp_path / "big.json"
    big.write_text(json.dumps({"pad": "x" * 2000}))
    monkeypatch.setattr(schema, "MAX_FILE_BYTES", 1000)
    assert "more than" in malformed(run("check", "--baseline", str(big)))


def test_timed_baseline_schema(timed_baseline, tmp_path) -> None:
    """Wrong types and out-of-bounds values anywhere in a timed baseline: one line naming the field."""
    cases = [
        ("settings.threads", "two", "settings.threads"),
        ("settings.threads", 0, "settings.threads"),
        ("settings.min_reps", 2.5, "settings.min_reps"),
        ("settings.min_reps", 10**9, "settings.min_reps"),
        ("settings.max_warmup_s", "long", "settings.max_warmup_s"),
        ("settings.round_s", 1e6, "settings.round_s"),  # would make check run for days
        ("settings.rounds", 5.0, "settings.rounds"),
        ("settings.clock", "sundial", "settings.clock"),
        ("entries.0.timing.round_sizes", [2.5, 1], "round_sizes"),  # a TypeError before
        ("entries.0.timing.round_sizes", ["a"], "round_sizes"),
        ("entries.0.timing.round_sizes", [1, 1], "round_sizes add up to"),
        ("entries.0.timing.samples_ms", [-1.0], "samples_ms"),
        ("entries.0.timing.round_medians_ms", [1.0, 2.0, 3.0, 4.0, 5.0], "round_medians_ms[0]"),
        ("entries.0.memory.peak_bytes", -5, "peak_bytes"),
        ("entries.0.memory.peak_bytes", True, "peak_bytes"),
        ("entries.0.status", None, "needs a 'status'"),
        ("entries.0.module", "ze", "unknown module 'ze'"),  # misspelt: malformed, not a regression
        ("entries.0.preset", "16f-res55", "unknown preset"),
        ("entries.0.options", {"r": "lots"}, "option r"),
        ("fingerprint.device_type", "abacus", "fingerprint.device_type"),
        ("fingerprint.cpu_model", {"nested": [[[1]]]}, "fingerprint.cpu_model"),
        ("reference.timing", None, "reference"),
        ("selection.modules", ["nope"], "unknown module 'nope'"),
    ]
    for field, value, needle in cases:
        path = edited(timed_baseline, tmp_path / "b.json", setter(field, value))
        line = malformed(run("check", "--baseline", str(path)), needle)
        assert line.startswith(f"error: baseline {path} is malformed: "), line
    path = edited(timed_baseline, tmp_path / "nan.json", setter("entries.0.timing.samples_ms", [float("nan")] * 5))
    malformed(run("check", "--baseline", str(path)), "samples_ms")


def test_a_baseline_that_contradicts_itself_ismalformed(flops_baseline, tmp_path) -> None:
    """The gate compares the per-category cells; a stored total, MAC count or category figure that does not
    follow from them means the file was edited or corrupted, and is refused."""
    for field, needle in (("total", "total is"), ("macs", "macs is"), ("by_category.convolution", "by_category.convolution")):
        def edit(doc, field=field):
            node = doc["entries"][0]["flops"]
            *parents, last = field.split(".")
            for p in parents:
                node = node[p]
            node[last] += 1000
        path = edited(flops_baseline, tmp_path / "b.json", edit)
        malformed(run("check", "--baseline", str(path)), "entries[0] (cs@banet).flops", needle, "contradicts itself")


def test_misspelt_module_or_preset_is_malformed_not_a_regression(flops_baseline, tmp_path) -> None:
    def edit(doc):
        doc["entries"][1]["preset"] = "gone"
        doc["entries"][1]["key"] = "se@gone"

    path = edited(flops_baseline, tmp_path / "b.json", edit)
    malformed(run("check", "--baseline", str(path)), "entries[1] (se@gone)", "unknown preset", "attnbench snapshot")
    path = edited(flops_baseline, tmp_path / "m.json", setter("entries.0.module", "cz"))
    malformed(run("check", "--baseline", str(path)), "unknown module 'cz'")
    # the Python API refuses it too
    with pytest.raises(UsageError, match="malformed"):
        gate.check(json.loads(path.read_text()), gate.CheckOptions())


def test_new_entries_are_noted(flops_baseline, tmp_path) -> None:
    path = edited(flops_baseline, tmp_path / "b.json", lambda doc: doc["entries"].pop(1))
    report = json.loads(run("check", "--baseline", str(path), "--json").stdout)
    by = {(f["key"], f["check"]): f for f in report["findings"]}
    assert by[("se@16f-res5", "entry")]["status"] == "new" and not by[("se@16f-res5", "entry")]["failed"]
    assert report["passed"]
