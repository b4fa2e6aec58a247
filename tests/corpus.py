"""A corpus of TFLite test models, built locally (no network) and cached on disk.

Models are built lazily on first request and cached under
``<repo>/.cache/corpus/<tf version>/`` so a machine builds each one once. Writes
are atomic and each build holds a lock file (one per model file), so parallel
pytest-xdist workers neither corrupt the cache nor duplicate the work.

    path(name, mode)            -> pathlib.Path of the .tflite file (built if missing)
    sample_inputs(name, n, seed) -> deterministic float inputs, samples along axis 0

Seed CALIBRATION_SEED (0) gives the calibration inputs used for the int8 models;
any other seed gives held-out inputs (for digits: real test images).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import importlib.util
import pathlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
from tflite_ref import MODES, convert_keras, write_model

REPO = pathlib.Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
CALIBRATION_SEED = 0
CALIBRATION_COUNT = 50
# Bump when a model definition changes, so stale cached files are not reused.
REVISION = 3
# The 96x96 image models get a 10-class head: smaller and faster, and their
# untrained, high-entropy softmax stays within TFLite's reference int8 softmax,
# which aborts (TFLITE_CHECK) once the sum of exps reaches 512, e.g. ~1000
# near-equal logits. The benchmark-size model keeps the real 1000 classes.
TEST_CLASSES = 10
# Inputs used to set the BatchNorm statistics of the random-weight models.
BATCHNORM_SEED = 1000
BATCHNORM_SAMPLES = 32


# ------------------------------------------------------------------------- model builders


def _digits_example():
    """examples/make_digits_model.py as a module: the corpus shares its definition."""
    spec = importlib.util.spec_from_file_location("make_digits_model",
                                                  EXAMPLES / "make_digits_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _build_digits():
    example = _digits_example()
    return example.train_model(example.split(*example.load_digits_28x28()))


def _build_mlp():
    import keras

    return keras.Sequential([
        keras.Input(shape=(32,), name="features"),
        keras.layers.Dense(64, activation="relu"),
        keras.layers.Dense(10, activation="softmax"),
    ])


def _image_input(size: int):
    """A named input, so the TFLite input name does not depend on Keras' global counter."""
    import keras

    return keras.Input(shape=(size, size, 3), name="image")


def _build_mobilenet_v2(size: int, alpha: float, classes: int):
    import keras

    return keras.applications.MobileNetV2(weights=None, input_tensor=_image_input(size),
                                          alpha=alpha, classes=classes)


def _build_mobilenet_v3_small():
    import keras

    return keras.applications.MobileNetV3Small(weights=None, input_tensor=_image_input(96),
                                               minimalistic=False, classes=TEST_CLASSES)


def _build_efficientnet_b0():
    import keras

    return keras.applications.EfficientNetB0(weights=None, input_tensor=_image_input(96),
                                             classes=TEST_CLASSES)


def _build_transformer():
    """One post-norm encoder block on 16 tokens x 32 dims, then a pooled classifier."""
    import keras
    from keras import layers

    tokens = keras.Input(shape=(16, 32), name="tokens")
    attended = layers.MultiHeadAttention(num_heads=2, key_dim=16)(tokens, tokens)
    x = layers.LayerNormalization()(layers.Add()([tokens, attended]))
    hidden = layers.Dense(64, activation="gelu")(x)
    x = layers.LayerNormalization()(layers.Add()([x, layers.Dense(32)(hidden)]))
    x = layers.GlobalAveragePooling1D()(x)
    return keras.Model(tokens, layers.Dense(10)(x))


# ------------------------------------------------------------------------- sample inputs


def _digit_images(n: int, seed: int) -> np.ndarray:
    """Calibration images for the calibration seed, test images otherwise."""
    data = np.load(EXAMPLES / "digits_data.npz")
    pool = data["calibration"] if seed == CALIBRATION_SEED else data["test_images"]
    return _choose(pool, n, seed)


def _choose(pool: np.ndarray, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return pool[rng.choice(len(pool), size=n, replace=n > len(pool))]


@functools.cache
def _photos() -> tuple[np.ndarray, ...]:
    """skimage's bundled RGB sample photos as float [0, 1] (these need no download)."""
    import skimage.data

    names = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "colorwheel")
    return tuple(getattr(skimage.data, name)()[..., :3].astype(np.float32) / 255.0
                 for name in names)


def _photo_crops(n: int, seed: int, size: int, low: float, high: float) -> np.ndarray:
    """Random crops of real photos resized to size x size, scaled to [low, high].

    Real photos have natural-image statistics (smooth regions, edges), which give
    activation ranges far closer to deployment than uniform noise would.
    """
    from skimage.transform import resize

    rng = np.random.default_rng(seed)
    photos = _photos()
    crops = np.empty((n, size, size, 3), np.float32)
    for i in range(n):
        photo = photos[rng.integers(len(photos))]
        side = int(min(photo.shape[:2]) * rng.uniform(0.3, 1.0))
        top = rng.integers(photo.shape[0] - side + 1)
        left = rng.integers(photo.shape[1] - side + 1)
        crop = photo[top:top + side, left:left + side]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        crops[i] = resize(crop, (size, size), order=1, anti_aliasing=True)
    return low + (high - low) * crops


def _normal(shape: tuple[int, ...]) -> Callable[[int, int], np.ndarray]:
    def sample(n: int, seed: int) -> np.ndarray:
        return np.random.default_rng(seed).standard_normal((n, *shape)).astype(np.float32)

    return sample


def _photos_in(size: int, low: float, high: float) -> Callable[[int, int], np.ndarray]:
    return lambda n, seed: _photo_crops(n, seed, size, low, high)


# ------------------------------------------------------------------------------ registry


@dataclass(frozen=True)
class Entry:
    build: Callable[[], object]  # returns a Keras model; seeded by the caller
    sample: Callable[[int, int], np.ndarray]  # (n, seed) -> float32 inputs
    classes: int  # every corpus model outputs [batch, classes]
    on_demand: bool = False  # too big for the default test run (benchmarks only)


# Input ranges follow each Keras model's own preprocessing: MobileNetV2 expects
# [-1, 1] (preprocess_input is outside the model); V3 and EfficientNet contain
# their rescaling layers and expect [0, 255].
_ENTRIES: dict[str, Entry] = {
    "digits": Entry(_build_digits, _digit_images, 10),
    "mlp": Entry(_build_mlp, _normal((32,)), 10),
    "mobilenet_v2": Entry(functools.partial(_build_mobilenet_v2, 96, 0.35, TEST_CLASSES),
                          _photos_in(96, -1.0, 1.0), TEST_CLASSES),
    "mobilenet_v2_224": Entry(functools.partial(_build_mobilenet_v2, 224, 1.0, 1000),
                              _photos_in(224, -1.0, 1.0), 1000, on_demand=True),
    "mobilenet_v3_small": Entry(_build_mobilenet_v3_small, _photos_in(96, 0.0, 255.0),
                                TEST_CLASSES),
    "efficientnet_b0": Entry(_build_efficientnet_b0, _photos_in(96, 0.0, 255.0), TEST_CLASSES),
    "transformer": Entry(_build_transformer, _normal((16, 32)), 10),
}


def names(include_on_demand: bool = False) -> list[str]:
    """Corpus model names; the on-demand (benchmark-size) ones only if asked."""
    return [name for name, entry in _ENTRIES.items() if include_on_demand or not entry.on_demand]


def num_classes(name: str) -> int:
    """Width of the model's single [batch, classes] output."""
    return _ENTRIES[name].classes


def sample_inputs(name: str, n: int, seed: int) -> np.ndarray:
    """n deterministic float32 inputs for model `name` (batch along axis 0)."""
    return np.ascontiguousarray(_ENTRIES[name].sample(n, seed), dtype=np.float32)


# ------------------------------------------------------------------------------- caching


def cache_dir() -> pathlib.Path:
    return REPO / ".cache" / "corpus" / _tf_version()


def _tf_version() -> str:
    # Read the installed version from package metadata: importing TF costs seconds.
    for dist in ("tensorflow", "tensorflow-cpu"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            return importlib.metadata.version(dist)
    import tensorflow as tf

    return tf.__version__


def is_on_demand(name: str) -> bool:
    return _ENTRIES[name].on_demand


def is_cached(name: str, mode: str) -> bool:
    return _cache_file(name, mode).exists()


def _cache_file(name: str, mode: str) -> pathlib.Path:
    if name not in _ENTRIES:
        raise KeyError(f"unknown corpus model {name!r}; known: {names(True)}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    return cache_dir() / f"{name}.r{REVISION}.{mode}.tflite"


def path(name: str, mode: str) -> pathlib.Path:
    """The cached .tflite of model `name` in `mode` (one of MODES), built if missing."""
    target = _cache_file(name, mode)
    if not target.exists():
        with _build_lock(target.with_suffix(".lock")):
            if not target.exists():  # another worker may have built it meanwhile
                write_model(_convert(name, mode), target)
    return target


@contextlib.contextmanager
def _build_lock(lock_path: pathlib.Path) -> Iterator[None]:
    """Exclusive inter-process lock; without fcntl, just rely on the atomic writes."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _convert(name: str, mode: str) -> bytes:
    representative = (sample_inputs(name, CALIBRATION_COUNT, CALIBRATION_SEED)
                      if mode == "int8" else None)
    return convert_keras(keras_model(name), mode, representative)


@functools.lru_cache(maxsize=1)  # the four modes are usually requested back to back
def keras_model(name: str):
    """The seeded Keras model behind corpus entry `name` (same weights in every process)."""
    import keras

    keras.utils.set_random_seed(0)
    model = _ENTRIES[name].build()
    _recalibrate_batchnorm(model, sample_inputs(name, BATCHNORM_SAMPLES, BATCHNORM_SEED))
    return model


def _recalibrate_batchnorm(model, inputs: np.ndarray) -> None:
    """Set every BatchNorm's moving statistics to the batch statistics of `inputs`.

    Untrained deep nets (weights=None) with default BN statistics shrink the signal
    at each block: MobileNetV2's logits end up around 1e-10, which makes int8
    scales degenerate (TFLite's reference softmax even aborts on them). With the
    statistics measured on real inputs, every BN outputs roughly unit-variance
    activations, as in a trained network. Momentum 0 makes one training-mode pass
    enough; dropout is disabled during that pass so it does not skew the statistics.
    """
    import keras

    batchnorms = [layer for layer in model.layers
                  if isinstance(layer, keras.layers.BatchNormalization)]
    dropouts = [layer for layer in model.layers if isinstance(layer, keras.layers.Dropout)]
    if not batchnorms:
        return
    with _temporarily(batchnorms, "momentum", 0.0), _temporarily(dropouts, "rate", 0.0):
        model(inputs, training=True)


@contextlib.contextmanager
def _temporarily(layers: list, attribute: str, value: float) -> Iterator[None]:
    saved = [getattr(layer, attribute) for layer in layers]
    for layer in layers:
        setattr(layer, attribute, value)
    try:
        yield
    finally:
        for layer, old in zip(layers, saved):
            setattr(layer, attribute, old)
