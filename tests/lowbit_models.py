"""A small model holding every low-bit format qengine reads, built without TensorFlow.

    mixed_model() -> qengine Model: ids -> EMBEDDING_LOOKUP (int2 per-row) -> FULLY_CONNECTED
    (int4 per-channel, hybrid) -> FULLY_CONNECTED (int4 blockwise 32, float16 scales) -> ADD
    of a DEQUANTIZE'd uint4 constant (zero point 8). Odd element counts leave packing tails.
"""

from __future__ import annotations

import numpy as np

from qengine.builder import GraphBuilder, options
from qengine.ir import BlockDetails, Model, Quantization

ROWS, WIDTH, HIDDEN, UNITS, BLOCK = 5, 33, 64, 8, 32


def mixed_model(seed: int = 0) -> Model:
    r = np.random.default_rng(seed)
    b = GraphBuilder()
    ids = b.input("ids", (3,), "int32")
    table = b.const("table", r.integers(-2, 2, (ROWS, WIDTH)).astype(np.int8), "int2",
                    Quantization(r.uniform(0.1, 0.5, ROWS), np.zeros(ROWS), 0))
    rows = b.op("EMBEDDING_LOOKUP", [ids, table], out_shape=(3, WIDTH), out_dtype="float32")
    w1 = b.const("w1", r.integers(-7, 8, (HIDDEN, WIDTH)).astype(np.int8), "int4",
                 Quantization(r.uniform(0.01, 0.05, HIDDEN), np.zeros(HIDDEN), 0))
    hidden = b.op("FULLY_CONNECTED", [rows, w1, None], out_shape=(3, HIDDEN),
                  options=options("FullyConnectedOptions", fusedActivationFunction=1))
    scales = b.const("w2_scales", r.uniform(0.01, 0.1, (UNITS, HIDDEN // BLOCK)).astype(
        np.float16))
    w2 = b.const("w2", r.integers(-8, 8, (UNITS, HIDDEN)).astype(np.int8), "int4",
                 Quantization(np.zeros(0), np.zeros(0),
                              details=BlockDetails(scales, None, BLOCK)))
    out = b.op("FULLY_CONNECTED", [hidden, w2, None], out_shape=(3, UNITS),
               options=options("FullyConnectedOptions"))
    offset = b.const("offset", r.integers(0, 16, (1, UNITS)).astype(np.uint8), "uint4",
                     Quantization.per_tensor(0.05, 8))
    offset_f = b.op("DEQUANTIZE", [offset], out_shape=(1, UNITS), out_dtype="float32")
    y = b.op("ADD", [out, offset_f], out_shape=(3, UNITS), options=options("AddOptions"))
    return b.build([y])
