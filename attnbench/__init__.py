"""attnbench: build video attention blocks at paper shapes, count their FLOPs exactly, time them.

The Python API (see README, "Use it on your own block")::

    import attnbench
    c = attnbench.count(module, (1, 64, 8, 14, 14))                 # FLOPs, MACs, by op and by submodule
    t = attnbench.measure(module, (1, 64, 8, 14, 14), device="cuda")  # median, IQR, samples, memory
    attnbench.compare([c, ...])                                     # one table (a pandas DataFrame)
    attnbench.register_block(BlockSpec(...))                        # then `attnbench flops --module NAME`

Attributes are imported on first use, so that ``import attnbench`` (and ``attnbench --help``) stays fast.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_API = {
    "count": "attnbench.api", "measure": "attnbench.api", "compare": "attnbench.api",
    "flops_report": "attnbench.api", "resolve": "attnbench.api", "Count": "attnbench.api", "Timing": "attnbench.api",
    "register_block": "attnbench.blocks.registry", "unregister_block": "attnbench.blocks.registry",
    "get_block": "attnbench.blocks.registry", "BlockSpec": "attnbench.blocks.registry",
    "Option": "attnbench.blocks.registry", "Preset": "attnbench.blocks.registry",
    "VideoShape": "attnbench.shapes", "Cost": "attnbench.flops.cost", "cost": "attnbench.flops.cost",
    "AttnBenchError": "attnbench.errors", "UsageError": "attnbench.errors",
}
__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        import importlib

        module = importlib.import_module(_API[name])
        value = module if name == "cost" else getattr(module, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'attnbench' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted(__all__)
