"""PNG plots of sweep and speed rows (matplotlib, Agg backend; no display needed).

* :func:`cost_vs_size` -- log-log cost against one swept size, one line per block (FLOPs, latency, ...);
* :func:`ratio_vs_size` -- NL/CS FLOP ratio (and 1/R, the correlation-matrix ratio) against a size;
* :func:`vps_bars` -- videos per second per network and attention choice, from speed rows with ``vps``.

Every function returns the path written, or None when the rows hold nothing to draw. Figures are built with
:class:`matplotlib.figure.Figure` (no pyplot global state) and written through a temporary file and a rename.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")  # before any pyplot import anywhere in the process: never a display

from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator, ScalarFormatter  # noqa: E402

from attnbench.store import files  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
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


def _save(fig: Figure, path: str | os.PathLike[str]) -> str:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    files.atomic_write(path, buf.getvalue())
    return str(path)


def _log_x(ax: Any, values: Sequence[int]) -> None:
    ax.set_xscale("log")
    ticks = sorted(set(values))
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(NullLocator())
    fmt = ScalarFormatter()
    fmt.set_scientific(False)
    ax.xaxis.set_major_formatter(fmt)


def _fixed_sizes(shape: Sequence[int] | None, axis: str) -> str:
    if not shape:
        return ""
    _, c, t, h, w = shape
    parts = {"T": f"C={c}, {h}x{w}", "HW": f"C={c}, T={t}", "C": f"T={t}, {h}x{w}"}
    return parts[axis]


def cost_vs_size(rows: Iterable[dict[str, Any]], axis: str, metric: str, path: str | os.PathLike[str],
                 title: str | None = None, exponents: Sequence[dict[str, Any]] | None = None) -> str | None:
    """Log-log ``metric`` against the size of ``axis``, one line per block. Closed-form metrics are drawn at
    every shape the block accepts, measured ones where the point ran; the points left out (rejected shapes,
    OOM, not timed) are listed under the plot. Returns the path, or None if there is nothing to draw."""
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
            missing.append(f"{r['module']}@{r['value']}: {str(r.get('status'))[:20]}")
    if not series:
        return None
    slopes = {(e["module"]): e["exponent"] for e in (exponents or []) if e["axis"] == axis and e["metric"] == metric}
    many = len(series) > 6
    fig = Figure(figsize=(10.0 if many else 7.5, 5.0))
    ax = fig.add_subplot(1, 1, 1)
    markers = "osD^v<>pPX*h"
    colours = matplotlib.colormaps["tab20" if len(series) > 10 else "tab10"]
    for i, (module, pts) in enumerate(series.items()):
        pts.sort()
        label = f"{module} ({fixed[module]})" if fixed.get(module) else module
        if module in slopes:
            label += f", slope {slopes[module]:.2f}"
        ax.plot([x for x, _ in pts], [y for _, y in pts], marker=markers[i % len(markers)], label=label,
                color=colours(i % colours.N))
    _log_x(ax, [x for pts in series.values() for x, _ in pts])
    ax.set_yscale("log")
    ax.set_xlabel(AXIS_LABELS.get(axis, axis))
    ax.set_ylabel(METRIC_LABELS.get(metric, metric))
    ax.set_title(title or f"{METRIC_TITLES.get(metric, metric)} vs {AXIS_LABELS.get(axis, axis)} (log-log)")
    ax.grid(True, which="both", alpha=0.3)
    if many:  # beside the axes, so that it hides no line
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    else:
        ax.legend(fontsize=8)
    if missing:
        shown = ", ".join(missing[:8]) + (f" (+{len(missing) - 8} more)" if len(missing) > 8 else "")
        fig.text(0.01, -0.02, "not plotted: " + shown, fontsize=7, ha="left", va="top", wrap=True)
    return _save(fig, path)


def ratio_vs_size(crossover: dict[str, Any], path: str | os.PathLike[str], factor: float = 2.0) -> str | None:
    """The slow/fast FLOP ratio (and measured latency ratio, and 1/R) against the swept size, with lines at
    1 (equal cost) and ``factor``."""
    if not crossover.get("comparable") or not crossover.get("values"):
        return None
    slow, fast = crossover["pair"].split("/")
    axis, values = crossover["axis"], crossover["values"]
    fig = Figure(figsize=(7.5, 5.0))
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(values, crossover["flop_ratio"], marker="o", label=f"total FLOPs {slow} / {fast}")
    rs = crossover.get("affinity_ratio_R") or []
    if rs and all(r for r in rs):
        ax.plot(values, [1 / r for r in rs], marker="s", linestyle="--",
                label="correlation-matrix FLOPs F_3D / F_CS = 1/R (BANet Eq. 7)")
    if crossover.get("latency_ratio"):
        ax.plot(crossover["latency_values"], crossover["latency_ratio"], marker="D", label=f"median latency {slow} / {fast}")
    ax.axhline(1.0, color="grey", linewidth=1)
    ax.axhline(factor, color="grey", linewidth=1, linestyle=":")
    ax.text(values[0], factor * 1.03, f"{factor:g}x", fontsize=8, color="grey")
    _log_x(ax, values)
    ax.set_yscale("log")
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(plain)
    ax.tick_params(axis="y", which="minor", labelsize=7)
    ax.set_xlabel(AXIS_LABELS.get(axis, axis))
    ax.set_ylabel(f"ratio {slow} / {fast} (dimensionless)")
    shape = crossover.get("fixed_shape")
    ax.set_title(f"{slow} vs {fast} over {AXIS_LABELS.get(axis, axis)}" + (f" ({_fixed_sizes(shape, axis)})" if shape else ""))
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def vps_bars(rows: Iterable[dict[str, Any]], path: str | os.PathLike[str], title: str | None = None) -> str | None:
    """Videos per second per network and attention choice (speed rows that have ``vps``): horizontal bars,
    one colour per network, each bar labelled with its value."""
    rows = [r for r in rows if r.get("vps")]
    if not rows:
        return None
    networks = list(dict.fromkeys(r["network"] for r in rows))
    ordered = [r for net in networks for r in rows if r["network"] == net]
    fig = Figure(figsize=(8.0, 1.2 + 0.32 * len(ordered) + 0.2 * len(networks)))
    ax = fig.add_subplot(1, 1, 1)
    cmap = matplotlib.colormaps["tab10"]
    y, ticks, labels = 0.0, [], []
    for i, net in enumerate(networks):
        for r in (r for r in ordered if r["network"] == net):
            bar = ax.barh(y, r["vps"], color=cmap(i % 10), height=0.8)
            ax.bar_label(bar, labels=[f"{r['vps']:.3g}"], fontsize=7, padding=2)
            ticks.append(y)
            labels.append(f"{net} + {r['attn']}@{r['preset']}")
            y += 1
        y += 0.5
    ax.set_yticks(ticks)
    ax.set_yticklabels(labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("videos/s (one clip per video)")
    ax.set_title(title or "Throughput per network and attention choice")
    ax.grid(True, axis="x", alpha=0.3)
    ax.margins(x=0.12)
    return _save(fig, path)


def is_png(path: str | os.PathLike[str]) -> bool:
    with open(path, "rb") as fh:
        return fh.read(8) == PNG_SIGNATURE
