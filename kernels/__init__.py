"""Numba kernels (installed as qengine.kernels)."""
