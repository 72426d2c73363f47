"""Networks and blocks counted once per configuration on the ``meta`` device, for ``attnbench reproduce``.

Counts are kept between runs in ``$ATTNBENCH_CACHE_DIR`` (default ``~/.cache/attnbench``, where the measured
roofline is cached too), in one file per version of the code: its name carries a digest of every attnbench source file and of the
torch version, so a change to a block, a network or the counter starts a fresh file and a stale count is
never read. A file that cannot be read is ignored (and counted again); one that cannot be written is a
warning.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
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


CACHE_ENV = "ATTNBENCH_CACHE_DIR"


def cache_file() -> Path:
    """Where counts of this version of the code are kept between runs."""
    folder = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "attnbench")
    import torch

    import attnbench

    digest = hashlib.sha256(torch.__version__.encode())
    root = Path(attnbench.__file__).parent
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return folder / f"counts-{digest.hexdigest()[:16]}.pickle"


class Counter:
    """Networks and blocks counted on ``meta``, each configuration once (and, with ``persist``, once per
    version of the code: see the module docstring)."""

    def __init__(self, persist: bool = False) -> None:
        self._cache: dict[tuple[Any, ...], Counted] = {}
        self._keys: dict[tuple[Any, ...], tuple[Any, ...]] = {}  # options as asked -> resolved configuration
        self._file = cache_file() if persist else None
        self._loaded = 0
        if self._file is not None and self._file.is_file():
            try:
                with self._file.open("rb") as f:
                    loaded = pickle.load(f)
                if isinstance(loaded, dict):
                    self._cache.update(loaded)
                    self._loaded = len(loaded)
            except Exception:  # noqa: BLE001 - a torn or foreign file: count again
                self._cache.clear()

    def save(self) -> None:
        """Keep the counts for the next run (when persisting and something new was counted)."""
        if self._file is None or len(self._cache) == self._loaded:
            return
        from attnbench.errors import AttnBenchWarning
        from attnbench.store.files import atomic_write

        try:
            self._file.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(self._file, pickle.dumps(self._cache, protocol=pickle.HIGHEST_PROTOCOL))
            self._loaded = len(self._cache)
        except Exception as err:  # noqa: BLE001 - the cache is an optimisation; the result stands without it
            warnings.warn(f"counts not kept for the next run ({type(err).__name__}: {err}); {CACHE_ENV} names "
                          f"another folder", AttnBenchWarning, stacklevel=2)

    def network(self, name: str, attn: str = "none", preset: str | None = None, **options: Any) -> Counted:
        """The network counted once per configuration: options spelled differently but resolving to the
        same network (the default class count given or not, say) share one count."""
        asked = (name, attn, preset, tuple(sorted(options.items())))
        key = self._keys.get(asked)
        if key is None:  # first time asked this way: resolve the configuration once
            from attnbench import cases

            case = cases.resolve_network(name, attn, preset, options=options)
            key = self._keys[asked] = _resolved_key(case)
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
