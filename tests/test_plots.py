"""PNG plots: written atomically, real PNG files, nothing drawn (None) when there is nothing to draw."""

from attnbench import sweep as sw
from attnbench.report import plots


def assert_png(path) -> None:
    data = open(path, "rb").read()
    assert data[:8] == plots.PNG_SIGNATURE and len(data) > 2000
    assert plots.is_png(path)


def test_cost_and_ratio_plots_are_pngs(tmp_path) -> None:
    rows = sw.run_sweep(sw.plan(["nl", "cs", "fa"], {"T": [4, 8, 16], "HW": [14, 28]})).rows
    exps = sw.fit_exponents(rows)
    for axis in ("T", "HW"):
        path = plots.cost_vs_size(rows, axis, "flops", tmp_path / f"flops-{axis}.png", exponents=exps)
        assert path and path.endswith(f"flops-{axis}.png")
        assert_png(path)
    for c in sw.crossovers(rows, scan=False):
        assert_png(plots.ratio_vs_size(c, tmp_path / f"ratio-{c['axis']}.png"))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_latency_plot_and_vps_bars(tmp_path) -> None:
    rows = [{"module": m, "axis": "T", "value": t, "status": "ok", "latency_ms": k * t, "input_shape": [1, 96, t, 28, 28]}
            for m, k in (("nl", 2.0), ("cs", 0.5)) for t in (4, 8, 16)]
    rows.append({"module": "nl", "axis": "T", "value": 32, "status": "OOM"})
    assert_png(plots.cost_vs_size(rows, "T", "latency_ms", tmp_path / "lat.png"))
    speed = [{"network": "eco-lite", "attn": a, "preset": "16f", "vps": v, "status": "ok"} for a, v in (("none", 23.2), ("nl", 8.1), ("cs", 19.9))]
    speed.append({"network": "tsm-r50", "attn": "none", "preset": "8f", "status": "OOM"})
    assert_png(plots.vps_bars(speed, tmp_path / "vps.png"))


def test_nothing_to_draw_writes_nothing(tmp_path) -> None:
    assert plots.cost_vs_size([], "T", "flops", tmp_path / "a.png") is None
    assert plots.cost_vs_size([{"module": "nl", "axis": "T", "value": 4, "status": "skipped"}], "T", "flops",
                              tmp_path / "b.png") is None
    assert plots.vps_bars([{"network": "x", "attn": "y", "preset": "z", "status": "OOM"}], tmp_path / "c.png") is None
    assert plots.ratio_vs_size({"comparable": False}, tmp_path / "d.png") is None
    assert list(tmp_path.iterdir()) == []
