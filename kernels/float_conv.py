"""The epilogues of float convolutions: bias and clamp after a BLAS matmul (grouped
convolutions and non-constant filters; the others have theirs in `float_gemm.py`'s tiles), and
the ADD, PRELU and HARD_SWISH that runtime/fusion.py folds into a conv (`post_f32`, run on
each tile of output while it is in cache)."""

import math

import numpy as np

from . import threads as pool
from .jit import inline_kernel, kernel, prange


@inline_kernel
def activation_f32(v, low, high):
    """TFLite's ActivationFunctionWithMinMax, std::min(std::max(v, low), high): NaN passes
    through and +-inf becomes the bound (written out: max()/min() would not let NaN through).
    The one scalar clamp of the float kernels."""
    if v < low:
        return low
    if v > high:
        return high
    return v


@inline_kernel
def hard_swish_value(v):
    """TFLite's reference HARD_SWISH of one float32, v * min(6, max(0, v + 3)) / 6 left to
    right, std::max(0, r) as (0 < r ? r : 0) and std::min(6, r) as (r < 6 ? r : 6): a NaN
    becomes 0 there and comes back through its own product."""
    r = v + np.float32(3)
    r = r if np.float32(0) < r else np.float32(0)  # noqa: FURB136 (std::max's NaN order)
    r = r if r < np.float32(6) else np.float32(6)  # noqa: FURB136
    return v * r / np.float32(6)


CACHE_LINE = 64  # bytes


@kernel
def empty_f32(shape):
    """np.empty(shape, np.float32) starting on a 64-byte cache line (NumPy's aligns to 16
    bytes, Numba's allocator to 32 or 64 as malloc's blocks fall). A conv's output is the
    next layer's input: read 16 bytes off, every other 32-byte vector straddles two cache
    lines (a 3x3 depthwise at 56x56x144 on the AVX2 VM: 209 us aligned, 285 us not); 32 off,
    every 64-byte vector of an AVX-512 machine does (on the Xeon: 56x56x144 203 -> 173 us,
    14x14x672 5x5 200 -> 160 us)."""
    size = 1
    for d in shape:
        size *= d
    raw = np.empty(size + CACHE_LINE // 4, np.float32)
    skip = (-raw.ctypes.data % CACHE_LINE) // 4
    return raw[skip : skip + size].reshape(shape)


ALIGNED_FROM = 16384  # floats: below this a call of empty_f32 (~1.2 us, np.empty ~0.3) costs
# more than the split loads it saves


def output_allocator(shape):
    """A function making an empty float32 array of `shape` for a conv's output on each run:
    32-byte aligned from ALIGNED_FROM floats on (empty_f32), NumPy's below."""
    shape = tuple(int(d) for d in shape)
    if math.prod(shape) >= ALIGNED_FROM:
        return lambda: empty_f32(shape)
    return lambda: np.empty(shape, np.float32)


@kernel
def bias_clamp_f32(out, bias, act_min, act_max):
    """In place on out [rows, C] float32: out[r, c] = clamp(out[r, c] + bias[c]) to
    [act_min, act_max], the epilogue of a matmul convolution in one pass over the output.

    As TFLite's ActivationFunctionWithMinMax (std::min(std::max(v, lo), hi)), NaN passes through
    and +-inf becomes the bound; so no fastmath here, and the comparisons are written out.
    One thread: it is memory-bound and short (0.01-0.6 ms per MobileNetV2 layer), and a parallel
    launch right after a BLAS call would wake Numba's OpenMP pool while BLAS's threads spin.
    """
    rows, channels = out.shape
    low, high = np.float32(act_min), np.float32(act_max)
    for r in range(rows):
        for c in range(channels):
            out[r, c] = activation_f32(out[r, c] + bias[c], low, high)


RESIDUAL, PRELU, HARD_SWISH = 1, 2, 4  # the steps of a `post` tuple (bits)
SLOPE_FLOATS = 2048  # PRELU's slopes are repeated to about this many floats (`tile_slopes`)


def tile_slopes(alpha: np.ndarray) -> np.ndarray:
    """PRELU's per-channel slopes [C] repeated to a whole number of rows of about SLOPE_FLOATS
    floats: `post_f32` then runs one flat loop per block of rows, which LLVM vectorizes (a
    loop over 16 channels is shorter than its vector loop, so it ran scalar)."""
    alpha = np.ascontiguousarray(alpha, np.float32).reshape(-1)
    return np.tile(alpha, max(1, SLOPE_FLOATS // max(1, alpha.size)))


def post_args(residual=None, low=0.0, high=0.0, slopes=None, hard_swish=False) -> tuple:
    """The `post` argument of the float conv kernels: (residual [P, C], slopes (tile_slopes),
    low, high, steps), every field typed alike whether or not a step runs (one compiled
    kernel)."""
    steps = (RESIDUAL if residual is not None else 0) | (PRELU if slopes is not None else 0) \
        | (HARD_SWISH if hard_swish else 0)
    return (np.empty((0, 0), np.float32) if residual is None else residual,
            np.empty(0, np.float32) if slopes is None else slopes,
            np.float32(low), np.float32(high), steps)


NO_POST = post_args()  # no step: what a conv with nothing folded into it passes


@inline_kernel
def post_fits(post, pixels, channels):
    """The residual of a `post` is [pixels, at most channels] and its slopes whole rows of
    channels, where used."""
    residual, slopes, _, _, steps = post
    return ((not steps & RESIDUAL or (residual.shape[0] == pixels
                                      and residual.shape[1] <= channels))
            and (not steps & PRELU or (slopes.size >= channels > 0
                                       and slopes.size % channels == 0)))


# a driver runs `post` on about this many finished output floats at a time (8 KiB, in L1
# still): a call costs ~75 ns (its views and reference counts), as much as the work on one
# 12-pixel tile of 16-28 channels
POST_FLOATS = 2048


@inline_kernel
def run_post(out, p0, p1, post):
    """post_f32 where `post` has a step (a call to another kernel costs ~45 ns even to do
    nothing)."""
    if post[4] != 0:
        post_f32(out, p0, p1, post)


@inline_kernel
def post_due(start, done, end, width, steps):
    """Whether a driver runs `post` (whose steps are `steps`, post[4]) on its rows [start,
    done) of width floats now, [done, end) to come: when they hold POST_FLOATS floats or the
    range is done. Integers only: a driver checks this before it calls run_post, since an
    inlined helper's array arguments (the output, the post's residual and slopes) cost two
    atomic reference counts each per call (a hybrid conv's 6-pixel blocks: 23 % of its time
    when each block called the helper that held this check)."""
    return steps != 0 and ((done - start) * width >= POST_FLOATS or done >= end)


@kernel
def post_f32(out, p0, p1, post):
    """Rows [p0, p1) of out [P, C] float32, in place, after the conv's own bias and clamp: the
    folded ADD, v = clamp(v + residual[p, c]) to [low, high] (ActivationFunctionWithMinMax,
    as `activation_f32`; a residual of fewer channels, a folded PAD, adds +0.0 to the others:
    -0.0 becomes +0.0 as in the ADD), then PRELU, v = v >= 0 ? v : v * alpha[c] (NaN takes the
    product), then HARD_SWISH (`hard_swish_value`). Callers check `post_fits` first."""
    residual, slopes, low, high, steps = post
    if steps == 0:
        return
    channels = out.shape[1]
    # flat loops over views indexed from 0: LLVM then sees no negative index to wrap and
    # vectorizes them (one loop for both steps did not: its operands might alias)
    rows = out.reshape(out.size)[p0 * channels:p1 * channels]
    if steps & RESIDUAL and residual.shape[1] == channels:
        add = residual.reshape(residual.size)[p0 * channels:p1 * channels]
        for i in range(rows.size):
            rows[i] = activation_f32(rows[i] + add[i], low, high)
    elif steps & RESIDUAL:  # the residual's channels, then the PAD's zeros
        _add_padded(out.reshape(out.size), residual.reshape(residual.size), channels,
                    residual.shape[1], p0, p1, low, high)
    if steps & PRELU:  # in blocks as long as the slopes, indexed unsigned: a view per block
        # would cost two atomic reference counts (0.6 us a call of 2048 floats of 32 channels)
        size, period = np.uint64(rows.size), np.uint64(slopes.size)
        start = np.uint64(0)
        while start < size:
            for i in range(min(period, size - start)):
                v = rows[start + i]
                rows[start + i] = v if v >= 0 else v * slopes[i]
            start += period
    if steps & HARD_SWISH:
        for i in range(rows.size):
            rows[i] = hard_swish_value(rows[i])


@inline_kernel
def _add_padded(out, residual, channels, added, p0, p1, low, high):
    """post_f32's ADD of a residual with fewer channels than the output (a folded PAD), on the
    flat rows [p0, p1) of out [P*channels] and residual [P*added]: v = clamp(v + r) for the
    first `added` channels of a pixel, clamp(v + 0.0) for the rest. Unsigned indices: LLVM
    then needs no wrap-around test per element and vectorizes each run (2.5x faster than
    indexing [p, c], 2304 pixels of 48 channels)."""
    zero = np.float32(0.0)
    for p in range(p0, p1):
        at, source = np.uint64(p * channels), np.uint64(p * added)
        for c in range(np.uint64(added)):
            out[at + c] = activation_f32(out[at + c] + residual[source + c], low, high)
        for c in range(np.uint64(added), np.uint64(channels)):
            out[at + c] = activation_f32(out[at + c] + zero, low, high)


# --- 1x1 depthwise: a per-channel multiply-add -----------------------------------------------


@kernel
def pointwise_depthwise_f32(x, w, bias, out, low, high, post, p0, p1):
    """Pixels [p0, p1) of a float DEPTHWISE_CONV_2D with a 1x1 filter, stride 1, no padding
    and multiplier 1, in TFLite's reference order (the sum starts at 0.0, which turns a -0.0
    product into +0.0):

        out[p, c] = clamp((0.0 + x[p, c] * w[c]) + bias[c])  to [low, high]

    x, out [P, C] float32; w and bias repeated to whole rows (`tile_slopes`), so that each
    block of them is one flat loop LLVM vectorizes (hand_recrop's per-channel scales of 8
    channels went through the general kernel at ~0.4 ns a value). `post` (post_args) runs on
    each finished block."""
    chans = out.shape[1]
    if not (x.shape == out.shape and w.size == bias.size and w.size % max(chans, 1) == 0
            and chans > 0 and 0 <= p0 <= p1 <= out.shape[0] and post_fits(post, out.shape[0],
                                                                            chans)):
        raise ValueError("pointwise_depthwise_f32: x, w, bias, out, post or [p0, p1) do not fit")
    values = x.reshape(x.size)[p0 * chans:p1 * chans]  # views from 0: vectorized loops
    results = out.reshape(out.size)[p0 * chans:p1 * chans]
    zero = np.float32(0.0)
    post_from = p0
    for start in range(0, results.size, w.size):
        part, source = results[start:start + w.size], values[start:start + w.size]
        for i in range(part.size):
            part[i] = activation_f32((zero + source[i] * w[i]) + bias[i], low, high)
        done = p0 + (start + part.size) // chans
        if post_due(post_from, done, p1, out.shape[1], post[4]):
            run_post(out, post_from, done, post)
            post_from = done


@kernel(parallel=True)
def pointwise_depthwise_f32_split(x, w, bias, out, low, high, post, pixels, parts):
    if not (x.shape == out.shape and pixels == out.shape[0]):
        raise ValueError("pointwise_depthwise_f32: x, w, bias, out, post or [p0, p1) do not fit")
    for i in prange(parts):
        p0, p1 = pool.part(pixels, parts, i)
        pointwise_depthwise_f32(x, w, bias, out, low, high, post, p0, p1)
