"""Sampling text from a trained GPT: temperature, top-k, top-p, a batch of samples at once, streamed.

The loop asks a *stepper* for the next-token logits of every sequence in the batch: ``CachedStepper`` prefills
the prompt once and then feeds the model one token a step through the KV cache (littlebaby/kvcache.py);
``UncachedStepper`` (``--no-cache``) recomputes the same window from scratch every step. Both show the model the
same tokens, so they give the same text. How a cached step computes is a *decode*, chosen in ``make_stepper``:
the general forward (``GeneralDecode``, the plain twin, and what runs on a GPU), the NumPy fast path
(littlebaby/decode.py) or the same step compiled by numba (littlebaby/kernels/decode.py).
"""

import math
import sys

import numpy as np

from littlebaby.decode import NumpyDecode
from littlebaby.errors import BabyError
from littlebaby.kernels import resolve as resolve_kernels
from littlebaby.kvcache import KVCache, window_start
from littlebaby.model import gpt_forward
from littlebaby.nn.backend import array_module, to_host
from littlebaby.nn.softmax import softmax_inplace


def make_stepper(gpt, use_cache=True, kernels="auto"):
    """The stepper for generation, and for a cached one how it computes; decided here and nowhere else:

        use_cache=False        UncachedStepper, the window recomputed at every step (O(context^2) per token)
        parameters on a GPU    the general forward with the KV cache (what the fast paths save is NumPy's cost
                               per call, which a GPU does not pay the same way)
        numba kernels          the whole step compiled into one call, for the variants the kernel covers
        otherwise              the NumPy fast path

    ``kernels`` as ``littlebaby.kernels.resolve`` reads it: "auto" uses numba when it imports and compiles and
    says in one line on stderr when it falls back; "numba" without numba is an error."""
    if not use_cache:
        return UncachedStepper(gpt)
    if array_module(gpt.params["wte"]) is not np:
        return CachedStepper(gpt, GeneralDecode)
    return CachedStepper(gpt, host_decode(gpt.config, kernels))


def host_decode(config, kernels="auto"):
    """The decode for parameters on the host: the numba kernel where it covers the variant and compiles, else
    the NumPy fast path, with one line saying why when numba was wanted but cannot run."""
    chosen, note = resolve_kernels(kernels)
    if chosen == "numba":
        from littlebaby.kernels import decode as compiled  # imports numba, known by now to import
        if not compiled.supports(config):
            return NumpyDecode
        reason = compiled.compile_error(config.dtype)
        if reason is None:
            return compiled.NumbaDecode
        note = f"the numba decode kernel did not compile, generating with NumPy: {reason}"
    if note is not None:
        say_once(note)
    return NumpyDecode


SAID = set()


def say_once(line):
    """Print a note on stderr, once per process (a fallback is worth one line, not one per generation)."""
    if line not in SAID:
        SAID.add(line)
        print(line, file=sys.stderr)


class GeneralDecode:
    """The general forward as a cached step: idx (B, T) new tokens -> logits (B, V) after the last of them,
    through ``gpt_forward`` with the KV cache, on whatever device holds the parameters. The plain twin of the
    fast paths (littlebaby/decode.py), which compute the same logits."""

    def __init__(self, params, config):
        self.params, self.config = params, config

    def __call__(self, idx, kv_cache):
        logits, _ = gpt_forward(self.params, self.config, idx, kv_cache=kv_cache)  # (B, T, V)
        return to_host(logits[:, -1])                               # (B, V) on the host, for sampling


class CachedStepper:
    """Next-token logits for a batch of sequences, feeding the model only the new token at each step.

    ``decode`` is how new tokens become logits: made from (params, config) when a generation starts, then called
    with (idx (B, T), kv_cache) -> logits (B, V), writing the tokens' keys and values and advancing the cache.
    ``GeneralDecode`` by default; ``make_stepper`` picks the fastest that runs."""

    def __init__(self, gpt, decode=GeneralDecode):
        self.gpt = gpt
        self.make_decode = decode
        self.decode = None      # made by start: the parameters are read once per generation
        self.cache = None
        self.tokens = None      # (B, n) every token so far
        self.window = 0         # window_start of the tokens the cache holds

    def start(self, ids):
        """ids (B, T0) the prompts -> logits (B, V) for the token after them (one prefill pass)."""
        self.tokens = as_batch(ids)                                 # (B, T0)
        self.cache = KVCache(self.gpt.config, self.tokens.shape[0], array_module(self.gpt.params["wte"]))
        self.decode = self.make_decode(self.gpt.params, self.gpt.config)
        return self._prefill()

    def push(self, new_ids):
        """new_ids (B,) one token per sequence -> logits (B, V) for the token after it."""
        self.tokens = appended(self.tokens, new_ids)                # (B, n)
        if window_start(self.tokens.shape[1], self.gpt.config.n_ctx) != self.window:
            return self._prefill()  # the window jumped: recompute the cache for its tokens
        return self.decode(self.tokens[:, -1:], self.cache)         # (B, V)

    def _prefill(self):
        self.window = window_start(self.tokens.shape[1], self.gpt.config.n_ctx)
        self.cache.reset()
        return self.decode(self.tokens[:, self.window:], self.cache)  # (B, V)


class UncachedStepper:
    """The plain twin: the same window, recomputed from scratch at every step (cost grows with the window)."""

    def __init__(self, gpt):
        self.gpt = gpt
        self.tokens = None      # (B, n) every token so far

    def start(self, ids):
        self.tokens = as_batch(ids)                                 # (B, T0)
        return self._logits()

    def push(self, new_ids):
        self.tokens = appended(self.tokens, new_ids)                # (B, n)
        return self._logits()

    def _logits(self):
        window = self.tokens[:, window_start(self.tokens.shape[1], self.gpt.config.n_ctx):]  # (B, <= n_ctx)
        return to_host(self.gpt.forward(window)[:, -1])             # (B, V) on the host, for sampling


def as_batch(ids):
    """Prompts as token ids (B, T0) int64 on the host."""
    ids = np.asarray(ids, dtype=np.int64)
    return ids.reshape(len(ids), -1)                                # (B, T0)


def appended(tokens, new_ids):
    """tokens (B, n), new_ids (B,) -> (B, n + 1)."""
    return np.concatenate([tokens, np.asarray(new_ids, np.int64).reshape(-1, 1)], axis=1)  # (B, n + 1)


def check_settings(max_tokens, temperature, top_k, top_p):
    if max_tokens < 0:
        raise BabyError(f"`max_tokens` must be 0 or more, got {max_tokens}")
    if not (temperature >= 0 and math.isfinite(temperature)):
        raise BabyError(f"`temperature` must be 0 (greedy) or a positive number, got {temperature}")
    if top_k is not None and top_k < 1:
        raise BabyError(f"`top_k` must be at least 1, got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise BabyError(f"`top_p` must be in (0, 1], got {top_p}")


def sample_next(logits, temperature=1.0, top_k=None, top_p=None, rng=None):
    """Token ids from logits (B, V) -> (B,), or one id (an int) from logits (V,).

    temperature 0 is greedy; top_k keeps the k likeliest (k clamped to V); top_p keeps the smallest set of
    likeliest tokens whose probability reaches p. One uniform draw per row.
    """
    if np.ndim(logits) == 1:
        return int(sample_next(np.asarray(logits)[None], temperature, top_k, top_p, rng)[0])
    if temperature == 0:
        return np.argmax(logits, axis=-1)                                      # (B,)
    probs = sampling_weights(logits, temperature, top_k, top_p)               # (B, V)
    B, V = probs.shape
    # the draw is scaled by each row's total: after top_p the rows no longer sum to 1
    cdf = probs.cumsum(axis=-1)                                                # (B, V)
    u = rng.random(B)[:, None] * cdf[:, -1:]                                   # (B, 1)
    return np.minimum((cdf <= u).sum(axis=-1), V - 1)                          # (B,) first index with cdf > u


def sampling_weights(logits, temperature, top_k=None, top_p=None):
    """logits (B, V), temperature > 0 -> (B, V) float64: the distribution the next token is drawn from, its
    dropped tokens at 0. Divide by the temperature, keep the top_k largest, softmax, then keep the smallest set of
    likeliest tokens whose mass reaches top_p (the rest set to 0, so the rows need not sum to 1 any more)."""
    scaled = np.array(logits, dtype=np.float64)                                # (B, V) a copy, softmaxed in place
    if temperature != 1.0:
        scaled /= temperature
    V = scaled.shape[-1]
    if top_k is not None and top_k < V:
        kth_largest = np.partition(scaled, -top_k, axis=-1)[:, -top_k, None]  # (B, 1)
        scaled = np.where(scaled < kth_largest, -np.inf, scaled)              # (B, V)
    probs = softmax_inplace(scaled)                                            # (B, V) rows sum to 1
    if top_p is not None and top_p < 1:
        order = np.argsort(-probs, axis=-1, kind="stable")                    # (B, V) likeliest first
        sorted_probs = np.take_along_axis(probs, order, axis=-1)               # (B, V)
        before = np.cumsum(sorted_probs, axis=-1) - sorted_probs               # (B, V) mass of the likelier ones
        dropped = np.zeros_like(probs, dtype=bool)                             # (B, V)
        np.put_along_axis(dropped, order, before >= top_p, axis=-1)           # the likeliest is always kept
        probs[dropped] = 0.0
    return probs


def sample_ids(gpt, prompt_ids, max_tokens, temperature=1.0, top_k=None, top_p=None, rng=None, use_cache=True,
               num_samples=1, kernels="auto"):
    """Yield max_tokens steps of new ids (num_samples,), continuing prompt_ids (at least one id) in a batch."""
    stepper = make_stepper(gpt, use_cache, kernels)
    prompts = np.tile(np.asarray(prompt_ids, dtype=np.int64), (num_samples, 1))  # (N, T0)
    logits = stepper.start(prompts)                                            # (N, V)
    for i in range(max_tokens):
        tokens = sample_next(logits, temperature, top_k, top_p, rng)           # (N,)
        yield tokens
        if i + 1 < max_tokens:
            logits = stepper.push(tokens)                                      # (N, V)


def start_ids(tokenizer) -> list[int]:
    """What an empty prompt starts from: a newline (the start of a speech) if the vocabulary has one, else id 0."""
    try:
        ids = [int(i) for i in tokenizer.encode("\n")]
    except BabyError:
        ids = []
    return ids or [0]


def encode_prompt(tokenizer, prompt) -> list[int]:
    try:
        return [int(i) for i in tokenizer.encode(prompt)]
    except BabyError as e:
        raise BabyError(f"the prompt cannot be encoded: {e}") from None


def sample_texts(gpt, tokenizer, prompt, max_tokens, temperature=1.0, top_k=None, top_p=None, rng=None,
                 use_cache=True, num_samples=1, stream=None, kernels="auto") -> list[str]:
    """num_samples continuations of prompt, generated as one batch; each is prompt + max_tokens tokens as text.
    The first sample is also written to ``stream`` piece by piece as it is produced."""
    check_settings(max_tokens, temperature, top_k, top_p)
    if num_samples < 1:
        raise BabyError(f"`num_samples` must be at least 1, got {num_samples}")
    rng = np.random.default_rng() if rng is None else rng
    ids = encode_prompt(tokenizer, prompt) if prompt else start_ids(tokenizer)
    decoders = [tokenizer.stream_decoder() for _ in range(num_samples)]
    pieces = [[prompt] for _ in range(num_samples)]

    def write(text):
        if stream is not None and text:
            stream.write(text)
            stream.flush()

    write(prompt)
    for tokens in sample_ids(gpt, ids, max_tokens, temperature, top_k, top_p, rng, use_cache, num_samples,
                             kernels):
        for sample, decoder, token in zip(pieces, decoders, tokens):
            sample.append(decoder.push(int(token)))
        write(pieces[0][-1])
    for sample, decoder in zip(pieces, decoders):
        sample.append(decoder.flush())
    write(pieces[0][-1])
    return ["".join(sample) for sample in pieces]


def sample_text(gpt, tokenizer, prompt, max_tokens, temperature=1.0, top_k=None, top_p=None, rng=None,
                use_cache=True, stream=None, kernels="auto") -> str:
    """prompt + max_tokens sampled tokens as text; each piece is also written to ``stream`` as it arrives."""
    return sample_texts(gpt, tokenizer, prompt, max_tokens, temperature, top_k, top_p, rng, use_cache, 1, stream,
                        kernels)[0]
