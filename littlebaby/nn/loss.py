"""Softmax cross-entropy with its fused gradient: d loss / d logits = (softmax - onehot) / N.

Derivation: docs/layers/cross_entropy.md.
"""

from littlebaby.nn.backend import array_module
from littlebaby.nn.softmax import log_softmax


def cross_entropy_forward(logits, targets):
    """logits (B, T, V), targets (B, T) ints -> mean loss over the B*T positions (a Python float)."""
    xp = array_module(logits)
    V = logits.shape[-1]
    log_probs, probs = log_softmax(logits.reshape(-1, V))           # (N, V) each, N = B*T
    flat_targets = xp.asarray(targets).reshape(-1)                  # (N,) on the logits' device
    log_likelihood = log_probs[xp.arange(log_probs.shape[0]), flat_targets]  # (N,) log softmax at the target
    loss = -float(log_likelihood.mean())
    cache = (probs, flat_targets, logits.shape)  # the fused gradient needs only the softmax and the targets
    return loss, cache


def cross_entropy_backward(cache):
    """-> dlogits (B, T, V) for a loss of 1 (the mean over positions)."""
    probs, flat_targets, shape = cache
    N = probs.shape[0]
    dlogits = probs.copy()                                          # (N, V)
    dlogits[array_module(probs).arange(N), flat_targets] -= 1.0
    dlogits *= 1.0 / N
    return dlogits.reshape(shape)                                   # (B, T, V)
