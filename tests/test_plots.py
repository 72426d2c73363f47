"""Plots: a PNG and an SVG beside it, written atomically; nothing drawn (None) when there is nothing to draw;
paper names, no slope fitted through fewer than three sizes, overlapping series said to overlap. SVG text is
kept as text, so tests read what a plot says from its SVG."""

from pathlib import Path

from attnbench import sweep as sw
from attnbench.report import plots


def assert_png(path) -> str:
    """The PNG is real, its SVG is beside it; returns the SVG's text."""
    data = open(path, "rb").read()
    assert data[:8] == plots.PNG_SIGNATURE and len(data) > 2000
    assert plots.is_png(path)
    svg = plots.svg_path(path)
    text = svg.read_text(encoding="utf-8")
    assert text.startswith("<?xml") and "<svg" in text
    return text


def test_cost_and_ratio_plots_are_pngs_with_svgs(tmp_path) -> None:
    rows = sw.run_sweep(sw.plan(["nl", "cs", "fa"], {"T": [4, 8, 16], "HW": [14, 28]})).rows
    exps = sw.fit_exponents(rows)
    for axis in ("T", "HW"):
        path = plots.cost_vs_size(rows, axis, "flops", tmp_path / f"flops-{axis}.png", exponents=exps)
        assert path and path.endswith(f"flops-{axis}.png")
        svg = assert_png(path)
        assert "NL" in svg and "CS" in svg and ">nl<" not in svg  # paper names, not registry names
    for c in sw.crossovers(rows, scan=False):
        svg = assert_png(plots.ratio_vs_size(c, tmp_path / f"ratio-{c['axis']}.png"))
        assert "NL (non-local) vs CS (BANet)" in svg and "nl vs cs" not in svg
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary files left
    assert sorted(p.suffix for p in tmp_path.iterdir()).count(".svg") == sorted(p.suffix for p in tmp_path.iterdir()).count(".png")


def test_no_slope_from_fewer_than_three_sizes(tmp_path) -> None:
    # HW 14 and 28 only: two sizes per block, so no slope anywhere; T: three sizes, a slope for each
    rows = sw.run_sweep(sw.plan(["nl", "cs"], {"T": [4, 8, 16], "HW": [14, 28]})).rows
    exps = sw.fit_exponents(rows)
    svg_hw = assert_png(plots.cost_vs_size(rows, "HW", "flops", tmp_path / "hw.png", exponents=exps))
    assert "slope " not in svg_hw and svg_hw.count("2 sizes, no slope") == 2
    svg_t = assert_png(plots.cost_vs_size(rows, "T", "flops", tmp_path / "t.png", exponents=exps))
    assert svg_t.count("slope ") == 2 and "no slope" not in svg_t
    assert plots._fit_text([(4, 1.0), (8, 2.0)]) == "2 sizes, no slope"
    assert plots._fit_text([(4, 1.0), (8, 2.0), (16, 4.0)]) == "slope 1.00"


def test_overlapping_series_are_named(tmp_path) -> None:
    # EAM and CBAM differ by ~3% at every T: drawn apart (hollow, dashed) and said to overlap
    rows = sw.run_sweep(sw.plan(["eam", "cbam", "nl"], {"T": [4, 8, 16]})).rows
    svg = assert_png(plots.cost_vs_size(rows, "T", "flops", tmp_path / "t.png"))
    assert "CBAM" in svg and "overlaps EAM" in svg and "CBAM / EAM:" in svg
    series = {"a": [(1, 1.0), (2, 2.0)], "b": [(1, 1.05), (2, 2.1)], "c": [(1, 3.0), (2, 6.0)]}
    assert plots.coinciding(series) == {"b": "a"}


def latency_rows() -> list[dict]:
    rows = []
    for module, k in (("nl", 2.0), ("cs", 0.5)):
        for impl, f in (("naive", 1.0), ("sdpa", 0.4)):
            for t in (4, 8, 16):
                ms = k * f * t * t
                rows.append({"module": module, "impl": impl, "status": "ok", "input_shapes": [[1, 96, t, 28, 28]],
                             "timing": {"median_ms": ms, "p10_ms": 0.9 * ms, "p90_ms": 1.2 * ms},
                             "memory_prediction": {"bytes": int(ms * 2**20), "measured_bytes": int(ms * 2**20)}})
    return rows


def test_latency_and_memory_against_t(tmp_path) -> None:
    rows = latency_rows()
    svg = assert_png(plots.latency_vs_size(rows, tmp_path / "lat.png", "Latency on CPU (test)"))
    assert svg.count("slope 2.00") == 4 and "Latency on CPU (test)" in svg
    predicted = {"NL, naive": [(32, 4 * 2**30)]}  # a predicted point where nothing was measured
    svg = assert_png(plots.memory_vs_size(rows, tmp_path / "mem.png", "Memory on CPU (test)", predicted=predicted,
                                          measured_label="measured (test)"))
    assert "line: predicted (closed form)" in svg and "marker: measured (test)" in svg
    one_size = [r for r in rows if r["input_shapes"][0][2] == 16]
    assert plots.latency_vs_size(one_size, tmp_path / "one.png", "x") is None  # against T needs two sizes


def test_roofline_one_point_per_block_and_arrows(tmp_path) -> None:
    points = [{"module": "nl", "impl": "naive", "precision": "fp32", "intensity": 25.0, "flops_per_s": 2e10},
              {"module": "nl", "impl": "sdpa", "precision": "fp32", "intensity": 1600.0, "flops_per_s": 5e10},
              {"module": "se", "impl": None, "precision": "fp32", "intensity": 0.3, "flops_per_s": 4e9}]
    roof = {"peak_flops_per_s": 1e11, "bytes_per_s": 2e10, "peak_label": "matmul 100 GFLOP/s", "bandwidth_label": "copy 18.6 GiB/s",
            "extra_peaks": [("TF32 matmul 400 GFLOP/s", 4e11)]}
    svg = assert_png(plots.roofline(points, roof, tmp_path / "roof.png", "Roofline on CPU (test)", "caption here"))
    for label in ("NL naive", "NL sdpa", "SE", "ridge 5 FLOP/byte", "arrow: naive to sdpa", "caption here",
                  "TF32 matmul 400 GFLOP/s"):
        assert label in svg, label
    assert plots.roofline([], roof, tmp_path / "none.png", "x") is None


def test_vps_bars(tmp_path) -> None:
    speed = [{"network": "eco-lite", "attn": a, "preset": "16f", "vps": v, "status": "ok"} for a, v in (("none", 23.2), ("nl", 8.1), ("cs", 19.9))]
    speed.append({"network": "tsm-r50", "attn": "none", "preset": "8f", "status": "OOM"})
    svg = assert_png(plots.vps_bars(speed, tmp_path / "vps.png"))
    assert "ECO-Lite + NL @ 16f" in svg


def test_nothing_to_draw_writes_nothing(tmp_path) -> None:
    assert plots.cost_vs_size([], "T", "flops", tmp_path / "a.png") is None
    assert plots.cost_vs_size([{"module": "nl", "axis": "T", "value": 4, "status": "skipped"}], "T", "flops",
                              tmp_path / "b.png") is None
    assert plots.vps_bars([{"network": "x", "attn": "y", "preset": "z", "status": "OOM"}], tmp_path / "c.png") is None
    assert plots.ratio_vs_size({"comparable": False}, tmp_path / "d.png") is None
    assert plots.latency_vs_size([], tmp_path / "e.png", "x") is None
    assert plots.memory_vs_size([], tmp_path / "f.png", "x") is None
    assert list(tmp_path.iterdir()) == []


def test_outputs_names_png_and_svg() -> None:
    assert plots.outputs("roofline.png") == ["roofline.png", "roofline.svg"]
    assert plots.svg_path(Path("a/b.png")) == Path("a/b.svg")
