"""Slow, obviously-correct twins of the kernels (NumPy int64 and Python ints, nothing from
qengine or Numba), which tests compare the kernels with exactly:

- `fixedpoint`: the gemmlowp/TFLite fixed-point primitives, once (C division, wrapping,
  SRDHM, RDBPOT, MBQM, QuantizeMultiplier, rounding);
- `int8_conv`: convolutions, FC, batch matmul, pooling, MEAN/SUM, requantization;
- `int8_elementwise`: ADD/SUB/MUL, activations and their tables, softmax, resize, (de)quantize;
- `int16`: the 16x8 CONV_2D, FULLY_CONNECTED, ADD/SUB, MUL and RELU kernels (the other int16
  kernels are checked against TFLite only, in the tf-marked test_int16x8*.py).
"""
