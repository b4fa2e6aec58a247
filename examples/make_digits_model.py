"""Build the bundled example model: a tiny digit classifier in float TFLite.

Same architecture as the TFLite post-training-quantization tutorials (MNIST),
but trained on scikit-learn's bundled 8x8 digits upscaled to 28x28, so it needs
no network. Deterministic: rerunning produces the same data split and, on the
same TF build, the same weights.

    .venv/bin/python examples/make_digits_model.py

Writes digits.tflite and digits_data.npz next to this file.
"""

from __future__ import annotations

import contextlib
import io
import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before TF is imported anywhere

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
SEED = 0
IMAGE_SIZE = 28
TEST_SIZE = 500
CALIBRATION_SIZE = 200
EPOCHS = 12


def load_digits_28x28() -> tuple[np.ndarray, np.ndarray]:
    """All 1797 scikit-learn digits as float32 [N, 28, 28] in [0, 1], labels int64."""
    from skimage.transform import resize
    from sklearn.datasets import load_digits

    digits = load_digits()
    small = digits.images.astype(np.float32) / 16.0  # the raw pixel range is 0..16
    # Anti-aliased bilinear upscaling keeps strokes smooth, like MNIST pen strokes.
    images = resize(small, (len(small), IMAGE_SIZE, IMAGE_SIZE), order=1, anti_aliasing=True)
    images = np.clip(images, 0.0, 1.0).astype(np.float32)
    return images, digits.target.astype(np.int64)


def split(images: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """Deterministic stratified split: 1297 train / 500 test."""
    from sklearn.model_selection import train_test_split

    train_x, test_x, train_y, test_y = train_test_split(
        images, labels, test_size=TEST_SIZE, stratify=labels, random_state=SEED
    )
    return {"train_images": train_x, "train_labels": train_y,
            "test_images": test_x, "test_labels": test_y}


def build_model():
    """Input(28,28) -> Reshape -> Conv2D(12,3x3,relu) -> MaxPool(2) -> Flatten -> Dense(10)."""
    import keras

    return keras.Sequential([
        keras.Input(shape=(IMAGE_SIZE, IMAGE_SIZE), name="image"),  # stable tensor name
        keras.layers.Reshape((IMAGE_SIZE, IMAGE_SIZE, 1)),
        keras.layers.Conv2D(12, (3, 3), activation="relu"),
        keras.layers.MaxPooling2D((2, 2)),
        keras.layers.Flatten(),
        keras.layers.Dense(10),  # logits
    ])


def train_model(data: dict[str, np.ndarray], epochs: int = EPOCHS):
    """Seeded Keras training; returns the trained model."""
    import keras

    keras.utils.set_random_seed(SEED)
    model = build_model()
    model.compile(optimizer="adam",
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    model.fit(data["train_images"], data["train_labels"], epochs=epochs, batch_size=32,
              shuffle=True, verbose=0)
    return model


def to_float_tflite(model) -> bytes:
    import tensorflow as tf

    # The Keras export step prints a long signature listing; keep the output readable.
    with contextlib.redirect_stdout(io.StringIO()):
        return tf.lite.TFLiteConverter.from_keras_model(model).convert()


def calibration_images(data: dict[str, np.ndarray]) -> np.ndarray:
    """The first 200 training images (the split is already shuffled)."""
    return data["train_images"][:CALIBRATION_SIZE]


def tflite_accuracy(model_bytes: bytes, images: np.ndarray, labels: np.ndarray) -> float:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=model_bytes)
    input_index = interpreter.get_input_details()[0]["index"]
    output_index = interpreter.get_output_details()[0]["index"]
    # Resize to the whole batch instead of looping over 500 single images.
    interpreter.resize_tensor_input(input_index, list(images.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(input_index, images)
    interpreter.invoke()
    logits = interpreter.get_tensor(output_index)
    return float(np.mean(np.argmax(logits, axis=1) == labels))


def keras_accuracy(model, images: np.ndarray, labels: np.ndarray) -> float:
    logits = model.predict(images, verbose=0)
    return float(np.mean(np.argmax(logits, axis=1) == labels))


def main() -> None:
    np.random.seed(SEED)
    data = split(*load_digits_28x28())
    model = train_model(data)
    model_bytes = to_float_tflite(model)

    (HERE / "digits.tflite").write_bytes(model_bytes)
    np.savez_compressed(
        HERE / "digits_data.npz",
        calibration=calibration_images(data).astype(np.float32),
        test_images=data["test_images"].astype(np.float32),
        test_labels=data["test_labels"].astype(np.int64),
    )

    test_x, test_y = data["test_images"], data["test_labels"]
    print(f"Keras  test accuracy: {keras_accuracy(model, test_x, test_y):.4f}")
    print(f"TFLite test accuracy: {tflite_accuracy(model_bytes, test_x, test_y):.4f}")
    print(f"wrote {HERE / 'digits.tflite'} ({len(model_bytes)} bytes) and digits_data.npz")


if __name__ == "__main__":
    main()
