"""The KV cache for generation, and what the model sees once a sequence outgrows its context.

Generating token by token, every position's keys and values stay the same once computed, so each layer keeps
them in a buffer preallocated for n_ctx positions: the prompt is prefilled in one forward pass, then each new
token costs one position's worth of work instead of a pass over the whole context.

Past n_ctx. The model learned positions 0 .. n_ctx-1 only, and its keys depend on their positions, so a window
that slides by one token would have to recompute every key at every step. Instead the window jumps:

    while the sequence has at most n_ctx tokens, the model sees all of them, at positions 0 .. n-1;
    when token n_ctx + 1 arrives, the window restarts with the most recent ``keep`` = n_ctx // 2 tokens at
    positions 0 .. keep-1 (re-prefilled into the cache), and grows again by one token a step until full.

So the model always sees between n_ctx // 2 and n_ctx of the most recent tokens, always at positions it was
trained on, and the cached and uncached paths compute the same thing: ``window_start`` defines the window for
both. Each restart costs one prefill of n_ctx // 2 tokens every n_ctx // 2 steps, so a token still costs O(n_ctx).
"""

import numpy as np

from littlebaby.nn.backend import array_module, to_host


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
    """Per layer, keys and values (B, NH, n_ctx, hs) for positions 0 .. length-1."""

    def __init__(self, config, batch_size, xp=np):
        """Buffers for batch_size sequences, in the memory of array module xp (where the parameters are)."""
        hs = config.head_size // config.n_heads
        shape = (batch_size, config.n_heads, config.n_ctx, hs)
        self.keys = [xp.zeros(shape, config.dtype) for _ in range(config.n_layers)]    # L x (B, NH, n_ctx, hs)
        self.values = [xp.zeros(shape, config.dtype) for _ in range(config.n_layers)]  # L x (B, NH, n_ctx, hs)
        self.length = 0

    def slot(self, layer):
        """What layer ``layer``'s attention reads and writes: (keys, values, first free position)."""
        return self.keys[layer], self.values[layer], self.length

    def reset(self):
        self.length = 0


class CachedStepper:
    """Next-token logits for a batch of sequences, feeding the model only the new token at each step."""

    def __init__(self, gpt):
        self.gpt = gpt
        self.cache = None
        self.tokens = None      # (B, n) every token so far
        self.window = 0         # window_start of the tokens the cache holds

    def start(self, ids):
        """ids (B, T0) the prompts -> logits (B, V) for the token after them (one prefill pass)."""
        self.tokens = np.asarray(ids, dtype=np.int64).reshape(len(ids), -1)  # (B, T0)
        self.cache = KVCache(self.gpt.config, self.tokens.shape[0], array_module(self.gpt.params["wte"]))
        return self._prefill()

    def push(self, new_ids):
        """new_ids (B,) one token per sequence -> logits (B, V) for the token after it."""
        self.tokens = np.concatenate([self.tokens, np.asarray(new_ids, np.int64).reshape(-1, 1)], axis=1)  # (B, n)
        if window_start(self.tokens.shape[1], self.gpt.config.n_ctx) != self.window:
            return self._prefill()  # the window jumped: recompute the cache for its tokens
        return self._forward(self.tokens[:, -1:])

    def _prefill(self):
        self.window = window_start(self.tokens.shape[1], self.gpt.config.n_ctx)
        self.cache.reset()
        return self._forward(self.tokens[:, self.window:])

    def _forward(self, idx):
        from littlebaby.model import gpt_forward  # the model imports nothing from here; avoid a cycle
        logits, _ = gpt_forward(self.gpt.params, self.gpt.config, idx, kv_cache=self.cache)  # (B, T, V)
        return to_host(logits[:, -1])                               # (B, V) on the host, for sampling


class UncachedStepper(CachedStepper):
    """The plain twin: the same window, recomputed from scratch at every step (cost grows with the window)."""

    def push(self, new_ids):
        self.tokens = np.concatenate([self.tokens, np.asarray(new_ids, np.int64).reshape(-1, 1)], axis=1)  # (B, n)
        return self._prefill()

    def _forward(self, idx):
        return to_host(self.gpt.forward(idx)[:, -1])                # (B, V) on the host, for sampling
