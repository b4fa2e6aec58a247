"""Float CONV_2D and DEPTHWISE_CONV_2D layers of MediaPipe's shapes, one op at a time: qengine's
prepared kernel in both arithmetics against TFLite's default interpreter (XNNPACK) on a one-op
model of the same shape, weights and input, warm caches (each figure the median of 200 runs
after 20 warm-ups; GF/s counts a multiply-add as 2), on 1 thread or `--threads N`.

    python benchmarks/float_layers.py [--repeat 200] [--threads 1] [--only NAME_PART ...]

`ref` is TFLite's reference order (a product, then a sum, each rounded: what qengine runs by
default); `xnnpack` is XNNPACK's (each sum from the bias by fused multiply-adds,
`arithmetic="xnnpack"`), which is also what TFLite's default interpreter computes, bit for bit.
"""

from __future__ import annotations

import argparse

import numpy as np
from float_conv_paths import median_us

import qengine
from qengine.builder import SAME, GraphBuilder, options

# (name, input NHWC, filter: (out channels, kernel) for CONV_2D, (None, kernel) for depthwise
# [, stride])
LAYERS = [
    ("1x1 192->1152 at 7x7", (1, 7, 7, 192), (1152, 1)),
    ("1x1 1152->192 at 7x7", (1, 7, 7, 1152), (192, 1)),
    ("1x1 112->672 at 14x14", (1, 14, 14, 112), (672, 1)),
    ("1x1 64->32 at 32x32", (1, 32, 32, 64), (32, 1)),
    ("1x1 64->256 at 28x28", (1, 28, 28, 64), (256, 1)),
    ("3x3 64->64 at 56x56", (1, 56, 56, 64), (64, 3)),
    ("dw 3x3 at 14x14x672", (1, 14, 14, 672), (None, 3)),
    ("dw 3x3 at 32x32x32", (1, 32, 32, 32), (None, 3)),
    ("dw 3x3 at 56x56x144", (1, 56, 56, 144), (None, 3)),
    ("dw 5x5 at 28x28x240", (1, 28, 28, 240), (None, 5)),
    # MediaPipe's small-channel layers (face detection, face landmark)
    ("5x5/2 3->24 at 128x128", (1, 128, 128, 3), (24, 5), 2),
    ("3x3/2 3->16 at 192x192", (1, 192, 192, 3), (16, 3), 2),
    ("3x3/2 3->24 at 224x224", (1, 224, 224, 3), (24, 3), 2),  # hand landmark, pose detection
    ("5x5/2 3->32 at 192x192", (1, 192, 192, 3), (32, 5), 2),  # palm detection
    ("1x1 24->24 at 64x64", (1, 64, 64, 24), (24, 1)),
    ("1x1 24->28 at 64x64", (1, 64, 64, 24), (28, 1)),
    ("1x1 16->16 at 96x96", (1, 96, 96, 16), (16, 1)),
    # pose_detection's memory-bound 1x1 convs (few input channels, a large output)
    ("1x1 16->64 at 112x112", (1, 112, 112, 16), (64, 1)),
    ("1x1 144->24 at 56x56", (1, 56, 56, 144), (24, 1)),
    ("dw 3x3 at 64x64x24", (1, 64, 64, 24), (None, 3)),
    ("dw 3x3 at 96x96x16", (1, 96, 96, 16), (None, 3)),
]


def layer_model(x_shape, out_c, k, rng, stride=1):
    b = GraphBuilder()
    x = b.input("x", x_shape)
    in_c = x_shape[3]
    depthwise = out_c is None
    w_shape = (1, k, k, in_c) if depthwise else (out_c, k, k, in_c)
    inputs = [x, b.const("w", rng.standard_normal(w_shape).astype(np.float32)),
              b.const("b", rng.standard_normal(w_shape[3] if depthwise else out_c)
                      .astype(np.float32))]
    common = {"padding": SAME, "strideH": stride, "strideW": stride}
    if depthwise:
        y = b.op("DEPTHWISE_CONV_2D", inputs,
                 options=options("DepthwiseConv2DOptions", depthMultiplier=1, **common))
    else:
        y = b.op("CONV_2D", inputs, options=options("Conv2DOptions", **common))
    return b.build([y])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--only", nargs="*", default=[], help="layers whose name contains any")
    args = parser.parse_args()
    from ai_edge_litert.interpreter import Interpreter

    rng = np.random.default_rng(0)
    print("| layer | qengine ref µs (GF/s) | qengine xnnpack µs (GF/s) | TFLite default µs (GF/s) "
          "| ref / TFLite | xnnpack / TFLite |")
    print("|---|---|---|---|---|---|")
    for name, x_shape, (out_c, k), *stride in LAYERS:
        if args.only and not any(part in name for part in args.only):
            continue
        model = layer_model(x_shape, out_c, k, rng, *stride)
        x = rng.standard_normal(x_shape).astype(np.float32)
        values = qengine.Interpreter(model).run([x], keep=True)
        for op in model.main.operators:  # XNNPACK takes only ops whose output shape is known
            op.outputs[0].shape = tuple(values[op.outputs[0].name].shape)
        times = []
        for arithmetic in ("ref", "xnnpack"):
            step = qengine.Interpreter(model, arithmetic=arithmetic,
                                       num_threads=args.threads)._plan(0).steps[0]
            times.append(median_us(lambda step=step, x=x: step.prepared.run(x, None, None),
                                   args.repeat, warmup=20))
        tfl = Interpreter(model_content=model.to_bytes(), num_threads=args.threads)
        tfl.allocate_tensors()
        tfl.set_tensor(tfl.get_input_details()[0]["index"], x)
        times.append(median_us(tfl.invoke, args.repeat, warmup=20))
        pixels = np.prod(values[model.main.outputs[0].name].shape[:3])
        macs = pixels * k * k * (x_shape[3] if out_c is None else x_shape[3] * out_c)
        cells = [f"{t:.1f} ({2 * macs / t / 1e3:.0f})" for t in times]
        print(f"| {name} | {' | '.join(cells)} | {times[0] / times[2]:.2f} | "
              f"{times[1] / times[2]:.2f} |")


if __name__ == "__main__":
    main()
