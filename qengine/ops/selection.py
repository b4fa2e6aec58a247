"""Ops that pick elements by value: TOPK_V2, UNIQUE, BUCKETIZE, NON_MAX_SUPPRESSION_V4/V5.

Their outputs depend on orderings, so ties follow TFLite exactly: TOPK_V2 puts the earlier
index first among equal values; NON_MAX_SUPPRESSION pops candidates from a `std::priority_queue`
ordered by score alone, whose order among equal scores is that of libstdc++'s heap algorithms,
reproduced step by step in `_ScoreHeap`.
"""

from __future__ import annotations

import numpy as np

from ..runtime.registry import OpContext, Prepared
from .indexing import checked_size, data_error
from .opdef import SAME, Quantized, op

F32 = np.float32


def _expect_output_dtypes(ctx: OpContext, *dtypes: str) -> None:
    for t, dtype in zip(ctx.outputs, dtypes):
        if t is not None and t.dtype != dtype:
            raise ctx.invalid(f"output {t.name!r} is {t.dtype}; the op writes {dtype}")


# -- TOPK_V2 ---------------------------------------------------------------------------------


def top_k(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k largest values of each last-axis row, largest first; among equal values the one
    with the smaller index first (TFLite's TopContainer comparator)."""
    n = x.shape[-1]
    # a stable ascending sort of the reversed row, read backwards: values descending, and
    # among equal values the original indices ascending
    order = np.argsort(x[..., ::-1], axis=-1, kind="stable")[..., ::-1][..., :k]
    indices = (n - 1 - order).astype(np.int32)
    return np.take_along_axis(x, indices, axis=-1), indices


@op("TOPK_V2", quantized=Quantized(SAME, 2))
def topk_v2(ctx: OpContext) -> Prepared:
    ctx.expect_inputs(2)
    x, k = ctx.input(0), ctx.input(1)
    ctx.expect_dtype(x, "float32", "uint8", "int8", "int32", "int64")
    ctx.expect_dtype(k, "int32")
    if not x.shape:
        raise ctx.invalid("TOPK_V2 needs an input of rank >= 1")
    _expect_output_dtypes(ctx, x.dtype, "int32")
    row = x.shape[-1]

    def checked(fail, value) -> int:
        if np.size(value) != 1 or not 0 <= int(np.ravel(value)[0]) <= row:
            raise fail(f"k {np.ravel(value).tolist()} must be one value in [0, {row}]")
        return int(np.ravel(value)[0])

    if k.value is not None:
        count = checked(ctx.invalid, k.value)
        shape = x.shape[:-1] + (count,)
        return Prepared(lambda v, _: top_k(v, count),
                        [ctx.output_spec(0, shape, x.dtype), ctx.output_spec(1, shape, "int32")])
    fail = data_error(ctx)
    return Prepared(lambda v, kk: top_k(v, checked(fail, kk)),
                    [ctx.output_spec(0, None, x.dtype), ctx.output_spec(1, None, "int32")])


# -- UNIQUE ----------------------------------------------------------------------------------

INDEX_TYPE_CODES = {2: "int32", 4: "int64"}


@op("UNIQUE")
def unique(ctx: OpContext) -> Prepared:
    """y: the distinct values in order of first appearance; idx: each input's position in y."""
    ctx.expect_inputs(1)
    x = ctx.input(0)
    ctx.expect_dtype(x, "float32", "int8", "uint8", "int16", "int32", "int64")
    ctx.expect_rank(x, 1)
    idx_type = INDEX_TYPE_CODES.get(int(getattr(ctx.options, "idxOutType", 2)))
    if idx_type is None:
        raise ctx.invalid("idx_out_type must be int32 or int64")
    _expect_output_dtypes(ctx, x.dtype, idx_type)

    def run(values):
        _, first, inverse = np.unique(values, return_index=True, return_inverse=True)
        rank = np.empty(len(first), np.int64)
        rank[np.argsort(first, kind="stable")] = np.arange(len(first))  # sorted -> appearance
        return values[np.sort(first)], rank[inverse.reshape(-1)].astype(idx_type)

    return Prepared(run, [ctx.output_spec(0, None, x.dtype),
                          ctx.output_spec(1, x.shape, idx_type)])


# -- BUCKETIZE -------------------------------------------------------------------------------


@op("BUCKETIZE")
def bucketize(ctx: OpContext) -> Prepared:
    """out = the number of boundaries <= x (std::upper_bound over the sorted boundaries)."""
    ctx.expect_inputs(1)
    x = ctx.input(0)
    ctx.expect_dtype(x, "float32", "float64", "int32", "int64")
    boundaries = getattr(ctx.options, "boundaries", None)
    boundaries = np.asarray([] if boundaries is None else boundaries, F32)
    if np.any(np.diff(boundaries) < 0):
        raise ctx.invalid(f"boundaries {boundaries.tolist()} must be sorted")
    # C++ compares float with an integer as float, with a double as double
    compare = np.float64 if x.dtype == "float64" else F32

    def run(values):
        found = np.searchsorted(boundaries.astype(compare), values.astype(compare), "right")
        return found.astype(np.int32)

    return Prepared(run, [ctx.output_spec(0, x.shape, "int32")])


# -- NON_MAX_SUPPRESSION_V4 / V5 -------------------------------------------------------------


class _ScoreHeap:
    """std::priority_queue<Candidate> with `a < b` iff a.score < b.score, over libstdc++'s
    push_heap / pop_heap (__push_heap, __adjust_heap), so equal scores pop in its order."""

    def __init__(self):
        self.items: list[list] = []  # [index, score, suppress_begin_index]

    def _less(self, a, b) -> bool:
        return a[1] < b[1]

    def _sift_up(self, hole: int, top: int, value) -> None:  # __push_heap
        items = self.items
        parent = (hole - 1) // 2
        while hole > top and self._less(items[parent], value):
            items[hole] = items[parent]
            hole = parent
            parent = (hole - 1) // 2
        items[hole] = value

    def push(self, value) -> None:
        self.items.append(value)
        self._sift_up(len(self.items) - 1, 0, value)

    def pop(self):
        items = self.items
        top = items[0]
        if len(items) > 1:  # pop_heap: move the last item into the hole left at the root
            value = items[-1]
            items[-1] = top
            self._adjust(0, len(items) - 1, value)
        items.pop()
        return top

    def _adjust(self, hole: int, length: int, value) -> None:  # __adjust_heap
        items, top, child = self.items, hole, hole
        while child < (length - 1) // 2:
            child = 2 * (child + 1)
            if self._less(items[child], items[child - 1]):
                child -= 1
            items[hole] = items[child]
            hole = child
        if length % 2 == 0 and child == (length - 2) // 2:
            child = 2 * (child + 1)
            items[hole] = items[child - 1]
            hole = child - 1
        self._sift_up(hole, top, value)

    def __len__(self) -> int:
        return len(self.items)


def _iou(boxes: np.ndarray, i: int, j: int) -> F32:
    """Intersection over union in float32, corners in any order (TFLite's ComputeIou)."""
    (ay1, ax1, ay2, ax2), (by1, bx1, by2, bx2) = boxes[i], boxes[j]
    a_ymin, a_ymax, a_xmin, a_xmax = min(ay1, ay2), max(ay1, ay2), min(ax1, ax2), max(ax1, ax2)
    b_ymin, b_ymax, b_xmin, b_xmax = min(by1, by2), max(by1, by2), min(bx1, bx2), max(bx1, bx2)
    area_a = (a_ymax - a_ymin) * (a_xmax - a_xmin)
    area_b = (b_ymax - b_ymin) * (b_xmax - b_xmin)
    if area_a <= 0 or area_b <= 0:
        return F32(0)
    inter = (max(min(a_ymax, b_ymax) - max(a_ymin, b_ymin), F32(0))
             * max(min(a_xmax, b_xmax) - max(a_xmin, b_xmin), F32(0)))
    union = area_a + area_b - inter
    return F32(0) if union == 0 else F32(inter / union)


def non_max_suppression(boxes, scores, max_out: int, iou_threshold: F32, score_threshold: F32,
                        sigma: F32) -> tuple[list[int], list]:
    """TFLite's reference NonMaxSuppression (float): greedy selection by score, hard
    suppression at IoU >= threshold, Gaussian soft suppression score *= exp(-0.5/sigma iou^2)
    when sigma > 0. Returns the selected indices and their (possibly decayed) scores."""
    heap = _ScoreHeap()
    for i, score in enumerate(scores):
        if score > score_threshold:
            heap.push([i, score, 0])
    wanted = min(len(heap), max_out)
    scale = F32(-0.5) / sigma if sigma > 0 else F32(0)
    selected, selected_scores = [], []
    while len(selected) < wanted and len(heap):
        candidate = heap.pop()
        original = candidate[1]
        hard = False
        for j in range(len(selected) - 1, candidate[2] - 1, -1):
            iou = _iou(boxes, candidate[0], selected[j])
            if iou >= iou_threshold:
                hard = True
                break
            if sigma > 0:
                candidate[1] = F32(candidate[1] * np.exp(F32(scale * iou * iou)))
            if candidate[1] <= score_threshold:
                break
        candidate[2] = len(selected)
        if not hard:
            if candidate[1] == original:
                selected.append(candidate[0])
                selected_scores.append(candidate[1])
            if candidate[1] > score_threshold:
                heap.push(candidate)
    return selected, selected_scores


def _nms(ctx: OpContext, soft: bool) -> Prepared:
    ctx.expect_inputs(6 if soft else 5)
    boxes, scores, max_out = ctx.input(0), ctx.input(1), ctx.input(2)
    for i in [0, 1, 3, 4] + ([5] if soft else []):
        ctx.expect_dtype(ctx.input(i), "float32")  # int8/int16 NMS: not implemented
    ctx.expect_dtype(max_out, "int32")
    n = boxes.shape[0] if len(boxes.shape) == 2 else -1
    if len(boxes.shape) != 2 or boxes.shape[1] != 4 or tuple(scores.shape) != (n,):
        raise ctx.invalid(f"boxes {boxes.shape} must be [n, 4] and scores {scores.shape} [n]")
    for i in [2, 3, 4] + ([5] if soft else []):
        if ctx.input(i).shape != ():
            raise ctx.invalid(f"input {i} ({ctx.input(i).name!r}) must be a scalar")
    _expect_output_dtypes(ctx, *(("int32", "float32", "int32") if soft else ("int32", "int32")))

    def checked(fail, value) -> int:
        if int(value) < 0:
            raise fail(f"max_output_size {int(value)} must be >= 0")
        return checked_size(fail, (int(value),), "max_output_size")[0]

    def run(b, s, m, iou, threshold, sigma=None):
        size = checked(data_error(ctx), m)
        if sigma is not None and F32(sigma) < 0:
            raise data_error(ctx)(f"soft-NMS sigma {float(sigma)} must be >= 0")
        picked, picked_scores = non_max_suppression(
            b, s, size, F32(iou), F32(threshold), F32(0) if sigma is None else F32(sigma))
        indices = np.zeros(size, np.int32)  # unused entries are zeroed, as TFLite does
        indices[:len(picked)] = picked
        count = np.array(len(picked), np.int32)
        if sigma is None:
            return indices, count
        out_scores = np.zeros(size, F32)
        out_scores[:len(picked)] = picked_scores
        return indices, out_scores, count

    size = checked(ctx.invalid, max_out.value) if max_out.value is not None else None
    shape = None if size is None else (size,)
    specs = [ctx.output_spec(0, shape, "int32")]
    if soft:
        specs.append(ctx.output_spec(1, shape, "float32"))
    specs.append(ctx.output_spec(len(specs), (), "int32"))
    return Prepared(run, specs)


@op("NON_MAX_SUPPRESSION_V4")
def non_max_suppression_v4(ctx: OpContext) -> Prepared:
    return _nms(ctx, soft=False)


@op("NON_MAX_SUPPRESSION_V5")
def non_max_suppression_v5(ctx: OpContext) -> Prepared:
    return _nms(ctx, soft=True)
