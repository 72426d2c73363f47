"""BANet's printed complexity and speed figures, and Table VI's side-by-side comparison with a measured run.

Complexity figures BANet prints (Zhou, Xu, Yang, "Attention Before and After Feature Extraction for Action
Recognition"):

* Sec. III-C, after Eq. (7): R = F_CS / F_3D = 1/T + 1/H + 1/W = 13.4% at T = 16, H = W = 28 -- the ratio of
  the correlation-matrix FLOPs (Eq. 5, 6: C_in x positions^2 x 2, softmax excluded) of the cascaded
  self-attention module to those of a non-local block with the same C_in;
* Table VI: videos per second of ECO (the full ECO, Table III's ECO(16F) 23.2), ECO with 1 NL and ECO with
  1 CS (23.2 / 8.1 / 19.9, GTX 1080 Ti); only their ratios can be compared with another device's measurement;
* Table III: VPS of the networks attnbench builds -- ECO-Lite(16F) 33.1, ECO(16F) 23.2, BANet(16F) 19.9 and
  BANet-Lite(4F / 8F / 16F / 20F) 113.7 / 57.0 / 28.1 / 21.9 --, compared as ratios to ECO-Lite(16F);
* Sec. IV-C: "BANet runs at 400 FPS on a GTX 1080Ti GPU without considering I/O".

Speeds are compared only as ratios and only as *indicative*: a ratio measured on another device, with other
kernels and possibly another precision, is not a reproduction of the authors' GPU figure.

Not taken: Table III's VPS of methods attnbench does not build (I3D, Res3D, ARTNet, TSN). No parameter count
or FLOP total of a network is printed.
"""

from __future__ import annotations

from typing import Any

from attnbench.papers.figures import Figure

PAPER = "banet"

# Sec. III-C: "In our experiments, T = 16, H = W = 28, therefore R = 13.4%."
R_SHAPE = {"C": 96, "T": 16, "H": 28, "W": 28}  # C = 96: Sec. III-A (the stacked inception-3c features)
R_FIGURE = Figure(
    "banet.sec3c.R", PAPER, "Sec. III-C, Eq. (7)",
    "R = F_CS / F_3D: correlation-matrix FLOPs of the CS module over a non-local block's, T=16, H=W=28",
    13.4, "%", {"quantity": "ratio", "shape": R_SHAPE},
)

# BANet Table VI (ablation 2): ECO, ECO with one non-local block, ECO with one cascaded self-attention block;
# videos per second on a GTX 1080 Ti, 16 frames at 224x224, without I/O.
TABLE_VI_VPS = {"none": 23.2, "nl": 8.1, "cs": 19.9}
TABLE_VI_LABELS = {"none": "ECO (baseline)", "nl": "ECO with 1 NL", "cs": "ECO with 1 CS"}
TABLE_VI_DEVICE = "GTX 1080 Ti"

# Table III (GTX 1080 Ti, UCF101 split 1, no I/O): label, printed VPS, (network, preset, attn) in attnbench.
# BANet(16F) is the full ECO with frame attention and CS; BANet-Lite is ECO-Lite with both.
TABLE_III_VPS = {
    "eco-lite-16f": ("ECO-Lite(16F)", 33.1, ("eco-lite", "16f", "none")),
    "eco-16f": ("ECO(16F)", 23.2, ("eco", "16f", "none")),
    "banet-16f": ("BAnet(16F)", 19.9, ("eco", "banet-16f", "cs")),
    "banet-lite-4f": ("BAnet-Lite(4F)", 113.7, ("eco-lite", "banet-lite-4f", "cs")),
    "banet-lite-8f": ("BAnet-Lite(8F)", 57.0, ("eco-lite", "banet-lite-8f", "cs")),
    "banet-lite-16f": ("BAnet-Lite(16F)", 28.1, ("eco-lite", "banet-lite-16f", "cs")),
    "banet-lite-20f": ("BAnet-Lite(20F)", 21.9, ("eco-lite", "banet-lite-20f", "cs")),
}
TABLE_III_BASE = "eco-lite-16f"
FPS = 400.0  # Sec. IV-C: "BANet runs at 400 FPS on a GTX 1080Ti GPU without considering I/O"

# Table VI as speed ratios (the printed VPS divided by code in attnbench.papers.reproduce).
TABLE_VI_RATIOS = (("nl", "none"), ("cs", "none"), ("cs", "nl"))

FIGURES: tuple[Figure, ...] = (R_FIGURE,)


def table_vi(network_rows: list[dict[str, Any]], block_rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Paper vs measured VPS per method, ratios to the baseline, and the NL:CS speed, latency and FLOP ratios.

    ``network_rows`` are speed rows of eco (the full ECO) with attn none/nl/cs; ``block_rows`` speed rows of the nl and cs
    blocks at the BANet preset, measured in the same run."""
    by_attn = {r["attn"]: r for r in network_rows}
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
            "network FLOPs": r["flops"] if r else None,
        })
    nl, cs = by_attn.get("nl"), by_attn.get("cs")
    blocks = {r["module"]: r for r in block_rows if r.get("status") == "ok"}
    summary: dict[str, Any] = {
        "paper_cs_over_nl_speed": TABLE_VI_VPS["cs"] / TABLE_VI_VPS["nl"],
        "measured_cs_over_nl_speed": (cs["vps"] / nl["vps"]) if (nl and cs and nl.get("vps") and cs.get("vps")) else None,
        "network_flop_ratio_nl_over_cs": (nl["flops"] / cs["flops"]) if (nl and cs) else None,
    }
    if "nl" in blocks and "cs" in blocks:
        summary["block_latency_ratio_nl_over_cs"] = blocks["nl"]["timing"]["median_ms"] / blocks["cs"]["timing"]["median_ms"]
        summary["block_flop_ratio_nl_over_cs"] = blocks["nl"]["flops"] / blocks["cs"]["flops"]
    return {"methods": methods, "summary": summary, "paper_device": TABLE_VI_DEVICE}
