"""A model with ops qengine has no kernel for: one line per op type, the full list on demand."""

from __future__ import annotations

import numpy as np
import pytest

import qengine
from qengine.builder import GraphBuilder
from qengine.cli import main
from qengine.errors import UnsupportedOpError


@pytest.fixture
def model_path(tmp_path):
    """Three nodes of two op types without a kernel (custom codes: never registered)."""
    b = GraphBuilder()
    x = b.input("x", (4,))
    y = b.op("CUSTOM", [x], (4,), custom_code="NoSuchOpA")
    z = b.op("CUSTOM", [y], (4,), custom_code="NoSuchOpA")
    w = b.op("CUSTOM", [z], (4,), custom_code="NoSuchOpB")
    path = tmp_path / "unsupported.tflite"
    b.build([w]).save(path)
    return str(path)


def test_error_has_one_line_per_op_type_with_count_and_first_node(model_path):
    with pytest.raises(UnsupportedOpError) as info:
        qengine.Interpreter(model_path)
    lines = str(info.value).splitlines()
    assert lines[0].startswith("2 op type(s)")
    assert "CUSTOM:NoSuchOpA: 2 node(s), first op 0 (output 'nosuchopa_out')" in lines[1]
    assert "CUSTOM:NoSuchOpB: 1 node(s), first op 2" in lines[2]
    assert len(lines) == 4 and "inspect --unsupported" in lines[3]
    assert len(info.value.nodes) == 3


def test_cli_lists_every_node_with_inspect_unsupported_and_debug(model_path, capsys):
    assert main(["run", model_path]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: 2 op type(s)") and "Traceback" not in err
    assert main(["inspect", model_path, "--unsupported"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in out[:3]] == ["CUSTOM:NoSuchOpA"] * 2 + ["CUSTOM:NoSuchOpB"]
    assert out[3] == "3 op(s) without a qengine kernel, 2 distinct type(s)"
    with pytest.raises(UnsupportedOpError):
        main(["--debug", "run", model_path])
    assert capsys.readouterr().err.count("unsupported: ") == 3
