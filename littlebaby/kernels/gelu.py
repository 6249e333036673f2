"""GELU (tanh form) in one pass each way: the twin of ``nn.gelu``.

The NumPy layer makes 8 passes over the (N, F) array forward and 8 backward, one of them a call to tanh per
value. Here each value is read once, and the gate 0.5 (1 + tanh(u)) is computed as the sigmoid 1 / (1 + e^-2u)
it equals, with the vectorized ``exp`` of ``kernels.jit``. Same cache as the NumPy layer (x and the gate), so
either backward reads either forward's cache.
"""

import math

import numpy as np

from littlebaby.kernels.jit import constants, kernel, sigmoid

SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
COEFF = 0.044715


def gelu_forward(x):
    """x (...) -> (...), cache (x, gate)."""
    x = np.ascontiguousarray(x)
    out, gate = np.empty_like(x), np.empty_like(x)                  # (...) each
    _forward(x.reshape(-1), out.reshape(-1), gate.reshape(-1),
             *constants(x.dtype, 2.0 * SQRT_2_OVER_PI, 2.0 * COEFF * SQRT_2_OVER_PI))
    return out, (x, gate)


def gelu_backward(dout, cache):
    """dout (...) -> dx (...)."""
    x, gate = cache
    dout = np.ascontiguousarray(dout)
    dx = np.empty_like(dout)                                        # (...)
    _backward(dout.reshape(-1), x.reshape(-1), gate.reshape(-1), dx.reshape(-1),
              *constants(x.dtype, 2.0 * SQRT_2_OVER_PI, 6.0 * COEFF * SQRT_2_OVER_PI, 1.0))
    return dx


@kernel
def _forward(x, out, gate, a, c):
    for i in range(x.size):
        v = x[i]
        g = sigmoid(v * (a + c * v * v))                            # sigmoid(2u) = 0.5 (1 + tanh u)
        gate[i] = g
        out[i] = v * g


@kernel
def _backward(dout, x, gate, dx, a, c3, one):
    for i in range(x.size):
        v, g = x[i], gate[i]
        # d/dx [x g] = g + 2 x g (1 - g) du/dx, and 2 du/dx = 2 sqrt(2/pi) (1 + 3 * 0.044715 x^2)
        dx[i] = dout[i] * (g + v * g * (one - g) * (a + c3 * v * v))
