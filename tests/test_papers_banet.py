"""BANet Table VI comparison logic on synthetic speed rows (no timing)."""

from attnbench.papers.banet import TABLE_VI_VPS, table_vi


def _row(variant: str, vps: float, flops: int) -> dict:
    return {"attn": variant, "preset": "16f", "vps": vps, "flops": flops, "status": "ok"}


def test_table_vi_ratios() -> None:
    nets = [_row("none", 40.0, 100), _row("nl", 10.0, 130), _row("cs", 30.0, 105)]
    blocks = [{"module": "nl", "status": "ok", "flops": 62, "timing": {"median_ms": 8.0}},
              {"module": "cs", "status": "ok", "flops": 10, "timing": {"median_ms": 2.0}}]
    result = table_vi(nets, blocks)
    s = result["summary"]
    assert s["paper_cs_over_nl_speed"] == TABLE_VI_VPS["cs"] / TABLE_VI_VPS["nl"]  # 19.9 / 8.1 = 2.46
    assert round(s["paper_cs_over_nl_speed"], 2) == 2.46
    assert s["measured_cs_over_nl_speed"] == 3.0
    assert s["network_flop_ratio_nl_over_cs"] == 130 / 105
    assert s["block_latency_ratio_nl_over_cs"] == 4.0 and s["block_flop_ratio_nl_over_cs"] == 6.2
    assert [m["measured / baseline"] for m in result["methods"]] == [1.0, 0.25, 0.75]


def test_table_vi_with_an_oom_row() -> None:
    nets = [_row("none", 40.0, 100), {"attn": "nl", "preset": "16f", "status": "OOM", "flops": 130}, _row("cs", 30.0, 105)]
    result = table_vi(nets, [])
    assert result["methods"][1]["measured VPS"] is None and result["methods"][1]["status"] == "OOM"
    assert result["summary"]["measured_cs_over_nl_speed"] is None
