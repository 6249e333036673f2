"""How every kernel is compiled, and the scalar functions they share.

``kernel`` is ``numba.njit`` with this package's settings:

    cache=True        compiled code is kept on disk, so only the first run on a machine pays for compiling
    nogil=True        a kernel releases the GIL, so the worker threads of a step (littlebaby.workers) run
                      their kernels on all cores at once
    error_model       "numpy": a division by zero gives inf or NaN as in NumPy instead of raising, which also
                      lets LLVM vectorize loops that divide
    fastmath          only "contract" (fused multiply-add), "reassoc" (sums reordered, so reductions vectorize)
                      and "arcp" (x / y as x * (1 / y)); never "nnan" or "ninf": a NaN must propagate (training
                      stops on it)

float32 arithmetic stays float32 only when every operand is float32, so kernels take their constants as
arguments already cast to the arrays' dtype (``constants``) instead of writing Python floats inline.

``exp`` is the one transcendental function the kernels need (softmax, and GELU's gate as a sigmoid). In
float64 it is ``math.exp``. In float32 libm's ``expf`` is one call per value, which LLVM cannot vectorize, so
it is computed here from arithmetic alone: e^x = 2^k e^r with k = round(x / ln 2) and r = x - k ln 2 (in two
parts, so r keeps its low bits), e^r by a degree-6 polynomial on |r| <= ln(2) / 2 (coefficients fitted for
this file to a relative error of 2e-9), and 2^k by writing k + 127 into a float32's exponent bits. Measured
against float64 ``np.exp``: 1.1e-7 relative, one float32 ulp, from -87 to 88.7; results below e^-87 = 1.6e-38
flush to 0 (-inf included), inputs above 88.7 give 3.3e38 (+inf included), and NaN stays NaN.

numba's on-disk cache checks only the file that defines a kernel: after editing this file, delete the
``__pycache__`` folder of littlebaby/kernels so that the kernels that inline ``exp`` are compiled again.
"""

import math

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload

FASTMATH = frozenset({"contract", "reassoc", "arcp"})


def kernel(function):
    """Compile ``function`` as a kernel (see the module docstring)."""
    return numba.njit(cache=True, nogil=True, error_model="numpy", fastmath=set(FASTMATH))(function)


def constants(dtype, *values):
    """The Python floats ``values`` as scalars of ``dtype`` (np.float32(0.5) ...), for a kernel's arguments."""
    scalar = np.dtype(dtype).type
    return tuple(scalar(v) for v in values)


def exp(x):
    """e^x of a scalar inside a kernel (see the module docstring)."""
    return math.exp(x)


@overload(exp, inline="always")
def _exp_by_dtype(x):
    if x == types.float32:
        return _exp_float32
    return lambda x: math.exp(x)


@intrinsic
def _float32_from_bits(typingctx, bits):
    """The float32 whose IEEE bits are the int32 ``bits`` (a reinterpretation, no conversion)."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())
    return types.float32(types.int32), codegen


def _exp_float32(x):
    x = np.float32(-87.5) if x < np.float32(-87.5) else x           # written so that NaN passes through
    x = np.float32(88.7) if x > np.float32(88.7) else x
    k = np.floor(x * np.float32(1.4426950408889634) + np.float32(0.5))  # round(x / ln 2)
    r = (x - k * np.float32(0.693359375)) - k * np.float32(-2.1219444170128554e-4)  # x - k ln 2, |r| <= 0.35
    p = np.float32(1.3836841781e-3)
    p = p * r + np.float32(8.3748157808e-3)
    p = p * r + np.float32(4.1668225645e-2)
    p = p * r + np.float32(1.666642017e-1)
    p = p * r + np.float32(4.9999992079e-1)
    p = p * r + np.float32(1.0000000363)
    p = p * r + np.float32(1.0000000006)                            # e^r
    # 2^k as 2 * 2^(k-1), so that k = 128 (x near 88.7) still has an exponent field; k = -126 writes 0 there,
    # which reads as 0.0: the smallest results flush to 0
    return p * np.float32(2.0) * _float32_from_bits((np.int32(k) + np.int32(126)) << np.int32(23))


def sigmoid(x):
    """1 / (1 + e^-x) of a scalar inside a kernel; 0 or 1 at the ends, never NaN for finite x."""
    return 1.0 / (1.0 + math.exp(-x))


@overload(sigmoid, inline="always")
def _sigmoid_by_dtype(x):
    if x == types.float32:
        return lambda x: np.float32(1.0) / (np.float32(1.0) + exp(-x))
    return lambda x: 1.0 / (1.0 + math.exp(-x))
