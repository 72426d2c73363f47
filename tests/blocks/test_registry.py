"""Every registered block, at every preset and at random shapes: counted FLOPs and params == closed forms."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attnbench.blocks.registry import all_blocks, get_block
from attnbench.errors import UsageError
from attnbench.flops.count import count, meta_inputs, param_count
from attnbench.shapes import VideoShape

CASES = [(spec.name, p.name) for spec in all_blocks() for p in spec.presets]


def _counted(spec, shape, options):
    with torch.device("meta"):
        module = spec.build(shape, **options)
    result = count(module, meta_inputs(spec.input_shapes(shape, options)))
    return module, result


@pytest.mark.parametrize("name,preset", CASES)
def test_preset_counted_equals_closed_form(name: str, preset: str) -> None:
    spec = get_block(name)
    p = spec.preset(preset)
    options = spec.resolve_options(base=p.options)
    spec.validate(p.shape, options)
    module, result = _counted(spec, p.shape, options)
    assert not result.unhandled, f"ops the counter could not count: {dict(result.unhandled)}"
    assert result.cost == spec.cost(p.shape, **options)
    assert param_count(module) == spec.params(p.shape, **options)


def test_every_block_has_a_sourced_preset() -> None:
    for spec in all_blocks():
        assert spec.presets, spec.name
        for p in spec.presets:
            assert p.source, (spec.name, p.name)


@st.composite
def block_case(draw):
    spec = draw(st.sampled_from(all_blocks()))
    base = spec.default_preset.shape
    sizes = {
        "B": draw(st.integers(1, 2)),
        "C": draw(st.integers(1, 24)) if base.C != 3 else 3,
        "T": draw(st.integers(1, 9)),
        "H": draw(st.integers(1, 12)),
        "W": draw(st.integers(1, 12)),
    }
    options = {}
    for opt in spec.options:
        if opt.choices is not None:
            options[opt.name] = draw(st.sampled_from(opt.choices))
        elif opt.type is bool:
            options[opt.name] = draw(st.booleans())
        elif opt.type is int:
            options[opt.name] = draw(st.integers(int(opt.minimum or 1), max(int(opt.minimum or 1), 4)))
    return spec, VideoShape(**sizes), options


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(block_case())
def test_random_shapes_counted_equals_closed_form(case) -> None:
    spec, shape, given_options = case
    try:
        options = spec.resolve_options(given_options)
        spec.validate(shape, options)
    except UsageError:
        return  # a shape the block rejects with a clear error is fine
    module, result = _counted(spec, shape, options)
    assert not result.unhandled
    assert result.cost == spec.cost(shape, **options)
    assert param_count(module) == spec.params(shape, **options)


SDPA_CASES = [(spec.name, p.name) for spec in all_blocks() if any(o.name == "impl" for o in spec.options)
              for p in spec.presets]


@pytest.mark.parametrize("name,preset", SDPA_CASES)
def test_sdpa_counted_equals_the_same_closed_form(name: str, preset: str) -> None:
    """impl=sdpa changes the kernel, not the arithmetic: the exact counter gives the naive closed form."""
    spec = get_block(name)
    p = spec.preset(preset)
    options = spec.resolve_options({"impl": "sdpa"}, base=p.options)
    _, result = _counted(spec, p.shape, options)
    assert not result.unhandled
    assert result.cost == spec.cost(p.shape, **options) == spec.cost(p.shape, **{**options, "impl": "naive"})
