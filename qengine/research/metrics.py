"""Output quality of a model against a reference and labels, accumulated batch by batch.

Per output i (the quantized model's outputs dequantized, real = scale * (q - zero_point), and
matched with the reference's outputs by position), compare.ErrorSums gives
SQNR_i = 10 log10(sum f^2 / sum (q - f)^2) and cosine_i over every sample seen. Rows report
min and median SQNR over outputs and the worst (lowest) cosine. The first output is the
prediction: top-k accuracy counts samples whose label is among its k largest values, and
agreement counts samples whose top-1 class equals the reference's.

Every count and sum adds, so partial results from shards merge exactly (`merge`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..compare import ErrorSums, dequantize, quantize_input
from ..errors import InputError


@dataclass
class OutputQuality:
    outputs: list[ErrorSums] = field(default_factory=list)  # empty without a reference
    samples: int = 0
    top1: int = 0  # label == argmax
    top5: int = 0  # label among the 5 largest (only counted with >= 5 classes)
    classes: int = 0
    agree: int = 0  # argmax == reference argmax
    labelled: int = 0

    def add(self, got: list[np.ndarray], reference: list[np.ndarray] | None,
            labels: np.ndarray | None) -> None:
        """One batch: outputs in real values, the reference's (or None), labels (or None)."""
        count = got[0].shape[0] if got[0].ndim else 1
        self.samples += count
        scores = got[0].reshape(count, -1)
        self.classes = scores.shape[1]
        if reference is not None:
            if len(reference) != len(got):
                raise InputError(f"the model has {len(got)} outputs, the reference "
                                 f"{len(reference)}")
            self.outputs = self.outputs or [ErrorSums() for _ in got]
            for sums, q, f in zip(self.outputs, got, reference):
                if q.shape != f.shape:
                    raise InputError(f"an output has shape {q.shape} but the reference's has "
                                     f"{f.shape}")
                sums.add(f, q)
            self.agree += int(np.count_nonzero(
                scores.argmax(1) == reference[0].reshape(count, -1).argmax(1)))
        if labels is not None:
            self._add_labels(scores, labels)

    def _add_labels(self, scores: np.ndarray, labels: np.ndarray) -> None:
        labels = np.asarray(labels).reshape(-1)
        if labels.shape[0] != scores.shape[0]:
            raise InputError(f"{labels.shape[0]} labels for {scores.shape[0]} samples")
        self.labelled += labels.shape[0]
        self.top1 += int(np.count_nonzero(scores.argmax(1) == labels))
        if scores.shape[1] >= 5:
            top = np.argpartition(-scores, 4, axis=1)[:, :5]
            self.top5 += int(np.count_nonzero((top == labels[:, None]).any(1)))

    def merge(self, other: OutputQuality) -> OutputQuality:
        outputs = [_merged(a, b) for a, b in zip(self.outputs, other.outputs)] \
            if self.outputs and other.outputs else (self.outputs or other.outputs)
        return OutputQuality(outputs, self.samples + other.samples, self.top1 + other.top1,
                             self.top5 + other.top5, max(self.classes, other.classes),
                             self.agree + other.agree, self.labelled + other.labelled)

    # -- the figures ---------------------------------------------------------------------------

    def sqnr_db(self) -> dict | None:
        if not self.outputs:
            return None
        values = [s.metrics().sqnr_db for s in self.outputs]
        return {"min": min(values), "median": float(np.median(values))}

    def cosine(self) -> float | None:
        return min(s.metrics().cosine for s in self.outputs) if self.outputs else None

    def accuracy(self) -> float | None:
        return self.top1 / self.labelled if self.labelled else None

    def top5_accuracy(self) -> float | None:
        return self.top5 / self.labelled if self.labelled and self.classes >= 5 else None

    def agreement(self) -> float | None:
        return self.agree / self.samples if self.outputs and self.samples else None


def _merged(a: ErrorSums, b: ErrorSums) -> ErrorSums:
    return ErrorSums(a.signal + b.signal, a.noise + b.noise, a.cross + b.cross,
                     a.power + b.power, max(a.max_error, b.max_error), a.count + b.count)


def real_outputs(interpreter, batch: list[np.ndarray]) -> list[np.ndarray]:
    """Run a batch (real-valued inputs are quantized first where the model's inputs are
    integers) and return every output in real values."""
    inputs = [quantize_input(t, x) if x.dtype.kind == "f" else x
              for t, x in zip(interpreter.inputs, batch)]
    outputs = interpreter.run(inputs)
    return [dequantize(t, outputs[t.name]) for t in interpreter.outputs]

