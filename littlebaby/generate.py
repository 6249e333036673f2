"""Sampling text from a trained GPT: temperature, top-k, top-p, streamed one token at a time.

The loop asks a *stepper* for the next-token logits. ``FullContextStepper`` reruns the model on the last
n_ctx tokens at every step (cost grows with the context); a KV-cached stepper, which feeds only the new token,
slots into ``make_stepper`` with the same two methods.
"""

import math

import numpy as np

from littlebaby.errors import BabyError


class FullContextStepper:
    """Next-token logits by a full forward pass over the context, cropped to the model's n_ctx."""

    def __init__(self, gpt):
        self.gpt = gpt
        self.context = []

    def start(self, ids) -> np.ndarray:
        """Take the prompt's ids; return the logits (V,) for the token after them."""
        self.context = [int(i) for i in ids]
        return self._logits()

    def push(self, token_id) -> np.ndarray:
        """Append one sampled id; return the logits (V,) for the token after it."""
        self.context.append(int(token_id))
        return self._logits()

    def _logits(self):
        window = np.array(self.context[-self.gpt.config.n_ctx:], dtype=np.int64)[None, :]  # (1, T)
        return self.gpt.forward(window)[0, -1]                                             # (V,)


def make_stepper(gpt, use_cache=True):
    """The stepper for generation. ``use_cache`` asks for a KV cache; until the model offers one, both
    choices recompute the context (``--no-cache`` is accepted and gives the same text)."""
    return FullContextStepper(gpt)


def check_settings(max_tokens, temperature, top_k, top_p):
    if max_tokens < 0:
        raise BabyError(f"--max-tokens must be 0 or more, got {max_tokens}")
    if not (temperature >= 0 and math.isfinite(temperature)):
        raise BabyError(f"--temperature must be 0 (greedy) or a positive number, got {temperature}")
    if top_k is not None and top_k < 1:
        raise BabyError(f"--top-k must be at least 1, got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise BabyError(f"--top-p must be in (0, 1], got {top_p}")


def sample_next(logits, temperature=1.0, top_k=None, top_p=None, rng=None) -> int:
    """One token id from logits (V,). temperature 0 is greedy; top_k keeps the k likeliest (k clamped to V);
    top_p keeps the smallest set of likeliest tokens whose probability reaches p."""
    if temperature == 0:
        return int(np.argmax(logits))
    scaled = np.asarray(logits, dtype=np.float64) / temperature                 # (V,)
    if top_k is not None and top_k < scaled.size:
        kth_largest = np.partition(scaled, -top_k)[-top_k]
        scaled = np.where(scaled < kth_largest, -np.inf, scaled)               # (V,)
    probs = np.exp(scaled - scaled.max())                                      # (V,)
    probs /= probs.sum()
    if top_p is not None and top_p < 1:
        order = np.argsort(-probs, kind="stable")                             # (V,) likeliest first
        before = np.cumsum(probs[order]) - probs[order]                       # (V,) mass of the likelier ones
        dropped = order[before >= top_p]                                      # the first token is always kept
        probs[dropped] = 0.0
        probs /= probs.sum()
    cdf = np.cumsum(probs)                                                     # (V,)
    return int(min(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"), probs.size - 1))


def sample_ids(gpt, prompt_ids, max_tokens, temperature=1.0, top_k=None, top_p=None, rng=None, use_cache=True):
    """Yield max_tokens new ids after prompt_ids (at least one id), one at a time."""
    stepper = make_stepper(gpt, use_cache)
    logits = stepper.start(prompt_ids)                                         # (V,)
    for i in range(max_tokens):
        token = sample_next(logits, temperature, top_k, top_p, rng)
        yield token
        if i + 1 < max_tokens:
            logits = stepper.push(token)                                       # (V,)


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


def sample_text(gpt, tokenizer, prompt, max_tokens, temperature=1.0, top_k=None, top_p=None, rng=None,
                use_cache=True, stream=None) -> str:
    """prompt + max_tokens sampled tokens as text; each piece is also written to ``stream`` as it arrives."""
    check_settings(max_tokens, temperature, top_k, top_p)
    rng = np.random.default_rng() if rng is None else rng
    ids = encode_prompt(tokenizer, prompt) if prompt else start_ids(tokenizer)
    decoder = tokenizer.stream_decoder()
    pieces = [prompt]
    if stream is not None:
        stream.write(prompt)
    for token in sample_ids(gpt, ids, max_tokens, temperature, top_k, top_p, rng, use_cache):
        pieces.append(decoder.push(token))
        if stream is not None and pieces[-1]:
            stream.write(pieces[-1])
            stream.flush()
    pieces.append(decoder.flush())
    if stream is not None:
        stream.write(pieces[-1])
        stream.flush()
    return "".join(pieces)
