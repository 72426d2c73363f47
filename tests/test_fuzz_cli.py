"""Fuzzing the CLI: every generated invocation succeeds (exit 0) or fails with one line and exit 2.

Invocations mix valid and invalid names, sizes and options. Work is kept small: FLOPs are counted on the
meta device with the exact counter only, and speed runs only tiny shapes with one short repetition."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attnbench.cli import run

BLOCKS = ["nl", "cs", "fa", "sta", "stc", "eam", "eam-s", "se", "eca", "cbam", "w3", "stpa"]
NAMES = st.sampled_from(BLOCKS + ["", "NL", "nope", "cs,nl", "--T"])
SIZES = st.one_of(st.integers(-3, 9).map(str), st.sampled_from(["1.5", "x", "", "1e3", "99999999999"]))
OPTS = st.sampled_from(["order=TW-HW-TH", "order=bad", "ratio=4", "ratio=0", "ratio=x", "subsample=true",
                        "subsample=maybe", "reduction=2", "k=3", "k=4", "variant=ts", "r=8", "fusion=max",
                        "bogus=1", "noequals", "keep_ratio=0.5", "keep_ratio=2"])
SIZE_FLAGS = ["--B", "--C", "--T", "--H", "--W"]


@st.composite
def flops_argv(draw) -> list[str]:
    argv = ["flops", "--counters", "exact"]
    if draw(st.booleans()):
        argv += ["--network", draw(st.sampled_from(["eco-lite", "tsm-r50", "resnet3d-50", "zz"]))]
        if draw(st.booleans()):
            argv += ["--attn", draw(st.sampled_from(["none", "nl", "cs", "w3", "se", "bad"]))]
        if draw(st.booleans()):
            argv += ["--T", draw(st.sampled_from(["2", "4", "0", "-1", "x"]))]
        if draw(st.booleans()):
            argv += ["--H", draw(st.sampled_from(["32", "64", "0", "7"]))]
        return argv
    for _ in range(draw(st.integers(0, 2))):
        argv += ["--module", draw(NAMES)]
    for flag in draw(st.lists(st.sampled_from(SIZE_FLAGS), max_size=3, unique=True)):
        argv += [flag, draw(SIZES)]
    for _ in range(draw(st.integers(0, 2))):
        argv += ["-o", draw(OPTS)]
    if draw(st.integers(0, 9)) == 0:
        argv += ["--preset", draw(st.sampled_from(["banet", "nope", ""]))]
    if draw(st.integers(0, 9)) == 0:
        argv.append(draw(st.sampled_from(["--json", "--all", "--bogus", "extra-arg"])))
    return argv


@st.composite
def speed_argv(draw) -> list[str]:
    argv = ["speed", "--device", draw(st.sampled_from(["cpu", "cpu", "cuda", "tpu", ""])), "--no-save",
            "--reps", draw(st.sampled_from(["1", "0", "x"])), "--target-s", "0.001", "--warmup-s", "0.01", "--json",
            "--module", draw(st.sampled_from(["nl", "cs", "eca", "zz"])),
            "--C", "16", "--T", draw(st.sampled_from(["2", "0"])), "--H", "4", "--W", "4",
            "--dtype", draw(st.sampled_from(["fp32", "bf16", "fp8", "int8"]))]
    return argv + ["--batch", draw(st.sampled_from(["1", "2", "0", "-1"]))]


INVOCATIONS = st.one_of(
    flops_argv(),
    speed_argv(),
    st.just(["list", "--json"]),
    # a bare `speed` or `table-vi` would time whole networks at paper shapes: those get a bad --reps
    st.lists(st.sampled_from(["list", "flops", "speed", "table-vi", "--json", "--nope", "-m", "cs", "--T", "0"]),
             min_size=1, max_size=4).map(lambda a: a + ["--reps", "x"] if a[0] in ("speed", "table-vi") else a),
    st.builds(lambda b: ["table-vi", "--device", "cpu", "--batch", b], st.sampled_from(["0", "-2", "x"])),
)

SEEN: list[int] = []


@pytest.fixture(autouse=True, scope="module")
def _report_count(tmp_path_factory):
    import os

    here = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("fuzz"))  # default output paths (results/...) land here, not in the repo
    yield
    os.chdir(here)
    print(f"\nfuzzed CLI invocations: {len(SEEN)}, non-zero exits other than 2: "
          f"{sum(1 for c in SEEN if c not in (0, 2))}")


@settings(max_examples=300, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(INVOCATIONS)
def test_cli_never_shows_a_traceback(capsys, argv: list[str]) -> None:
    code = run(argv)
    captured = capsys.readouterr()
    SEEN.append(code)
    assert "Traceback" not in captured.out + captured.err, argv
    assert code in (0, 2), (argv, code, captured.err)
    if code == 2:
        lines = [line for line in captured.err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), (argv, captured.err)
