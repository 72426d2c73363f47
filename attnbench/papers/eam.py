"""EAM's printed complexity figures (Jiang, Jiang, Fang, Chen, "An Efficient Attention Module for 3D
Convolutional Neural Networks in Action Recognition").

Table 4 (HMDB-51 split 1): parameters and GFLOPs of 3D ResNet-50 and 3D ResNeXt-101 (16 and 64 frames,
112 x 112) plain and with SE, ECA, CBAM or EAM "embedded into all the stages" (Sec. 4.4). That is the only
complexity table; Sec. 4.4's text ("the overall overhead of the EAM module is quite small") prints no number.
"""

from __future__ import annotations

from attnbench.papers.figures import Figure

PAPER = "eam"
# Table 4 cuts its figures (truncation, not rounding): the evidence -- how many of its parameter counts ours
# give exactly when cut and when rounded -- is computed by judge.rounding_evidence and printed by reproduce.
ROUNDING = "truncate"

MODELS = (  # (label as printed, network, preset)
    ("ResNet-50", "resnet3d-50", "16f"),
    ("ResNext-101(16f)", "resnext3d-101", "16f"),
    ("ResNext-101(64f)", "resnext3d-101", "64f"),
)
ATTENTIONS = (("none", ""), ("se", "+ SE"), ("eca", "+ ECA"), ("cbam", "+ CBAM"), ("eam", "+ EAM"))

TABLE_4 = {  # (network, preset, attention) -> (Param. in M, GFLOPs)
    ("resnet3d-50", "16f", "none"): (46.30, 10.102),
    ("resnet3d-50", "16f", "se"): (46.99, 10.105),
    ("resnet3d-50", "16f", "eca"): (46.30, 10.104),
    ("resnet3d-50", "16f", "cbam"): (47.00, 10.106),
    ("resnet3d-50", "16f", "eam"): (46.30, 10.106),
    ("resnext3d-101", "16f", "none"): (47.62, 9.616),
    ("resnext3d-101", "16f", "se"): (48.32, 9.619),
    ("resnext3d-101", "16f", "eca"): (47.62, 9.619),
    ("resnext3d-101", "16f", "cbam"): (48.32, 9.620),
    ("resnext3d-101", "16f", "eam"): (47.62, 9.620),
    ("resnext3d-101", "64f", "none"): (47.62, 38.466),
    ("resnext3d-101", "64f", "se"): (48.32, 38.476),
    ("resnext3d-101", "64f", "eca"): (47.62, 38.475),
    ("resnext3d-101", "64f", "cbam"): (48.32, 38.476),
    ("resnext3d-101", "64f", "eam"): (47.62, 38.483),
}


def _figures() -> tuple[Figure, ...]:
    out = []
    for label, net, preset in MODELS:
        for attn, suffix in ATTENTIONS:
            params, gflops = TABLE_4[(net, preset, attn)]
            name = f"{label} {suffix}".strip()
            subject = {"network": net, "preset": preset, "attn": attn}
            out.append(Figure(f"eam.t4.{net}.{preset}.{attn}.params", PAPER, "Table 4", f"{name}: Param.", params, "M",
                              {**subject, "quantity": "params"}, decimals=2))
            out.append(Figure(f"eam.t4.{net}.{preset}.{attn}.gflops", PAPER, "Table 4", f"{name}: GFLOPs", gflops, "GFLOPs",
                              {**subject, "quantity": "gflops"}, decimals=3))
    return tuple(out)


FIGURES: tuple[Figure, ...] = _figures()
