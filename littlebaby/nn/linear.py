"""Linear layer ``x @ w + b`` with w stored (in, out).

Derivation: docs/layers/linear.md.
"""


def linear_forward(x, w, b):
    """x (..., IN), w (IN, OUT), b (OUT,) -> (..., OUT).

    The leading axes are flattened first so BLAS sees one large (N, IN) @ (IN, OUT) product instead of a stack
    of small ones.
    """
    out = x.reshape(-1, x.shape[-1]) @ w                            # (N, OUT), N = prod(leading axes)
    out += b                                                        # in place: no second (N, OUT) array
    out = out.reshape(*x.shape[:-1], w.shape[1])                    # (..., OUT)
    cache = (x, w)  # dw needs the input, dx needs the weight
    return out, cache


def linear_backward(dout, cache):
    """dout (..., OUT) -> dx (..., IN), dw (IN, OUT), db (OUT,)."""
    x, w = cache
    dout_2d = dout.reshape(-1, w.shape[1])                          # (N, OUT)
    dx = (dout_2d @ w.T).reshape(x.shape)                           # (..., IN)
    dw = x.reshape(-1, w.shape[0]).T @ dout_2d                      # (IN, OUT)
    db = dout_2d.sum(axis=0)                                        # (OUT,)
    return dx, dw, db
