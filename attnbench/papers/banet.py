"""BANet's printed speed figures (Table VI) and their side-by-side comparison with a measured run."""

from __future__ import annotations

from typing import Any

# BANet Table VI (ablation 2): ECO, ECO with one non-local block, ECO with one cascaded self-attention block;
# videos per second on a GTX 1080 Ti, 16 frames at 224x224, without I/O.
TABLE_VI_VPS = {"none": 23.2, "nl": 8.1, "cs": 19.9}
TABLE_VI_LABELS = {"none": "ECO (baseline)", "nl": "ECO with 1 NL", "cs": "ECO with 1 CS"}
TABLE_VI_DEVICE = "GTX 1080 Ti"


def table_vi(network_rows: list[dict[str, Any]], block_rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Paper vs measured VPS per method, ratios to the baseline, and the NL:CS speed, latency and FLOP ratios.

    ``network_rows`` are speed rows of eco-lite with attn none/nl/cs; ``block_rows`` speed rows of the nl and cs
    blocks at the BANet preset, measured in the same run."""
    by_attn = {r["variant"].split("@")[0]: r for r in network_rows}
    methods = []
    base = by_attn.get("none")
    base_vps = base.get("vps") if base else None
    for attn in ("none", "nl", "cs"):
        r = by_attn.get(attn)
        vps = r.get("vps") if r else None
        methods.append({
            "method": TABLE_VI_LABELS[attn],
            "paper VPS": TABLE_VI_VPS[attn],
            "measured VPS": vps,
            "status": r["status"] if r else "not run",
            "paper / baseline": TABLE_VI_VPS[attn] / TABLE_VI_VPS["none"],
            "measured / baseline": (vps / base_vps) if (vps and base_vps) else None,
            "network GFLOPs": r["flops"] / 1e9 if r else None,
        })
    nl, cs = by_attn.get("nl"), by_attn.get("cs")
    blocks = {r["name"]: r for r in block_rows if r.get("status") == "ok"}
    summary: dict[str, Any] = {
        "paper_cs_over_nl_speed": TABLE_VI_VPS["cs"] / TABLE_VI_VPS["nl"],
        "measured_cs_over_nl_speed": (cs["vps"] / nl["vps"]) if (nl and cs and nl.get("vps") and cs.get("vps")) else None,
        "network_flop_ratio_nl_over_cs": (nl["flops"] / cs["flops"]) if (nl and cs) else None,
    }
    if "nl" in blocks and "cs" in blocks:
        summary["block_latency_ratio_nl_over_cs"] = blocks["nl"]["timing"]["median_ms"] / blocks["cs"]["timing"]["median_ms"]
        summary["block_flop_ratio_nl_over_cs"] = blocks["nl"]["flops"] / blocks["cs"]["flops"]
    return {"methods": methods, "summary": summary, "paper_device": TABLE_VI_DEVICE}
