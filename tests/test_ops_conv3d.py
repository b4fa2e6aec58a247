"""CONV_3D and CONV_3D_TRANSPOSE (float) against TFLite's reference kernels."""

import numpy as np
import pytest
from op_harness import In, check, rand

from qengine.builder import options

pytestmark = pytest.mark.tf

GRID = [  # (input DHW, kernel DHW, strides DHW, dilations DHW, padding 0=SAME 1=VALID)
    ((4, 5, 6), (2, 3, 3), (1, 1, 1), (1, 1, 1), 0),
    ((4, 5, 6), (2, 3, 3), (1, 1, 1), (1, 1, 1), 1),
    ((5, 6, 7), (3, 2, 3), (2, 1, 3), (1, 1, 1), 0),
    ((5, 6, 7), (2, 2, 2), (1, 2, 1), (2, 1, 2), 1),
    ((6, 6, 6), (3, 3, 3), (2, 2, 2), (1, 2, 1), 0),
]


def _options(strides, dilations, padding, activation=0):
    return options("Conv3DOptions", padding=padding, strideD=strides[0], strideH=strides[1],
                   strideW=strides[2], dilationDFactor=dilations[0],
                   dilationHFactor=dilations[1], dilationWFactor=dilations[2],
                   fusedActivationFunction=activation)


@pytest.mark.parametrize("dhw,kernel,strides,dilations,padding", GRID)
@pytest.mark.parametrize("bias,activation", [(True, 0), (False, 1), (True, 3)])
def test_conv3d(dhw, kernel, strides, dilations, padding, bias, activation):
    x = rand((2, *dhw, 3), seed=1)
    w = rand((*kernel, 3, 4), seed=2)
    args = [In(x), w] + ([rand((4,), seed=3)] if bias else [])
    check("CONV_3D", args, _options(strides, dilations, padding, activation))


@pytest.mark.parametrize("out_dhw,kernel,strides,padding", [
    ((4, 5, 6), (2, 3, 3), (1, 1, 1), 0), ((8, 6, 9), (3, 2, 3), (2, 1, 3), 0),
    ((5, 7, 6), (2, 3, 2), (1, 2, 1), 1), ((9, 9, 9), (3, 3, 3), (2, 2, 2), 1)])
@pytest.mark.parametrize("bias", [True, False])
def test_conv3d_transpose(out_dhw, kernel, strides, padding, bias):
    # the input size a CONV_3D of these parameters makes from out_dhw (SAME: ceil(n / s))
    in_dhw = [(n + s - 1) // s if padding == 0 else (n - k) // s + 1
              for n, k, s in zip(out_dhw, kernel, strides)]
    x = rand((2, *in_dhw, 3), seed=4)
    w = rand((*kernel, 4, 3), seed=5)
    args = [np.array((2, *out_dhw, 4), np.int32), w, In(x)] + ([rand((4,), seed=6)] if bias
                                                                else [])
    check("CONV_3D_TRANSPOSE", args, _options(strides, (1, 1, 1), padding), out_dtype="float32")
