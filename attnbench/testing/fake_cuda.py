"""A fake of what attnbench uses of ``torch.cuda`` and of NVML, over CPU tensors.

It lets the CUDA code paths (``speed --device cuda``, ``table-vi``, ``--graphs``, ``--max-fit``, OOM rows,
the CUDA gate, ``scripts/gpu-check``) run end to end on a machine without a GPU. **It checks control
flow, not numbers**: times come from the host clock, and "device memory" is the bytes of the CPU tensors
created while it is installed.

What it fakes
-------------
* the device: ``is_available``, ``device_count``, ``current_device``, ``get_device_properties`` (a named
  GPU with memory, SM count, L2 size, compute capability), ``torch.cuda.device``, ``is_bf16_supported``;
  :func:`attnbench.measuring.device.placement` puts a "cuda" run's tensors on the CPU;
* timing: ``Event`` (``record`` reads the host clock; work runs synchronously, so ``elapsed_time`` is the
  host time between two records), ``synchronize``, ``Stream``, ``stream``, ``current_stream``,
  ``_sleep`` (a busy wait of ``cycles / clock_hz`` seconds);
* CUDA graphs: ``CUDAGraph``, ``graph``, ``is_current_stream_capturing``. Capture runs the callable once;
  ``replay`` replays only the ``_sleep`` spins captured (the one "GPU work" the fake can time). As on a
  real GPU, ``synchronize`` during a capture fails (``operation not permitted when stream is capturing``);
* memory: ``memory_allocated``, ``max_memory_allocated``, ``memory_reserved``, ``max_memory_reserved``,
  ``reset_peak_memory_stats``, ``empty_cache``, ``mem_get_info``, from a dispatch-level tracker of CPU
  tensor storages; an op whose outputs would take the live bytes past ``total_memory`` raises
  ``torch.cuda.OutOfMemoryError`` *before* it allocates (its output sizes are found on the meta device);
* NVML: a ``pynvml`` module with the calls :mod:`attnbench.measuring.device` makes.

Use it as a context manager (``with FakeCuda(): ...``), or through the ``fake_cuda`` pytest fixture in
``tests/conftest.py``.
"""

from __future__ import annotations

import sys
import time
import types
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils._pytree import tree_leaves, tree_map

from attnbench.measuring.memory import LiveTensorPeak

H100 = "NVIDIA H100 80GB HBM3"
CAPTURE_ERROR = "CUDA error: operation not permitted when stream is capturing"


class _Allocator(LiveTensorPeak):
    """The fake device memory: the live bytes of CPU tensor storages created while installed (the tensor
    tracker of :mod:`attnbench.measuring.memory`), refusing (out of memory) an op whose new outputs would not
    fit in ``total`` bytes."""

    def __init__(self, total: int) -> None:
        super().__init__()
        self.total = total

    @staticmethod
    def _needed(func: Any, args: Any, kwargs: Any) -> int:
        """Bytes of new storage ``func`` allocates for these arguments, found by running it on the meta
        device (once per op and argument shapes: a network calls the same ops at the same shapes many times,
        and the meta kernels are slow Python)."""
        key = _signature(func, args, kwargs)
        if key is not None and key in _NEEDED:
            return _NEEDED[key]
        need = _Allocator._run_on_meta(func, args, kwargs)
        if key is not None:
            _NEEDED[key] = need
        return need

    @staticmethod
    def _run_on_meta(func: Any, args: Any, kwargs: Any) -> int:
        def to_meta(x: Any) -> Any:
            return x.to("meta") if isinstance(x, torch.Tensor) and x.device.type == "cpu" else x

        try:
            out = func(*tree_map(to_meta, args), **tree_map(to_meta, kwargs))
        except Exception:  # noqa: BLE001 - ops the meta device cannot run are let through unchecked
            return 0
        given = {id(x) for x in tree_leaves((args, kwargs))}
        return sum(t.untyped_storage().nbytes() for t in tree_leaves(out)
                   if isinstance(t, torch.Tensor) and id(t) not in given)

    def _oom(self, need: int) -> torch.cuda.OutOfMemoryError:
        return torch.cuda.OutOfMemoryError(
            f"CUDA out of memory. Tried to allocate {need / 2**20:.2f} MiB (fake GPU: "
            f"{self.current / 2**20:.2f} MiB in use of {self.total / 2**20:.2f} MiB)")

    def __torch_dispatch__(self, func: Any, types_: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        cpu = any(isinstance(t, torch.Tensor) and t.device.type == "cpu" for t in tree_leaves((args, kwargs)))
        # Ops that can make outputs much larger than their inputs (products, convolutions, factories) are
        # sized on the meta device first, so they fail before allocating; element-wise ops and views are
        # checked after they ran (their outputs are no larger than their broadcast inputs).
        precheck = cpu and func.overloadpacket not in _VIEW_OPS and torch.Tag.pointwise not in func.tags
        if precheck:
            need = self._needed(func, args, kwargs)
            if need and self.current + need > self.total:
                raise self._oom(need)
        out = func(*args, **kwargs)
        added = self.track(func, args, kwargs, out)
        if added and self.current > self.total:
            del out  # freed (and uncounted) as the error propagates
            raise self._oom(added)
        return out


_NEEDED: dict[Any, int] = {}


def _signature(func: Any, args: Any, kwargs: Any) -> Any:
    """What the bytes an op allocates depend on: the op, each tensor's shape, strides, offset and dtype, and
    the other arguments' values; None when an argument cannot be part of a key."""
    def part(x: Any) -> Any:
        if isinstance(x, torch.Tensor):
            return ("T", tuple(x.shape), tuple(x.stride()), x.storage_offset(), x.dtype, x.device.type)
        if isinstance(x, (list, tuple)):
            return tuple(part(v) for v in x)
        if isinstance(x, dict):
            return tuple(sorted((k, part(v)) for k, v in x.items()))
        if x is None or isinstance(x, (bool, int, float, str, torch.dtype, torch.device, torch.layout, torch.memory_format)):
            return x
        raise TypeError
    try:
        key = (func, part(args), part(kwargs))
        hash(key)
    except TypeError:
        return None
    return key


_aten = torch.ops.aten
_VIEW_OPS = frozenset({_aten.view, _aten._unsafe_view, _aten.t, _aten.transpose, _aten.permute, _aten.expand,
                       _aten.squeeze, _aten.unsqueeze, _aten.slice, _aten.select, _aten.alias, _aten.detach,
                       _aten.as_strided, _aten.split, _aten.unbind, _aten.split_with_sizes})


class _Event:
    def __init__(self, enable_timing: bool = False, **_: Any) -> None:
        self.t: float | None = None

    def record(self, stream: Any = None) -> None:
        self.t = time.perf_counter()

    def synchronize(self) -> None:
        pass

    def query(self) -> bool:
        return True

    def wait(self, stream: Any = None) -> None:
        pass

    def elapsed_time(self, end: "_Event") -> float:
        if self.t is None or end.t is None:
            raise RuntimeError("elapsed_time: both events must be recorded")
        return (end.t - self.t) * 1e3  # ms, as torch.cuda.Event does


class _Stream:
    def __init__(self, device: Any = None, **_: Any) -> None:
        self.device = device

    def wait_stream(self, other: Any) -> None:
        pass

    def synchronize(self) -> None:
        pass

    def __enter__(self) -> "_Stream":
        return self

    def __exit__(self, *exc: Any) -> None:
        pass


@dataclass
class FakeCuda:
    """The fake (see the module docstring). ``total_memory`` bounds the live bytes of tensors ("device
    memory"); ``clock_hz`` converts ``_sleep`` cycles into seconds of busy waiting."""

    name: str = H100
    total_memory: int = 2 * 2**30
    multiprocessors: int = 132
    l2_bytes: int = 50 * 2**20
    capability: tuple[int, int] = (9, 0)
    clock_hz: float = 1.0e9
    driver: str = "580.00.00"
    capturing: bool = False
    captures: int = 0
    replays: int = 0
    _undo: list[tuple[Any, str, Any]] = field(default_factory=list)
    _allocator: _Allocator | None = None
    _graph: Any = None

    # -- install / uninstall -----------------------------------------------------------------------
    def _set(self, obj: Any, attr: str, value: Any) -> None:
        self._undo.append((obj, attr, getattr(obj, attr, _MISSING)))
        setattr(obj, attr, value)

    def __enter__(self) -> "FakeCuda":
        from attnbench.measuring import device as dev

        cuda = torch.cuda
        props = types.SimpleNamespace(
            name=self.name, total_memory=self.total_memory, multi_processor_count=self.multiprocessors,
            L2_cache_size=self.l2_bytes, major=self.capability[0], minor=self.capability[1],
            uuid="00000000-0000-0000-0000-000000000000", pci_bus_id=1, pci_device_id=0, pci_domain_id=0,
        )
        fake = self

        class _Graph:
            def __init__(self, *_: Any, **__: Any) -> None:
                self.captured = False
                self.sleeps: list[int] = []

            def replay(self) -> None:
                fake.replays += 1
                for cycles in self.sleeps:
                    spin(cycles)

        @contextmanager
        def graph(g: Any, *_: Any, **__: Any) -> Any:
            fake.capturing, fake._graph = True, g
            try:
                yield g
            finally:
                fake.capturing, fake._graph = False, None
            g.captured = True
            fake.captures += 1

        def synchronize(device: Any = None) -> None:
            if fake.capturing:
                raise RuntimeError(CAPTURE_ERROR)

        def spin(cycles: int) -> None:
            until = time.perf_counter() + cycles / fake.clock_hz
            while time.perf_counter() < until:
                pass

        def sleep(cycles: int) -> None:
            if fake._graph is not None:  # captured: it runs at every replay
                fake._graph.sleeps.append(cycles)
            else:
                spin(cycles)

        def reset_peak(device: Any = None) -> None:
            assert fake._allocator is not None
            fake._allocator.peak = fake._allocator.current
            
        alloc = lambda *_a, **_k: fake._allocator.current  # noqa: E731
        for attr, value in {
            "is_available": lambda: True, "device_count": lambda: 1, "current_device": lambda: 0,
            "is_initialized": lambda: True, "init": lambda: None, "set_device": lambda *_: None,
            "get_device_properties": lambda *_: props, "get_device_name": lambda *_: self.name,
            "get_device_capability": lambda *_: self.capability, "is_bf16_supported": lambda *_, **__: True,
            "device": lambda *_: _Stream(), "synchronize": synchronize, "Event": _Event, "Stream": _Stream,
            "stream": lambda s=None: s if s is not None else _Stream(), "current_stream": lambda *_: _Stream(),
            "CUDAGraph": _Graph, "graph": graph, "is_current_stream_capturing": lambda: fake.capturing,
            "_sleep": sleep, "empty_cache": lambda: None, "reset_peak_memory_stats": reset_peak,
            "memory_allocated": alloc, "memory_reserved": alloc,
            "max_memory_allocated": lambda *_a, **_k: fake._allocator.peak,
            "max_memory_reserved": lambda *_a, **_k: fake._allocator.peak,
            "mem_get_info": lambda *_: (fake.total_memory - fake._allocator.current, fake.total_memory),
        }.items():
            self._set(cuda, attr, value)
        self._set(torch.version, "cuda", "13.0")
        self._set(dev, "placement", lambda d: torch.device("cpu") if torch.device(d).type == "cuda" else torch.device(d))
        self._undo.append((sys.modules, "pynvml", sys.modules.get("pynvml", _MISSING)))
        sys.modules["pynvml"] = _fake_nvml(self)
        self._allocator = _Allocator(self.total_memory)
        self._allocator.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._allocator is not None:
            self._allocator.__exit__(None, None, None)
            self._allocator = None
        for obj, attr, old in reversed(self._undo):
            if obj is sys.modules:
                if old is _MISSING:
                    sys.modules.pop(attr, None)
                else:
                    sys.modules[attr] = old
            elif old is _MISSING:
                delattr(obj, attr)
            else:
                setattr(obj, attr, old)
        self._undo.clear()
        self.capturing = False


_MISSING = object()


def _fake_nvml(fake: FakeCuda) -> types.ModuleType:
    nvml = types.ModuleType("pynvml")

    class NVMLError(Exception):
        pass

    handle = object()
    nvml.NVMLError = NVMLError
    nvml.NVML_CLOCK_SM, nvml.NVML_CLOCK_MEM, nvml.NVML_TEMPERATURE_GPU = 1, 2, 0
    nvml.nvmlInit = lambda: None
    nvml.nvmlDeviceGetHandleByUUID = lambda _uuid: handle
    nvml.nvmlDeviceGetHandleByPciBusId = lambda _bus: handle
    nvml.nvmlDeviceGetHandleByIndex = lambda _i: handle
    nvml.nvmlSystemGetDriverVersion = lambda: fake.driver
    nvml.nvmlSystemGetCudaDriverVersion = lambda: 13000
    nvml.nvmlDeviceGetClockInfo = lambda _h, kind: 1980 if kind == nvml.NVML_CLOCK_SM else 2619
    nvml.nvmlDeviceGetMaxClockInfo = lambda _h, kind: 1980 if kind == nvml.NVML_CLOCK_SM else 2619
    nvml.nvmlDeviceGetPowerUsage = lambda _h: 350_000
    nvml.nvmlDeviceGetEnforcedPowerLimit = lambda _h: 700_000
    nvml.nvmlDeviceGetTemperature = lambda _h, _kind: 45
    nvml.nvmlDeviceGetCurrentClocksEventReasons = lambda _h: 0x0
    nvml.nvmlDeviceGetMigMode = lambda _h: (0, 0)
    nvml.nvmlDeviceGetMemoryInfo = lambda _h: types.SimpleNamespace(
        used=(fake._allocator.current if fake._allocator else 0) + 512 * 2**20, total=fake.total_memory)
    return nvml
