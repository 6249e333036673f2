"""The element-wise middle of causal attention, fused: the twin of ``nn.attention.causal_softmax_forward`` and
``causal_softmax_backward``.

Attention's four products (q k^T, weights v and their gradients) stay BLAS products, as in the NumPy layer;
what lies between them is, in NumPy, a chain of passes over every (T, S) array: the scale, the causal bias, the
row maximum, exp, the row sums, the normalisation and the dropout mask forward; the mask, the row dot
products, the product with the weights and the scale backward. Here each row of scores is read once and
written once each way, while it sits in the first-level cache, and the keys a query may not see are written
as 0 without computing anything for them.
"""

import numpy as np

from littlebaby.kernels.jit import constants, exp, kernel

NO_MASK = np.ones((1, 1, 1, 1), dtype=np.bool_)   # stands for "no dropout": numba compiles one signature


def causal_softmax_forward(att, scale, keep=None):
    """att (B, NH, Tq, s1) scores -> the weights (att, or att * keep), att overwritten with the causal softmax
    of att * scale."""
    weights = att if keep is None else np.empty_like(att)           # (B, NH, Tq, s1)
    _forward(att, *constants(att.dtype, scale, 0.0, 1.0), NO_MASK if keep is None else keep, keep is not None,
             weights)
    return weights


def causal_softmax_backward(datt, att, keep, scale):
    """datt (B, NH, Tq, s1), att -> (d scores, in datt's memory; the weights att or att * keep)."""
    weights = att if keep is None else np.empty_like(att)           # (B, NH, Tq, s1)
    _backward(datt, att, NO_MASK if keep is None else keep, keep is not None, *constants(att.dtype, scale, 0.0),
              weights)
    return datt, weights


@kernel
def _forward(att, scale, zero, one, keep, has_keep, weights):
    B, NH, Tq, S = att.shape
    for b in range(B):
        for h in range(NH):
            for i in range(Tq):
                n = S - Tq + i + 1                                  # query i sees keys 0 .. n-1
                top = att[b, h, i, 0]
                for j in range(1, n):
                    top = att[b, h, i, j] if att[b, h, i, j] > top else top
                top *= scale
                total = zero
                for j in range(n):
                    e = exp(att[b, h, i, j] * scale - top)
                    att[b, h, i, j] = e
                    total += e
                inverse = one / total
                for j in range(n):
                    att[b, h, i, j] *= inverse
                for j in range(n, S):                               # the keys it may not see weigh 0
                    att[b, h, i, j] = zero
                if has_keep:   # a product with the mask as 0 / 1, not a branch: the loop vectorizes
                    for j in range(S):
                        weights[b, h, i, j] = att[b, h, i, j] * keep[b, h, i, j]


@kernel
def _backward(datt, att, keep, has_keep, scale, zero, weights):
    B, NH, Tq, S = att.shape
    for b in range(B):
        for h in range(NH):
            for i in range(Tq):
                if has_keep:   # products with the mask as 0 / 1, not branches: the loop vectorizes
                    for j in range(S):
                        kept = keep[b, h, i, j]
                        weights[b, h, i, j] = att[b, h, i, j] * kept
                        datt[b, h, i, j] = datt[b, h, i, j] * kept
                dot = zero
                for j in range(S):
                    dot += datt[b, h, i, j] * att[b, h, i, j]
                for j in range(S):
                    datt[b, h, i, j] = att[b, h, i, j] * (datt[b, h, i, j] - dot) * scale
