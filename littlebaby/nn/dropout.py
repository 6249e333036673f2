"""Inverted dropout: zero each value with probability p and scale the survivors by 1 / (1 - p), so the
expected output equals the input and evaluation needs no rescaling."""

import numpy as np


def dropout_forward(x, p, rng):
    """x (...) -> (...). With ``p == 0`` or no rng (evaluation) it is the identity and caches nothing.

    The mask is drawn as ``rng.random(x.shape, dtype=float32) >= p`` whatever the model's dtype, so a float32 and
    a float64 model (and the PyTorch reference in the tests) see the same masks from the same seed.
    """
    if p == 0.0 or rng is None:
        return x, None
    keep = rng.random(x.shape, dtype=np.float32) >= p               # (...) bool
    out = x * keep                                                  # (...)
    out *= 1.0 / (1.0 - p)
    cache = (keep, p)  # the mask is the whole derivative
    return out, cache


def dropout_backward(dout, cache):
    """dout (...) -> dx (...): the same mask and scale as the forward."""
    if cache is None:
        return dout
    keep, p = cache
    dx = dout * keep                                                # (...)
    dx *= 1.0 / (1.0 - p)
    return dx
