"""SKIP_GRAM: the skip-grams of a sentence (a one-string tensor), as a 1-D string tensor."""

from __future__ import annotations

import numpy as np

from ..runtime.registry import OpContext, Prepared
from .opdef import op

SPACE = b" \t\n\v\f\r"  # C's isspace


def words_of(sentence: bytes) -> list[bytes]:
    """TFLite's split: a word ends at each whitespace byte after the first one; a leading
    whitespace byte starts nothing."""
    words, start = [], 0
    for i in range(1, len(sentence)):
        if sentence[i] in SPACE:
            if i > start and sentence[start] not in SPACE:
                words.append(sentence[start:i])
            start = i + 1
    if len(sentence) > start:
        words.append(sentence[start:])
    return words


def skip_grams(words: list[bytes], size: int, max_skip: int, all_sizes: bool) -> list[bytes]:
    """Every sequence of `size` words (every size up to it with all_sizes) in sentence order
    where consecutive words are at most max_skip words apart, in TFLite's enumeration order:
    a depth-first walk that fixes the first word, then the next, ..."""
    if len(words) < size:
        return []
    stack, depth, grams = [0] * size, 1, []
    while depth >= 0:
        steps_in = depth < size and stack[depth] + 1 < len(words) and (
            depth == 0 or stack[depth] - stack[depth - 1] <= max_skip)
        if steps_in:
            stack[depth] += 1
            depth += 1
            if depth < size:
                stack[depth] = stack[depth - 1]
            continue
        if depth > 0 and (depth <= size if all_sizes else depth == size):
            grams.append(b" ".join(words[stack[i]] for i in range(depth)))
        depth -= 1
    return grams


@op("SKIP_GRAM")
def skip_gram(ctx: OpContext) -> Prepared:
    ctx.expect_inputs(1)
    x = ctx.input(0)
    ctx.expect_dtype(x, "string")
    if ctx.outputs[0].dtype != "string":
        raise ctx.invalid("SKIP_GRAM writes a string tensor")
    size = int(getattr(ctx.options, "ngramSize", 0))
    max_skip = int(getattr(ctx.options, "maxSkipSize", 0))
    all_sizes = bool(getattr(ctx.options, "includeAllNgrams", False))
    if size < 1 or max_skip < 0:
        raise ctx.invalid(f"ngram_size {size} must be >= 1 and max_skip_size {max_skip} >= 0")

    def run(sentence):
        first = sentence.reshape(-1)[0] if sentence.size else b""
        grams = skip_grams(words_of(bytes(first)), size, max_skip, all_sizes)
        out = np.empty(len(grams), object)
        out[:] = grams
        return out

    return Prepared(run, [ctx.output_spec(0, None, "string")])
