"""Package boundaries: what `import qengine` loads, and which layer may import which."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).parents[1]


def test_import_qengine_loads_neither_numba_nor_tensorflow():
    code = ("import sys, qengine; m = qengine.load(sys.argv[1]); "
            "bad = [n for n in ('numba', 'tensorflow', 'ai_edge_litert', 'qengine.kernels.conv')"
            " if n in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code, str(REPO / "examples/digits.tflite")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_running_a_float_model_never_imports_tensorflow():
    code = ("import sys, numpy as np, qengine; i = qengine.Interpreter(sys.argv[1]); "
            "i.run(np.zeros((1, 28, 28), np.float32)); "
            "sys.exit(1 if 'tensorflow' in sys.modules or 'ai_edge_litert' in sys.modules else 0)")
    result = subprocess.run([sys.executable, "-c", code, str(REPO / "examples/digits.tflite")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("layer", ["kernels", "schema"])
def test_lower_layers_do_not_import_qengine(layer):
    """kernels/ knows arrays and Numba; schema/ the wire format. Neither knows the IR."""
    for path in (REPO / layer).glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                allowed = name.startswith(f"qengine.{layer}")
                assert allowed or not name.startswith("qengine"), f"{path.name} imports {name}"


def test_the_deviation_list_collects():
    import deviations

    rows = deviations.collect()
    assert rows and all(reason.strip() for _, _, reason in rows)
