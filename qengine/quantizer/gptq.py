"""GPTQ: second-order weight rounding with calibration data (Frantar et al., 2022).

For a weight W [rows, k] applied to inputs X [n, k] (FULLY_CONNECTED rows; CONV_2D's im2col
patches against its filter flattened to [O, KH*KW*I], the order of TFLite's [O, KH, KW, I]
layout), the output error |X Wᵀ - X Qᵀ|² is a quadratic form in H = 2 XᵀX / n. Columns are
quantized one at a time; each one's rounding error, divided by the pivot of the upper Cholesky
factor U of H⁻¹, is pushed onto the columns not yet quantized:

    q_j = clip(round(w_j / s), -qmax, qmax)      e = (w_j - s q_j) / U[j, j]
    W[:, j+1:] -= e ⊗ U[j, j+1:]

Scales stay those of the chosen clipping (per channel), or are taken from the updated weights
when a block starts (blockwise, float16 as TFLite stores them). A damping of 1 % of the mean
diagonal keeps H invertible; inputs that are always zero get their weights zeroed.
"""

from __future__ import annotations

import numpy as np

from ..ops.opdef import OHWI, OI, definitions
from ..qparams import quantize

DAMPING = 0.01


def hessian(inputs: np.ndarray) -> np.ndarray:
    """H = 2 XᵀX / n for inputs [n, k]."""
    x = np.asarray(inputs, np.float64).reshape(-1, inputs.shape[-1])
    return 2.0 * (x.T @ x) / max(len(x), 1)


def gptq_round(w: np.ndarray, h: np.ndarray, qmax: int, scales: np.ndarray | None = None,
               block_size: int = 0, block_scale=None) -> tuple[np.ndarray, np.ndarray]:
    """Integer weights q [rows, k] (int8 storage) and their scales: `scales` [rows] as given,
    or with `block_size`, `block_scale(columns) -> scales [rows]` per block ([rows, blocks])."""
    w = np.array(w, np.float64)
    rows, k = w.shape
    h = np.array(h, np.float64)
    dead = np.diag(h) == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    h[np.diag_indices(k)] += DAMPING * np.mean(np.diag(h))
    u = np.linalg.cholesky(np.linalg.inv(h)).T  # upper: H⁻¹ = Uᵀ U
    q = np.zeros((rows, k), np.int8)
    block_scales = np.zeros((rows, k // block_size if block_size else 0))
    for j in range(k):
        if block_size:
            if j % block_size == 0:
                block_scales[:, j // block_size] = block_scale(w[:, j:j + block_size])
            s = block_scales[:, j // block_size]
        else:
            s = scales
        q[:, j] = quantize(w[:, j], s, 0, "int8", "float64", qrange=(-qmax, qmax))
        error = (w[:, j] - q[:, j] * s) / u[j, j]
        w[:, j + 1:] -= np.outer(error, u[j, j + 1:])
    return q, (block_scales if block_size else np.asarray(scales))


# ops whose filter GPTQ rounds: the definitions' weights laid out OI (FULLY_CONNECTED) or OHWI
# applied to input 0 (CONV_2D; not TRANSPOSE_CONV, whose data is input 2)
GPTQ_OPS = tuple(sorted(
    name for name, d in definitions().items() if d.weight is not None
    and d.weight.layout in (OI, OHWI) and (d.quantized is None or d.quantized.data_input == 0)))


def layer_hessians(model, calibration, ops) -> dict[int, np.ndarray]:
    """H of every op in `ops` (FULLY_CONNECTED / CONV_2D with a 2-D or 4-D float filter), from
    its float inputs when the model runs on `calibration` (samples on axis 0; a dict keyed by
    input name for several inputs), one sample at a time."""
    from ..runtime import Interpreter

    interpreter = Interpreter(model)
    names = [t.name for t in model.main.inputs]
    if isinstance(calibration, dict):
        count = len(next(iter(calibration.values())))
        samples = ({n: np.asarray(calibration[n][i:i + 1]) for n in names} for i in range(count))
    else:
        data = np.asarray(calibration, np.float32)
        samples = ({names[0]: data[i:i + 1]} for i in range(len(data)))
    sums: dict[int, np.ndarray] = {}
    counts: dict[int, int] = {}
    for sample in samples:
        values = interpreter.run(sample, keep=True)
        for op in ops:
            rows = _filter_inputs(op, values.get(op.inputs[0].name))
            if rows is None:
                continue
            sums[id(op)] = sums.get(id(op), 0) + rows.T @ rows
            counts[id(op)] = counts.get(id(op), 0) + len(rows)
    return {key: 2.0 * total / counts[key] for key, total in sums.items()}


def _filter_inputs(op, x) -> np.ndarray | None:
    """The op's input as rows against its flattened filter's columns."""
    if x is None:
        return None
    w = op.inputs[1]
    x = np.asarray(x, np.float64)
    if definitions()[op.type].weight.layout == OI:
        return x.reshape(-1, w.shape[-1])
    from ..ops.common import geometry, patches
    from ..runtime.registry import OpContext

    g = geometry(OpContext(op, 0, []), x.shape, w.shape[1], w.shape[2])
    return patches(x, g).reshape(-1, w.shape[1] * w.shape[2] * w.shape[3])
