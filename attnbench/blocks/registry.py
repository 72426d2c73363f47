"""Block registry: every attention block is declared once, with its paper, presets, options and closed forms.

A block file declares a :class:`BlockSpec` and registers it with :func:`register_block`. The spec holds

* ``build(shape, **options) -> nn.Module`` -- the implementation at a given input shape;
* ``cost(shape, **options) -> Cost`` -- the closed-form forward-pass work, by op category;
* ``params(shape, **options) -> int`` -- the closed-form parameter count;
* ``terms(shape, **options) -> dict`` -- the paper's own named quantities (optional);
* ``inputs(shape, **options) -> list[tuple[int, ...]]`` -- the shapes of the forward arguments (default:
  one tensor of the video shape);
* ``memory(shape, precision, **options) -> Peak`` -- the closed-form peak working memory of one call:
  the tensors alive together at its peak, in their real dtypes (:mod:`attnbench.flops.memory`);
* ``presets`` -- named shapes and options from the papers, each with its source.

Nothing in here knows any block; the CLI, counter, tests and reports iterate over the registry.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from attnbench.errors import UsageError, unknown
from attnbench.flops.cost import Cost
from attnbench.flops.memory import NotModelled, Peak, Precision
from attnbench.shapes import VideoShape


@dataclass(frozen=True)
class Option:
    """A block option: name, type, default, allowed choices (None: any value of the type) and help.
    ``kernel=True`` marks an option that changes how the block computes, not what (e.g. ``impl``): the
    paper preset still applies when it is set."""

    name: str
    type: type
    default: Any
    help: str
    choices: tuple[Any, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    kernel: bool = False

    def parse(self, raw: Any) -> Any:
        """Convert a value given on the command line (a string) or in code to this option's type."""
        value = raw
        if isinstance(raw, str) and self.type is not str:
            try:
                if self.type is bool:
                    if raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
                        raise ValueError(raw)
                    value = raw.lower() in ("true", "1", "yes")
                else:
                    value = self.type(raw)
            except ValueError:
                raise UsageError(
                    f"option {self.name} takes a value of type {self.type.__name__}, got '{raw}'"
                ) from None
        if self.type is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise UsageError(f"option {self.name} takes a value of type int, got {value!r}")
        if self.type is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if self.choices is not None and value not in self.choices:
            valid = ", ".join(str(c) for c in self.choices)
            raise UsageError(f"option {self.name}={value} is not valid; valid choices: {valid}")
        if self.type is float and not math.isfinite(value):
            raise UsageError(f"option {self.name} must be a finite number, got {value}")
        if self.minimum is not None and value < self.minimum:
            raise UsageError(f"option {self.name} must be >= {self.minimum}, got {value}")
        if self.maximum is not None and value > self.maximum:
            raise UsageError(f"option {self.name} must be <= {self.maximum}, got {value}")
        return value


@dataclass(frozen=True)
class Preset:
    """A named configuration from a paper: input shape, options, and where it comes from."""

    name: str
    shape: VideoShape
    source: str
    options: Mapping[str, Any] = field(default_factory=dict)


DEFAULT_SHAPE = VideoShape(1, 64, 8, 14, 14)


@dataclass(frozen=True)
class BlockSpec:
    """A block: how to build it at a shape, its paper shapes and (optionally) its closed forms. ``cost`` and
    ``params`` may be None (a user's block with no formulas yet): it is then counted and timed, and its
    analytic column says "none declared". Without presets it gets one, ``default`` at :data:`DEFAULT_SHAPE`."""

    name: str
    title: str
    paper: str
    build: Callable[..., nn.Module]
    presets: tuple[Preset, ...] = ()
    cost: Callable[..., Cost] | None = None
    params: Callable[..., int] | None = None
    options: tuple[Option, ...] = ()
    terms: Callable[..., dict[str, Any]] | None = None
    inputs: Callable[..., list[tuple[int, ...]]] | None = None
    check: Callable[..., None] | None = None
    largest_intermediate: Callable[..., tuple[str, int]] | None = None
    memory: Callable[..., Peak] | None = None

    def __post_init__(self) -> None:
        if not self.presets:
            default = Preset("default", DEFAULT_SHAPE, "attnbench's default shape for a block that declares no presets")
            object.__setattr__(self, "presets", (default,))

    def closed_forms(self) -> list[str]:
        """What the block declares in closed form: ``"flops"``, ``"params"``, both or neither."""
        return [name for name, f in (("flops", self.cost), ("params", self.params)) if f is not None]

    @property
    def default_preset(self) -> Preset:
        return self.presets[0]

    def preset(self, name: str | None) -> Preset:
        if name is None:
            return self.default_preset
        for p in self.presets:
            if p.name == name:
                return p
        raise unknown(f"preset for block {self.name}", name, [p.name for p in self.presets])

    def resolve_options(self, given: Mapping[str, Any] | None = None, base: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Defaults, then ``base`` (a preset's options), then ``given``; every name and value checked."""
        by_name = {o.name: o for o in self.options}
        resolved = {o.name: o.default for o in self.options}
        for source in (base or {}, given or {}):
            for key, raw in source.items():
                if key not in by_name:
                    valid = ", ".join(sorted(by_name)) or "(none)"
                    raise UsageError(f"block {self.name} has no option '{key}'; valid options: {valid}")
                resolved[key] = by_name[key].parse(raw)
        return resolved

    def validate(self, shape: VideoShape, options: Mapping[str, Any]) -> None:
        if self.check is not None:
            self.check(shape, **options)

    def peak_memory(self, shape: VideoShape, precision: Precision, options: Mapping[str, Any]) -> tuple[Peak | None, str | None]:
        """``(predicted peak, None)``, or ``(None, why not)`` when the block declares no memory formula or
        its formula does not cover this precision."""
        if self.memory is None:
            return None, f"{self.name} declares no memory formula"
        try:
            return self.memory(shape, precision, **options), None
        except NotModelled as e:
            return None, str(e)

    def input_shapes(self, shape: VideoShape, options: Mapping[str, Any]) -> list[tuple[int, ...]]:
        if self.inputs is None:
            return [tuple(shape.as_list())]
        return self.inputs(shape, **options)


_REGISTRY: dict[str, BlockSpec] = {}
_ORIGIN: dict[str, str] = {}  # block name -> "attnbench", a plugin's distribution, or a file
PLUGIN_GROUP = "attnbench.blocks"


def register_block(spec: BlockSpec, origin: str | None = None) -> BlockSpec:
    """Add ``spec`` to the registry (every command then knows it by ``spec.name``). ``origin`` says where it
    came from in ``attnbench list`` (default: the module that defines ``spec.build``)."""
    if not isinstance(spec, BlockSpec):
        raise UsageError(f"register_block takes a BlockSpec, got {type(spec).__name__}")
    if spec.name in _REGISTRY:
        raise UsageError(f"block '{spec.name}' registered twice (first from {_ORIGIN.get(spec.name, '?')})")
    _REGISTRY[spec.name] = spec
    _ORIGIN[spec.name] = origin or _origin_of(spec)
    return spec


def is_registered(name: str) -> bool:
    return name in _REGISTRY


def unregister_block(name: str) -> None:
    """Remove a block registered with :func:`register_block` (tests, notebooks that redefine a block)."""
    _REGISTRY.pop(name, None)
    _ORIGIN.pop(name, None)


def _origin_of(spec: BlockSpec) -> str:
    module = getattr(spec.build, "__module__", "") or ""
    return "attnbench" if module.startswith("attnbench.") else (module or "user code")


def origin(name: str) -> str:
    """Where block ``name`` comes from: "attnbench", a plugin's distribution, user code, or its file."""
    if name not in _ORIGIN and name.rpartition(":")[0].endswith(".py"):
        return name.rpartition(":")[0]
    return _ORIGIN.get(name, "attnbench")


def get_block(name: str) -> BlockSpec:
    """A registered block by name, or a block in a Python file: ``path/to/file.py:ClassName`` (see
    :mod:`attnbench.blocks.external`)."""
    _load_all()
    if name not in _REGISTRY and name.rpartition(":")[0].endswith(".py"):
        from attnbench.blocks.external import from_file

        return from_file(name)
    if name not in _REGISTRY:
        raise unknown("module", name, _REGISTRY)
    return _REGISTRY[name]


def all_blocks() -> list[BlockSpec]:
    _load_all()
    return list(_REGISTRY.values())


_loaded = {"builtin": False, "plugins": False}


def _load_all() -> None:
    if not _loaded["builtin"]:
        _loaded["builtin"] = True
        import attnbench.blocks  # noqa: F401  (importing the package registers every block)
    if not _loaded["plugins"]:
        _loaded["plugins"] = True
        from attnbench.blocks.external import load_plugins

        load_plugins(PLUGIN_GROUP)
