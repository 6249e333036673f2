"""The KV cache for generation, and what the model sees once a sequence outgrows its context.

Generating token by token, every position's keys and values stay the same once computed, so each layer keeps
them in a buffer preallocated for n_ctx positions: the prompt is prefilled in one pass, then each new
token costs one position's worth of work instead of a pass over the whole context.

Past n_ctx. The model learned positions 0 .. n_ctx-1 only, and its keys depend on their positions, so a window
that slides by one token would have to recompute every key at every step. Instead the window jumps:

    while the sequence has at most n_ctx tokens, the model sees all of them, at positions 0 .. n-1;
    when token n_ctx + 1 arrives, the window restarts with the most recent ``keep`` = n_ctx // 2 tokens at
    positions 0 .. keep-1 (re-prefilled into the cache), and grows again by one token a step until full.

So the model always sees between n_ctx // 2 and n_ctx of the most recent tokens, always at positions it was
trained on, and the cached and uncached paths compute the same thing: ``window_start`` defines the window for
both. Each restart costs one prefill of n_ctx // 2 tokens every n_ctx // 2 steps, so a token still costs O(n_ctx).

Who fills the cache: ``gpt_forward`` with a ``kv_cache`` (the general layers, the plain twin), the NumPy decode
fast path (``littlebaby.decode``) and its compiled twin (``littlebaby.kernels.decode``). Each writes the new
positions' keys and values, then calls ``advance``; the steppers that drive them are in ``littlebaby.sampling``.
"""

import numpy as np


def window_start(n_tokens, n_ctx):
    """Index of the first of n_tokens tokens that the model sees (see the module docstring).

    >>> [window_start(n, 4) for n in range(1, 10)]
    [0, 0, 0, 0, 3, 3, 3, 6, 6]
    """
    keep = max(1, n_ctx // 2)
    if n_tokens <= n_ctx:
        return 0
    return n_tokens - keep - (n_tokens - n_ctx - 1) % (n_ctx - keep + 1)  # window lengths keep .. n_ctx


class KVCache:
    """Keys and values of positions 0 .. length-1, for every layer, in one buffer (L, B, 2, NH, n_ctx, hs).

    Layer i's keys and values are the two halves of ``buffers[i]`` (B, 2, NH, n_ctx, hs), so that a decode step
    writes both with one assignment; the whole buffer is one array, so that a compiled step takes it in one
    argument."""

    def __init__(self, config, batch_size, xp=np):
        """Buffers for batch_size sequences, in the memory of array module xp (where the parameters are)."""
        hs = config.head_size // config.n_heads
        shape = (config.n_layers, batch_size, 2, config.n_heads, config.n_ctx, hs)
        self.buffer = xp.zeros(shape, config.dtype)                 # (L, B, 2, NH, n_ctx, hs)
        self.buffers = [self.buffer[i] for i in range(config.n_layers)]  # L x (B, 2, NH, n_ctx, hs) views
        self.keys = [buffer[:, 0] for buffer in self.buffers]      # L x (B, NH, n_ctx, hs) views
        self.values = [buffer[:, 1] for buffer in self.buffers]    # L x (B, NH, n_ctx, hs) views
        self.n_ctx = config.n_ctx
        self.length = 0

    def slot(self, layer):
        """What layer ``layer``'s attention reads and writes: (keys, values, first free position)."""
        return self.keys[layer], self.values[layer], self.length

    def advance(self, n):
        """Count the next n positions as cached, once every layer has written their keys and values."""
        if not 0 <= self.length + n <= self.n_ctx:
            raise ValueError(f"the KV cache holds {self.n_ctx} positions; {self.length} + {n} do not fit")
        self.length += n

    def reset(self):
        self.length = 0
