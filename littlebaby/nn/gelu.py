"""GELU in its tanh form, ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``, with the exact derivative of
that form (not of the erf GELU it approximates)."""

import math

import numpy as np

SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)  # a Python float, so float32 arrays stay float32
COEFF = 0.044715


def gelu_forward(x):
    """x (...) -> (...)."""
    u = SQRT_2_OVER_PI * (x + COEFF * x**3)                         # (...)
    t = np.tanh(u)                                                  # (...)
    out = 0.5 * x * (1.0 + t)                                       # (...)
    cache = (x, t)  # the derivative needs x and tanh(u); keeping t saves recomputing the tanh
    return out, cache


def gelu_backward(dout, cache):
    """dout (...) -> dx (...).

    d/dx [0.5 x (1 + t)] = 0.5 (1 + t) + 0.5 x (1 - t^2) du/dx, with du/dx = sqrt(2/pi) (1 + 3 * 0.044715 x^2).
    """
    x, t = cache
    du_dx = SQRT_2_OVER_PI * (1.0 + 3.0 * COEFF * x * x)            # (...)
    dx = dout * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du_dx)  # (...)
    return dx
