"""Token and learned position embeddings: a table lookup forward, a scatter-add backward.

Derivation: docs/layers/embedding.md.
"""

import numpy as np

from littlebaby.nn.backend import array_module


def token_embedding_forward(idx, wte):
    """idx (B, T) ints, wte (V, C) -> (B, T, C): row ``idx[b, t]`` of the table."""
    out = wte[idx]                                                  # (B, T, C)
    cache = (idx, wte.shape[0])  # backward needs only which rows were read, and how many rows there are
    return out, cache


def token_embedding_backward(dout, cache):
    """dout (B, T, C) -> dwte (V, C): each output row's gradient is added to the table row it was read from.

    Fast path: ``np.add.at`` scatters one row at a time, which is slow. Instead sort the flat ids so equal ids sit
    side by side, then ``np.add.reduceat`` sums each run of equal ids in one vectorized call.
    ``token_embedding_backward_simple`` is the plain twin; a test proves they agree. CuPy has no ``reduceat``,
    so on the GPU the twin runs (its scatter-add is one parallel kernel there).
    """
    idx, V = cache
    if array_module(dout) is not np:
        return token_embedding_backward_simple(dout, cache)
    C = dout.shape[-1]
    flat_idx = idx.reshape(-1)                                      # (B*T,)
    order = np.argsort(flat_idx, kind="stable")                     # (B*T,)
    sorted_idx = flat_idx[order]                                    # (B*T,)
    run_starts = np.flatnonzero(np.diff(sorted_idx, prepend=-1))    # (U,) first position of each distinct id
    dwte = np.zeros((V, C), dtype=dout.dtype)                       # (V, C)
    dwte[sorted_idx[run_starts]] = np.add.reduceat(dout.reshape(-1, C)[order], run_starts, axis=0)  # (U, C)
    return dwte


def token_embedding_backward_simple(dout, cache):
    """The plain twin of ``token_embedding_backward``: one unbuffered scatter-add."""
    idx, V = cache
    xp = array_module(dout)
    dwte = xp.zeros((V, dout.shape[-1]), dtype=dout.dtype)          # (V, C)
    xp.add.at(dwte, idx, dout)
    return dwte


def position_embedding_forward(T, wpe, start=0):
    """wpe (n_ctx, C) -> (T, C): rows ``start .. start+T-1``, broadcast over the batch when added to tokens."""
    out = wpe[start:start + T]                                      # (T, C)
    cache = (start, wpe.shape)
    return out, cache


def position_embedding_backward(dout, cache):
    """dout (B, T, C) -> dwpe (n_ctx, C): the batch shared each row, so its gradients sum over the batch."""
    start, wpe_shape = cache
    T = dout.shape[1]
    dwpe = array_module(dout).zeros(wpe_shape, dtype=dout.dtype)                    # (n_ctx, C)
    dwpe[start:start + T] = dout.sum(axis=0)                        # (T, C)
    return dwpe
