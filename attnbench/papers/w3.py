"""W3's printed complexity figures (Perez-Rua, Martinez, Zhu, Toisoul, Escorcia, Xiang, "Knowing What, Where
and When to Look: Efficient Video Action Modeling with Attention", ECCV 2020).

Taken (networks attnbench builds; all on 224 x 224 center crops, one clip):

* Table 1 (Something-Something V1), GFLOPs: TSN R50 8 frames 33 (a 2D ResNet-50 on 8 frames: TSM-R50's
  arithmetic, since the temporal shift does none), ECO (BN-Inception + 3D-ResNet-18, the full ECO as
  released -- ``eco-released``: the numbers are ECO's own, and BANet's Table I 3D net of ``eco`` gives 34.1 /
  68.1 G) 8 frames 32 and 16 frames 64, TSM R50 8 frames 33 and 16 frames 65, TSM_en (8 + 16 frames) 98, TSM+W3 8 frames 33.5
  and 16 frames 67.1;
* Table 6 (16 frames): TSM 65.0, +CBAM 66.5, +NL 115.0, +W3 67.1 GFLOPs;
* Sec. 4.1 text: "a small extra cost of 0.5G/2.1G FLOPs" (8 / 16 frames, TSM+W3 over TSM);
* Sec. 1 text: "merely 1.5% ~ 3.2% extra cost on TSM".

Not taken: Table 1's rows for networks attnbench does not build (TSN and TRN on BN-Inception, TRN-Multiscale
R50 with its relation head, ECO_en Lite -- an ensemble of ECO-Lites on 92 frames --, I3D, I3D+NL, I3D+NL+GCN,
SlowFast). W3 prints no parameter counts.
"""

from __future__ import annotations

from attnbench.papers.figures import Figure

PAPER = "w3"
NETWORK = "tsm-r50"
CLASSES = 174  # Something-Something V1, Table 1's dataset (the classifier is a rounding error of the total)


def _net(table: str, key: str, item: str, value: float, attn: str, preset: str) -> Figure:
    return Figure(f"w3.{key}", PAPER, table, item, value, "GFLOPs",
                  {"network": NETWORK, "attn": attn, "preset": preset, "quantity": "gflops"})


FIGURES: tuple[Figure, ...] = (
    _net("Table 1", "t1.tsn-r50-8f", "TSN R50, 8 frames (= TSM-R50's arithmetic: the shift does none)", 33, "none", "8f"),
    Figure("w3.t1.eco-8f", PAPER, "Table 1", "ECO (BN-Inception + 3D-ResNet-18), 8 frames", 32, "GFLOPs",
           {"network": "eco-released", "attn": "none", "preset": "8f", "quantity": "gflops", "options": {"num_classes": CLASSES}}),
    Figure("w3.t1.eco-16f", PAPER, "Table 1", "ECO (BN-Inception + 3D-ResNet-18), 16 frames", 64, "GFLOPs",
           {"network": "eco-released", "attn": "none", "preset": "16f", "quantity": "gflops", "options": {"num_classes": CLASSES}}),
    _net("Table 1", "t1.tsm-8f", "TSM R50, 8 frames", 33, "none", "8f"),
    _net("Table 1", "t1.tsm-16f", "TSM R50, 16 frames", 65, "none", "16f"),
    Figure("w3.t1.tsm-en", PAPER, "Table 1", "TSM_en R50, 8 + 16 frames (two models)", 98, "GFLOPs",
           {"network": NETWORK, "quantity": "gflops-sum", "parts": (("none", "8f"), ("none", "16f"))}),
    _net("Table 1", "t1.w3-8f", "TSM+W3 R50, 8 frames", 33.5, "w3", "8f"),
    _net("Table 1", "t1.w3-16f", "TSM+W3 R50, 16 frames", 67.1, "w3", "16f"),
    _net("Table 6", "t6.tsm", "TSM (16 frames)", 65.0, "none", "16f"),
    _net("Table 6", "t6.cbam", "TSM +CBAM (16 frames)", 66.5, "cbam", "16f"),
    _net("Table 6", "t6.nl", "TSM +NL (16 frames)", 115.0, "nl", "16f"),
    _net("Table 6", "t6.w3", "TSM +W3 (16 frames)", 67.1, "w3", "16f"),
    Figure("w3.text.extra-8f", PAPER, "Sec. 4.1", "extra cost of W3 on TSM, 8 frames", 0.5, "GFLOPs",
           {"network": NETWORK, "attn": "w3", "preset": "8f", "quantity": "gflops-extra"}),
    Figure("w3.text.extra-16f", PAPER, "Sec. 4.1", "extra cost of W3 on TSM, 16 frames", 2.1, "GFLOPs",
           {"network": NETWORK, "attn": "w3", "preset": "16f", "quantity": "gflops-extra"}),
    Figure("w3.text.extra-pct-8f", PAPER, "Sec. 1", "extra cost of W3 on TSM, low end of '1.5% ~ 3.2%' (8 frames)", 1.5, "%",
           {"network": NETWORK, "attn": "w3", "preset": "8f", "quantity": "gflops-extra-pct"}),
    Figure("w3.text.extra-pct-16f", PAPER, "Sec. 1", "extra cost of W3 on TSM, high end of '1.5% ~ 3.2%' (16 frames)", 3.2, "%",
           {"network": NETWORK, "attn": "w3", "preset": "16f", "quantity": "gflops-extra-pct"}),
)
