"""The count of TFLite builtins (outside STABLEHLO_*) without a qengine kernel only shrinks.
`python scripts/missing_ops.py` prints the list; README's "Operators" section explains each."""

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).parents[1] / "scripts" / "missing_ops.py"

# Each entry is explained in README.md ("Operators"): CONCAT_EMBEDDINGS has no kernel in
# TFLite's interpreter either.
STILL_MISSING = {
    "CONCAT_EMBEDDINGS",
}


def test_no_builtin_loses_its_kernel_and_the_list_is_current():
    spec = importlib.util.spec_from_file_location("missing_ops", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    missing = set(module.missing_builtins())
    assert missing <= STILL_MISSING, f"lost a kernel: {sorted(missing - STILL_MISSING)}"
    assert missing == STILL_MISSING, f"now supported, drop them: {sorted(STILL_MISSING - missing)}"
