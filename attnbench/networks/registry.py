"""Network registry: the papers' whole networks, with attention blocks placed where each paper places them.

A network file declares a :class:`NetworkSpec` and registers it with :func:`register_network`. The spec holds

* ``attn_choices`` -- the attention blocks (registry names, see :mod:`attnbench.blocks.registry`) the network
  can carry, ``"none"`` for the plain network, and ``placements``: where each one goes, with its source;
* ``sites(resolved) -> list[Site]`` -- every place an attention block is inserted, with the block's input
  shape there ([B, C, T, H, W]) and its options;
* ``construct(resolved, sites) -> nn.Module`` -- the network itself, taking one video [B, 3, T, H, W] and
  returning class scores [B, num_classes];
* ``base_params(resolved) -> int`` -- the closed-form parameter count of the network without the ``attn``
  blocks, summed from conv / batch-norm / linear formulas over the topology;
* ``presets`` -- input frames and size (and options) from the papers, each with its source, and optionally
  the attention the preset's network carries when none is named (BANet-Lite includes its CS block).

Through the spec: ``build(attn, frames=, size=, **options)``, ``params(...)`` (= ``base_params`` plus the
attention block's own closed form ``BlockSpec.params(site.shape, **site.options)`` at every site),
``input_shape(frames, size, batch)`` and ``attention_sites(...)``. Options that are not the network's own go
to the attention block and are checked by the block's ``resolve_options``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from math import prod
from typing import Any

from torch import nn

from attnbench.blocks.registry import Option, get_block
from attnbench.errors import UsageError, unknown
from attnbench.shapes import VideoShape

# ---------------------------------------------------------------------------------------------------------
# Closed-form helpers shared by the network files


def conv_params(cin: int, cout: int, kernel: int | tuple[int, ...], groups: int = 1, bias: bool = False, dims: int = 2) -> int:
    """Weights (and bias) of a convolution: cout x (cin / groups) x kernel volume (+ cout)."""
    taps = kernel**dims if isinstance(kernel, int) else prod(kernel)
    return cout * (cin // groups) * taps + (cout if bias else 0)


def bn_params(channels: int) -> int:
    """Batch norm's learnable scale and shift (running statistics are buffers, not parameters)."""
    return 2 * channels


def linear_params(fin: int, fout: int, bias: bool = True) -> int:
    return fin * fout + (fout if bias else 0)


def conv_out(n: int, kernel: int, stride: int = 1, padding: int = 0) -> int:
    """Output length of a convolution or floor-mode pooling along one axis."""
    return (n + 2 * padding - kernel) // stride + 1


def pool_out_ceil(n: int, kernel: int, stride: int) -> int:
    """Output length of a ceil-mode pooling with no padding (PyTorch's rule: the last window starts inside)."""
    out = -(-(n - kernel) // stride) + 1
    if (out - 1) * stride >= n:
        out -= 1
    return out


# ---------------------------------------------------------------------------------------------------------
# Specs


@dataclass(frozen=True)
class NetworkPreset:
    """A named input configuration from a paper: frames, square frame size, options, and the source.
    ``attn``: the attention the network carries at this preset when the caller names none (``None``: the
    plain network); an explicit ``attn`` -- ``"none"`` included -- always wins."""

    name: str
    frames: int
    size: int
    source: str
    options: Mapping[str, Any] = field(default_factory=dict)
    attn: str | None = None


@dataclass(frozen=True)
class Site:
    """One attention insertion: a label, the stage / block / position it sits at, its input shape, options."""

    where: str
    shape: VideoShape
    options: Mapping[str, Any]
    stage: int = 0
    block: int = 0
    position: str = ""


@dataclass(frozen=True)
class Resolved:
    """A network configuration with every name and value checked."""

    attn: str
    frames: int
    size: int
    batch: int
    net: Mapping[str, Any]
    attn_options: Mapping[str, Any]

    @property
    def input_shape(self) -> VideoShape:
        return VideoShape(self.batch, 3, self.frames, self.size, self.size)


@dataclass(frozen=True)
class NetworkSpec:
    name: str
    title: str
    paper: str
    attn_choices: tuple[str, ...]
    presets: tuple[NetworkPreset, ...]
    construct: Callable[[Resolved, list[Site]], nn.Module]
    base_params: Callable[[Resolved], int]
    sites: Callable[[Resolved], list[Site]]
    options: tuple[Option, ...] = ()
    placements: Mapping[str, str] = field(default_factory=dict)
    attn_defaults: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    check: Callable[[Resolved], None] | None = None

    @property
    def default_preset(self) -> NetworkPreset:
        return self.presets[0]

    def default_attn(self, preset: str | None = None) -> str:
        """The attention a network at ``preset`` carries when none is named: the preset's, else ``"none"``."""
        return self.preset(preset).attn or "none"

    def preset(self, name: str | None) -> NetworkPreset:
        if name is None:
            return self.default_preset
        for p in self.presets:
            if p.name == name:
                return p
        raise unknown(f"preset for network {self.name}", name, [p.name for p in self.presets])

    def resolve(
        self,
        attn: str | None = None,
        frames: int | str | None = None,
        size: int | str | None = None,
        batch: int | str = 1,
        preset: str | None = None,
        **options: Any,
    ) -> Resolved:
        """Check the attention name, sizes and options. ``preset`` supplies frames, size, base options and the
        attention when ``attn`` is None (:meth:`default_attn`); explicit arguments win. Options that are not the
        network's go to the attention block."""
        p = self.preset(preset)
        if attn is None:
            attn = p.attn or "none"
        if attn not in self.attn_choices:
            raise unknown(f"attention for network {self.name}", attn, self.attn_choices)
        frames = _positive("frames", p.frames if frames is None else frames)
        size = _positive("size", p.size if size is None else size)
        batch = _positive("batch", batch)
        by_name = {o.name: o for o in self.options}
        net = {o.name: o.default for o in self.options}
        rest: dict[str, Any] = {}
        for source in (p.options, options):
            for key, raw in source.items():
                if key in by_name:
                    net[key] = by_name[key].parse(raw)
                elif source is options:
                    rest[key] = raw
        if attn == "none":
            if rest:
                valid = ", ".join(sorted(by_name)) or "(none)"
                raise UsageError(f"network {self.name} has no option '{next(iter(rest))}'; valid options: {valid}")
            attn_options: dict[str, Any] = {}
        else:
            block = get_block(attn)
            known = {o.name for o in block.options}
            base = {k: v for k, v in self.attn_defaults.get(attn, {}).items() if k in known}
            try:
                attn_options = block.resolve_options(rest, base=base)
            except UsageError as err:
                raise UsageError(f"{err} (network options: {', '.join(sorted(by_name)) or '(none)'})") from None
        resolved = Resolved(attn, frames, size, batch, net, attn_options)
        if self.check is not None:
            self.check(resolved)
        return resolved

    def attention_sites(self, attn: str | None = None, **kwargs: Any) -> list[Site]:
        """Where the attention blocks go, each with its input shape and options (empty for ``none``).
        ``attn=None``: the preset's default (:meth:`default_attn`), as in :meth:`build` and :meth:`params`."""
        return self._sites(self.resolve(attn, **kwargs))

    def _sites(self, r: Resolved) -> list[Site]:
        if r.attn == "none":
            return []
        sites = self.sites(r)
        block = get_block(r.attn)
        for s in sites:
            block.validate(s.shape, s.options)
        return sites

    def build(self, attn: str | None = None, **kwargs: Any) -> nn.Module:
        """The network with ``attn`` blocks at every site; input [B, 3, frames, size, size]."""
        r = self.resolve(attn, **kwargs)
        return self.construct(r, self._sites(r))

    def params(self, attn: str | None = None, **kwargs: Any) -> int:
        """Closed-form parameter count: the plain network's formula plus the block's at every site."""
        r = self.resolve(attn, **kwargs)
        total = self.base_params(r)
        if r.attn != "none":
            block = get_block(r.attn)
            total += sum(block.params(s.shape, **s.options) for s in self._sites(r))
        return total

    def input_shape(self, frames: int | None = None, size: int | None = None, batch: int = 1, preset: str | None = None) -> tuple[int, ...]:
        """The video the network takes: (B, 3, frames, size, size)."""
        p = self.preset(preset)
        shape = VideoShape(batch, 3, p.frames if frames is None else frames, p.size if size is None else size, p.size if size is None else size)
        return tuple(shape.as_list())

    def input_shapes(self, **kwargs: Any) -> list[tuple[int, ...]]:
        """Forward arguments' shapes (one video), for :func:`attnbench.flops.count.meta_inputs`."""
        r = self.resolve(**kwargs)
        return [tuple(r.input_shape.as_list())]


def _positive(name: str, value: int | str) -> int:
    if isinstance(value, str):
        try:
            value = int(value)
        except ValueError:
            raise UsageError(f"{name} must be a positive integer, got '{value}'") from None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise UsageError(f"{name} must be a positive integer, got {value!r}")
    return value


NUM_CLASSES_HELP = "classifier outputs"


def num_classes_option(default: int, dataset: str) -> Option:
    return Option("num_classes", int, default, f"{NUM_CLASSES_HELP} (default: {dataset})", minimum=1)


_REGISTRY: dict[str, NetworkSpec] = {}


def register_network(spec: NetworkSpec) -> NetworkSpec:
    if spec.name in _REGISTRY:
        raise ValueError(f"network '{spec.name}' registered twice")
    for p in spec.presets:
        if p.attn is not None and p.attn not in spec.attn_choices:
            raise ValueError(f"network '{spec.name}' preset '{p.name}': attention '{p.attn}' is not one of {spec.attn_choices}")
    _REGISTRY[spec.name] = spec
    return spec


def get_network(name: str) -> NetworkSpec:
    _load_all()
    if name not in _REGISTRY:
        raise unknown("network", name, _REGISTRY)
    return _REGISTRY[name]


def all_networks() -> list[NetworkSpec]:
    _load_all()
    return list(_REGISTRY.values())


def _load_all() -> None:
    import attnbench.networks  # noqa: F401  (importing the package registers every network)
