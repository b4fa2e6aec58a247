"""The one place that decides how kernels are compiled.

Every kernel is compiled with `cache=True` so a second process loads machine code from
`__pycache__` instead of recompiling, and with `nogil=True` so callers may run kernels on
threads. Integer kernels never get `fastmath`: it would let LLVM reassociate and change
results that must be bit-exact.
"""

import numba

__all__ = ["kernel", "float_kernel", "prange"]

prange = numba.prange


def kernel(fn=None, *, parallel=False):
    """Decorator for exact (integer or order-defined float) kernels."""
    decorate = numba.njit(cache=True, nogil=True, parallel=parallel, error_model="numpy")
    return decorate if fn is None else decorate(fn)


def float_kernel(fn=None, *, parallel=False):
    """Decorator for float kernels whose result need not be bit-reproducible."""
    decorate = numba.njit(cache=True, nogil=True, parallel=parallel, fastmath=True, error_model="numpy")
    return decorate if fn is None else decorate(fn)
