"""Softmax over the last axis, for the gates of mixture of heads and mixture of experts.

Derivation: docs/layers/softmax.md.
"""

from littlebaby.nn.backend import array_module


def softmax_forward(x):
    """x (..., K) -> (..., K), each row positive and summing to 1."""
    out = x - x.max(axis=-1, keepdims=True)                         # (..., K) for a stable exp
    array_module(x).exp(out, out=out)
    out /= out.sum(axis=-1, keepdims=True)
    cache = out  # the backward needs only the output
    return out, cache


def softmax_backward(dout, cache):
    """dout (..., K) -> dx (..., K) = s * (dout - sum(dout * s))."""
    s = cache
    return s * (dout - (dout * s).sum(axis=-1, keepdims=True))      # (..., K)
