"""Calibration records the tensors of WHILE/IF subgraphs at every run of them (every loop
iteration, the branch each sample took), under names qualified by the subgraph index."""

from __future__ import annotations

import numpy as np
from op_harness import rng
from test_variables import _doubling_loop

from qengine.builder import GraphBuilder, options
from qengine.calibrate import calibrate, subgraph_stat_name
from qengine.ir import Model, verify

W = np.array([[0.5, -1.0, 2.0, 0.25]], np.float32)  # _doubling_loop's weight


def _ranges(stats: dict) -> dict[str, tuple[float, float]]:
    return {name: tuple(map(float, o.range())) for name, o in stats.items()}


def test_while_body_tensors_are_observed_at_every_iteration():
    samples = rng("sub-cal").uniform(-1, 1, (6, 1, 4)).astype(np.float32)
    # NumPy twin: h = x * w; the body doubles h three times (i = 0, 1, 2)
    h = samples * W
    iterations = [h * 2.0 ** k for k in range(4)]  # the body's input bh sees k = 0, 1, 2
    for workers in (1, 2):
        got = _ranges(calibrate(_doubling_loop(), samples, quiet=True, workers=workers,
                                batch_size=2))
        # the main graph's MUL and the body's MUL are both named "mul_out": kept apart
        assert got["mul_out"] == (float(h.min()), float(h.max()))
        body_in = np.stack(iterations[:3])
        body_out = np.stack(iterations[1:])
        assert got[subgraph_stat_name(2, "bh")] == (float(body_in.min()), float(body_in.max()))
        assert got[subgraph_stat_name(2, "mul_out")] == (float(body_out.min()),
                                                         float(body_out.max()))
        # the condition's float input sees the loop-carried h before every test (k = 0..3)
        every = np.stack(iterations)
        assert got[subgraph_stat_name(1, "ch")] == (float(every.min()), float(every.max()))
        assert subgraph_stat_name(2, "bi") not in got  # int32: not observed


def _branches() -> Model:
    """y = IF(flag, x): then x * 3, else x - 1."""
    b = GraphBuilder()
    flag, x = b.input("flag", (1,), "bool"), b.input("x", (1, 4))
    y = b.op("IF", [flag, x], (1, 4), "float32", options=options("IfOptions", thenSubgraphIndex=1,
                                                       elseSubgraphIndex=2))
    b.subgraph.outputs = [y]
    then = GraphBuilder("then")
    tx = then.input("tx", (1, 4))
    then.subgraph.outputs = [then.op("MUL", [tx, then.const("three", np.float32([[3.0]]))],
                                     (1, 4), options=options("MulOptions"))]
    other = GraphBuilder("else")
    ex = other.input("ex", (1, 4))
    other.subgraph.outputs = [other.op("SUB", [ex, other.const("one", np.float32([[1.0]]))],
                                       (1, 4), options=options("SubOptions"))]
    model = Model(subgraphs=[b.subgraph, then.subgraph, other.subgraph], description="test")
    verify(model)
    return model


def test_if_branches_see_only_the_samples_that_took_them():
    x = rng("if-cal").uniform(-2, 2, (8, 1, 4)).astype(np.float32)
    flag = np.array([[True], [False]] * 4)
    got = _ranges(calibrate(_branches(), {"flag": flag, "x": x}, quiet=True, workers=1,
                            batch_size=1))
    then_x, else_x = x[flag[:, 0]], x[~flag[:, 0]]
    assert got[subgraph_stat_name(1, "tx")] == (float(then_x.min()), float(then_x.max()))
    three = then_x * np.float32(3)
    assert got[subgraph_stat_name(1, "mul_out")] == (float(three.min()), float(three.max()))
    less = else_x - np.float32(1)
    assert got[subgraph_stat_name(2, "sub_out")] == (float(less.min()), float(less.max()))
    assert got["if_out"] == (float(min(three.min(), less.min())),
                             float(max(three.max(), less.max())))
