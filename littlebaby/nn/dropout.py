"""Inverted dropout: zero each value with probability p and scale the survivors by 1 / (1 - p), so the
expected output equals the input and evaluation needs no rescaling.

Derivation: docs/layers/dropout.md.
"""

import math
import sys

import numpy as np

from littlebaby.nn.backend import array_module


def dropout_mask_simple(shape, p, rng):
    """(shape) bool, True for the values that survive: ``rng.random(shape, dtype=float32) >= p``.

    The mask is drawn in float32 whatever the model's dtype, so a float32 and a float64 model (and the PyTorch
    reference in the tests) see the same masks from the same seed. ``p`` is a Python float. Masks are drawn on
    the host (CPU) whatever the device, so a seed gives the same masks on the GPU too.
    """
    return rng.random(shape, dtype=np.float32) >= p                 # (...) bool


def dropout_mask(shape, p, rng):
    """The same mask as ``dropout_mask_simple``, bit for bit, leaving rng in the same state; about 1.5x faster.

    For PCG64 (NumPy's default), ``rng.random(dtype=float32)`` turns each 32-bit draw u into
    ``(u >> 8) * 2**-24``, taking the low then the high half of each 64-bit output, and compares it with
    float32(p). So ``u >= ceil(float32(p) * 2**24) << 8`` is the same test on the integers, and the raw 64-bit
    outputs viewed as pairs of uint32 (little-endian) are the same draws, without the float conversion. The one
    subtlety is the generator's buffered half-output, carried in and out through its state.
    """
    bits = rng.bit_generator
    if type(bits) is not np.random.PCG64 or sys.byteorder != "little":
        return dropout_mask_simple(shape, p, rng)
    n = math.prod(shape)
    state = bits.state
    buffered = [np.uint32(state["uinteger"])] if state["has_uint32"] and n else []
    rest = n - len(buffered)
    raw = bits.random_raw((rest + 1) // 2).view(np.uint32)          # (2 ceil(rest / 2),) low, high, low, ...
    draws = np.concatenate([buffered, raw[:rest]]) if buffered or rest % 2 else raw  # (n,) uint32
    state = bits.state
    if rest:
        state["has_uint32"], state["uinteger"] = rest % 2, int(raw[-1])
    elif buffered:
        state["has_uint32"] = 0
    bits.state = state
    threshold = math.ceil(float(np.float32(p)) * 2 ** 24)           # keep when (u >> 8) >= threshold
    if threshold >= 2 ** 24:
        return np.zeros(shape, dtype=bool)
    return (draws >= np.uint32(threshold << 8)).reshape(shape)      # (...) bool


def dropout_forward(x, p, rng):
    """x (...) -> (...). With ``p == 0`` or no rng (evaluation) it is the identity and caches nothing."""
    if p == 0.0 or rng is None:
        return x, None
    keep = array_module(x).asarray(dropout_mask(x.shape, p, rng))   # (...) bool, drawn on the host
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
