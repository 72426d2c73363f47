"""Every complexity figure the five papers print, beside ours, with a verdict and a reason a reader can check.

For each printed figure (:mod:`attnbench.papers.banet`, ``sta``, ``eam``, ``w3``; ``stpa`` prints none) a
row holds::

    paper, table, item, paper_value, value, unit, convention, delta_pct, verdict, reason
    (+ key, paper_unit, best_convention, by_convention, conventions_tied, choice, tried)

* ``value`` is ours, from attnbench's exact counter on the ``meta`` device (whole networks, each network
  configuration counted once per run) or from the built module (parameters, buffers, layers);
* ``convention`` is the counting convention (:mod:`attnbench.flops.conventions`) the paper's numbers imply,
  **found by trying them**: for every convention, the paper's FLOP-type rows are computed and the convention
  with the most rows within 1% (ties: smallest median |delta|, then the order of ``CONVENTIONS``) is the
  paper's -- one convention per paper; ``conventions_tied`` lists those that score the same (BANet's R, a
  ratio of products, is the same under every convention that counts matrix products).
  ``best_convention`` is the row's own closest one, and ``by_convention`` every convention's value, so a
  row that prefers another convention shows it;
* where the paper leaves a placement or hyper-parameter open, the plausible choices are all computed
  (``tried``: ``{choice, value}`` under the paper's convention) and the choice reproducing the paper's rows
  best (same rule, over the rows that share the choice) is used (``choice``); the first choice listed is
  attnbench's default;
* ``delta_pct`` = 100 (value - paper_value) / paper_value; ``verdict`` is "reproduced" when
  |delta| <= 1%, "off" otherwise, "not determinable" when no value can be computed (a speed that needs a
  device run); ``reason`` explains every "off" and "not determinable" row (and a reproduced row that needed
  a non-default choice) with numbers computed here.

Parameters, layers and sizes do not depend on a counting convention; their ``convention`` says what is
counted ("params", "layers", "bytes"). BANet's Table VI speeds are compared as ratios with a measured
``attnbench table-vi`` run read from ``results/*/table-vi.jsonl`` when there is one.
"""

from __future__ import annotations

import math
import statistics
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from attnbench.defaults import SCHEMA
from attnbench.errors import AttnBenchWarning, UsageError, unknown
from attnbench.flops.conventions import CONVENTIONS, OpLog, count_detailed
from attnbench.flops.cost import Cost
from attnbench.flops.count import meta_inputs, param_count
from attnbench.papers import banet, eam, sta, stpa, w3
from attnbench.papers.figures import Figure
from attnbench.store import jsonl
from attnbench.shapes import VideoShape

PAPERS: tuple[str, ...] = ("banet", "sta", "eam", "w3", "stpa")
CHOICES: tuple[str, ...] = (*PAPERS, "all")
TOLERANCE = 0.01  # |value - paper| <= 1% of the paper's value: reproduced
VERDICTS: tuple[str, ...] = ("reproduced", "off", "not determinable")
FIELDS: tuple[str, ...] = ("paper", "table", "item", "paper_value", "value", "unit", "convention", "delta_pct", "verdict", "reason")
NEEDS_DEVICE = "not determinable: needs a device run (attnbench table-vi)"


# ---------------------------------------------------------------------------------------------------------
# Verdicts


def delta_pct(paper_value: float | None, value: float | None) -> float | None:
    """100 (value - paper_value) / paper_value; None when either is missing or the paper's value is 0."""
    if paper_value is None or value is None or paper_value == 0:
        return None
    return 100.0 * (value - paper_value) / paper_value


def verdict(paper_value: float | None, value: float | None, tolerance: float = TOLERANCE) -> str:
    """"reproduced" when |value - paper_value| <= tolerance x |paper_value|, "off" otherwise, and
    "not determinable" when there is no value."""
    if value is None or paper_value is None:
        return "not determinable"
    # a relative slack of 1e-9 keeps the boundary (exactly 1%) on the reproduced side despite float rounding
    if abs(value - paper_value) <= tolerance * abs(paper_value) * (1 + 1e-9):
        return "reproduced"
    return "off"


# ---------------------------------------------------------------------------------------------------------
# Counting, cached per configuration within a run


@dataclass
class Counted:
    """One module counted once: cells, per-op costs, op log, and what the module itself holds."""

    cost: Cost
    per_op: dict[str, Cost]
    log: OpLog
    params: int
    buffer_bytes: int
    leaf_modules: int
    _values: dict[str, int] = field(default_factory=dict)

    def value(self, convention: str) -> int:
        if convention not in self._values:
            self._values[convention] = CONVENTIONS[convention](self.cost, self.per_op, self.log)
        return self._values[convention]

    def only(self, ops: Iterable[str]) -> "Counted":
        """The same count restricted to some ATen ops (for ratios of one kind of product)."""
        names = frozenset(ops)
        per_op = {k: v for k, v in self.per_op.items() if k in names}
        log = OpLog({k: r for k, r in self.log.records.items() if k[0] in names})
        return Counted(Cost.total(per_op.values()), per_op, log, self.params, self.buffer_bytes, self.leaf_modules)


def _measure(module: nn.Module, shapes: Sequence[Sequence[int]]) -> Counted:
    result, log = count_detailed(module, meta_inputs(shapes))
    buffers = sum(b.numel() * b.element_size() for b in module.buffers())
    leaves = sum(1 for m in module.modules() if not any(True for _ in m.children()))
    return Counted(result.cost, result.per_op, log, param_count(module), buffers, leaves)


class Counter:
    """Networks and blocks counted on ``meta``, each configuration once."""

    def __init__(self) -> None:
        self._cache: dict[tuple[Any, ...], Counted] = {}

    def network(self, name: str, attn: str = "none", preset: str | None = None, **options: Any) -> Counted:
        key = ("network", name, attn, preset, tuple(sorted(options.items())))
        if key not in self._cache:
            from attnbench import cases

            case = cases.resolve_network(name, attn, preset, options=options)
            self._cache[key] = _measure(case.build("meta"), case.input_shapes())
        return self._cache[key]

    def block(self, name: str, shape: VideoShape, **options: Any) -> Counted:
        key = ("block", name, tuple(shape.as_list()), tuple(sorted(options.items())))
        if key not in self._cache:
            from attnbench.blocks.registry import get_block

            spec = get_block(name)
            opts = spec.resolve_options(options)
            spec.validate(shape, opts)
            import torch

            with torch.device("meta"):
                module = spec.build(shape, **opts)
            self._cache[key] = _measure(module, spec.input_shapes(shape, opts))
        return self._cache[key]

    def sites(self, network: str, attn: str, preset: str, **options: Any) -> list[Any]:
        from attnbench import cases

        return cases.resolve_network(network, attn, preset, options=options).sites()


# ---------------------------------------------------------------------------------------------------------
# Row specifications

Compute = Callable[[str | None, str], float | None]  # (convention or None, choice) -> value in the paper's scale


@dataclass
class Spec:
    """How to get our value for one printed figure."""

    paper: str
    table: str
    item: str
    paper_value: float
    paper_unit: str
    key: str
    compute: Compute
    unit: Callable[[str | None, str], str]
    kind: str = "flops"  # "flops": depends on the counting convention; "fixed": does not ("params", ...)
    fixed_convention: str = ""  # what a fixed row counts: "params", "layers", "bytes", "measured VPS"
    family: str | None = None  # rows sharing an open choice
    choices: tuple[str, ...] = ("default",)
    select: bool = True  # pick the best choice (False: always the first)
    paper_value_at: Callable[[str], float] | None = None  # when the printed value depends on the choice (formulas)
    not_determinable: str = ""
    why: Callable[[str | None, str], str] | None = None  # the cause of a gap, with computed numbers
    note: Callable[[str], str] | None = None  # what a non-default choice implies (reproduced rows), computed


def _giga(conv: str | None, choice: str = "") -> str:
    return f"G{CONVENTIONS[conv].unit}" if conv else "G"


def _plain(conv: str | None, choice: str = "") -> str:
    return CONVENTIONS[conv].unit if conv else ""


def _fmt(v: float | None) -> str:
    if v is None:
        return "n/a"
    return f"{v:.4g}" if abs(v) < 1e6 else f"{v:,.0f}"


def _network_figure(fig: Figure, ctr: Counter) -> Spec:
    s = fig.subject
    net, attn, preset, quantity = s["network"], s.get("attn", "none"), s.get("preset"), s["quantity"]
    if quantity == "params":
        return Spec(fig.paper, fig.table, fig.item, fig.value, fig.unit, fig.key,
                    lambda conv, choice: ctr.network(net, attn, preset).params / 1e6,
                    lambda conv, choice: "M params", kind="fixed", fixed_convention="params")
    return Spec(fig.paper, fig.table, fig.item, fig.value, fig.unit, fig.key,
                lambda conv, choice: ctr.network(net, attn, preset).value(conv) / 1e9, _giga)


# --- BANet ------------------------------------------------------------------------------------------------


def _banet_specs(ctr: Counter, results_dir: Path) -> list[Spec]:
    fig = banet.R_FIGURE
    shp = fig.subject["shape"]
    shape = VideoShape(1, shp["C"], shp["T"], shp["H"], shp["W"])

    def ratio(conv: str | None, choice: str) -> float | None:
        cs = ctr.block("cs", shape).only(("bmm",)).value(conv)  # type: ignore[arg-type]
        nl = ctr.block("nl", shape, subsample=False).only(("bmm",)).value(conv)  # type: ignore[arg-type]
        return None if not nl else 100.0 * cs / nl

    specs = [Spec(fig.paper, fig.table, fig.item, fig.value, fig.unit, fig.key, ratio, lambda c, ch: "%",
                  not_determinable="this convention does not count matrix products (bmm), so the ratio is 0/0")]
    measured, where = _table_vi_measurement(results_dir)
    labels = banet.TABLE_VI_LABELS
    for num, den in banet.TABLE_VI_RATIOS:
        paper_ratio = banet.TABLE_VI_VPS[num] / banet.TABLE_VI_VPS[den]

        def got(conv: str | None, choice: str, num: str = num, den: str = den) -> float | None:
            if measured is None or not measured.get(den):
                return None
            return measured[num] / measured[den]

        specs.append(Spec(
            "banet", "Table VI", f"VPS ratio: {labels[num]} / {labels[den]} (paper: {banet.TABLE_VI_DEVICE})",
            paper_ratio, "VPS ratio", f"banet.t6.vps.{num}-over-{den}", got, lambda c, ch: "VPS ratio",
            kind="fixed", fixed_convention=f"measured VPS ({where})" if where else "measured VPS",
            not_determinable=NEEDS_DEVICE,
            why=(lambda c, ch, where=where: f"measured on {where}; speed ratios depend on the device, dtype and "
                 f"kernels, not on the architecture alone") if where else None,
        ))
    return specs


def _table_vi_measurement(results_dir: Path) -> tuple[dict[str, float] | None, str]:
    """Latest ok VPS of eco-lite none/nl/cs at 16f from results/*/table-vi.jsonl, preferring a CUDA device,
    fp32 and batch 1; (None, "") when no complete run is on disk."""
    runs: dict[tuple[str, str, int], dict[str, Any]] = {}
    for path in sorted(results_dir.glob("*/table-vi.jsonl")) if results_dir.is_dir() else []:
        odd = 0
        try:
            rows = jsonl.load(path, need=()).rows
        except UsageError as err:  # a folder or an unreadable file named like the results: skipped
            warnings.warn(f"skipped {err}", AttnBenchWarning, stacklevel=2)
            continue
        for row in rows:
            if row.get("kind") != "network" or row.get("network") != "eco-lite" or row.get("status") != "ok":
                continue
            attn, preset = str(row.get("attn", "")), str(row.get("preset", ""))
            if preset != "16f" or attn not in ("none", "nl", "cs") or not row.get("vps"):
                continue
            try:  # a row whose fields have the wrong types is not a measurement
                settings = row.get("settings") or {}
                key = (str(row.get("device_slug") or path.parent.name), str(settings.get("dtype", "fp32")),
                       int(settings.get("batch", 1)))
                vps = float(row["vps"])
                fp = row.get("fingerprint") or {}
                if not (math.isfinite(vps) and vps > 0 and isinstance(fp, dict)):
                    raise ValueError(vps)
            except (TypeError, ValueError, AttributeError, OverflowError):
                odd += 1
                continue
            run = runs.setdefault(key, {"vps": {}, "fingerprint": fp})
            run["vps"][attn] = vps
        if odd:
            warnings.warn(f"{path}: skipped {odd} Table VI row(s) with fields of the wrong type", AttnBenchWarning,
                          stacklevel=2)
    complete = [(k, r) for k, r in runs.items() if {"none", "nl", "cs"} <= set(r["vps"])]
    if not complete:
        return None, ""

    def rank(item: tuple[tuple[str, str, int], dict[str, Any]]) -> tuple[int, int, int, str]:
        (slug, dtype, batch), _ = item
        return (0 if slug.startswith("cuda") else 1, 0 if dtype == "fp32" else 1, 0 if batch == 1 else 1, slug)

    (slug, dtype, batch), run = min(complete, key=rank)
    fp = run["fingerprint"]
    device = fp.get("gpu_name") or fp.get("cpu_model") or slug
    return run["vps"], f"{device}, {dtype}, batch {batch}"


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
    base_size, sta_size = sta.TABLE_III["none"][1], sta.TABLE_III["sta"][1]
    for fig in sta.FIGURES:
        s = fig.subject
        q = s["quantity"]
        if q == "params":
            specs.append(Spec(
                fig.paper, fig.table, fig.item, fig.value, fig.unit, fig.key,
                lambda conv, choice, a=s["attn"]: ctr.network(net, a, preset, num_classes=_CLASSIFIERS[choice]).params / 1e6,
                lambda c, ch: "10^6 params", kind="fixed", fixed_convention="params",
                family="sta-classifier", choices=tuple(_CLASSIFIERS)))
        elif q == "gflops":
            specs.append(_network_figure(fig, ctr))
        elif q in ("size", "size-increase"):
            def size(conv: str | None, choice: str, a: str = s.get("attn", "none"), q: str = q) -> float:
                if q == "size":
                    return _size(ctr.network(net, a, preset), choice)
                return 100.0 * (_size(ctr.network(net, "sta", preset), choice) / _size(ctr.network(net, "none", preset), choice) - 1)

            def size_why(conv: str | None, choice: str) -> str:
                base, with_sta = ctr.network(net, "none", preset), ctr.network(net, "sta", preset)
                extra = with_sta.params - base.params
                unit = "MB" if choice.endswith(", MB") else "MiB"
                return (f"STA's 3 blocks add {extra:,} parameters ({100 * extra / base.params:.2f}%, "
                        f"{_size(with_sta, choice) - _size(base, choice):.2f} {unit} under this choice) while the "
                        f"paper's sizes differ by {sta_size - base_size:g} MB ({100 * (sta_size / base_size - 1):.1f}%) "
                        f"and its own # PARAM by {sta.TABLE_III['sta'][0] - sta.TABLE_III['none'][0]:.1f} x 10^6: the "
                        f"size gap is not in the architecture")

            specs.append(Spec(
                fig.paper, fig.table, fig.item, fig.value, fig.unit, fig.key, size,
                (lambda c, ch: ("MB" if ch.endswith(", MB") else "MiB")) if q == "size" else (lambda c, ch: "%"),
                kind="fixed", fixed_convention="bytes", family="sta-size", choices=tuple(_SIZE_CHOICES), why=size_why))
        elif q == "layers":
            def layers(conv: str | None, choice: str, b: str = s["block"]) -> float:
                c = _table_iv_block(ctr, b)
                pools = sum(r.calls for (op, mod), r in c.log.records.items()
                            if op in ("mean", "sum", "amax", "max") and (mod is None or not mod.__module__.startswith("torch.nn")))
                return float(c.leaf_modules + pools)

            specs.append(Spec(fig.paper, fig.table, fig.item, fig.value, fig.unit, fig.key, layers,
                              lambda c, ch: "layers (leaf modules + pooling ops)", kind="fixed", fixed_convention="layers"))
    cl = sta.TABLE_IV_SHAPE
    c, l, h, w = cl["c"], cl["l"], cl["h"], cl["w"]
    for block, quantity in sta.TABLE_IV_ROWS:
        formula = sta.TABLE_IV_FORMULAS[block][quantity]
        item = f"{block.upper()}: # {'PARAM' if quantity == 'params' else 'MULT'} = {formula} at c={c}, l={l}, h={h}, w={w}"
        if block == "sta":
            printed = sta.sta_params(c, h, w) if quantity == "params" else sta.sta_mults(c, l, h, w)
            at, choices, family = None, ("default",), None
        else:
            rs = {f"r={r}": r for r in (16, 8, 4, 32)}
            fn = sta.stc_params if quantity == "params" else sta.stc_mults
            printed = fn(c, l, 16)
            at = (lambda ch, fn=fn, rs=rs: fn(c, l, rs[ch]))
            choices, family = tuple(rs), "stc-r"
            item += " (r not printed; 16 = SE's ratio)"

        def ours(conv: str | None, choice: str, block: str = block, quantity: str = quantity) -> float:
            r = int(choice[2:]) if choice.startswith("r=") else None
            counted = _table_iv_block(ctr, block, r)
            return float(counted.params if quantity == "params" else counted.value(conv))  # type: ignore[arg-type]

        specs.append(Spec(
            "sta", "Table IV", item, float(printed), "params" if quantity == "params" else "mults",
            f"sta.t4.{block}.{quantity}", ours,
            (lambda c_, ch: "params") if quantity == "params" else (lambda c_, ch: _plain(c_, ch)),
            kind="fixed" if quantity == "params" else "flops",
            fixed_convention="params" if quantity == "params" else "",
            family=family, choices=choices, select=False, paper_value_at=at))
    return specs


def _table_iv_block(ctr: Counter, block: str, r: int | None = None) -> Counted:
    t = sta.TABLE_IV_SHAPE
    shape = VideoShape(1, t["c"], t["l"], t["h"], t["w"])
    return ctr.block(block, shape, **({"ratio": r} if r is not None else {}))


# --- EAM --------------------------------------------------------------------------------------------------

_CBAM_KERNELS = {"1x7x7 spatial kernel (kt=1)": 1, "7x7x7 spatial kernel (kt=7)": 7}


def _eam_specs(ctr: Counter) -> list[Spec]:
    specs = []
    for fig in eam.FIGURES:
        s = fig.subject
        net, preset, attn, q = s["network"], s["preset"], s["attn"], s["quantity"]
        if attn != "cbam":
            specs.append(_network_figure(fig, ctr))
            continue

        def counted(choice: str, net: str = net, preset: str = preset) -> Counted:
            return ctr.network(net, "cbam", preset, kt=_CBAM_KERNELS[choice])

        if q == "params":
            specs.append(Spec(fig.paper, fig.table, fig.item, fig.value, fig.unit, fig.key,
                              lambda conv, ch, counted=counted: counted(ch).params / 1e6, lambda c, ch: "M params",
                              kind="fixed", fixed_convention="params", family="eam-cbam-kernel", choices=tuple(_CBAM_KERNELS)))
        else:
            specs.append(Spec(fig.paper, fig.table, fig.item, fig.value, fig.unit, fig.key,
                              lambda conv, ch, counted=counted: counted(ch).value(conv) / 1e9, _giga,  # type: ignore[arg-type]
                              family="eam-cbam-kernel", choices=tuple(_CBAM_KERNELS)))
    return specs


# --- W3 ---------------------------------------------------------------------------------------------------

_W3_CHOICES = {
    f"ratio={r}, {mix} temporal convs": {"ratio": r, "ct_mix": mix}
    for mix in ("depthwise", "full") for r in (16, 8, 4)
}
# Wang et al.'s configurations (Non-local Neural Networks, Table 2): 1 block (res4), 5 blocks (2 in res3, 3 in
# res4, every other block), 10 blocks (every block of res3 and res4); keys sub-sampled by a 1x2x2 max-pool or not.
_NL_PLACEMENTS = {"5 blocks (res3 x2, res4 x3)": {1: 2, 2: 3}, "1 block (res4)": {2: 1}, "10 blocks (res3 x4, res4 x6)": {1: 4, 2: 6}}
_NL_CHOICES = {f"{p}, {'sub-sampled' if sub else 'full'} keys": (p, sub) for p in _NL_PLACEMENTS for sub in (True, False)}
_CBAM_CHOICES = ("3D CBAM per clip at every residual block", "2D CBAM per frame at every residual block")


def _w3_specs(ctr: Counter) -> list[Spec]:
    net = w3.NETWORK

    def base(conv: str, preset: str) -> float:
        return ctr.network(net, "none", preset).value(conv) / 1e9

    def w3_value(conv: str, preset: str, choice: str) -> float:
        return ctr.network(net, "w3", preset, **_W3_CHOICES[choice]).value(conv) / 1e9

    def nl_value(conv: str, preset: str, choice: str) -> float:
        placement, sub = _NL_CHOICES[choice]
        if placement == next(iter(_NL_PLACEMENTS)):  # the network's own placement: count it whole
            return ctr.network(net, "nl", preset, subsample=sub).value(conv) / 1e9
        sites = {s.stage: s for s in ctr.sites(net, "nl", preset, subsample=sub)}  # shape of res3 and res4 sites
        extra = sum(n * ctr.block("nl", sites[stage].shape, subsample=sub).value(conv)
                    for stage, n in _NL_PLACEMENTS[placement].items())
        return base(conv, preset) + extra / 1e9

    def cbam_value(conv: str, preset: str, choice: str) -> float:
        if choice == _CBAM_CHOICES[0]:
            return ctr.network(net, "cbam", preset).value(conv) / 1e9
        extra = 0
        for site in ctr.sites(net, "cbam", preset):
            s = site.shape
            extra += ctr.block("cbam", VideoShape(s.B * s.T, s.C, 1, s.H, s.W)).value(conv)
        return base(conv, preset) + extra / 1e9

    printed = {f.key: f.value for f in w3.FIGURES}

    def printed_base(fig: Figure, preset: str) -> float:
        return printed["w3.t6.tsm"] if fig.table == "Table 6" else printed[f"w3.t1.tsm-{preset}"]

    specs: list[Spec] = []
    for fig in w3.FIGURES:
        s = fig.subject
        q, attn, preset = s["quantity"], s.get("attn", "none"), s.get("preset", "")
        common = dict(paper=fig.paper, table=fig.table, item=fig.item, paper_value=fig.value, paper_unit=fig.unit, key=fig.key)
        if q == "gflops-sum":
            parts = s["parts"]
            specs.append(Spec(**common, compute=lambda conv, ch, parts=parts: sum(base(conv, p) for _, p in parts), unit=_giga))
            continue
        if attn == "none":
            specs.append(Spec(**common, compute=lambda conv, ch, p=preset: base(conv, p), unit=_giga))
            continue
        if attn == "w3":
            fn, choices, family = w3_value, tuple(_W3_CHOICES), "w3-config"
        elif attn == "nl":
            fn, choices, family = nl_value, tuple(_NL_CHOICES), "nl-placement"
        else:
            fn, choices, family = cbam_value, _CBAM_CHOICES, "cbam-placement"

        def why(conv: str | None, choice: str, fn=fn, preset=preset, attn=attn, fig=fig, q=q) -> str:
            ours_extra = fn(conv, preset, choice) - base(conv, preset)  # type: ignore[arg-type]
            text = f"our {attn.upper()} blocks add {ours_extra:.3g} {_giga(conv)} to TSM-R50 at {preset[:-1]} frames ({choice})"
            if q == "gflops":
                pb = printed_base(fig, preset)
                text += f"; the paper's figure implies +{fig.value - pb:.3g} G over its TSM's {pb:g}"
            if attn == "nl" and _NL_CHOICES[choice][0] == next(iter(_NL_PLACEMENTS)):
                c = ctr.network(net, "nl", preset, subsample=_NL_CHOICES[choice][1])
                text += f" (of which the attention products, bmm: {c.only(('bmm',)).value(conv) / 1e9:.3g} G)"  # type: ignore[arg-type]
            return text

        if q == "gflops":
            compute = (lambda conv, ch, fn=fn, p=preset: fn(conv, p, ch))
            unit = _giga
        elif q == "gflops-extra":
            compute = (lambda conv, ch, fn=fn, p=preset: fn(conv, p, ch) - base(conv, p))
            unit = _giga
        else:  # gflops-extra-pct
            compute = (lambda conv, ch, fn=fn, p=preset: 100.0 * (fn(conv, p, ch) / base(conv, p) - 1))
            unit = (lambda c, ch: "%")
        note = None
        if attn == "w3":
            def note(choice: str, preset: str = preset) -> str:
                plain = ctr.network(net, "none", preset).params
                default = ctr.network(net, "w3", preset, **_W3_CHOICES[choices[0]]).params - plain
                chosen = ctr.network(net, "w3", preset, **_W3_CHOICES[choice]).params - plain
                return (f"with it W3's blocks hold {chosen / 1e6:.1f}M parameters (default: {default / 1e6:.2f}M; "
                        f"TSM-R50 itself {plain / 1e6:.1f}M); W3 prints no parameter count")
        specs.append(Spec(**common, compute=compute, unit=unit, family=family, choices=choices, why=why, note=note))
    return specs


# ---------------------------------------------------------------------------------------------------------
# Evaluation


def _score(pairs: Sequence[tuple[float | None, float | None]]) -> tuple[int, float]:
    """(minus the rows within 1%, median |delta| in % rounded to 0.01): smaller is closer. A missing value
    counts as infinitely far; medians within 0.01 points tie (and the caller's order decides), so that a
    convention does not win on a difference far below the papers' printed precision."""
    deltas = [delta_pct(p, v) for p, v in pairs]
    hits = sum(1 for (p, v) in pairs if verdict(p, v) == "reproduced")
    spread = [abs(d) if d is not None else float("inf") for d in deltas]
    return (-hits, round(statistics.median(spread), 2) if spread else float("inf"))


def _paper_value(spec: Spec, choice: str) -> float:
    return spec.paper_value_at(choice) if spec.paper_value_at else spec.paper_value


def _safe(spec: Spec, conv: str | None, choice: str) -> float | None:
    try:
        return spec.compute(conv, choice)
    except ZeroDivisionError:
        return None


def _choose(specs: list[Spec], conv: str | None) -> dict[str, str]:
    """The choice per family that reproduces its rows best under ``conv``."""
    chosen: dict[str, str] = {}
    families: dict[str, list[Spec]] = {}
    for s in specs:
        if s.family:
            families.setdefault(s.family, []).append(s)
    for fam, members in families.items():
        choices = members[0].choices
        if not all(m.select for m in members):
            chosen[fam] = choices[0]
            continue
        best = min(choices, key=lambda ch: (_score([(_paper_value(m, ch), _safe(m, conv if m.kind == "flops" else None, ch))
                                                    for m in members]), choices.index(ch)))
        chosen[fam] = best
    return chosen


def _evaluate(specs: list[Spec]) -> list[dict[str, Any]]:
    if not specs:
        return []
    flop_specs = [s for s in specs if s.kind == "flops"]
    per_conv: dict[str, tuple[dict[str, str], dict[str, float | None]]] = {}
    for conv in CONVENTIONS:
        chosen = _choose(flop_specs, conv)
        values = {s.key: _safe(s, conv, chosen.get(s.family or "", s.choices[0])) for s in flop_specs}
        per_conv[conv] = (chosen, values)
    order = list(CONVENTIONS)

    def conv_score(conv: str) -> tuple[tuple[int, float], int]:
        chosen, values = per_conv[conv]
        pairs = [(_paper_value(s, chosen.get(s.family or "", s.choices[0])), values[s.key]) for s in flop_specs]
        return _score(pairs), order.index(conv)

    paper_conv = min(order, key=conv_score) if flop_specs else None
    tied = [c for c in order if conv_score(c)[0] == conv_score(paper_conv)[0]] if paper_conv else []
    fixed_choice = _choose([s for s in specs if s.kind == "fixed"], None)
    rows = []
    for s in specs:
        conv = paper_conv if s.kind == "flops" else None
        chosen = per_conv[conv][0] if conv else fixed_choice
        choice = chosen.get(s.family or "", s.choices[0])
        value = _safe(s, conv, choice)
        pv = _paper_value(s, choice)
        d = delta_pct(pv, value)
        v = verdict(pv, value)
        by_conv: dict[str, float | None] = {}
        best = s.fixed_convention
        if s.kind == "flops":
            for c in order:
                ch = per_conv[c][0].get(s.family or "", s.choices[0])
                by_conv[c] = _safe(s, c, ch)
            ranked = [c for c in order if by_conv[c] is not None]
            best = min(ranked, key=lambda c: (abs(delta_pct(pv, by_conv[c]) or 0.0), order.index(c))) if ranked else paper_conv or ""
        tried = [{"choice": ch, "value": _safe(s, conv, ch), **({"paper_value": _paper_value(s, ch)} if s.paper_value_at else {})}
                 for ch in s.choices] if s.family else []
        row = {
            "paper": s.paper, "table": s.table, "item": s.item, "paper_value": pv, "value": value,
            "unit": s.unit(conv, choice), "convention": conv or s.fixed_convention, "delta_pct": d, "verdict": v,
            "reason": "", "key": s.key, "paper_unit": s.paper_unit, "best_convention": best, "by_convention": by_conv,
            "choice": choice if s.family else None, "tried": tried,
            "conventions_tied": tied if s.kind == "flops" else [],
        }
        row["reason"] = _reason(s, row, conv)
        rows.append(row)
    return rows


def _reason(s: Spec, row: dict[str, Any], conv: str | None) -> str:
    v = row["verdict"]
    if v == "not determinable":
        return s.not_determinable or "not determinable: no value"
    parts: list[str] = []
    default = s.choices[0]
    if v == "off":
        parts.append(f"ours {_fmt(row['value'])} {row['unit']} vs printed {_fmt(row['paper_value'])} {row['paper_unit']} "
                     f"({row['delta_pct']:+.2f}%)" + (f" under {conv}" if conv else ""))
        best = row["best_convention"]
        if conv and best != conv and row["by_convention"].get(best) is not None:
            bv = row["by_convention"][best]
            parts.append(f"closest convention {best}: {_fmt(bv)} ({delta_pct(row['paper_value'], bv):+.2f}%)")
        if s.family and len(s.choices) > 1:
            hits = [t for t in row["tried"] if verdict(t.get("paper_value", row["paper_value"]), t["value"]) == "reproduced"]
            closest = min(row["tried"], key=lambda t: abs(delta_pct(t.get("paper_value", row["paper_value"]), t["value"]) or float("inf")))
            parts.append(f"none of {len(s.choices)} tried choices reproduces it (closest: {closest['choice']}, "
                         f"{_fmt(closest['value'])})" if not hits else
                         f"{len(hits)} of {len(s.choices)} tried choices would alone ({hits[0]['choice']}), not the one "
                         f"chosen for the rows sharing it ({row['choice']})")
        if s.why is not None:
            parts.append(s.why(conv, row["choice"] or default))
    elif s.family and row["choice"] != default and s.select:
        dv = next(t["value"] for t in row["tried"] if t["choice"] == default)
        parts.append(f"reproduced with {row['choice']}; attnbench's default ({default}) gives {_fmt(dv)} "
                     f"({delta_pct(row['paper_value'], dv):+.2f}%)")
        if s.note is not None:
            parts.append(s.note(row["choice"]))
    return "; ".join(p for p in parts if p)


# ---------------------------------------------------------------------------------------------------------
# Public API


def reproduce(paper: str = "all", on_paper: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Rows (dicts, JSON-able) for every complexity figure of ``paper`` (banet, sta, eam, w3, stpa or all);
    ``on_paper(name)`` is called as each paper starts."""
    return _reproduce(paper, Path("results"), on_paper=on_paper)


def _reproduce(paper: str, results_dir: Path, counter: Counter | None = None,
               on_paper: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    if paper not in CHOICES:
        raise unknown("paper", paper, CHOICES)
    ctr = counter or Counter()
    builders: dict[str, Callable[[], list[Spec]]] = {
        "banet": lambda: _banet_specs(ctr, results_dir),
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
        rows += _evaluate(builders[name]())
    return [{"schema": SCHEMA, "kind": "paper-figure", **r} for r in rows]


def summary(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Counts per verdict, the share reproduced within 1% (of all rows and of determinable rows), and per
    paper: its rows' verdicts and the convention its numbers imply."""
    counts = {v: sum(1 for r in rows if r["verdict"] == v) for v in VERDICTS}
    n = len(rows)
    determinable = counts["reproduced"] + counts["off"]
    by_paper: dict[str, dict[str, Any]] = {}
    for r in rows:
        p = by_paper.setdefault(r["paper"], {"rows": 0, **{v: 0 for v in VERDICTS}, "convention": None})
        p["rows"] += 1
        p[r["verdict"]] += 1
        if r.get("by_convention"):
            p["convention"] = r["convention"]
            p["conventions_tied"] = r.get("conventions_tied", [])
    return {
        "rows": n,
        "verdicts": counts,
        "share_reproduced": counts["reproduced"] / n if n else 0.0,
        "share_reproduced_of_determinable": counts["reproduced"] / determinable if determinable else 0.0,
        "tolerance_pct": 100 * TOLERANCE,
        "by_paper": by_paper,
    }
