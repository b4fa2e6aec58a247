"""List TFLite's builtin operators (outside STABLEHLO_*) that have no qengine kernel.

    python scripts/missing_ops.py          # one name per line, then the count

The names come from the schema's BuiltinOperator enum. CUSTOM, DELEGATE and
PLACEHOLDER_FOR_GREATER_OP_CODES are codes, not operators, and are not counted.
"""

from __future__ import annotations

from qengine.schema import tflite_generated as fb

import qengine  # noqa: F401  (registers every op)
from qengine.runtime import supported_ops

NOT_OPERATORS = {"CUSTOM", "DELEGATE", "PLACEHOLDER_FOR_GREATER_OP_CODES"}


def missing_builtins() -> list[str]:
    names = [n for n in vars(fb.BuiltinOperator) if not n.startswith("_")]
    supported = set(supported_ops())
    return sorted(n for n in names if not n.startswith("STABLEHLO_")
                  and n not in NOT_OPERATORS and n not in supported)


if __name__ == "__main__":
    missing = missing_builtins()
    print("\n".join(missing))
    print(f"{len(missing)} non-StableHLO builtin operators without a qengine kernel")
