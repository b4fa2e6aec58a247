"""The C library's float32 functions, as TFLite's kernels call them (std::exp(float) is expf).

Calling the same libm functions as the C++ keeps lookup tables identical at rounding edges.
"""

import ctypes
import ctypes.util

libm = ctypes.CDLL(ctypes.util.find_library("m"))
for _name in ("expf", "expm1f", "tanhf", "logf", "erfcf", "sqrtf", "roundf"):
    getattr(libm, _name).restype = ctypes.c_float
    getattr(libm, _name).argtypes = [ctypes.c_float]
