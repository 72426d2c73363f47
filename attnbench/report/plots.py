"""Plots of sweep, speed and roofline rows, each written as a PNG and an SVG beside it (matplotlib, Agg
backend; no display needed).

* :func:`cost_vs_size` -- log-log cost against one swept size, one line per block (FLOPs, latency, ...);
* :func:`ratio_vs_size` -- NL/CS FLOP ratio (and 1/R, the correlation-matrix ratio) against a size;
* :func:`latency_vs_size` -- measured latency against T per block and attention kernel (naive, sdpa);
* :func:`memory_vs_size` -- measured peak working memory against T, with the closed-form prediction;
* :func:`roofline` -- achieved FLOP/s against arithmetic intensity on the device's measured roofline;
* :func:`vps_bars` -- videos per second per network and attention choice, from speed rows with ``vps``.

Every function returns the PNG's path, or None when the rows hold nothing to draw; the SVG has the same
name with ``.svg`` (:func:`outputs` names both). Blocks are named as their papers name them
(:func:`paper_name`: NL, CS, EAM ...). A growth exponent ("slope") is printed only for a series of at least
:data:`MIN_FIT_POINTS` sizes; series that coincide are drawn with distinct markers and line styles and say
which series they coincide with. Figures are built with :class:`matplotlib.figure.Figure` (no pyplot global
state) and written through a temporary file and a rename.
"""

from __future__ import annotations

import functools
import io
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import matplotlib

matplotlib.use("Agg")  # before any pyplot import anywhere in the process: never a display

from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullFormatter, NullLocator, ScalarFormatter  # noqa: E402

from attnbench.store import files  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MIN_FIT_POINTS = 3  # no slope is fitted (or printed) through fewer sizes than this
COINCIDE_REL = 0.10  # two series within 10% of each other at every shared size overlap on a log axis
STYLE = {  # readable in a paper at column width: 10-12 pt text, text kept as text in the SVG
    "font.size": 11, "axes.titlesize": 12, "axes.labelsize": 11, "legend.fontsize": 10,
    "xtick.labelsize": 10, "ytick.labelsize": 10, "lines.linewidth": 1.8, "lines.markersize": 7,
    "svg.fonttype": "none", "axes.spines.top": False, "axes.spines.right": False,
}
PNG_DPI = 150
AXIS_LABELS = {"T": "T (frames)", "HW": "H = W (pixels)", "C": "C (channels)"}
METRIC_LABELS = {
    "flops": "FLOPs (multiply-add = 2)",
    "latency_ms": "median latency (ms)",
    "peak_bytes": "peak memory (bytes)",
    "params": "parameters (count)",
    "largest_bytes": "largest intermediate (bytes)",
}
METRIC_TITLES = {"flops": "FLOPs", "latency_ms": "Latency", "peak_bytes": "Peak memory", "params": "Parameters",
                 "largest_bytes": "Largest intermediate"}
# The names the papers use (BANet calls the non-local block NL and its own cascade CS); a block not listed
# (a user's) keeps its registry name.
PAPER_NAMES = {
    "nl": "NL", "cs": "CS", "fa": "FA", "eam": "EAM", "eam-s": "EAM-S", "eam-t": "EAM-T", "se": "SE",
    "eca": "ECA", "cbam": "CBAM", "stpa": "STPA", "sta": "STA", "stc": "STC", "w3": "W3", "w3-ct": "W3-CT",
    "w3-st": "W3-ST",
}
NETWORK_NAMES = {"eco-lite": "ECO-Lite", "eco": "ECO", "eco-lite-released": "ECO-Lite (released)",
                 "eco-released": "ECO (released)", "resnet3d-50": "3D ResNet-50", "resnext3d-101": "3D ResNeXt-101",
                 "tsm-r50": "TSM-R50"}
MARKERS = "osD^v<>pPX*h"
EXTRA_COLOURS = ("#000000", "#1b3b6f", "#5b3a29", "#2f6b2f", "#7a1f5c", "#8c6d1f", "#4d4d4d", "#006d6f")
IMPL_STYLE = {"naive": "-", "sdpa": "--", None: "-"}
IMPL_MARKER = {"naive": "o", "sdpa": "s", None: "^"}

F = TypeVar("F", bound=Callable[..., Any])


def colour(module: str, others: Sequence[str] = ()) -> Any:
    """One colour per block in every plot: the blocks' order in :data:`PAPER_NAMES` over tab10 then darker
    colours that stay readable on white (NL blue, CS orange ...); a block not listed takes the next free one by
    its place in ``others``."""
    tab10 = matplotlib.colormaps["tab10"]
    palette = [tab10(i) for i in range(10)] + list(EXTRA_COLOURS)
    known = list(PAPER_NAMES)
    if module in known:
        i = known.index(module)
    else:
        extra = [m for m in others if m not in known]
        i = len(known) + (extra.index(module) if module in extra else 0)
    return palette[i % len(palette)]


def block_order(module: str) -> int:
    """A block's place in :data:`PAPER_NAMES` (NL, CS, FA, EAM ...); blocks not listed come last."""
    known = list(PAPER_NAMES)
    return known.index(module) if module in known else len(known)


def paper_name(module: str) -> str:
    """The block as its paper names it (``nl`` -> ``NL``, ``cs`` -> ``CS``); unknown names unchanged."""
    return PAPER_NAMES.get(module, module)


def svg_path(path: str | os.PathLike[str]) -> Path:
    return Path(path).with_suffix(".svg")


def outputs(name: str) -> list[str]:
    """The files one plot writes: ``name`` (a .png) and the SVG beside it."""
    return [name, svg_path(name).name]


def _styled(fn: F) -> F:
    """Build and save the figure under :data:`STYLE` (rc parameters are read when artists are made)."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with matplotlib.rc_context(STYLE):
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _save(fig: Figure, path: str | os.PathLike[str]) -> str:
    """``path`` as a PNG and the same name with ``.svg``, each written atomically; returns the PNG's path."""
    FigureCanvasAgg(fig)
    for fmt, target, extra in (("png", Path(path), {"dpi": PNG_DPI}), ("svg", svg_path(path), {})):
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, bbox_inches="tight", metadata={"Date": None} if fmt == "svg" else None, **extra)
        files.atomic_write(target, buf.getvalue())
    return str(path)


def _log_x(ax: Any, values: Sequence[float]) -> None:
    ax.set_xscale("log")
    ticks = sorted(set(values))
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(NullLocator())
    fmt = ScalarFormatter()
    fmt.set_scientific(False)
    ax.xaxis.set_major_formatter(fmt)


def _log_y(ax: Any, values: Sequence[float] = (), plain: bool = False) -> None:
    """Log y with labelled ticks only where they help: the decades (as plain numbers with ``plain``), or
    1-2-5 steps in plain numbers when ``values`` span less than two decades; minor ticks unlabelled and not
    gridded."""
    ax.set_yscale("log")
    pos = [v for v in values if v and v > 0]
    if pos and max(pos) / min(pos) < 100:
        lo, hi = min(pos), max(pos)
        steps = [m * 10**k for k in range(math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 2) for m in (1, 2, 5)]
        ticks = [v for v in steps if lo / 1.6 <= v <= hi * 1.6]
        if len(ticks) >= 2:
            ax.yaxis.set_major_locator(FixedLocator(ticks))
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.yaxis.set_minor_locator(NullLocator())
        else:
            pos = []
    if not pos or max(pos) / min(pos) >= 100:
        ax.yaxis.set_major_locator(LogLocator(base=10, numticks=12))
        ax.yaxis.set_minor_locator(LogLocator(base=10, subs=(2, 5), numticks=12))
        ax.yaxis.set_minor_formatter(NullFormatter())
        if plain:
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.grid(True, which="major", alpha=0.35)
    ax.grid(False, which="minor")


def _fixed_sizes(shape: Sequence[int] | None, axis: str) -> str:
    if not shape:
        return ""
    _, c, t, h, w = shape
    parts = {"T": f"C={c}, {h}x{w}", "HW": f"C={c}, T={t}", "C": f"T={t}, {h}x{w}"}
    return parts[axis]


def _note(fig: Figure, text: str) -> None:
    """A caption under the axes, wrapped to the figure's width."""
    fig.text(0.01, -0.01, text, fontsize=9, ha="left", va="top", wrap=True)


def coinciding(series: Mapping[str, Sequence[tuple[float, float]]], rel: float = COINCIDE_REL) -> dict[str, str]:
    """Series that overlap an earlier one on a log axis: within ``rel`` of it at every size both have (at
    least two shared sizes). Returns {later series: the earlier one it overlaps}."""
    names = list(series)
    out: dict[str, str] = {}
    for j, b in enumerate(names):
        pb = dict(series[b])
        for a in names[:j]:
            if a in out:
                continue
            pa = dict(series[a])
            shared = [x for x in pa if x in pb and pa[x] > 0 and pb[x] > 0]
            if len(shared) >= 2 and all(abs(math.log(pb[x] / pa[x])) <= math.log1p(rel) for x in shared):
                out[b] = a
                break
    return out


def _ratio_range(b: Sequence[tuple[float, float]], a: Sequence[tuple[float, float]]) -> str:
    pa = dict(a)
    ratios = [y / pa[x] for x, y in b if pa.get(x)]
    lo, hi = min(ratios), max(ratios)
    return f"{lo:.3f}" if abs(hi - lo) < 5e-4 else f"{lo:.3f} to {hi:.3f}"


def _fit_text(pts: Sequence[tuple[float, float]], exponent: float | None = None) -> str:
    """``slope 1.98`` for a series of at least MIN_FIT_POINTS sizes (``exponent``, else fitted here); for
    fewer, how many sizes it has; "" when no slope can be fitted."""
    sizes = sorted({x for x, _ in pts})
    if len(sizes) < MIN_FIT_POINTS:
        return f"{len(sizes)} size{'s' if len(sizes) != 1 else ''}, no slope"
    if exponent is None:
        from attnbench.sweep import exponent as fit

        got = fit([x for x, _ in pts], [y for _, y in pts])
        exponent = got["exponent"] if got else None
    return "" if exponent is None else f"slope {exponent:.2f}"


def _with(label: str, *parts: str) -> str:
    """``label (a, b)`` with the non-empty parts."""
    shown = [p for p in parts if p]
    return f"{label} ({', '.join(shown)})" if shown else label


def _legend(ax: Any, n: int) -> None:
    if n > 4:  # beside the axes, so that it hides no line
        ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    else:
        ax.legend(frameon=False)


@_styled
def cost_vs_size(rows: Iterable[dict[str, Any]], axis: str, metric: str, path: str | os.PathLike[str],
                 title: str | None = None, exponents: Sequence[dict[str, Any]] | None = None) -> str | None:
    """Log-log ``metric`` against the size of ``axis``, one line per block. Closed-form metrics are drawn at
    every shape the block accepts, measured ones where the point ran; the points left out (rejected shapes,
    OOM, not timed) are listed under the plot. A slope is printed for a block with at least
    :data:`MIN_FIT_POINTS` sizes; a block drawn at fewer is dotted. Returns the path, or None if there is
    nothing to draw."""
    from attnbench.sweep import metric_value

    rows = [r for r in rows if r.get("axis") == axis and r.get("kind", "sweep") == "sweep"]
    series: dict[str, list[tuple[int, float]]] = {}
    fixed: dict[str, str] = {}
    missing: list[str] = []
    for r in rows:
        v = metric_value(r, metric)
        if v:
            series.setdefault(r["module"], []).append((r["value"], float(v)))
            fixed.setdefault(r["module"], _fixed_sizes(r.get("input_shape"), axis))
        elif r.get("status") != "ok":
            missing.append(f"{paper_name(r['module'])} at {r['value']}: {str(r.get('status'))[:20]}")
    if not series:
        return None
    for pts in series.values():
        pts.sort()
    slopes = {e["module"]: e["exponent"] for e in (exponents or [])
              if e["axis"] == axis and e["metric"] == metric and e.get("points", MIN_FIT_POINTS) >= MIN_FIT_POINTS}
    same = coinciding(series)
    many = len(series) > 4
    fig = Figure(figsize=(10.5 if many else 7.5, 5.2))
    ax = fig.add_subplot(1, 1, 1)
    for i, (module, pts) in enumerate(series.items()):
        label = _with(paper_name(module), fixed.get(module, ""), _fit_text(pts, slopes.get(module)))
        style: dict[str, Any] = {"linestyle": "-" if len(pts) >= MIN_FIT_POINTS else ":"}
        if module in same:
            label += f" - overlaps {paper_name(same[module])}"
            style = {"linestyle": "--", "markerfacecolor": "none", "markersize": 11, "markeredgewidth": 1.6, "zorder": 3}
        ax.plot([x for x, _ in pts], [y for _, y in pts], marker=MARKERS[i % len(MARKERS)], label=label,
                color=colour(module, list(series)), **style)
    _log_x(ax, [x for pts in series.values() for x, _ in pts])
    _log_y(ax)
    ax.set_xlabel(AXIS_LABELS.get(axis, axis))
    ax.set_ylabel(METRIC_LABELS.get(metric, metric))
    ax.set_title(title or f"{METRIC_TITLES.get(metric, metric)} vs {AXIS_LABELS.get(axis, axis)}, log-log")
    _legend(ax, len(series))
    notes = []
    if same:
        notes.append("Hollow markers on a dashed line: a series that overlaps an earlier one (within "
                     f"{COINCIDE_REL:.0%} of it at every size); " + "; ".join(
                         f"{paper_name(b)} / {paper_name(a)}: {_ratio_range(series[b], series[a])}" for b, a in same.items()) + ".")
    if missing:
        notes.append("Not plotted: " + ", ".join(missing[:8]) + (f" (+{len(missing) - 8} more)" if len(missing) > 8 else "")
                     + ".")
    if notes:
        _note(fig, " ".join(notes))
    return _save(fig, path)


def _ratio_ticks(ax: Any, lo: float, hi: float) -> None:
    """Plain ratio ticks (1, 2, 5, 10, ...) on a log y axis; no minor labels."""
    nice = [v * 10**k for k in range(-2, 5) for v in (1, 2, 5)]
    ticks = [v for v in nice if lo / 1.05 <= v <= hi * 1.05]
    ax.yaxis.set_major_locator(FixedLocator(ticks))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_locator(NullLocator())


@_styled
def ratio_vs_size(crossover: dict[str, Any], path: str | os.PathLike[str], factor: float = 2.0,
                  device: str | None = None) -> str | None:
    """The slow/fast FLOP ratio (and measured latency ratio, and 1/R) against the swept size, with lines at
    1 (equal cost) and ``factor``. ``device`` labels the latency ratio (where it was measured)."""
    if not crossover.get("comparable") or not crossover.get("values"):
        return None
    slow, fast = crossover["pair"].split("/")
    ps, pf = paper_name(slow), paper_name(fast)
    axis, values = crossover["axis"], crossover["values"]
    fig = Figure(figsize=(7.5, 5.0))
    ax = fig.add_subplot(1, 1, 1)
    ys = list(crossover["flop_ratio"])
    ax.plot(values, crossover["flop_ratio"], marker="o", label=f"total FLOPs {ps} / {pf}")
    rs = crossover.get("affinity_ratio_R") or []
    if rs and all(r for r in rs):
        ax.plot(values, [1 / r for r in rs], marker="s", linestyle="--",
                label="correlation-matrix FLOPs F_3D / F_CS = 1/R (BANet Eq. 7)")
        ys += [1 / r for r in rs]
    if crossover.get("latency_ratio"):
        ax.plot(crossover["latency_values"], crossover["latency_ratio"], marker="D",
                label=f"median latency {ps} / {pf}" + (f" ({device})" if device else ""))
        ys += list(crossover["latency_ratio"])
    ax.axhline(1.0, color="grey", linewidth=1)
    ax.axhline(factor, color="grey", linewidth=1, linestyle=":")
    ax.text(values[0], factor * 1.04, f"{factor:g}x", fontsize=9, color="grey")
    _log_x(ax, values)
    ax.set_yscale("log")
    _ratio_ticks(ax, min([1.0, *ys]), max([factor, *ys]))
    ax.grid(True, which="major", alpha=0.35)
    ax.set_xlabel(AXIS_LABELS.get(axis, axis))
    ax.set_ylim(min([1.0, *ys]) / 1.25, max([factor, *ys]) * 1.25)
    ax.set_ylabel(f"ratio {ps} / {pf} (dimensionless)")
    shape = crossover.get("fixed_shape")
    ax.set_title(f"{ps} (non-local) vs {pf} (BANet) cost over {AXIS_LABELS.get(axis, axis)}"
                 + (f"\nat {_fixed_sizes(shape, axis)}" if shape else "") if (slow, fast) == ("nl", "cs")
                 else f"{ps} vs {pf} over {AXIS_LABELS.get(axis, axis)}" + (f" ({_fixed_sizes(shape, axis)})" if shape else ""))
    ax.legend(loc="upper left", frameon=True, framealpha=0.9)  # the ratios grow with size: that corner is free
    return _save(fig, path)


def _series_label(row: Mapping[str, Any]) -> str:
    impl = row.get("impl")
    return paper_name(row["module"]) + (f", {impl}" if impl else "")


def _by_series(rows: Iterable[Mapping[str, Any]], value: Callable[[Mapping[str, Any]], float | None],
               axis_index: int) -> dict[str, list[tuple[int, float, Mapping[str, Any]]]]:
    out: dict[str, list[tuple[int, float, Mapping[str, Any]]]] = {}
    rows = sorted((r for r in rows if r.get("module")), key=lambda r: (block_order(r["module"]), str(r.get("impl") or "")))
    for r in rows:
        v = value(r)
        if v:
            out.setdefault(_series_label(r), []).append((int(r["input_shapes"][0][axis_index]), float(v), r))
    for pts in out.values():
        pts.sort(key=lambda p: p[0])
    return out


def _shape_with_t(row: Mapping[str, Any]) -> str:
    shape = [str(v) for v in row["input_shapes"][0]]
    return " x ".join([*shape[:2], "T", *shape[3:]])


def _series_style(label: str, modules: list[str]) -> dict[str, Any]:
    name, _, impl = label.partition(", ")
    by_name = {v: k for k, v in PAPER_NAMES.items()}
    return {"color": colour(by_name.get(name, name), modules), "linestyle": IMPL_STYLE.get(impl or None, "-"),
            "marker": IMPL_MARKER.get(impl or None, "^")}


@_styled
def latency_vs_size(rows: Iterable[dict[str, Any]], path: str | os.PathLike[str], title: str,
                    ylabel: str = "median latency per call (ms)") -> str | None:
    """Measured median latency against T, one line per block and attention kernel (colour: block; solid:
    naive, dashed: sdpa), whiskers from the 10th to the 90th percentile; a slope where a line has at
    least :data:`MIN_FIT_POINTS` sizes. ``title`` names the device (a CPU time is never a GPU's)."""
    rows = [r for r in rows if r.get("status") == "ok" and r.get("timing")]
    series = _by_series(rows, lambda r: r["timing"].get("median_ms"), 2)
    if not series or max(len({x for x, _, _ in pts}) for pts in series.values()) < 2:
        return None  # against T needs at least two sizes
    modules = list(dict.fromkeys(label.partition(", ")[0] for label in series))
    fig = Figure(figsize=(7.8, 5.2))
    ax = fig.add_subplot(1, 1, 1)
    for label, pts in series.items():
        xs, ys = [x for x, _, _ in pts], [y for _, y, _ in pts]
        lo = [max(0.0, y - (r["timing"].get("p10_ms") or y)) for _, y, r in pts]
        hi = [max(0.0, (r["timing"].get("p90_ms") or y) - y) for _, y, r in pts]
        ax.errorbar(xs, ys, yerr=[lo, hi], capsize=3, label=_with(label, _fit_text([(x, y) for x, y, _ in pts])),
                    **_series_style(label, modules))
    _log_x(ax, [x for pts in series.values() for x, _, _ in pts])
    _log_y(ax, [y for pts in series.values() for _, y, _ in pts])
    ax.set_xlabel("T (frames)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    _legend(ax, len(series))
    _note(fig, f"Input [B, C, T, H, W] = {_shape_with_t(next(iter(series.values()))[0][2])}; "
               "whiskers: 10th to 90th percentile of the timed calls; solid: naive (maps materialised), dashed: sdpa "
               "(F.scaled_dot_product_attention).")
    return _save(fig, path)


@_styled
def memory_vs_size(rows: Iterable[dict[str, Any]], path: str | os.PathLike[str], title: str,
                   predicted: Mapping[str, Sequence[tuple[int, int]]] | None = None,
                   measured_label: str = "measured") -> str | None:
    """Peak working memory against T: measured (markers) and the blocks' closed-form prediction (a line), per
    block and attention kernel. ``predicted`` adds predicted points {series label: [(T, bytes)]} at sizes
    that were not measured (the prediction needs no run)."""
    rows = [r for r in rows if r.get("status") == "ok"]

    def measured(r: Mapping[str, Any]) -> float | None:
        return (r.get("memory_prediction") or {}).get("measured_bytes")

    def pred(r: Mapping[str, Any]) -> float | None:
        return (r.get("memory_prediction") or {}).get("bytes")

    got = _by_series(rows, measured, 2)
    want = {k: {x: y for x, y, _ in v} for k, v in _by_series(rows, pred, 2).items()}
    for label, pts in (predicted or {}).items():
        want.setdefault(label, {}).update({int(x): float(y) for x, y in pts if y})
    if not got and not want:
        return None
    modules = list(dict.fromkeys(label.partition(", ")[0] for label in [*got, *want]))
    fig = Figure(figsize=(7.8, 5.2))
    ax = fig.add_subplot(1, 1, 1)
    xs_all: list[int] = []
    ys_all: list[float] = []
    mib = 2**20
    handles = []
    for label in dict.fromkeys([*want, *got]):
        style = _series_style(label, modules)
        hollow = "sdpa" in label
        if label in want:
            pts = sorted(want[label].items())
            ax.plot([x for x, _ in pts], [y / mib for _, y in pts], color=style["color"], linestyle=style["linestyle"],
                    linewidth=1.4, alpha=0.85)
            xs_all += [x for x, _ in pts]
            ys_all += [y / mib for _, y in pts]
        if label in got:
            pts2 = got[label]
            ax.plot([x for x, _, _ in pts2], [y / mib for _, y, _ in pts2], color=style["color"], linestyle="none",
                    marker=style["marker"], markersize=9, markerfacecolor="none" if hollow else style["color"],
                    markeredgewidth=1.6)
            xs_all += [x for x, _, _ in pts2]
            ys_all += [y / mib for _, y, _ in pts2]
        handles.append(Line2D([], [], color=style["color"], linestyle=style["linestyle"], marker=style["marker"],
                              markerfacecolor="none" if hollow else style["color"], label=label))
    handles += [Line2D([], [], color="grey", linestyle="-", label="line: predicted (closed form)"),
                Line2D([], [], color="grey", linestyle="none", marker="o", label=f"marker: {measured_label}")]
    _log_x(ax, xs_all)
    _log_y(ax, ys_all, plain=True)
    ax.set_xlabel("T (frames)")
    ax.set_ylabel("peak working memory of one call (MiB)")
    ax.set_title(title)
    ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    _note(fig, "Lines: the blocks' closed-form prediction (the tensors alive together at the peak, "
               f"attnbench/flops/memory.py); markers: {measured_label}. MiB = 2^20 bytes.")
    return _save(fig, path)


@_styled
def roofline(points: Sequence[Mapping[str, Any]], roof: Mapping[str, Any], path: str | os.PathLike[str], title: str,
             caption: str = "") -> str | None:
    """Achieved FLOP/s against arithmetic intensity (FLOPs per byte moved), one point per block, kernel and
    precision, on the measured roofline: ``roof`` holds ``peak_flops_per_s`` and ``bytes_per_s`` (and their
    labels ``peak_label``, ``bandwidth_label``; ``extra_peaks``: [(label, FLOP/s)] drawn dashed). Points
    are dicts with ``module``, ``impl``, ``precision``, ``intensity`` (FLOP/byte) and ``flops_per_s``; the
    naive and sdpa points of one block and precision are joined by an arrow (naive -> sdpa)."""
    pts = [p for p in points if p.get("intensity") and p.get("flops_per_s")]
    peak, bw = roof.get("peak_flops_per_s"), roof.get("bytes_per_s")
    if not pts or not peak or not bw:
        return None
    giga = 1e9
    xs = [p["intensity"] for p in pts]
    ridge = peak / bw
    lo, hi = min(xs + [ridge]) / 3, max(xs + [ridge]) * 3
    fig = Figure(figsize=(11.0, 6.0))
    ax = fig.add_subplot(1, 1, 1)
    grid = [lo * (hi / lo) ** (i / 200) for i in range(201)]
    ax.plot(grid, [min(peak, x * bw) / giga for x in grid], color="black", linewidth=2.2,
            label=f"roofline: {roof.get('peak_label', 'compute roof')};\n{roof.get('bandwidth_label', 'memory roof')}")
    for label, value in roof.get("extra_peaks") or []:
        ax.plot(grid, [min(value, x * bw) / giga for x in grid], color="grey", linewidth=1.2, linestyle="--", label=label)
    ax.axvline(ridge, color="grey", linewidth=0.8, linestyle=":")
    ax.text(ridge * 1.05, peak / giga * 0.5, f"ridge {ridge:.3g} FLOP/byte", fontsize=9, color="grey", rotation=90,
            va="top")
    modules = list(dict.fromkeys(p["module"] for p in pts))
    colours = {m: colour(m, modules) for m in modules}
    seen_impl: set[Any] = set()
    for p in pts:
        impl = p.get("impl")
        ax.plot(p["intensity"], p["flops_per_s"] / giga, linestyle="none", marker=IMPL_MARKER.get(impl, "^"),
                markersize=9, color=colours[p["module"]], markeredgecolor="black", markeredgewidth=0.6, zorder=4)
        seen_impl.add(impl)
    ys = [p["flops_per_s"] / giga for p in pts]
    ax.set_xscale("log")
    ax.set_xlim(lo, hi)
    _log_y(ax, ys + [peak / giga])
    ax.set_ylim(min(ys + [lo * bw / giga]) / 2, peak / giga * 2.5)
    _place_labels(fig, ax, [((p["intensity"], p["flops_per_s"] / giga),
                             paper_name(p["module"]) + (f" {p['impl']}" if p.get("impl") else "")
                             + (f" ({p['precision']})" if p.get("show_precision") else "")) for p in pts])
    by_key: dict[tuple[str, str], dict[str, Mapping[str, Any]]] = {}
    for p in pts:
        if p.get("impl"):
            by_key.setdefault((p["module"], p.get("precision", "")), {})[p["impl"]] = p
    for (module, _), kinds in by_key.items():
        if "naive" in kinds and "sdpa" in kinds:
            a, b = kinds["naive"], kinds["sdpa"]
            ax.annotate("", xy=(b["intensity"], b["flops_per_s"] / giga), xytext=(a["intensity"], a["flops_per_s"] / giga),
                        arrowprops={"arrowstyle": "-|>", "color": colours[module], "linewidth": 1.6,
                                    "shrinkA": 6, "shrinkB": 6}, zorder=3)
    for impl, what in ((None, "block (one kernel)"), ("naive", "naive (maps materialised)"), ("sdpa", "sdpa (fused)")):
        if impl in seen_impl:
            ax.plot([], [], linestyle="none", marker=IMPL_MARKER[impl], color="lightgrey", markeredgecolor="black",
                    markersize=8, label=what)
    if by_key:
        ax.plot([], [], color="grey", marker=r"$\rightarrow$", linestyle="none", markersize=14, label="arrow: naive to sdpa")
    ax.grid(True, which="major", axis="x", alpha=0.35)
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("arithmetic intensity (FLOP/byte: closed-form FLOPs / lower bound on bytes moved)")
    ax.set_ylabel("achieved GFLOP/s (FLOPs / median latency)")
    ax.set_title(title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    if caption:
        _note(fig, caption)
    return _save(fig, path)


# label offsets from a point, in points (va="bottom": a label below its point needs about -13), nearest first
LABEL_OFFSETS = sorted(((dx, dy) for dx in (7, -7, 22, -22, 40, -40) for dy in (5, -13, 17, -25, 30, -38, 44, -52)),
                       key=lambda o: math.hypot(o[0], o[1] + 4))


def _place_labels(fig: Figure, ax: Any, items: Sequence[tuple[tuple[float, float], str]], fontsize: float = 9) -> None:
    """Label points without overlaps where possible: each label tries offsets around its point in turn and
    takes the first whose box overlaps no label placed before and no other point (greedy, in display space;
    a leader line joins a label set further away). Labels are placed from the top of the plot down."""
    FigureCanvasAgg(fig)
    renderer = fig.canvas.get_renderer()
    marks = [ax.transData.transform(xy) for xy, _ in items]
    placed: list[Any] = []
    order = sorted(range(len(items)), key=lambda i: -marks[i][1])
    for i in order:
        (x, y), text = items[i]
        best, best_cost = None, None
        for dx, dy in LABEL_OFFSETS:
            ann = ax.annotate(text, (x, y), textcoords="offset points", xytext=(dx, dy), fontsize=fontsize,
                              ha="left" if dx >= 0 else "right", va="bottom", color="0.1", zorder=5)
            box = ann.get_window_extent(renderer).expanded(1.05, 1.15)
            near = box.padded(10)  # a marker's half-width and a little air
            cost = 10 * sum(box.overlaps(b) for b in placed) + 3 * sum(1 for m in marks if near.contains(m[0], m[1]))
            cost += 0 if ax.bbox.contains(box.x0, box.y0) and ax.bbox.contains(box.x1, box.y1) else 5
            if best_cost is None or cost < best_cost:
                if best is not None:
                    best[0].remove()
                best, best_cost = (ann, box, (dx, dy)), cost
            else:
                ann.remove()
            if cost == 0:
                break
        assert best is not None
        ann, box, (dx, dy) = best
        if abs(dx) > 7 or dy > 5 or dy < -13:
            ann.remove()
            ann = ax.annotate(text, (x, y), textcoords="offset points", xytext=(dx, dy), fontsize=fontsize,
                              ha="left" if dx >= 0 else "right", va="bottom", color="0.1", zorder=5,
                              arrowprops={"arrowstyle": "-", "color": "0.5", "linewidth": 0.6, "shrinkA": 0, "shrinkB": 4})
        placed.append(box)


@_styled
def vps_bars(rows: Iterable[dict[str, Any]], path: str | os.PathLike[str], title: str | None = None) -> str | None:
    """Videos per second per network and attention choice (speed rows that have ``vps``): horizontal bars,
    one colour per network, each bar labelled with its value."""
    rows = [r for r in rows if r.get("vps")]
    if not rows:
        return None
    networks = list(dict.fromkeys(r["network"] for r in rows))
    ordered = [r for net in networks for r in rows if r["network"] == net]
    fig = Figure(figsize=(8.5, 1.4 + 0.38 * len(ordered) + 0.2 * len(networks)))
    ax = fig.add_subplot(1, 1, 1)
    cmap = matplotlib.colormaps["tab10"]
    y, ticks, labels = 0.0, [], []
    for i, net in enumerate(networks):
        for r in (r for r in ordered if r["network"] == net):
            bar = ax.barh(y, r["vps"], color=cmap(i % 10), height=0.8)
            ax.bar_label(bar, labels=[f"{r['vps']:.3g}"], fontsize=9, padding=2)
            ticks.append(y)
            attn = r["attn"] if r["attn"] == "none" else paper_name(r["attn"])
            labels.append(f"{NETWORK_NAMES.get(net, net)} + {attn} @ {r['preset']}")
            y += 1
        y += 0.5
    ax.set_yticks(ticks)
    ax.set_yticklabels(labels)
    ax.invert_yaxis()
    ax.set_xlabel("videos/s (one clip per video)")
    ax.set_title(title or "Throughput per network and attention choice")
    ax.grid(True, axis="x", alpha=0.35)
    ax.margins(x=0.12)
    return _save(fig, path)


def is_png(path: str | os.PathLike[str]) -> bool:
    with open(path, "rb") as fh:
        return fh.read(8) == PNG_SIGNATURE
