"""Networks and blocks counted once per configuration on the ``meta`` device, for ``attnbench reproduce``."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from attnbench.flops.conventions import CONVENTIONS, OpLog, count_detailed
from attnbench.flops.cost import Cost
from attnbench.flops.count import meta_inputs, param_count
from attnbench.shapes import VideoShape




@dataclass
class Counted:
    """One module counted once: cells, per-op costs, op log, and what the module itself holds."""

    cost: Cost
    per_op: dict[str, Cost]
    log: OpLog
    params: int
    buffer_bytes: int
    leaf_modules: int
    _values: dict[str, int] = field(default_factory=dict)

    def value(self, convention: str) -> int:
        if convention not in self._values:
            self._values[convention] = CONVENTIONS[convention](self.cost, self.per_op, self.log)
        return self._values[convention]

    def only(self, ops: Iterable[str]) -> "Counted":
        """The same count restricted to some ATen ops (for ratios of one kind of product)."""
        names = frozenset(ops)
        per_op = {k: v for k, v in self.per_op.items() if k in names}
        log = OpLog({k: r for k, r in self.log.records.items() if k[0] in names})
        return Counted(Cost.total(per_op.values()), per_op, log, self.params, self.buffer_bytes, self.leaf_modules)


def _measure(module: nn.Module, shapes: Sequence[Sequence[int]]) -> Counted:
    result, log = count_detailed(module, meta_inputs(shapes))
    buffers = sum(b.numel() * b.element_size() for b in module.buffers())
    leaves = sum(1 for m in module.modules() if not any(True for _ in m.children()))
    return Counted(result.cost, result.per_op, log, param_count(module), buffers, leaves)


def _resolved_key(case: Any) -> tuple[Any, ...]:
    r = case.spec.resolve(case.attn, preset=case.preset, **case.kwargs)
    return ("network", case.spec.name, r.attn, r.frames, r.size, r.batch, tuple(sorted(r.net.items())),
            tuple(sorted(r.attn_options.items())))


class Counter:
    """Networks and blocks counted on ``meta``, each configuration once."""

    def __init__(self) -> None:
        self._cache: dict[tuple[Any, ...], Counted] = {}

    def network(self, name: str, attn: str = "none", preset: str | None = None, **options: Any) -> Counted:
        """The network counted once per configuration: options spelled differently but resolving to the
        same network (the default class count given or not, say) share one count."""
        from attnbench import cases

        case = cases.resolve_network(name, attn, preset, options=options)
        key = _resolved_key(case)
        if key not in self._cache:
            self._cache[key] = _measure(case.build("meta"), case.input_shapes())
        return self._cache[key]

    def params(self, name: str, attn: str = "none", preset: str | None = None, **options: Any) -> int:
        """Parameters only: from a count already made, else the network's closed form (tested equal to the
        built module's), without counting its FLOPs."""
        from attnbench import cases

        case = cases.resolve_network(name, attn, preset, options=options)
        counted = self._cache.get(_resolved_key(case))
        return counted.params if counted is not None else case.params()

    def block(self, name: str, shape: VideoShape, **options: Any) -> Counted:
        key = ("block", name, tuple(shape.as_list()), tuple(sorted(options.items())))
        if key not in self._cache:
            from attnbench.blocks.registry import get_block

            spec = get_block(name)
            opts = spec.resolve_options(options)
            spec.validate(shape, opts)
            import torch

            with torch.device("meta"):
                module = spec.build(shape, **opts)
            self._cache[key] = _measure(module, spec.input_shapes(shape, opts))
        return self._cache[key]

    def sites(self, network: str, attn: str, preset: str, **options: Any) -> list[Any]:
        from attnbench import cases

        return cases.resolve_network(network, attn, preset, options=options).sites()
