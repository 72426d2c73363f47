"""The papers' whole networks (ECO-Lite, 3D ResNet / ResNeXt, TSM-ResNet-50) with attention blocks placed as
each paper places them; importing this package registers them all."""

import importlib
import pkgutil

for _info in pkgutil.iter_modules(__path__):
    if _info.name != "registry":
        importlib.import_module(f"{__name__}.{_info.name}")
