"""Slow, obviously-correct twins of the kernels (NumPy int64 and Python ints, nothing from
qengine or Numba), which tests compare the kernels with exactly:

- `fixedpoint`: the gemmlowp/TFLite fixed-point primitives, once (C division, wrapping,
  SRDHM, RDBPOT, MBQM, QuantizeMultiplier, rounding);
- `int8_conv`: convolutions, FC, batch matmul, pooling, MEAN/SUM, requantization;
- `int8_elementwise`: ADD/SUB/MUL, activations and their tables, softmax, resize, (de)quantize.

No twin of kernels/int16.py exists yet: its ops are checked against TFLite (marked tf).
"""
