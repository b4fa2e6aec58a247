"""Every known deviation from TFLite in one list: `python tests/deviations.py`.

Each test file keeps the deviations of its ops in a module-level `DEVIATIONS` dict beside the
tests that use them (so a tolerance cannot drift away from its reason); this script gathers them
all, with the file each comes from. A test in test_package.py keeps it importable.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

HERE = Path(__file__).parent


def collect() -> list[tuple[str, str, str]]:
    """(test file, key, reason) for every entry of every test file's DEVIATIONS."""
    sys.path.insert(0, str(HERE))
    rows = []
    for path in sorted(HERE.glob("test_*.py")):
        if "DEVIATIONS" not in path.read_text():
            continue
        spec = importlib.util.spec_from_file_location(f"_dev_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        for key, value in getattr(module, "DEVIATIONS", {}).items():
            reason = value[1] if isinstance(value, tuple) else value
            rows.append((path.name, str(key), str(reason)))
    return rows


if __name__ == "__main__":
    for file, key, reason in collect():
        print(f"{file}: {key}: {reason}")
