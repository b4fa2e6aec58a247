"""Per-tensor int8 collapses on a MobileNetV2-style network; equalization brings it back.

The network is Keras' MobileNetV2 (alpha 0.35, 96x96, random weights) up to block 5, with a
pooled 100-way linear head, ReLU in place of ReLU6 (as Nagel et al. 2019 do: scaling a channel
moves ReLU6's clip point, so cross-layer equalization cannot pass through it) and BatchNorm
statistics measured on photos. One expand channel in ten is sparse (its BatchNorm beta sits
three standard deviations below zero, as in trained networks), and the depthwise BatchNorms use
epsilon 1e-5 (PyTorch's default). The depthwise BatchNorm then scales those rarely active
channels' filters up by ~100x when folded, so one int8 scale per depthwise filter leaves the
ordinary channels a handful of levels: per-tensor int8 collapses while per-channel int8 is fine.

Each variant is quantized by qengine, run on held-out photo crops (photos never used for
calibration), and compared with the float model: output SQNR (dB) and top-1 agreement. Every
exported int8 model is loaded by TFLite's interpreter (reference kernels) and checked
bit-exact against qengine on one input.

    .venv/bin/python examples/per_tensor_collapse.py
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before TF is imported anywhere

import numpy as np

import qengine
from qengine.quantizer import ptq

COMMAND = ".venv/bin/python examples/per_tensor_collapse.py"
SEED = 0
SIZE = 96
CLASSES = 100
# Untrained deeper networks amplify quantization noise layer after layer (per-channel int8 of
# the whole random MobileNetV2 keeps only ~6.5 dB), which would hide what the methods do.
CUT = "block_5_add"
CALIBRATION_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
HELD_OUT_PHOTOS = ("immunohistochemistry", "hubble_deep_field", "retina", "stereo_motorcycle")
SPARSE_FRACTION = 0.1
CALIBRATION, HELD_OUT, ADAROUND_SAMPLES = 64, 200, 16


# -- data -------------------------------------------------------------------------------------


def photo_crops(names, n: int, seed: int) -> np.ndarray:
    """Random square crops of skimage's bundled photos, 96x96, scaled to [-1, 1]."""
    import skimage.data
    from skimage.transform import resize

    photos = []
    for name in names:
        image = getattr(skimage.data, name)()
        image = image[0] if isinstance(image, tuple) else image  # stereo pairs: the left view
        photos.append(image[..., :3].astype(np.float32) / 255.0)
    rng = np.random.default_rng(seed)
    crops = np.empty((n, SIZE, SIZE, 3), np.float32)
    for i in range(n):
        photo = photos[rng.integers(len(photos))]
        side = int(min(photo.shape[:2]) * rng.uniform(0.3, 1.0))
        top, left = (rng.integers(photo.shape[k] - side + 1) for k in (0, 1))
        crop = photo[top:top + side, left:left + side]
        crops[i] = resize(crop[:, ::-1] if rng.random() < 0.5 else crop, (SIZE, SIZE),
                          order=1, anti_aliasing=True)
    return crops * 2 - 1


# -- the float model --------------------------------------------------------------------------


def build_keras_model():
    import keras

    keras.utils.set_random_seed(SEED)
    base = keras.applications.MobileNetV2(weights=None, alpha=0.35, input_shape=(SIZE, SIZE, 3),
                                          classes=CLASSES, classifier_activation=None)

    def relu_not_relu6(layer):
        if isinstance(layer, keras.layers.ReLU):
            return keras.layers.ReLU(name=layer.name)
        return layer.__class__.from_config(layer.get_config())

    model = keras.models.clone_model(base, clone_function=relu_not_relu6)
    model.set_weights(base.get_weights())
    features = keras.layers.GlobalAveragePooling2D()(model.get_layer(CUT).output)
    model = keras.Model(model.input, keras.layers.Dense(CLASSES, name="logits")(features))
    _set_batchnorm(model, photo_crops(CALIBRATION_PHOTOS, 64, SEED + 2))
    return model


def _set_batchnorm(model, inputs: np.ndarray) -> None:
    """Sparse expand channels, epsilon 1e-5 on depthwise BNs, statistics from `inputs`."""
    import keras

    rng = np.random.default_rng(SEED + 1)
    batchnorms = [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]
    for layer in batchnorms:
        if "expand" in layer.name or "Conv1" in layer.name:
            beta, gamma = layer.beta.numpy(), layer.gamma.numpy()
            sparse = rng.random(beta.shape) < SPARSE_FRACTION
            beta[sparse] = -rng.uniform(2.5, 3.5, sparse.sum()) * gamma[sparse]
            layer.beta.assign(beta)
        if "depthwise" in layer.name:
            layer.epsilon = 1e-5
        layer.momentum = 0.0  # one training-mode pass sets the moving statistics
    model(inputs, training=True)


def convert(model) -> qengine.Model:
    import tensorflow as tf

    with contextlib.redirect_stdout(io.StringIO()):
        data = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    return qengine.load(data)


# -- evaluation -------------------------------------------------------------------------------


def run(model, x: np.ndarray) -> np.ndarray:
    """Float logits of `model` (int8 interfaces quantized/dequantized at the edges)."""
    interpreter = qengine.Interpreter(model)
    inp, out = interpreter.inputs[0], interpreter.outputs[0]
    batches = [x[i:i + 50] for i in range(0, len(x), 50)]
    y = np.concatenate([interpreter.run(ptq._quantize_input(inp, b))[out.name] for b in batches])
    return ptq.dequantize(out, y)


def sqnr_db(y: np.ndarray, reference: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(reference**2) / np.sum((y - reference) ** 2)))


def tflite_bit_exact(model, x: np.ndarray) -> bool:
    """TFLite (BUILTIN_REF kernels) loads the exported bytes and agrees with qengine exactly."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    data = model.to_bytes()
    ours = qengine.Interpreter(qengine.load(data))
    inp = ptq._quantize_input(ours.inputs[0], x)
    tfl = Interpreter(model_content=data,
                      experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    tfl.allocate_tensors()
    tfl.set_tensor(tfl.get_input_details()[0]["index"], inp)
    tfl.invoke()
    want = tfl.get_tensor(tfl.get_output_details()[0]["index"])
    return bool(np.array_equal(ours.run(inp)[ours.outputs[0].name], want))


def variants(float_model, calibration):
    def int8(model, per_channel):
        return qengine.quantize(model, "int8", calibration, per_channel=per_channel, quiet=True)

    yield "int8 per-tensor", float_model, int8(float_model, False)
    equalized = ptq.equalize(float_model)
    cle = int8(equalized, False)
    yield "per-tensor + CLE", equalized, cle
    yield "per-tensor + CLE + bias corr.", equalized, ptq.bias_correction(equalized, cle,
                                                                          calibration)
    rounded = ptq.adaround(equalized, cle, calibration[:ADAROUND_SAMPLES], iterations=300)
    yield "per-tensor + CLE + AdaRound + bias corr.", equalized, ptq.bias_correction(
        equalized, rounded, calibration)
    yield "int8 per-channel", float_model, int8(float_model, True)


def main() -> int:
    start = time.perf_counter()
    calibration = photo_crops(CALIBRATION_PHOTOS, CALIBRATION, SEED)
    held_out = photo_crops(HELD_OUT_PHOTOS, HELD_OUT, SEED + 3)
    float_model = convert(build_keras_model())
    reference = run(float_model, held_out)
    depthwise = next(op for op in float_model.main.operators if op.type == "DEPTHWISE_CONV_2D")
    ranges = ptq._output_ranges(depthwise)
    print(f"MobileNetV2-style (alpha 0.35, {SIZE}x{SIZE}, up to {CUT}, ReLU), "
          f"{len(calibration)} calibration crops of {', '.join(CALIBRATION_PHOTOS)}; "
          f"{len(held_out)} held-out crops of {', '.join(HELD_OUT_PHOTOS)}")
    print(f"first depthwise filter: per-channel max |w| from {ranges.min():.3g} to "
          f"{ranges.max():.3g} (median {np.median(ranges):.3g})\n")
    header = f"{'variant':42} {'SQNR dB':>8} {'top-1 agree':>12} {'TFLite REF == qengine':>22}"
    print(header)
    print("-" * len(header))
    print(f"{'float':42} {'inf':>8} {1.0:>12.3f} {'(float)':>22}")
    for label, float_of, quant in variants(float_model, calibration):
        y = run(quant, held_out)
        agree = float(np.mean(y.argmax(1) == reference.argmax(1)))
        exact = "yes" if tflite_bit_exact(quant, held_out[:1]) else "NO"
        print(f"{label:42} {sqnr_db(y, reference):>8.2f} {agree:>12.3f} {exact:>22}")
        sys.stdout.flush()
    print(f"\nSQNR: 10 log10(sum y_float^2 / sum (y - y_float)^2) over the {CLASSES} logits. "
          f"({time.perf_counter() - start:.0f} s)")
    print(f"reproduce: {COMMAND}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
