"""GELU in its tanh form, ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``, with the exact derivative of
that form (not of the erf GELU it approximates)."""

import math

import numpy as np

SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)  # a Python float, so float32 arrays stay float32
COEFF = 0.044715


def gelu_forward(x):
    """x (...) -> (...)."""
    # u = sqrt(2/pi) (x + 0.044715 x^3), built in place as sqrt(2/pi) x (1 + 0.044715 x^2): x**3 calls the
    # general power routine and is two orders of magnitude slower than two multiplies
    u = x * x                                                       # (...)
    u *= COEFF
    u += 1.0
    u *= x
    u *= SQRT_2_OVER_PI
    t = np.tanh(u, out=u)                                           # (...) tanh(u), reusing u's memory
    out = t + 1.0                                                   # (...)
    out *= x
    out *= 0.5                                                      # 0.5 x (1 + t)
    cache = (x, t)  # the derivative needs x and tanh(u); keeping t saves recomputing the tanh
    return out, cache


def gelu_backward(dout, cache):
    """dout (...) -> dx (...).

    d/dx [0.5 x (1 + t)] = 0.5 (1 + t) + 0.5 x (1 - t^2) du/dx, with du/dx = sqrt(2/pi) (1 + 3 * 0.044715 x^2).
    """
    x, t = cache
    du_dx = x * x                                                   # (...)
    du_dx *= 3.0 * COEFF * SQRT_2_OVER_PI
    du_dx += SQRT_2_OVER_PI                                         # sqrt(2/pi) (1 + 3 c x^2)
    sech2 = t * t                                                   # (...)
    np.subtract(1.0, sech2, out=sech2)                              # 1 - t^2
    sech2 *= x
    sech2 *= du_dx                                                  # x (1 - t^2) du/dx
    sech2 += t
    sech2 += 1.0
    sech2 *= 0.5                                                    # 0.5 (1 + t) + 0.5 x (1 - t^2) du/dx
    dx = sech2
    dx *= dout
    return dx
