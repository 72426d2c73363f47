"""FLOP and parameter outputs are identical across runs and thread counts."""

import json

import torch

from attnbench.api import flops_report, preset_cases


def _all_counts() -> str:
    out = []
    for case in preset_cases():
        r = flops_report(case, ["exact", "torch"]).to_dict()
        out.append({k: r[k] for k in ("module", "preset", "input_shape", "params", "params_analytic", "analytic", "counted")})
    return json.dumps(out, sort_keys=True, default=str)


def test_counts_identical_across_runs_and_threads() -> None:
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = _all_counts()
        torch.set_num_threads(2)
        two = _all_counts()
    finally:
        torch.set_num_threads(before)
    assert one == two
    assert one == _all_counts()
