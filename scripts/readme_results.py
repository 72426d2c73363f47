"""Write the headline results section of README.md from a report folder (results/<device>/).

Usage: python scripts/readme_results.py results/cpu-amd-epyc
Replaces the text between the `<!-- results:start -->` and `<!-- results:end -->` markers with the
reproduction table (from reproduce.json), the Table VI comparison (table-vi.json) and a scaling plot."""

from __future__ import annotations

import json
import sys
from pathlib import Path

START, END = "<!-- results:start -->", "<!-- results:end -->"


def _num(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4g}"


def _command(folder: Path) -> str:
    """The exact command that wrote the folder, from the report's own README ("- command: `...`")."""
    for line in (folder / "README.md").read_text().splitlines():
        if line.startswith("- command: `"):
            return line.split("`")[1]
    raise SystemExit(f"{folder}/README.md names no command: is it a folder `attnbench report` wrote?")


def section(folder: Path) -> str:
    from attnbench.papers.judge import summary

    rep = json.loads((folder / "reproduce.json").read_text())
    rows = rep["rows"]
    s = summary(rows)
    ok = s["reproduced"]
    per_paper = "; ".join(f"{name} {p['counted_reproduced']} of {p['counted']}" for name, p in s["by_paper"].items() if p["counted"])
    others = ", ".join(f"{n} {v}" for v, n in s["verdicts"].items() if v != "reproduced" and n)
    lines = [
        f"Produced by `{_command(folder)}` (folder [`{folder}`]({folder}/README.md)): "
        f"**{ok} of {s['counted_rows']}** printed parameter, FLOP and size figures reproduced ({s['share_reproduced']:.1%}; "
        f"{per_paper}). The other rows: {others}; each carries its reason in [`reproduce.md`]({folder}/reproduce.md).",
        "",
        "| paper | where | item | paper | ours | unit | convention | basis | delta % | verdict |",
        "|---|---|---|---:|---:|---|---|---|---:|---|",
    ]
    for r in rows:
        item = r["item"] if len(r["item"]) <= 70 else r["item"][:67] + "..."
        verdict = r["verdict"] + (f" ({r['configuration']})" if r["verdict"] == "reproduced-with" else "")
        lines.append(f"| {r['paper']} | {r['table']} | {item} | {_num(r['paper_value'])} | {_num(r['value'])} | "
                     f"{r['unit']} | {r['convention']} | {r['basis']} | {_num(r['delta_pct'])} | {verdict} |")
    tv = folder / "table-vi.json"
    if tv.exists():
        result = json.loads(tv.read_text())["result"]
        first = (folder / "table-vi.jsonl").read_text().splitlines()[0]
        dev = json.loads(first).get("fingerprint", {})
        where = dev.get("gpu_name") or dev.get("cpu_model") or "this machine"
        lines += ["", f"BANet Table VI measured on {where} ({dev.get('device_type', '')}), beside the paper's GTX 1080 Ti:", "",
                  "| method | paper VPS | measured VPS | paper / baseline | measured / baseline |", "|---|---:|---:|---:|---:|"]
        for m in result["methods"]:
            lines.append(f"| {m['method']} | {m['paper VPS']} | {_num(m['measured VPS'])} | "
                         f"{_num(m['paper / baseline'])} | {_num(m['measured / baseline'])} |")
        s = result["summary"]
        lines += ["", f"CS:NL speed ratio: paper {_num(s['paper_cs_over_nl_speed'])}, measured "
                  f"{_num(s['measured_cs_over_nl_speed'])}; the blocks alone: NL/CS latency "
                  f"{_num(s.get('block_latency_ratio_nl_over_cs'))} vs FLOP ratio {_num(s.get('block_flop_ratio_nl_over_cs'))}."]
    plot = folder / "nl-vs-cs-T.png"
    if plot.exists():
        lines += ["", f"![NL/CS cost ratio over T]({plot})"]
    return "\n".join(lines)


def main() -> None:
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "results/cpu-amd-epyc")
    readme = Path("README.md")
    text = readme.read_text()
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{START}\n{section(folder)}\n{END}{tail}")


if __name__ == "__main__":
    main()
