"""The public Python API: README's "Use it on your own block" example runs as written; count, measure,
compare and register_block on users' modules."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import attnbench
from attnbench.errors import UsageError

ROOT = Path(__file__).resolve().parents[1]


def _readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Use it on your own block"):]
    section = section[:section.index("\n## ", 1)]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1
    return blocks[0]


def test_readme_example_runs(capsys) -> None:
    try:
        exec(compile(_readme_example(), "README.md", "exec"), {"__name__": "readme_example"})
    finally:
        attnbench.unregister_block("gate")
    printed = capsys.readouterr().out.splitlines()
    flops, macs = (int(v) for v in printed[0].split()[:2])
    n = 64 * 8 * 14 * 14
    assert macs == 64 * n  # a 1x1x1 conv: C_in multiply-adds per output element
    assert flops == 2 * 64 * n + n + n + n  # conv 2 x MACs + bias, sigmoid, multiply


def test_import_attnbench_is_light() -> None:
    code = "import sys, attnbench; assert 'torch' not in sys.modules and 'pandas' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_count_by_module_and_shapes() -> None:
    block = nn.Sequential(nn.Conv3d(8, 16, 1), nn.ReLU(), nn.Conv3d(16, 8, 1))
    c = attnbench.count(block, [(2, 8, 4, 5, 5)])
    n = 2 * 4 * 5 * 5
    assert c.by_module["0"]["macs"] == 8 * 16 * n and c.by_module["2"]["macs"] == 16 * 8 * n
    assert c.by_module[""]["flops"] == c.flops == sum(c.by_module[k]["flops"] for k in ("0", "1", "2"))
    assert c.params == (8 * 16 + 16) + (16 * 8 + 8)
    assert next(block.parameters()).device.type == "cpu"  # the user's module is not moved to meta
    assert attnbench.count(block, torch.zeros(2, 8, 4, 5, 5)).flops == c.flops  # tensors or shapes
    with pytest.raises(UsageError):
        attnbench.count(block, ["not a shape"])


def test_count_backward_adds_the_training_step() -> None:
    block = nn.Sequential(nn.Conv3d(8, 8, 1), nn.ReLU())
    fwd = attnbench.count(block, (1, 8, 2, 3, 3))
    step = attnbench.count(block, (1, 8, 2, 3, 3), backward=True)
    assert step.forward_flops == fwd.flops and step.backward_flops > 0
    assert step.flops == step.forward_flops + step.backward_flops


def test_measure_and_compare_on_cpu() -> None:
    block = nn.Conv3d(4, 4, 1)
    t = attnbench.measure(block, (1, 4, 2, 3, 3), reps=2, target_s=0.01, warmup_s=0, label="conv")
    assert t.status == "ok" and t.median_s > 0 and len(t.samples_s) >= 2 and t.fingerprint["device_type"] == "cpu"
    table = attnbench.compare([attnbench.count(block, (1, 4, 2, 3, 3), label="conv"), t])
    assert list(table["block"]) == ["conv"] and {"GFLOPs", "median ms", "peak MiB"} <= set(table.columns)
    with pytest.raises(attnbench.AttnBenchError):
        attnbench.measure(block, (1, 4, 2, 3, 3), device="cuda:7" if not torch.cuda.is_available() else "cuda:99")


def test_register_block_twice_is_refused() -> None:
    spec = attnbench.BlockSpec(name="twice", title="t", paper="p", build=lambda s: nn.Identity())
    attnbench.register_block(spec)
    try:
        with pytest.raises(UsageError, match="registered twice"):
            attnbench.register_block(spec)
        assert attnbench.get_block("twice").default_preset.name == "default"  # no presets: attnbench's default shape
    finally:
        attnbench.unregister_block("twice")


def test_api_edges() -> None:
    block = nn.Conv3d(4, 4, 1).to(torch.bfloat16)
    assert attnbench.count(block, (1, 4, 2, 3, 3)).macs == 4 * 4 * 18  # inputs follow the module's dtype
    with pytest.raises(UsageError, match="batch"):
        attnbench.measure(nn.Conv3d(4, 4, 1), (0, 4, 2, 3, 3), reps=1, target_s=0.01, warmup_s=0)
    with pytest.raises(UsageError, match="no parameters that require grad"):
        attnbench.count(nn.ReLU(), (1, 4, 2, 3, 3), backward=True)
    step = attnbench.count(nn.ReLU(), (1, 4, 2, 3, 3), backward=True, input_grad=True)
    assert step.backward_flops > 0
    a, b = attnbench.count(nn.ReLU(), (1, 4, 2, 3, 3)), attnbench.count(nn.ReLU(), (1, 4, 4, 3, 3))
    assert len(attnbench.compare([a, b])) == 2  # one row per input, never silently merged
    with pytest.raises(UsageError, match="different labels"):
        attnbench.compare([a, a])
