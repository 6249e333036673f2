"""LayerNorm in one pass over each row each way: the twin of ``nn.layernorm``.

Each row of C values is read into the first-level cache once: its mean, its variance, the normalised row and
the output in the forward; the two row means of the backward, dx, and the row's share of dw and db. Same cache
as the NumPy layer (xhat, rstd, w), so either backward reads either forward's cache.
"""

import numpy as np

from littlebaby.kernels.jit import constants, kernel
from littlebaby.nn.layernorm import EPS


def layernorm_forward(x, w, b, eps=EPS):
    """x (..., C), w (C,), b (C,) -> (..., C), cache (xhat, rstd (..., 1), w)."""
    C = x.shape[-1]
    x2 = np.ascontiguousarray(x).reshape(-1, C)                     # (N, C)
    out, xhat = np.empty_like(x2), np.empty_like(x2)                # (N, C) each
    rstd = np.empty((x2.shape[0], 1), dtype=x.dtype)                # (N, 1)
    _forward(x2, w, b, out, xhat, rstd[:, 0], *constants(x.dtype, eps, 1.0 / C, 0.0, 1.0))
    return out.reshape(x.shape), (xhat.reshape(x.shape), rstd.reshape(*x.shape[:-1], 1), w)


def layernorm_backward(dout, cache):
    """dout (..., C) -> dx (..., C), dw (C,), db (C,)."""
    xhat, rstd, w = cache
    C = xhat.shape[-1]
    dout2 = np.ascontiguousarray(dout).reshape(-1, C)               # (N, C)
    dx = np.empty_like(dout2)                                       # (N, C)
    dw, db = np.empty(C, dtype=dout.dtype), np.empty(C, dtype=dout.dtype)  # (C,) each
    _backward(dout2, np.ascontiguousarray(xhat).reshape(-1, C), rstd.reshape(-1), w, dx, dw, db,
              *constants(dout.dtype, 1.0 / C, 0.0))
    return dx.reshape(dout.shape), dw, db


@kernel
def _forward(x, w, b, out, xhat, rstd, eps, inv_c, zero, one):
    N, C = x.shape
    for n in range(N):
        mean = zero
        for c in range(C):
            mean += x[n, c]
        mean *= inv_c
        var = zero
        for c in range(C):
            d = x[n, c] - mean
            xhat[n, c] = d
            var += d * d
        r = one / np.sqrt(var * inv_c + eps)                        # 1 / sqrt(biased variance + eps)
        rstd[n] = r
        for c in range(C):
            xh = xhat[n, c] * r
            xhat[n, c] = xh
            out[n, c] = xh * w[c] + b[c]


@kernel
def _backward(dout, xhat, rstd, w, dx, dw, db, inv_c, zero):
    N, C = dout.shape
    for c in range(C):
        dw[c] = zero
        db[c] = zero
    for n in range(N):
        mean_g, mean_gx = zero, zero                                # means of g = dout * w and of g * xhat
        for c in range(C):
            d = dout[n, c]
            dw[c] += d * xhat[n, c]
            db[c] += d
            g = d * w[c]
            mean_g += g
            mean_gx += g * xhat[n, c]
        mean_g *= inv_c
        mean_gx *= inv_c
        r = rstd[n]
        for c in range(C):                                          # dx = rstd (g - mean(g) - xhat mean(g xhat))
            dx[n, c] = (dout[n, c] * w[c] - mean_g - xhat[n, c] * mean_gx) * r
