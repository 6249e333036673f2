"""LayerNorm over the channel axis: normalise each position to zero mean and unit variance, then scale and shift.

Derivation: docs/layers/layernorm.md.
"""

from littlebaby.nn.backend import array_module, compiled_twin

EPS = 1e-5


def layernorm_forward(x, w, b):
    """x (..., C), w (C,), b (C,) -> (..., C). ``out = (x - mean) / sqrt(var + eps) * w + b``.

    Fast path: the row means and variances are einsum reductions (no (..., C) temporary for the squares, and
    several times faster than ``.mean(axis=-1)`` on short rows), and xhat is built in place.
    """
    twin = compiled_twin("layernorm_forward", x)                    # littlebaby/kernels/layernorm.py, when in use
    if twin is not None:
        return twin(x, w, b)
    xp = array_module(x)
    C = x.shape[-1]
    mean = xp.einsum("...c->...", x)[..., None] * (1.0 / C)        # (..., 1)
    xhat = x - mean                                                 # (..., C) centred, normalised below
    var = xp.einsum("...c,...c->...", xhat, xhat)[..., None] * (1.0 / C)  # (..., 1) biased, as in PyTorch
    rstd = 1.0 / xp.sqrt(var + EPS)                                 # (..., 1)
    xhat *= rstd
    out = xhat * w                                                  # (..., C)
    out += b
    cache = (xhat, rstd, w)  # backward is written in terms of the normalised input and 1/std alone
    return out, cache


def layernorm_backward(dout, cache):
    """dout (..., C) -> dx (..., C), dw (C,), db (C,).

    With g = dout * w (the gradient reaching xhat), the mean and the variance both depend on every x, which
    gives ``dx = rstd * (g - mean(g) - xhat * mean(g * xhat))``, assembled in place from its last term.
    """
    twin = compiled_twin("layernorm_backward", dout)
    if twin is not None:
        return twin(dout, cache)
    xhat, rstd, w = cache
    xp = array_module(dout)
    C = xhat.shape[-1]
    dout_2d = dout.reshape(-1, C)                                   # (N, C)
    dw = xp.einsum("nc,nc->c", dout_2d, xhat.reshape(-1, C))        # (C,)
    db = xp.einsum("nc->c", dout_2d)                                # (C,)
    g = dout * w                                                    # (..., C)
    mean_g = xp.einsum("...c->...", g)[..., None] * (1.0 / C)       # (..., 1)
    mean_gx = xp.einsum("...c,...c->...", g, xhat)[..., None] * (1.0 / C)  # (..., 1)
    dx = xhat * -mean_gx                                            # (..., C)
    dx += g
    dx -= mean_g
    dx *= rstd
    return dx, dw, db
