"""A model with ops qengine has no kernel for: one line per op type, the full list on demand.
(tests/test_cli.py checks the one-type case: a single `error:` line naming the node.)"""

from __future__ import annotations

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
    assert lines[0].startswith("2 op types have no qengine kernel")
    assert "inspect --unsupported" in lines[0]
    assert lines[1] == ("  CUSTOM:NoSuchOpA: 2 node(s), first op 0 CUSTOM:NoSuchOpA "
                        "(output 'nosuchopa_out')")
    assert lines[2].startswith("  CUSTOM:NoSuchOpB: 1 node(s), first op 2 CUSTOM:NoSuchOpB")
    assert len(lines) == 3 and len(info.value.nodes) == 3


def test_cli_lists_every_node_with_inspect_unsupported_and_debug(model_path, capsys):
    assert main(["run", model_path]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: 2 op types") and "Traceback" not in err
    assert main(["inspect", model_path, "--unsupported"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[2] for line in out[:3]] == ["CUSTOM:NoSuchOpA"] * 2 + ["CUSTOM:NoSuchOpB"]
    assert out[3] == "3 op(s) without a qengine kernel, 2 distinct type(s)"
    with pytest.raises(UnsupportedOpError):
        main(["--debug", "run", model_path])
    assert capsys.readouterr().err.count("unsupported: ") == 3
