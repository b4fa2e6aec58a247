"""Kernels for sub-8-bit and blockwise weights (values arrive unpacked, one per int8).

- `blockwise_hybrid_fc`: TFLite's EvalBlockwise4Bit (fully_connected.cc, the optimized kernels'
  path for a constant INT4 filter with BlockwiseQuantization), float32 operation by operation.
- `lookup_rows`: EMBEDDING_LOOKUP of packed rows as TFLite's Unpack4Bit/Unpack2Bit read them.
"""

import numpy as np
from qengine.kernels.jit import kernel

__all__ = ["blockwise_hybrid_fc", "lookup_rows"]


@kernel
def blockwise_hybrid_fc(q, input_scales, input_zps, w, scales, block_size, bias, has_bias):
    """q [B, K] int8 (the input quantized per row, asymmetric), w [N, K] int8 in [-8, 7],
    scales [N, K / block_size] float32 (the float16 block scales widened) -> [B, N] float32:

        out = 0;  kfsum = 0
        for each block j:  out += float(Σ_k q[b,k] * w[n,k]) * s[n,j]
                           kfsum += s[n,j] * float(Σ_k w[n,k])
        out -= float(zp[b]) * kfsum;  out *= input_scale[b];  out += bias[n]

    every step a float32 operation in this order (the per-block sums are exact integers).
    """
    batches, depth = q.shape
    units = w.shape[0]
    blocks = depth // block_size
    out = np.empty((batches, units), np.float32)
    for b in range(batches):
        for n in range(units):
            total = np.float32(0.0)
            kfsum = np.float32(0.0)
            for j in range(blocks):
                acc = np.int32(0)
                ksum = np.int32(0)
                for k in range(j * block_size, (j + 1) * block_size):
                    acc += np.int32(q[b, k]) * np.int32(w[n, k])
                    ksum += np.int32(w[n, k])
                scale = scales[n, j]
                total = total + np.float32(acc) * scale
                kfsum = kfsum + scale * np.float32(ksum)
            total = total - np.float32(input_zps[b]) * kfsum
            total = total * input_scales[b]
            if has_bias:
                total = total + bias[n]
            out[b, n] = total
    return out


def lookup_rows(values: np.ndarray, ids: np.ndarray, row_length: int, run_length: int,
                per_byte: int) -> np.ndarray:
    """The values TFLite's Unpack4Bit/Unpack2Bit produce for each looked-up row.

    `values` is the flat unpacked table. TFLite starts each run of `run_length` values (a row,
    or a block of a blockwise row) at byte offset // per_byte of the packed data, so a run
    whose first value is not the first of its byte starts at that byte's first value instead:
    the run begins at element (offset // per_byte) * per_byte. Returns [len(ids), row_length].
    """
    runs = row_length // run_length
    starts = ids.astype(np.int64)[:, None] * row_length \
        + np.arange(runs, dtype=np.int64)[None, :] * run_length
    starts = (starts // per_byte) * per_byte
    index = starts[:, :, None] + np.arange(run_length, dtype=np.int64)[None, None, :]
    return values[index.reshape(len(ids), row_length)]
