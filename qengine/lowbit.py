"""Sub-8-bit tensors: packing, value ranges and blockwise dequantization.

The file stores INT4 and UINT4 two values a byte, the first value in the low nibble, and INT2 four
values a byte, the first value in the least significant bits; an element count that does not fill
the last byte leaves its high bits zero. `Tensor.data` of such a constant is the unpacked values
(int8 for INT4/INT2, uint8 for UINT4); assigning values packs them. The packed bytes stay the
tensor's buffer, so a file round-trips byte for byte, padding bits included.

Blockwise quantization (the file's `BlockwiseQuantization` details): a weight of shape
[channels, depth] is cut along `depth` into blocks of `block_size` values, and value (c, k) is
`scale[c, k // block_size] * (q[c, k] - zero_point[c, k // block_size])`, with the scales a
float16 (or float32) constant of shape [channels, depth / block_size].
"""

from __future__ import annotations

import numpy as np

from .errors import InvalidModelError

# bits per element and the value range of each packed type
BITS = {"int4": 4, "uint4": 4, "int2": 2}
RANGES = {"int4": (-8, 7), "uint4": (0, 15), "int2": (-2, 1)}


def is_packed(dtype: str) -> bool:
    return dtype in BITS


def unpacked_dtype(dtype: str) -> np.dtype:
    return np.dtype(np.uint8 if dtype == "uint4" else np.int8)


def packed_nbytes(dtype: str, count: int) -> int:
    return (count * BITS[dtype] + 7) // 8


def unpack(raw: bytes, dtype: str, count: int) -> np.ndarray:
    """The first `count` values of packed `raw`, as a flat int8 (uint8 for UINT4) array."""
    bits = BITS[dtype]
    if len(raw) < packed_nbytes(dtype, count):
        raise InvalidModelError(
            f"{dtype} data of {len(raw)} bytes holds fewer than {count} values")
    per_byte = 8 // bits
    octets = np.frombuffer(raw, np.uint8)
    shifts = np.arange(per_byte, dtype=np.uint8) * bits  # value i of a byte sits at bit i*bits
    fields = (octets[:, None] >> shifts) & ((1 << bits) - 1)
    values = fields.reshape(-1)[:count]
    if dtype == "uint4":
        return values.astype(np.uint8)
    # sign-extend: a field f of `bits` bits is f - 2^bits when its top bit is set
    signed = values.astype(np.int8)
    return np.where(values >= 1 << (bits - 1), signed - (1 << bits), signed).astype(np.int8)


def pack(values: np.ndarray, dtype: str, name: str = "tensor") -> bytes:
    """Pack integer values (any shape, C order) into the file's layout; checks their range."""
    low, high = RANGES[dtype]
    flat = np.asarray(values).reshape(-1)
    if flat.size and (flat.min() < low or flat.max() > high):
        raise InvalidModelError(
            f"{name}: {dtype} values must lie in [{low}, {high}], got "
            f"[{int(flat.min())}, {int(flat.max())}]")
    bits = BITS[dtype]
    per_byte = 8 // bits
    fields = (flat.astype(np.int64) & ((1 << bits) - 1)).astype(np.uint8)
    padded = np.zeros(-(-flat.size // per_byte) * per_byte, np.uint8)
    padded[:flat.size] = fields
    shifts = np.arange(per_byte, dtype=np.uint8) * bits
    return (padded.reshape(-1, per_byte) << shifts).sum(axis=1, dtype=np.uint8).tobytes()


def block_scales_shape(weight_shape: tuple[int, ...], block_size: int) -> tuple[int, int]:
    """[channels, blocks] for a [channels, ..., depth] weight blocked along its last axis."""
    channels, depth = weight_shape[0], int(np.prod(weight_shape[1:]))
    return channels, depth // block_size


# TFLite runs a blockwise FULLY_CONNECTED (EvalBlockwise4Bit) only when its Prepare takes the
# optimized 4-bit path: an int4 filter with >= FilterWidth output units and an even depth of at
# least FilterDepth; otherwise its kernels read the filter as unquantized.
BLOCKWISE_FC_MIN_UNITS, BLOCKWISE_FC_MIN_DEPTH = 4, 32


def blockwise_fc_problem(dtype: str, units: int, depth: int) -> str | None:
    """Why TFLite cannot run a blockwise FULLY_CONNECTED filter, or None when it can."""
    if dtype != "int4":
        return (f"TFLite runs blockwise FULLY_CONNECTED only for a constant int4 filter (its "
                f"kernels ignore the block scales of {dtype} filters)")
    if units < BLOCKWISE_FC_MIN_UNITS or depth < BLOCKWISE_FC_MIN_DEPTH or depth % 2:
        return (f"TFLite's blockwise kernel needs >= {BLOCKWISE_FC_MIN_UNITS} output units and "
                f"an even depth >= {BLOCKWISE_FC_MIN_DEPTH}, not {units} x {depth} (below that "
                f"it ignores the block scales)")
    return None


def dequantize_blockwise(values: np.ndarray, scales: np.ndarray, zero_points: np.ndarray | None,
                         block_size: int) -> np.ndarray:
    """float32 weights from blockwise values; see the module docstring for the formula."""
    channels = values.shape[0]
    q = values.reshape(channels, -1, block_size).astype(np.float32)
    s = np.asarray(scales, np.float32).reshape(channels, -1, 1)
    if zero_points is not None:
        q = q - np.asarray(zero_points, np.float32).reshape(channels, -1, 1)
    return (q * s).reshape(values.shape)
