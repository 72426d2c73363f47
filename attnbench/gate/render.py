"""A check's report for people: finding cells, the verdict line, the caption sentence and the Markdown
summary for ``$GITHUB_STEP_SUMMARY``. Text from a baseline is made inert (:func:`attnbench.text.clean`;
in Markdown also escaped)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from attnbench.gate.compare import STEADY_SPREAD
from attnbench.text import clean
from attnbench.units import human


def fmt_value(check_name: str, value: Any) -> str:
    """A finding's baseline or current value for people."""
    if value is None:
        return "n/a"
    if check_name == "params":
        return f"{value:,}"
    if check_name == "flops":
        return human(value, "FLOP")
    if check_name == "memory":
        return human(value, "B")
    if check_name == "latency":
        return f"{value:.4g}"
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return str(value)


def fmt_change(f: Mapping[str, Any]) -> str:
    """Delta or ratio, and for latency the p-value."""
    c = f["check"]
    if c == "latency" and "ratio" in f:
        rounds = f" over {f['n_baseline']}/{f['n_current']} rounds" if "n_baseline" in f else ""
        if f.get("normalized"):
            return f"x{f['ratio']:.3f} vs reference (p={f['p_slower']:.2g}{rounds}), raw x{f['raw_ratio']:.3f}"
        text = f"x{f['raw_ratio']:.3f} (p={f['raw_p_slower']:.2g}{rounds})"
        if f.get("normalized_ratio") is not None:
            text += f", vs reference x{f['normalized_ratio']:.3f}"
        if f.get("peers_ratio") is not None and "peers" in (f.get("decisive") or []):
            text += f", vs {len(f.get('peers') or [])} other block(s) x{f['peers_ratio']:.3f}"
        return text
    if c == "memory" and "delta" in f:
        return f"{'+' if f['delta'] >= 0 else '-'}{human(abs(f['delta']), 'B')} (x{f['ratio']:.3f})"
    if c in ("params", "flops") and "delta" in f:
        if f["delta"] == 0:
            return "0"
        rel = f" ({f['delta'] / f['baseline']:+.2%})" if f["baseline"] else ""
        unit = human(abs(f["delta"]), "FLOP") if c == "flops" else f"{abs(f['delta']):,}"
        return f"{'+' if f['delta'] > 0 else '-'}{unit}{rel}"
    return ""


def verdict(f: Mapping[str, Any]) -> str:
    return ("FAIL: " if f["failed"] else "") + f["status"]


def notable(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Findings worth a line of their own: failures first, then notes (new, improved, unconfirmed...)."""
    fs = [f for f in report["findings"] if f["status"] not in ("ok",)]
    return sorted(fs, key=lambda f: (not f["failed"], f["key"]))


_MD_SPECIAL = re.compile(r"([\\`*_\[\]|~])")


def _md_escape(text: object) -> str:
    """Text from a baseline made inert in Markdown: control characters escaped (:func:`clean`), HTML's
    ``& < >`` as entities, and the characters that make links, code, emphasis or table cells
    backslash-escaped."""
    html = clean(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MD_SPECIAL.sub(r"\\\1", html)


def compared_text(report: Mapping[str, Any]) -> str:
    """What a check compared, and how (one sentence for people)."""
    opts = report["options"]
    t = report["timing"]
    what = "parameters and FLOPs (exact)"
    if t.get("compared"):
        if t.get("latency_compared"):
            clock = (t.get("plan") or {}).get("clock", "wall")
            control = ("normalized by the reference workload" if opts["normalize"] else
                       f"in two of raw times, relative to the reference workload (p <= {opts['load_alpha']:g}) and relative "
                       f"to the other blocks of the same rounds" if opts["load_control"] else "")
            rt = t.get("rank_test") or {}
            test = (f"one-sided Mann-Whitney U on per-round medians ({rt['baseline_rounds']} baseline vs {rt['current_rounds']} "
                    f"current rounds, exact p), p <= {opts['alpha']:g}: false-alarm rate of the rank test "
                    f"{rt['false_alarm_rate']:.2%} per block if rounds are independent"
                    if rt else f"one-sided Mann-Whitney U on per-round medians, p <= {opts['alpha']:g}")
            what += (f", latency ({clock} clock; {test}; and median ratio > {opts['max_slowdown']:g}"
                     f"{', ' + control if control else ''}; re-measured up to {opts['retries']}x before failing)")
            if rt.get("note"):
                what += f" ({rt['note']})"
        if t.get("memory_compared"):
            what += f", peak memory (tolerance {opts['memory_tolerance']:.0%})"
    elif t.get("reason"):
        what += f"; latency and memory not compared: {t['reason']}"
    return what


def headline(report: Mapping[str, Any]) -> str:
    """The verdict in one line; when a timed baseline's latency (or memory) was not compared, the line
    says so first."""
    s = report["summary"]
    missing = report.get("not_compared") or []
    skipped = f" (NOT compared: {'; '.join(missing)})" if missing else ""
    unsure = (report.get("timing") or {}).get("inconclusive") or []
    if unsure:
        skipped += (f" (latency inconclusive, the machine's speed drifted more than x{STEADY_SPREAD:.2f} between rounds: "
                    f"{', '.join(unsure)})")
    if report["passed"]:
        return f"PASS{skipped}: {s['entries']} entries, no regressions" + (" in what was compared" if missing else "")
    return f"FAIL{skipped}: {s['failures']} regression(s) in {s['entries']} entries"


def _latency_cell(f: Mapping[str, Any]) -> tuple[str, str]:
    if "baseline_ms" in f:
        return f"{f['baseline_ms']:.4g} ms", f"{f['current_ms']:.4g} ms"
    return "", ""


def finding_cells(f: Mapping[str, Any]) -> tuple[str, str, str]:
    """(baseline, current, change) of a finding as text."""
    if f["check"] == "latency":
        b, c = _latency_cell(f)
        return b, c, fmt_change(f) if "ratio" in f else f.get("detail", "")
    if f["check"] in ("entry", "config") or f["status"] == "skipped":
        return (fmt_value(f["check"], f.get("baseline")) if f.get("baseline") is not None else "",
                fmt_value(f["check"], f.get("current")) if f.get("current") is not None else "",
                f.get("detail", ""))
    return fmt_value(f["check"], f.get("baseline")), fmt_value(f["check"], f.get("current")), fmt_change(f)


def markdown_summary(report: Mapping[str, Any], baseline_path: str = "") -> str:
    """A Markdown summary of a check (for ``$GITHUB_STEP_SUMMARY``); everything from the baseline escaped."""
    ok = report["passed"]
    s = report["summary"]
    missing = report.get("not_compared") or []
    title = f"## attnbench performance gate: {'passed' if ok else 'FAILED'}"
    if missing:
        title += f" (NOT compared: {_md_escape('; '.join(missing))})"
    unsure = (report.get("timing") or {}).get("inconclusive") or []
    if unsure:
        title += f" (latency inconclusive: {_md_escape(', '.join(unsure))})"
    lines = [title, ""]
    t = report["timing"]
    lines.append(f"Baseline {_md_escape(baseline_path)}: {s['entries']} entries. Compared: {_md_escape(compared_text(report))}.")
    if t.get("device_differences"):
        lines.append(f"Device differs from the baseline's: {_md_escape('; '.join(t['device_differences']))}.")
    lines.append("")
    lines.append(f"**{s['failures']} failure(s).**" if s["failures"] else "No regressions.")
    rows = notable(report)
    if rows:
        lines += ["", "| entry | check | baseline | current | change | verdict |", "|---|---|---|---|---|---|"]
        for f in rows:
            b, c, ch = finding_cells(f)
            lines.append(f"| {_md_escape(f['key'])} | {f['check']} | {_md_escape(b)} | {_md_escape(c)} | {_md_escape(ch)} | {verdict(f)} |")
    flops = [f for f in report["findings"] if f["check"] == "flops" and f["status"] == "changed"]
    if flops:
        lines += ["", "FLOPs by op category (multiply-add = 2):", "",
                  "| entry | category | baseline FLOPs | current FLOPs | delta |", "|---|---|---:|---:|---:|"]
        for f in flops:
            for c in f["categories"]:
                lines.append(f"| {_md_escape(f['key'])} | {c['category']} | {c['baseline_flops']:,} | "
                             f"{c['current_flops']:,} | {c['delta_flops']:+,} |")
        lines += ["", "If the change is intended, regenerate the baseline with `attnbench snapshot`."]
    return "\n".join(lines) + "\n"


def append_step_summary(path: str, text: str) -> str | None:
    """Append ``text`` to the GitHub step summary file; the reason as a string if that failed."""
    try:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(text + "\n")
    except OSError as e:
        return f"cannot append to $GITHUB_STEP_SUMMARY ({path}): {e.strerror or e}"
    return None
