"""TSM-ResNet-50: where the non-local blocks go (TSM's ops/non_local.py make_non_local)."""

from __future__ import annotations

import torch

from attnbench.blocks.nonlocal_block import NonLocalBlock
from attnbench.networks.registry import get_network
from attnbench.networks.tsm import Folded, ShiftBottleneck


def test_nl_sites_are_tsms_even_blocks_of_res3_and_res4() -> None:
    """make_non_local wraps layer2[0], layer2[2], layer3[0], layer3[2], layer3[4] (torchvision's layer2 and
    layer3 are res3 and res4): stage 1 blocks 0, 2 and stage 2 blocks 0, 2, 4, 0-based."""
    sites = get_network("tsm-r50").attention_sites("nl")
    assert [(s.stage, s.block, s.position) for s in sites] == [
        (1, 0, "after_block"), (1, 2, "after_block"), (2, 0, "after_block"), (2, 2, "after_block"), (2, 4, "after_block")]
    assert all(s.options["subsample"] == "after" and not s.options["use_scale"] for s in sites)  # TSM's block


def test_nl_runs_on_the_wrapped_blocks_output() -> None:
    with torch.device("meta"):
        model = get_network("tsm-r50").build("nl", frames=2, size=32, num_classes=3)
    kinds = [["nl" if isinstance(m, Folded) else "block" for m in stage] for stage in model.stages]
    assert kinds == [["block"] * 3,
                     ["block", "nl", "block", "block", "nl", "block"],
                     ["block", "nl", "block", "block", "nl", "block", "block", "nl", "block"],
                     ["block"] * 3]
    assert all(isinstance(m.block, NonLocalBlock) for stage in model.stages for m in stage if isinstance(m, Folded))
    assert sum(isinstance(m, ShiftBottleneck) for stage in model.stages for m in stage) == 16
