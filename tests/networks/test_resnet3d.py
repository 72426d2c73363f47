"""3D ResNet-50 / ResNeXt-101: where the non-local blocks go (Wang et al.'s code)."""

from __future__ import annotations

import pytest

from attnbench.networks.registry import get_network


@pytest.mark.parametrize("name,res4", [("resnet3d-50", (1, 3, 5)), ("resnext3d-101", (6, 13, 20))])
def test_nl_sites_follow_wang_et_als_code(name: str, res4: tuple[int, ...]) -> None:
    """res_stage_nonlocal adds a block after idx when idx % mod == mod - 1: mod 2 in res3 (1, 3) and in
    ResNet-50's res4 (1, 3, 5); mod 2 x 4 - 1 = 7 in a depth-101 res4 of 23 blocks (6, 13, 20)."""
    mod = 2 if name == "resnet3d-50" else 7
    blocks = 6 if name == "resnet3d-50" else 23
    assert res4 == tuple(i for i in range(blocks) if i % mod == mod - 1)
    sites = get_network(name).attention_sites("nl")
    assert [(s.stage, s.block) for s in sites] == [(1, 1), (1, 3)] + [(2, i) for i in res4]
    assert all(s.position == "after_block" and s.options["subsample"] == "after" for s in sites)
