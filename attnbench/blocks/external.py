"""Blocks from outside the package: a class in a Python file (``--module path/to/file.py:ClassName``) and the
blocks that installed distributions declare in the ``attnbench.blocks`` entry-point group.

The convention for a class (as timm's layers have it): its constructor takes the channel count first; its
other arguments, where they have an int, float, bool or str default, become block options (``-o KEY=VALUE``).
Its forward takes one video tensor [B, C, T, H, W]. Such a block has no closed forms: it is counted and timed,
and its analytic column says "none declared". A file may instead define a :class:`BlockSpec` (name it after
the colon) to give presets, options, inputs and closed forms.

An entry point may name a :class:`BlockSpec`, a list of them, a function returning either, an ``nn.Module``
class (registered under the entry point's name), or a module whose import registers its blocks. A plugin that
fails to load is a warning naming it, never a crash of every command.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import inspect
import sys
import warnings
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType
from typing import Any

from torch import nn

from attnbench.blocks.registry import BlockSpec, Option, is_registered, register_block
from attnbench.errors import AttnBenchWarning, UsageError

_FILE_BLOCKS: dict[tuple[str, str], BlockSpec] = {}
OPTION_TYPES = (bool, int, float, str)


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:200]


def _import_file(path: Path) -> ModuleType:
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:12]
    name = f"attnbench_user_{path.stem}_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise UsageError(f"cannot import {path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as err:  # noqa: BLE001 - the user's file may fail in any way; one line says how
        del sys.modules[name]
        raise UsageError(f"cannot import {path}: {type(err).__name__}: {_first_line(err)}") from None
    return module


def is_file_ref(name: str) -> bool:
    """Whether ``name`` names a block in a file (``path/to/file.py:Name``; the path may hold ``:`` or ``,``)."""
    return name.rpartition(":")[0].endswith(".py")


def from_file(ref: str) -> BlockSpec:
    """The block ``path/to/file.py:Name``: ``Name`` is an ``nn.Module`` class or a :class:`BlockSpec`. The
    block is named ``ref`` as given (a BlockSpec too: a file cannot pose as a registered block); the file is
    imported once however it is spelled."""
    file, _, attr = ref.rpartition(":")
    path = Path(file).expanduser()
    if not path.is_file():
        raise UsageError(f"--module {ref}: no such file '{file}'")
    key = (ref, str(path.resolve()), attr)
    if key in _FILE_BLOCKS:
        return _FILE_BLOCKS[key]
    module = _import_file(path.resolve())
    if not attr.isidentifier() or not hasattr(module, attr):
        found = sorted(n for n, v in vars(module).items()
                       if isinstance(v, BlockSpec) or (inspect.isclass(v) and issubclass(v, nn.Module)
                                                       and v.__module__ == module.__name__))
        raise UsageError(f"{file} defines no '{attr}'; blocks found there: {', '.join(found) or '(none)'}")
    obj = getattr(module, attr)
    if isinstance(obj, BlockSpec):
        spec = dataclasses.replace(obj, name=ref)
    elif inspect.isclass(obj) and issubclass(obj, nn.Module):
        spec = spec_from_class(obj, name=ref, origin=file)
    else:
        raise UsageError(f"{ref} is a {type(obj).__name__}, not an nn.Module class or a BlockSpec")
    _FILE_BLOCKS[key] = spec
    return spec


def spec_from_class(cls: type[nn.Module], name: str, origin: str) -> BlockSpec:
    """A :class:`BlockSpec` for a module class whose constructor takes the channel count first."""
    try:
        params = list(inspect.signature(cls).parameters.values())
    except (TypeError, ValueError) as err:
        raise UsageError(f"{name}: cannot read the constructor's signature ({_first_line(err)})") from None
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if not positional:
        raise UsageError(f"{name}: the constructor must take the channel count as its first argument")
    options = []
    for p in params:
        if p is positional[0] or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if p.default is p.empty:
            raise UsageError(f"{name}: constructor argument '{p.name}' has no default; only the channel count may be "
                             "required (give it a default, or define a BlockSpec in the file)")
        if isinstance(p.default, OPTION_TYPES):
            options.append(Option(p.name, type(p.default), p.default, help="constructor argument"))
    doc = inspect.cleandoc(cls.__dict__.get("__doc__") or "").splitlines()  # its own, not nn.Module's
    return BlockSpec(
        name=name,
        title=doc[0] if doc else cls.__name__,
        paper=f"user block ({origin})",
        build=lambda shape, **o: cls(shape.C, **o),
        options=tuple(options),
    )


def _specs(obj: Any, ep_name: str, dist: str) -> list[BlockSpec]:
    """The blocks an entry point gives (checked before any is registered: a plugin loads whole or not at all)."""
    if isinstance(obj, BlockSpec):
        return [obj]
    if inspect.isclass(obj) and issubclass(obj, nn.Module):
        return [spec_from_class(obj, ep_name, dist)]
    if isinstance(obj, ModuleType):
        return []  # importing it registered its blocks
    if callable(obj):
        return _specs(obj(), ep_name, dist)
    if isinstance(obj, Iterable) and not isinstance(obj, (str, bytes)):
        return [spec for item in obj for spec in _specs(item, ep_name, dist)]
    raise UsageError(f"entry point gives a {type(obj).__name__}, not a BlockSpec, a list of them or a module class")


def _register_all(obj: Any, ep_name: str, dist: str) -> None:
    specs = _specs(obj, ep_name, dist)
    taken = [s.name for s in specs if is_registered(s.name)]
    if taken or len({s.name for s in specs}) != len(specs):
        raise UsageError(f"block name{'s' if len(taken) > 1 else ''} {', '.join(taken) or 'repeated'} already registered")
    for spec in specs:
        register_block(spec, origin=dist)


def load_plugins(group: str) -> None:
    """Register the blocks of every installed distribution's ``group`` entry points."""
    from importlib.metadata import entry_points

    for ep in entry_points(group=group):
        dist = ep.dist.name if ep.dist is not None else ep.value
        try:
            _register_all(ep.load(), ep.name, dist)
        except Exception as err:  # noqa: BLE001 - a broken plugin must not break every command
            warnings.warn(AttnBenchWarning(f"plugin block '{ep.name}' from {dist} not loaded: "
                                           f"{type(err).__name__}: {_first_line(err)}"), stacklevel=2)
