"""STA's printed complexity figures (Li, Liu, Zhang, Zhang, Song, Sebe, "Spatio-Temporal Attention Networks
for Action Recognition and Detection").

* Table III (complexity on HMDB-51 split 1): ResNeXt-101(64f) and STA-ResNeXt-101(64f) -- # PARAM 47.5 and
  47.6 x 10^6, SIZE 365 and 384 MB, GFLOPS 38.5014 and 38.5019;
* Sec. IV-C(1) text: "the STA module only brings a slight increase (5.2%) in model size";
* Table IV (STC vs STA): # LAYERS 10 and 5, and # PARAM / # MULT as formulas in c, l, h, w (and r for STC),
  evaluated here at the example Sec. IV-C(1) gives ("ResNeXt layer4: c = 1024 ... l = 8, h = 7 and w = 7").

Table IV prints formulas, not numbers, and no r; the formulas are typed below as functions and evaluated by
code at the text's c, l, h, w (r = 16 for STC, SE's ratio, with other r tried).
"""

from __future__ import annotations

from attnbench.papers.figures import Figure

PAPER = "sta"
NETWORK = "resnext3d-101"
PRESET = "64f"  # ResNeXt-101(64f): 64 x 112 x 112 clips

TABLE_III = {  # attention in the network -> (# PARAM in 10^6, SIZE in MB, GFLOPS)
    "none": (47.5, 365.0, 38.5014),
    "sta": (47.6, 384.0, 38.5019),
}
TABLE_III_LABELS = {"none": "ResNeXt-101(64f)", "sta": "STA-ResNeXt-101(64f)"}
SIZE_INCREASE_PERCENT = 5.2  # Sec. IV-C(1): "a slight increase (5.2%) in model size"

# Table IV, per module; the example shape of Sec. IV-C(1) ("ResNeXt layer4: c = 1024 ... l = 8, h = 7 and w = 7").
TABLE_IV_SHAPE = {"c": 1024, "l": 8, "h": 7, "w": 7}
TABLE_IV_LAYERS = {"stc": 10, "sta": 5}
TABLE_IV_FORMULAS = {
    "stc": {"params": "c^2 x (l^2 + l + 2) / r", "mults": "c x (l + 3) + c^2 x (l^2 + l + 2) / r"},
    "sta": {"params": "c x (h x w + 4) + 5", "mults": "c x l x (h x w + 4) + 3 x l"},
}


def stc_params(c: int, l: int, r: int) -> float:
    return c**2 * (l**2 + l + 2) / r


def stc_mults(c: int, l: int, r: int) -> float:
    return c * (l + 3) + c**2 * (l**2 + l + 2) / r


def sta_params(c: int, h: int, w: int) -> int:
    return c * (h * w + 4) + 5


def sta_mults(c: int, l: int, h: int, w: int) -> int:
    return c * l * (h * w + 4) + 3 * l


TABLE_III_DECIMALS = (1, 0, 4)  # as printed: 47.5, 365, 38.5014


def _t3(attn: str, col: int, quantity: str, unit: str, what: str) -> Figure:
    return Figure(f"sta.t3.{attn}.{quantity}", PAPER, "Table III", f"{TABLE_III_LABELS[attn]}: {what}",
                  TABLE_III[attn][col], unit, {"network": NETWORK, "preset": PRESET, "attn": attn, "quantity": quantity},
                  decimals=TABLE_III_DECIMALS[col])


FIGURES: tuple[Figure, ...] = (
    *(_t3(a, 0, "params", "10^6", "# PARAM") for a in ("none", "sta")),
    *(_t3(a, 1, "size", "MB", "model size") for a in ("none", "sta")),
    *(_t3(a, 2, "gflops", "GFLOPs", "GFLOPS") for a in ("none", "sta")),
    Figure("sta.text.size-increase", PAPER, "Sec. IV-C(1)", "model size increase of STA-ResNeXt-101(64f) over ResNeXt-101(64f)",
           SIZE_INCREASE_PERCENT, "%", {"network": NETWORK, "preset": PRESET, "quantity": "size-increase"}),
    *(Figure(f"sta.t4.{m}.layers", PAPER, "Table IV", f"{m.upper()}: # LAYERS", TABLE_IV_LAYERS[m], "layers",
             {"block": m, "quantity": "layers"}) for m in ("stc", "sta")),
)

# Table IV's formula rows: the printed value is the formula, so these are evaluated (by code) in reproduce.
TABLE_IV_ROWS = (("sta", "params"), ("sta", "mults"), ("stc", "params"), ("stc", "mults"))
