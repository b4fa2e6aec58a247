"""`qengine eval`: a model's accuracy, and its agreement and SQNR against a reference model,
over a dataset larger than memory.

The data is a file or a directory of shards (.npy: samples on axis 0, for single-input models;
.npz: one array per input name, or the array --data-key names). A .npy shard is memory-mapped
and an .npz member read one at a time, and each shard is run `chunk` samples at a time, so
memory holds one chunk (plus one .npz member). Labels are a .npy of class indices for all
samples in shard order (memory-mapped), or an array in every .npz shard (--labels KEY).

With more than one worker the shards are spread over the engine's workers (a local process pool
or Ray); every shard's counts and error sums come back and merge exactly
(metrics.OutputQuality.merge), in shard order.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from .metrics import OutputQuality, real_outputs

SUFFIXES = (".npy", ".npz")


@dataclass(frozen=True)
class Shard:
    path: str
    count: int  # samples
    offset: int  # index of its first sample in the whole dataset


@dataclass(frozen=True)
class EvalSetup:
    """What every worker needs."""

    model: bytes
    reference: bytes | None
    data_key: str | None
    labels: str | None  # a .npy path, or the key of an array in each .npz shard
    labels_in_shards: bool
    chunk: int


def find_shards(path: str, data_key: str | None) -> list[Shard]:
    source = Path(path)
    if source.is_dir():
        files = sorted(f for f in source.iterdir() if f.suffix in SUFFIXES)
        if not files:
            raise InputError(f"{source}: no .npy or .npz shards")
    elif source.suffix in SUFFIXES:
        files = [source]
    else:
        raise InputError(f"{source}: data must be a .npy, an .npz or a directory of them")
    shards, offset, first = [], 0, None
    for f in files:
        shapes = _shapes(f, data_key)
        first = first or (f, shapes)
        mismatched = {k: shape[1:] for k, shape in shapes.items()
                      if shape[1:] != first[1].get(k, (None,))[1:]}
        if mismatched or set(shapes) != set(first[1]):
            raise InputError(f"shard {f.name}: samples of shape {_describe(shapes)}, but shard "
                             f"{first[0].name} has {_describe(first[1])}; every shard must hold "
                             f"the same inputs with the same per-sample shape")
        counts = {shape[0] for shape in shapes.values()}
        if len(counts) != 1:
            raise InputError(f"shard {f.name}: its arrays have different sample counts "
                             f"{sorted(counts)}")
        shards.append(Shard(str(f), counts.pop(), offset))
        offset += shards[-1].count
    return shards


def _describe(shapes: dict) -> str:
    return ", ".join(f"{k} {tuple(s[1:])}" if k else str(tuple(s[1:])) for k, s in shapes.items())


def _shapes(path: Path, key: str | None) -> dict[str, tuple]:
    """Array shapes from the file headers alone (no data read): {"": shape} for a .npy, {name:
    shape} for the input arrays of an .npz."""
    try:
        if path.suffix == ".npy":
            return {"": np.load(path, mmap_mode="r").shape}
        with zipfile.ZipFile(path) as z:
            shapes = {}
            for name in z.namelist():
                with z.open(name) as f:
                    version = np.lib.format.read_magic(f)
                    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                        np.lib.format.read_array_header_2_0
                    shape, _, _ = read(f)
                shapes[name.removesuffix(".npy")] = shape
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise InputError(f"{path}: not a readable .npy/.npz file ({e})") from None
    if key is not None:
        if key not in shapes:
            raise InputError(f"{path} has no array {key!r}; it has {', '.join(shapes)}")
        return {"": shapes[key]}
    return shapes


def read_chunks(shard: Shard, setup: EvalSetup, input_names) -> Iterator[tuple]:
    """(inputs, labels) per chunk of a shard; inputs an array or a dict by input name."""
    path = Path(shard.path)
    if path.suffix == ".npy":
        arrays = {"": np.load(path, mmap_mode="r")}
        labels = None
    else:
        with np.load(path, allow_pickle=False) as z:
            wanted = [setup.data_key] if setup.data_key else \
                [k for k in z.files if k in input_names]
            arrays = {("" if setup.data_key else k): z[k] for k in wanted}
            labels = z[setup.labels] if setup.labels_in_shards else None
    if labels is None and setup.labels:
        labels = np.load(setup.labels, mmap_mode="r")[shard.offset:shard.offset + shard.count]
    for start in range(0, shard.count, setup.chunk):
        part = {k: np.asarray(v[start:start + setup.chunk]) for k, v in arrays.items()}
        yield (part.get("", part),
               None if labels is None else np.asarray(labels[start:start + setup.chunk]))


def evaluate_shard(setup: EvalSetup, shard: Shard, on_chunk=None) -> OutputQuality:
    from ..calibrate import iterate_samples, stack_batches
    from ..flatbuffer_io import load
    from ..runtime import Interpreter

    model = load(setup.model)
    interpreter = Interpreter(model)
    reference = Interpreter(load(setup.reference)) if setup.reference else None
    names = {t.name for t in model.main.inputs}
    quality = OutputQuality()
    for inputs, labels in read_chunks(shard, setup, names):
        real = all(a.dtype.kind == "f" for a in
                   (inputs.values() if isinstance(inputs, dict) else [inputs]))
        samples = list(iterate_samples(_float_inputs(setup.model) if real else model, inputs))
        seen = 0
        for batch in stack_batches(model, samples, setup.chunk):
            size = batch[0].shape[0]
            quality.add(real_outputs(interpreter, batch),
                        real_outputs(reference, batch) if reference else None,
                        None if labels is None else labels[seen:seen + size])
            seen += size
        if on_chunk:
            on_chunk(len(samples))
    return quality


def _float_inputs(model: bytes):
    """The model with float32 inputs: iterate_samples then checks and batches real-valued data
    for an integer model (real_outputs quantizes it)."""
    from ..flatbuffer_io import load

    view = load(model)
    for t in view.main.inputs:
        t.dtype = "float32"
    return view


def evaluate(setup: EvalSetup, shards: list[Shard], *, engine: str = "local",
             workers: int | None = None, address: str | None = None,
             quiet: bool = False) -> OutputQuality:
    """Every shard, in this process (one worker or one shard: the progress bar moves per chunk)
    or spread over the engine's workers (it moves per shard)."""
    from ..calibrate import Progress
    from .engines import run_tasks

    total = sum(s.count for s in shards)
    progress = Progress(total, quiet, "evaluating")
    parts: dict[int, OutputQuality] = {}
    if engine == "local" and (workers == 1 or len(shards) == 1):
        for i, shard in enumerate(shards):
            parts[i] = evaluate_shard(setup, shard, progress.advance)
    else:
        for i, part in run_tasks(evaluate_shard, setup, shards, engine=engine,
                                 workers=workers, address=address):
            parts[i] = part
            progress.advance(shards[i].count)
    progress.close()
    quality = OutputQuality()
    for i in sorted(parts):
        quality = quality.merge(parts[i])
    return quality


def summary(quality: OutputQuality) -> dict:
    return {"samples": quality.samples, "top1": quality.accuracy(),
            "top5": quality.top5_accuracy(), "agreement": quality.agreement(),
            "sqnr_db": quality.sqnr_db(), "cosine": quality.cosine()}
