"""qengine's own op implementations, one module per family.

Importing this package registers every op. Each module registers its ops with
`@register_op(NAME)` beside their code, so adding an op touches one file. Modules whose name
ends in `_int` hold the quantized paths; they import Numba kernels and are loaded lazily by the
float module of the same family, so a float model never compiles an integer kernel.
"""

import importlib
import pkgutil


def _register_all() -> None:
    for info in pkgutil.iter_modules(__path__):
        if info.name != "common" and not info.name.endswith("_int"):
            importlib.import_module(f"{__name__}.{info.name}")


_register_all()
