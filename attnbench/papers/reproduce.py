"""Every complexity and speed figure the five papers print, beside ours, with a verdict a reviewer can check.

For each printed figure (:mod:`attnbench.papers.banet`, ``sta``, ``eam``, ``w3``; ``stpa`` prints none) a row
holds::

    paper, table, item, paper_value, value, unit, convention, delta_pct, verdict, reason,
    basis, quantity, printed_decimals, rounding, at_printed_precision, paper_base, paper_increment, increment,
    configuration, default_configuration, evaluated_at, devices (+ key, paper_unit, best_convention,
    by_convention, conventions_tied, tried)

How rows are judged -- verdicts, the increment basis of attention rows, printed precision -- is in
:mod:`attnbench.papers.judge`. Our values come from attnbench's exact counter on the ``meta`` device (each
network configuration counted once per run, :mod:`attnbench.papers.counting`) or from the built module
(parameters, buffers, layers); speeds from measured runs on disk (:mod:`attnbench.papers.measured`).

Per paper, stated once:

* **BANet** -- R (Sec. III-C) counts the correlation products (bmm) of CS and a full-key non-local block;
  Table VI and Table III speeds and the "400 FPS" are compared as ratios of a measured run and are only
  ``indicative``.
* **STA** -- ResNeXt-101(64f), 51 classes (HMDB-51, Table III's dataset); model size as a ``state_dict`` of
  fp32 weights and buffers in MB; Table IV at Sec. IV-C(1)'s c = 1024, l = 8, h = w = 7, STC with r = 16
  (SE's ratio; the paper prints no r), each #MULT term matched on its own.
* **EAM** -- Table 4 truncates its digits; CBAM with a 1x7x7 spatial kernel; every attention row judged on
  its increment.
* **W3** -- TSM-R50 with attnbench's W3 defaults (MLP ratio 16, depthwise temporal convolutions), TSM's
  own non-local placement and sub-sampled keys, 3-D CBAM at every residual block; other configurations
  give ``reproduced-with`` at most, readings no source supports are named in the reason only.

The counting convention is the one under which most of a paper's FLOP rows hold (:func:`judge.paper_convention`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from attnbench.defaults import SCHEMA
from attnbench.errors import unknown
from attnbench.flops.conventions import CONVENTIONS
from attnbench.papers import banet, eam, measured, sta, stpa, w3
from attnbench.papers.counting import Counted, Counter
from attnbench.papers.figures import Figure
from attnbench.papers.judge import (  # noqa: F401  (re-exported: the public names of this module)
    TOLERANCE,
    VERDICTS,
    Spec,
    delta_pct,
    evaluate,
    summary,
    verdict,
)
from attnbench.shapes import VideoShape

PAPERS: tuple[str, ...] = ("banet", "sta", "eam", "w3", "stpa")
CHOICES: tuple[str, ...] = (*PAPERS, "all")
FIELDS: tuple[str, ...] = ("paper", "table", "item", "paper_value", "value", "unit", "convention", "delta_pct",
                           "verdict", "basis", "configuration", "reason")
NEEDS_DEVICE = "not-determinable: needs a device run"


def _giga(conv: str | None, choice: str = "") -> str:
    return f"G{CONVENTIONS[conv].unit}" if conv else "G"


def _plain(conv: str | None, choice: str = "") -> str:
    return CONVENTIONS[conv].unit if conv else ""


def _common(fig: Figure, rounding: str = "round") -> dict[str, Any]:
    return dict(paper=fig.paper, table=fig.table, item=fig.item, paper_value=fig.value, paper_unit=fig.unit, key=fig.key,
                decimals=fig.printed_decimals, rounding=rounding)


def _speed_why(run: measured.Run | None, paper_device: str) -> str:
    if run is None:
        return ""
    return f"paper: {paper_device}, precision not stated; ours: {run.label}"


# --- BANet ------------------------------------------------------------------------------------------------


def _banet_specs(ctr: Counter, results_dir: Path, prefer: Path | None = None) -> list[Spec]:
    fig = banet.R_FIGURE
    shp = fig.subject["shape"]
    shape = VideoShape(1, shp["C"], shp["T"], shp["H"], shp["W"])

    def ratio(conv: str | None, choice: str) -> float | None:
        cs = ctr.block("cs", shape).only(("bmm",)).value(conv)  # type: ignore[arg-type]
        nl = ctr.block("nl", shape, subsample=False).only(("bmm",)).value(conv)  # type: ignore[arg-type]
        return None if not nl else 100.0 * cs / nl

    specs = [Spec(**_common(fig), compute=ratio, unit=lambda c, ch: "%", basis="ratio",
                  not_determinable="not-determinable: this convention does not count matrix products (bmm), so the ratio is 0/0")]
    runs = measured.runs(results_dir, prefer)
    dev = banet.TABLE_VI_DEVICE

    def speed_ratio(key: str, table: str, item: str, paper_ratio: float, num: measured.Net, den: measured.Net,
                    extra_why: Callable[[], str] | None = None) -> Spec:
        run = measured.best_run(runs, (num, den))

        def got(conv: str | None, choice: str) -> float | None:
            return run.vps[num] / run.vps[den] if run else None

        return Spec(paper="banet", table=table, item=item, paper_value=paper_ratio, paper_unit="VPS ratio", key=key,
                    compute=got, unit=lambda c, ch: "VPS ratio", kind="speed", quantity="speed", basis="ratio",
                    fixed_convention=f"measured VPS ({run.label})" if run else "measured VPS", decimals=3,
                    devices=_speed_why(run, dev),
                    not_determinable=f"{NEEDS_DEVICE} of {num[0]} {num[1]} ({num[2]}) and {den[0]} {den[1]} ({den[2]}) "
                                     f"in one run (attnbench table-vi / attnbench speed --network)",
                    why=(lambda c, ch: extra_why()) if extra_why else None)

    labels, vi = banet.TABLE_VI_LABELS, banet.TABLE_VI_VPS
    for num, den in banet.TABLE_VI_RATIOS:
        specs.append(speed_ratio(f"banet.t6.vps.{num}-over-{den}", "Table VI",
                                 f"VPS ratio: {labels[num]} / {labels[den]} (paper: {vi[num]} / {vi[den]} on a {dev})",
                                 vi[num] / vi[den], ("eco", "16f", num), ("eco", "16f", den)))
    t3, base_key = banet.TABLE_III_VPS, banet.TABLE_III_BASE
    base_label, base_vps, base_net = t3[base_key]
    for key, (label, vps, net) in t3.items():
        if key == base_key:
            continue
        specs.append(speed_ratio(f"banet.t3.vps.{key}-over-{base_key}", "Table III",
                                 f"VPS ratio: {label} / {base_label} (paper: {vps} / {base_vps} on a {dev})",
                                 vps / base_vps, net, base_net))

    def fps_why() -> str:
        per = {label: vps * int(label.split("(")[1].rstrip("F)")) for label, vps, _ in t3.values() if "BAnet" in label}
        listed = ", ".join(f"{k} {v:.0f}" for k, v in per.items())
        lite = [v for k, v in per.items() if "Lite" in k]
        return (f"Table III's own VPS x frames: {listed} FPS -- none is {banet.FPS:.0f}; the abstract's 'up to "
                f"{banet.FPS:.0f} frames per second' is nearest the BANet-Lite range ({min(lite):.0f}-{max(lite):.0f})")

    fps_net = t3["banet-16f"][2]
    run = measured.best_run(runs, (fps_net,))
    specs.append(Spec(paper="banet", table="Sec. IV-C", item=f"BANet frames per second on a {dev} (16 frames x VPS)",
                      paper_value=banet.FPS, paper_unit="FPS", key="banet.sec4c.fps",
                      compute=lambda c, ch: run.vps[fps_net] * 16 if run else None, unit=lambda c, ch: "FPS",
                      kind="speed", quantity="speed", basis="total", decimals=0,
                      fixed_convention=f"measured VPS x 16 ({run.label})" if run else "measured VPS x 16",
                      devices=_speed_why(run, dev), why=lambda c, ch: fps_why(),
                      not_determinable=f"{NEEDS_DEVICE} of BANet(16F) (eco banet-16f, cs); {fps_why()}"))
    return specs


# --- STA --------------------------------------------------------------------------------------------------

_SIZE_CHOICES = {
    "state_dict (fp32 weights + buffers), MB": (1, True, 1e6),
    "state_dict (fp32 weights + buffers), MiB": (1, True, 2**20),
    "fp32 weights only, MB": (1, False, 1e6),
    "fp32 weights only, MiB": (1, False, 2**20),
    "checkpoint with SGD momentum (2 x fp32 weights + buffers), MB": (2, True, 1e6),
    "checkpoint with SGD momentum (2 x fp32 weights + buffers), MiB": (2, True, 2**20),
}
_CLASSIFIERS = {"51 classes (HMDB-51, Table III's dataset)": 51, "101 classes (UCF-101)": 101,
                "400 classes (Kinetics)": 400}


def _size(c: Counted, choice: str) -> float:
    copies, buffers, unit = _SIZE_CHOICES[choice]
    return (copies * 4 * c.params + (c.buffer_bytes if buffers else 0)) / unit


def _sta_specs(ctr: Counter) -> list[Spec]:
    specs: list[Spec] = []
    net, preset = sta.NETWORK, sta.PRESET
    printed = {f.key: f for f in sta.FIGURES}
    base_size, sta_size = sta.TABLE_III["none"][1], sta.TABLE_III["sta"][1]

    def size_why(conv: str | None, choice: str) -> str:
        base, with_sta = ctr.network(net, "none", preset), ctr.network(net, "sta", preset)
        extra = with_sta.params - base.params
        unit = "MB" if choice.endswith(", MB") else "MiB"
        return (f"STA's 3 blocks add {extra:,} parameters ({100 * extra / base.params:.2f}%, "
                f"{_size(with_sta, choice) - _size(base, choice):.2f} {unit} under this choice) while the "
                f"paper's sizes differ by {sta_size - base_size:g} MB ({100 * (sta_size / base_size - 1):.1f}%) "
                f"and its own # PARAM by {sta.TABLE_III['sta'][0] - sta.TABLE_III['none'][0]:.1f} x 10^6: the "
                f"size gap is not in the architecture")

    for fig in sta.FIGURES:
        s = fig.subject
        q = s["quantity"]
        attn = s.get("attn", "none")
        inc = attn != "none"
        base_fig = printed.get(f"sta.t3.none.{q}") if inc else None
        common = _common(fig)
        if q == "params":
            def params(conv: str | None, choice: str, a: str = attn) -> float:
                return ctr.params(net, a, preset, num_classes=_CLASSIFIERS[choice]) / 1e6

            specs.append(Spec(**common, compute=params, unit=lambda c, ch: "10^6 params", kind="fixed", quantity="params",
                              fixed_convention="params", family="sta-classifier", choices=tuple(_CLASSIFIERS),
                              basis="increment" if inc else "total", paper_base=base_fig.value if base_fig else None,
                              base=lambda conv, choice: params(conv, choice, "none")))
        elif q == "gflops":
            def gflops(conv: str | None, choice: str, a: str = attn) -> float:
                return ctr.network(net, a, preset).value(conv) / 1e9  # type: ignore[arg-type]

            specs.append(Spec(**common, compute=gflops, unit=_giga, basis="increment" if inc else "total",
                              paper_base=base_fig.value if base_fig else None,
                              base=lambda conv, choice: gflops(conv, choice, "none")))
        elif q in ("size", "size-increase"):
            def size(conv: str | None, choice: str, a: str = attn, q: str = q) -> float:
                if q == "size":
                    return _size(ctr.network(net, a, preset), choice)
                return 100.0 * (_size(ctr.network(net, "sta", preset), choice) / _size(ctr.network(net, "none", preset), choice) - 1)

            specs.append(Spec(
                **common, compute=size,
                unit=(lambda c, ch: ("MB" if ch.endswith(", MB") else "MiB")) if q == "size" else (lambda c, ch: "%"),
                kind="fixed", quantity="size", fixed_convention="bytes", family="sta-size", choices=tuple(_SIZE_CHOICES),
                why=size_why, basis="increment" if (inc or q == "size-increase") else "total",
                paper_base=base_fig.value if base_fig else None,
                base=(lambda conv, choice: _size(ctr.network(net, "none", preset), choice)) if inc else None))
        elif q == "layers":
            def layers(conv: str | None, choice: str, b: str = s["block"]) -> float:
                c = _table_iv_block(ctr, b)
                pools = sum(r.calls for (op, mod), r in c.log.records.items()
                            if op in ("mean", "sum", "amax", "max") and (mod is None or not mod.__module__.startswith("torch.nn")))
                return float(c.leaf_modules + pools)

            specs.append(Spec(**common, compute=layers, unit=lambda c, ch: "layers (leaf modules + pooling ops)",
                              kind="fixed", quantity="layers", fixed_convention="layers"))
    specs += _table_iv_specs(ctr)
    return specs


_STC_R = {f"r={r}": r for r in (16, 8, 4, 32)}
_AT_R = "r=16, chosen by attnbench (SE's ratio; STA prints no r)"


def _table_iv_specs(ctr: Counter) -> list[Spec]:
    t = sta.TABLE_IV_SHAPE
    c, l, h, w = t["c"], t["l"], t["h"], t["w"]
    at = f"c={c}, l={l}, h={h}, w={w}"
    specs = []
    common = dict(paper="sta", table="Table IV", decimals=0)
    f = sta.TABLE_IV_FORMULAS
    specs.append(Spec(**common, item=f"STA: # PARAM = {f['sta']['params']} at {at}", paper_value=float(sta.sta_params(c, h, w)),
                      paper_unit="params", key="sta.t4.sta.params", compute=lambda cv, ch: float(_table_iv_block(ctr, "sta").params),
                      unit=lambda cv, ch: "params", kind="fixed", quantity="params", fixed_convention="params"))
    specs.append(Spec(**common, item=f"STA: # MULT = {f['sta']['mults']} at {at}", paper_value=float(sta.sta_mults(c, l, h, w)),
                      paper_unit="mults", key="sta.t4.sta.mults",
                      compute=lambda cv, ch: float(_table_iv_block(ctr, "sta").value(cv)),  # type: ignore[arg-type]
                      unit=lambda cv, ch: _plain(cv, ch)))

    def stc(ch: str) -> Counted:
        return _table_iv_block(ctr, "stc", _STC_R[ch])

    def small_term(cv: str | None, ch: str) -> float:
        counted = stc(ch)
        numel = c * l * h * w
        ops = sum(v for (op, _), r in counted.log.records.items() if op != "relu" for (cat, k), v in r.cost if k == "op")
        return float(ops - 2 * numel)  # minus the pooling of x and the gating of x, which Table IV leaves out

    family = dict(family="stc-r", choices=tuple(_STC_R), evaluated_at=_AT_R)
    specs.append(Spec(**common, item=f"STC: # PARAM = {f['stc']['params']} at {at}", paper_value=sta.stc_params(c, l, 16),
                      paper_unit="params", key="sta.t4.stc.params", compute=lambda cv, ch: float(stc(ch).params),
                      unit=lambda cv, ch: "params", kind="fixed", quantity="params", fixed_convention="params",
                      paper_value_at=lambda ch: sta.stc_params(c, l, _STC_R[ch]), **family))
    specs.append(Spec(**common, item=f"STC: # MULT, term c^2 x (l^2 + l + 2) / r (the FC layers) at {at}",
                      paper_value=sta.stc_params(c, l, 16), paper_unit="mults", key="sta.t4.stc.mults.fc",
                      compute=lambda cv, ch: float(stc(ch).value("macs")), unit=lambda cv, ch: "MACs", kind="fixed",
                      fixed_convention="multiply-adds of the FC layers (macs)",
                      paper_value_at=lambda ch: sta.stc_params(c, l, _STC_R[ch]), **family))
    specs.append(Spec(**common, item=f"STC: # MULT, term c x (l + 3) at {at}", paper_value=float(c * (l + 3)),
                      paper_unit="mults", key="sta.t4.stc.mults.small", compute=small_term, unit=lambda cv, ch: "ops",
                      kind="fixed",
                      fixed_convention="single ops on the pooled vectors: the block's single ops less its ReLUs and "
                                       "the pooling and gating of x (c x l x h x w each, not in Table IV)",
                      paper_value_at=lambda ch: float(c * (l + 3)), **family))
    return specs


def _table_iv_block(ctr: Counter, block: str, r: int | None = None) -> Counted:
    t = sta.TABLE_IV_SHAPE
    shape = VideoShape(1, t["c"], t["l"], t["h"], t["w"])
    return ctr.block(block, shape, **({"ratio": r} if r is not None else {}))


# --- EAM --------------------------------------------------------------------------------------------------

_CBAM_KERNELS = {"1x7x7 spatial kernel (kt=1)": 1, "7x7x7 spatial kernel (kt=7)": 7}


def _eam_specs(ctr: Counter) -> list[Spec]:
    specs = []
    printed = {f.key: f for f in eam.FIGURES}
    for fig in eam.FIGURES:
        s = fig.subject
        net, preset, attn, q = s["network"], s["preset"], s["attn"], s["quantity"]
        base_fig = printed[f"eam.t4.{net}.{preset}.none.{q}"] if attn != "none" else None
        cbam = attn == "cbam"

        def counted(choice: str, a: str = attn, net: str = net, preset: str = preset) -> Counted:
            return ctr.network(net, a, preset, **({"kt": _CBAM_KERNELS[choice]} if a == "cbam" else {}))

        def base(preset: str = preset, net: str = net) -> Counted:
            return ctr.network(net, "none", preset)

        fam = dict(family="eam-cbam-kernel", choices=tuple(_CBAM_KERNELS)) if cbam else {}
        common = dict(**_common(fig, eam.ROUNDING), basis="increment" if base_fig else "total",
                      paper_base=base_fig.value if base_fig else None, **fam)
        if q == "params":
            specs.append(Spec(**common, compute=lambda conv, ch, counted=counted: counted(ch).params / 1e6,
                              base=lambda conv, ch, base=base: base().params / 1e6,
                              unit=lambda c, ch: "M params", kind="fixed", quantity="params", fixed_convention="params"))
        else:
            specs.append(Spec(**common, compute=lambda conv, ch, counted=counted: counted(ch).value(conv) / 1e9,  # type: ignore[arg-type]
                              base=lambda conv, ch, base=base: base().value(conv) / 1e9,  # type: ignore[arg-type]
                              unit=_giga))
    return specs


# --- W3 ---------------------------------------------------------------------------------------------------

_W3_CHOICES = {
    f"ratio={r}, {mix} temporal convs": {"ratio": r, "ct_mix": mix}
    for mix in ("depthwise", "full") for r in (16, 8, 4)
}
# TSM's code (mit-han-lab/temporal-shift-module, ops/non_local.py, make_non_local) puts a non-local block after
# blocks 0 and 2 of layer2 (res3) and 0, 2 and 4 of layer3 (res4): the network's own placement, counted whole.
# Wang et al.'s other configurations (Non-local Neural Networks, Table 2): 1 block (res4), 10 blocks (every
# block of res3 and res4); keys sub-sampled by a 1x2x2 max-pool after phi and g (TSM's default), before them
# (Wang et al.'s code), or not at all.
_TSM_NL = "TSM's code: 5 blocks (res3 x2, res4 x3)"
_NL_PLACEMENTS = {_TSM_NL: {1: 2, 2: 3}, "1 block (res4)": {2: 1}, "10 blocks (res3 x4, res4 x6)": {1: 4, 2: 6}}
_NL_KEYS = {"after": "keys sub-sampled after phi and g (TSM, mmcv)", "before": "keys sub-sampled before phi and g (Wang et al.'s code)",
            "none": "full keys"}
_NL_CHOICES = {f"{p}, {text}": (p, sub) for sub, text in _NL_KEYS.items() for p in _NL_PLACEMENTS}
_CBAM_CHOICES = ("3D CBAM per clip at every residual block", "2D CBAM per frame at every residual block")
# CBAM (Woo et al., ECCV 2018) Table 1: ResNet-50 3.858 GFLOPs, ResNet-50 + CBAM 3.864, per 224 x 224 image.
_CBAM_PAPER_PER_FRAME = 3.864 - 3.858


def _w3_specs(ctr: Counter) -> list[Spec]:
    net = w3.NETWORK

    def base(conv: str, preset: str) -> float:
        return ctr.network(net, "none", preset).value(conv) / 1e9

    def w3_value(conv: str, preset: str, choice: str) -> float:
        return ctr.network(net, "w3", preset, **_W3_CHOICES[choice]).value(conv) / 1e9

    def nl_value(conv: str, preset: str, choice: str) -> float:
        placement, sub = _NL_CHOICES[choice]
        if placement == _TSM_NL:  # the network's own placement: count it whole
            return ctr.network(net, "nl", preset, subsample=sub).value(conv) / 1e9
        return base(conv, preset) + _nl_extra(conv, preset, _NL_PLACEMENTS[placement], sub) / 1e9

    def _nl_extra(conv: str, preset: str, placement: dict[int, int], sub: str) -> int:
        sites = {s.stage: s for s in ctr.sites(net, "nl", preset, subsample=sub)}  # shape of res3 and res4 sites
        return sum(n * ctr.block("nl", sites[stage].shape, subsample=sub).value(conv) for stage, n in placement.items())

    def cbam_value(conv: str, preset: str, choice: str) -> float:
        if choice == _CBAM_CHOICES[0]:
            return ctr.network(net, "cbam", preset).value(conv) / 1e9
        extra = 0
        for site in ctr.sites(net, "cbam", preset):
            s = site.shape
            extra += ctr.block("cbam", VideoShape(s.B * s.T, s.C, 1, s.H, s.W)).value(conv)
        return base(conv, preset) + extra / 1e9

    printed = {f.key: f for f in w3.FIGURES}

    def base_fig(fig: Figure, preset: str) -> Figure:
        return printed["w3.t6.tsm"] if fig.table == "Table 6" else printed[f"w3.t1.tsm-{preset}"]

    def frames(preset: str) -> int:
        return int(preset.rstrip("f"))

    def linear_proof(conv: str | None, choice: str, fig: Figure) -> str:
        """W3's 8- and 16-frame extras cannot both hold for a cost that grows linearly with frames."""
        e8, e16 = printed["w3.text.extra-8f"].value, printed["w3.text.extra-16f"].value
        p8, p16 = printed["w3.text.extra-pct-8f"].value, printed["w3.text.extra-pct-16f"].value
        ours8 = w3_value(conv, "8f", choice) - base(conv, "8f")  # type: ignore[arg-type]
        ours16 = w3_value(conv, "16f", choice) - base(conv, "16f")  # type: ignore[arg-type]
        return (f"inconsistent in the paper: a block whose cost grows linearly with frames has extra(16f) = 2 x "
                f"extra(8f) and the same share of a network that does too (TSM-R50: {base(conv, '16f') / base(conv, '8f'):.3f}x); "
                f"the paper prints {e8:g} G and {e16:g} G ({e16 / e8:.1f}x) and {p8:g}% and {p16:g}%; our W3 blocks add "
                f"{ours8:.4g} G and {ours16:.4g} G ({ours16 / ours8:.3f}x) -- at most one of each pair can hold")

    specs: list[Spec] = []
    for fig in w3.FIGURES:
        s = fig.subject
        q, attn, preset = s["quantity"], s.get("attn", "none"), s.get("preset", "")
        common = _common(fig)
        if q == "gflops-sum":
            parts = s["parts"]
            specs.append(Spec(**common, compute=lambda conv, ch, parts=parts: sum(base(conv, p) for _, p in parts), unit=_giga))
            continue
        if attn == "none":
            other, opts = s.get("network", net), dict(s.get("options", {}))
            specs.append(Spec(**common, compute=lambda conv, ch, o=other, p=preset, opts=opts: ctr.network(o, "none", p, **opts).value(conv) / 1e9,
                              unit=_giga))
            continue
        if attn == "w3":
            fn, choices, family = w3_value, tuple(_W3_CHOICES), "w3-config"
        elif attn == "nl":
            fn, choices, family = nl_value, tuple(_NL_CHOICES), "nl-placement"
        else:
            fn, choices, family = cbam_value, _CBAM_CHOICES, "cbam-placement"

        def why(conv: str | None, choice: str, fn=fn, preset=preset, attn=attn, fig=fig, q=q) -> str:
            ours_extra = fn(conv, preset, choice) - base(conv, preset)  # type: ignore[arg-type]
            text = f"our {attn.upper()} blocks add {ours_extra:.3g} {_giga(conv)} to TSM-R50 at {frames(preset)} frames ({choice})"
            if q.startswith("gflops-extra"):
                return text + "; " + linear_proof(conv, choices[0], fig)
            if attn == "nl":
                sub_full = _nl_extra(conv, preset, {2: 3}, "none") / 1e9  # type: ignore[arg-type]
                text += (f"; closest reading, supported by no source: 3 res4 blocks with full keys, "
                         f"{base(conv, preset) + sub_full:.1f} G (+{sub_full:.1f})")  # type: ignore[arg-type]
            if attn == "cbam":
                per_frame = cbam_value(conv, preset, _CBAM_CHOICES[1]) - base(conv, preset)  # type: ignore[arg-type]
                printed_extra = fig.value - base_fig(fig, preset).value
                text += (f"; CBAM's own paper (Woo et al., Table 1: ResNet-50 3.858 -> 3.864 GFLOPs per 224 x 224 "
                         f"image) gives +{_CBAM_PAPER_PER_FRAME * frames(preset):.3g} G at {frames(preset)} frames, "
                         f"as our 2D CBAM per frame does (+{per_frame:.3g}): the paper's +{printed_extra:.3g} is "
                         f"{printed_extra / (_CBAM_PAPER_PER_FRAME * frames(preset)):.0f}x what CBAM's authors count")
            return text

        inc_base = (lambda conv, ch, p=preset: base(conv, p))  # type: ignore[arg-type]
        if q == "gflops":
            compute = (lambda conv, ch, fn=fn, p=preset: fn(conv, p, ch))
            unit, pbase = _giga, base_fig(fig, preset).value
        elif q == "gflops-extra":
            compute = (lambda conv, ch, fn=fn, p=preset: fn(conv, p, ch) - base(conv, p))
            unit, pbase = _giga, None
        else:  # gflops-extra-pct
            compute = (lambda conv, ch, fn=fn, p=preset: 100.0 * (fn(conv, p, ch) / base(conv, p) - 1))
            unit, pbase = (lambda c, ch: "%"), None
        note = None
        if attn == "w3":
            def note(choice: str, preset: str = preset) -> str:
                plain = ctr.network(net, "none", preset).params
                default = ctr.network(net, "w3", preset, **_W3_CHOICES[choices[0]]).params - plain
                chosen = ctr.network(net, "w3", preset, **_W3_CHOICES[choice]).params - plain
                return (f"with it W3's blocks hold {chosen / 1e6:.1f}M parameters (default: {default / 1e6:.2f}M; "
                        f"TSM-R50 itself {plain / 1e6:.1f}M); W3 prints no parameter count")
        specs.append(Spec(**common, compute=compute, unit=unit, family=family, choices=choices, why=why, note=note,
                          basis="increment", paper_base=pbase, base=inc_base))
    return specs


# ---------------------------------------------------------------------------------------------------------
# Public API


def reproduce(paper: str = "all", on_paper: Callable[[str], None] | None = None,
              prefer: Path | None = None) -> list[dict[str, Any]]:
    """Rows (dicts, JSON-able) for every figure of ``paper`` (banet, sta, eam, w3, stpa or all);
    ``on_paper(name)`` is called as each paper starts. Speed figures use measured rows under ``results/``;
    ``prefer`` names a folder whose rows come first (a report's own, wherever it writes)."""
    return _reproduce(paper, Path("results"), on_paper=on_paper, prefer=prefer)


def _reproduce(paper: str, results_dir: Path, counter: Counter | None = None,
               on_paper: Callable[[str], None] | None = None, prefer: Path | None = None) -> list[dict[str, Any]]:
    if paper not in CHOICES:
        raise unknown("paper", paper, CHOICES)
    ctr = counter or Counter(persist=True)
    builders: dict[str, Callable[[], list[Spec]]] = {
        "banet": lambda: _banet_specs(ctr, results_dir, prefer),
        "sta": lambda: _sta_specs(ctr),
        "eam": lambda: _eam_specs(ctr),
        "w3": lambda: _w3_specs(ctr),
        "stpa": lambda: [],  # stpa.FIGURES is empty: the paper prints no complexity figure
    }
    assert not stpa.FIGURES
    rows: list[dict[str, Any]] = []
    for name in PAPERS if paper == "all" else (paper,):
        if on_paper:
            on_paper(name)
        rows += evaluate(builders[name]())
    ctr.save()
    return [{"schema": SCHEMA, "kind": "paper-figure", **r} for r in rows]
