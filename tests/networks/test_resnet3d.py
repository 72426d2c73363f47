"""3D ResNet-50 / ResNeXt-101: where the non-local blocks go (Wang et al.'s code), and SE, ECA, CBAM (on the
residual branch of each stage's last block) and EAM (after each stage)."""

from __future__ import annotations

import pytest
import torch

from attnbench.blocks.eam import EAM, SqueezeExcitation3d
from attnbench.networks.registry import get_network
from attnbench.networks.resnet3d import Bottleneck3d


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


@pytest.mark.parametrize("name", ["resnet3d-50", "resnext3d-101"])
def test_se_eca_cbam_sit_on_the_last_blocks_branch_and_eam_after_the_stage(name: str) -> None:
    spec = get_network(name)
    layers = (3, 4, 6, 3) if name == "resnet3d-50" else (3, 4, 23, 3)
    for attn in ("se", "eca", "cbam"):
        sites = spec.attention_sites(attn)
        assert [(s.stage, s.block, s.position) for s in sites] == [(s, layers[s] - 1, "bottom") for s in range(4)]
        assert [s.shape.C for s in sites] == [256, 512, 1024, 2048]  # the stage outputs: one per stage
    for attn in ("eam", "eam-s", "eam-t"):
        sites = spec.attention_sites(attn)
        assert [(s.stage, s.block, s.position) for s in sites] == [(s, layers[s] - 1, "after_stage") for s in range(4)]


def test_se_is_inside_the_last_bottleneck_and_eam_follows_the_stage() -> None:
    spec = get_network("resnet3d-50")
    with torch.device("meta"):
        se, eam = spec.build("se", frames=4, size=32), spec.build("eam", frames=4, size=32)
    for stage, n in zip(se.stages, (3, 4, 6, 3)):
        assert len(stage) == n and all(isinstance(b, Bottleneck3d) for b in stage)
        assert isinstance(stage[-1].attention, SqueezeExcitation3d)
        assert all(isinstance(b.attention, torch.nn.Identity) for b in stage[:-1])
    for stage, n in zip(eam.stages, (3, 4, 6, 3)):
        assert len(stage) == n + 1 and isinstance(stage[-1], EAM)
    # SE (r = 16, no biases) on 256 ... 2048 channels: 2 (256^2 + 512^2 + 1024^2 + 2048^2) / 16 = 696,320
    assert spec.params("se") == spec.params() + 696_320 == 46_999_795


def test_a_branch_module_leaves_the_shortcut_alone() -> None:
    """Bottleneck3d with a module that zeroes the branch outputs relu(shortcut(x)): the attention gates the
    residual branch only, as in SE-ResNet, and the identity path bypasses it."""

    class Zero(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * 0

    block = Bottleneck3d(8, 2, 8, 1, 1, Zero()).eval()
    x = torch.randn(1, 8, 2, 3, 3)
    with torch.no_grad():
        assert torch.equal(block(x), torch.relu(x))
