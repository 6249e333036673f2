"""LayerNorm over the channel axis: normalise each position to zero mean and unit variance, then scale and shift.

Derivation: docs/layers/layernorm.md.
"""

import numpy as np

EPS = 1e-5


def layernorm_forward(x, w, b):
    """x (..., C), w (C,), b (C,) -> (..., C). ``out = (x - mean) / sqrt(var + eps) * w + b``."""
    mean = x.mean(axis=-1, keepdims=True)                           # (..., 1)
    xc = x - mean                                                   # (..., C)
    var = (xc * xc).mean(axis=-1, keepdims=True)                    # (..., 1) biased, as in PyTorch
    rstd = 1.0 / np.sqrt(var + EPS)                                 # (..., 1)
    xhat = xc * rstd                                                # (..., C)
    out = xhat * w + b                                              # (..., C)
    cache = (xhat, rstd, w)  # backward is written in terms of the normalised input and 1/std alone
    return out, cache


def layernorm_backward(dout, cache):
    """dout (..., C) -> dx (..., C), dw (C,), db (C,).

    With g = dout * w (the gradient reaching xhat), the mean and the variance both depend on every x, which
    gives ``dx = rstd * (g - mean(g) - xhat * mean(g * xhat))``.
    """
    xhat, rstd, w = cache
    C = xhat.shape[-1]
    dw = (dout * xhat).reshape(-1, C).sum(axis=0)                   # (C,)
    db = dout.reshape(-1, C).sum(axis=0)                            # (C,)
    g = dout * w                                                    # (..., C)
    dx = g - g.mean(axis=-1, keepdims=True)                         # (..., C)
    dx -= xhat * (g * xhat).mean(axis=-1, keepdims=True)
    dx *= rstd
    return dx, dw, db
