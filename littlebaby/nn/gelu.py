"""GELU in its tanh form, ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``, with the exact derivative of
that form (not of the erf GELU it approximates).

Derivation: docs/layers/gelu.md.
"""

import math

from littlebaby.nn.backend import array_module, compiled_twin

SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)  # a Python float, so float32 arrays stay float32
COEFF = 0.044715


def gelu_forward(x):
    """x (...) -> (...): ``x * g`` with the gate ``g = 0.5 (1 + tanh(u))``, u = sqrt(2/pi) (x + 0.044715 x^3).

    Built in place in one buffer: u as sqrt(2/pi) x (1 + 0.044715 x^2), because x**3 calls the general power
    routine and is two orders of magnitude slower than two multiplies; then tanh, then the gate.
    """
    twin = compiled_twin("gelu_forward", x)                         # littlebaby/kernels/gelu.py, when in use
    if twin is not None:
        return twin(x)
    gate = x * x                                                    # (...)
    gate *= COEFF * SQRT_2_OVER_PI
    gate += SQRT_2_OVER_PI
    gate *= x                                                       # u
    array_module(x).tanh(gate, out=gate)
    gate *= 0.5
    gate += 0.5                                                     # g = 0.5 (1 + tanh(u))
    out = x * gate                                                  # (...)
    cache = (x, gate)  # the derivative needs x and the gate; keeping it saves recomputing the tanh
    return out, cache


def gelu_backward(dout, cache):
    """dout (...) -> dx (...).

    With t = tanh(u) = 2g - 1, so that 1 - t^2 = 4 g (1 - g):
    d/dx [x g] = g + x * 0.5 (1 - t^2) du/dx = g + 2 x g (1 - g) du/dx, du/dx = sqrt(2/pi) (1 + 3 * 0.044715 x^2).
    """
    twin = compiled_twin("gelu_backward", dout)
    if twin is not None:
        return twin(dout, cache)
    x, gate = cache
    dx = x * x                                                      # (...)
    dx *= 6.0 * COEFF * SQRT_2_OVER_PI
    dx += 2.0 * SQRT_2_OVER_PI                                      # 2 du/dx
    dx *= x
    one_minus_gate = 1.0 - gate                                     # (...)
    one_minus_gate *= gate
    dx *= one_minus_gate                                            # 2 x g (1 - g) du/dx
    dx += gate
    dx *= dout
    return dx
