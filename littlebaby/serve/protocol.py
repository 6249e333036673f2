"""What a request of `baby serve` may hold, and how an answer is written: every check is a 4xx naming the field.

Numbers go out as the shortest decimals that read back as the same float32 (attention weights) or float64
(probabilities) values, so a client, and the tests, get exactly what the model computed.
"""

import json
import math
import secrets
from importlib import resources

import numpy as np
from starlette.requests import Request
from starlette.responses import Response

from littlebaby.errors import BabyError
from littlebaby.sampling import check_settings, encode_prompt, start_ids
from littlebaby.serve import inspect


class HTTPError(Exception):
    """An answer other than 200, with the one line the page shows."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


# --- requests ------------------------------------------------------------------------------------------------

async def read_body(request: Request, limits, keys) -> dict:
    """The request's JSON object, at most limits.max_body_bytes, holding only ``keys``."""
    size = 0
    chunks = []
    async for chunk in request.stream():
        size += len(chunk)
        if size > limits.max_body_bytes:
            raise HTTPError(413, f"the request is over {limits.max_body_bytes:,} bytes")
        chunks.append(chunk)
    try:
        body = json.loads(b"".join(chunks) or b"{}")
    except (ValueError, RecursionError):
        raise HTTPError(400, "the request body must be a JSON object") from None
    if not isinstance(body, dict):
        raise HTTPError(400, "the request body must be a JSON object")
    unknown = sorted(set(body) - set(keys))
    if unknown:
        raise HTTPError(400, f"unknown field {unknown[0]!r}; known: {', '.join(keys)}")
    return body


def is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_prompt(prompt, limits):
    if not isinstance(prompt, str):
        raise HTTPError(400, "prompt must be a string")
    if len(prompt) > limits.max_prompt_chars:
        raise HTTPError(413, f"the prompt has {len(prompt):,} characters; at most {limits.max_prompt_chars:,}")


def sampling_settings(body) -> dict:
    """temperature (default 1), top_k, top_p (default none) from a request, checked as `baby generate` does."""
    temperature, top_k, top_p = body.get("temperature", 1.0), body.get("top_k"), body.get("top_p")
    if not is_number(temperature) or temperature < 0:
        raise HTTPError(400, "temperature must be 0 (greedy) or a positive number")
    if top_k is not None and (not is_int(top_k) or top_k < 1):
        raise HTTPError(400, "top_k must be empty or a whole number of at least 1")
    if top_p is not None and (not is_number(top_p) or not 0 < top_p <= 1):
        raise HTTPError(400, "top_p must be empty or a number in (0, 1]")
    return {"temperature": float(temperature), "top_k": top_k, "top_p": None if top_p is None else float(top_p)}


def generation_settings(body, limits) -> dict:
    """A playground request, checked; a missing seed is drawn here so that the result can be reproduced."""
    prompt, max_tokens, seed = body.get("prompt", ""), body.get("max_tokens", 200), body.get("seed")
    check_prompt(prompt, limits)
    if not is_int(max_tokens) or not 1 <= max_tokens <= limits.max_tokens:
        raise HTTPError(400, f"max_tokens must be a whole number from 1 to {limits.max_tokens:,}")
    if seed is None:
        seed = secrets.randbelow(2 ** 31)
    elif not is_int(seed) or not 0 <= seed < 2 ** 63:
        raise HTTPError(400, "seed must be empty or a whole number in [0, 2**63)")
    settings = {"prompt": prompt, "max_tokens": max_tokens, "seed": seed, **sampling_settings(body)}
    try:
        check_settings(max_tokens, settings["temperature"], settings["top_k"], settings["top_p"])
    except BabyError as e:
        raise HTTPError(400, str(e)) from None
    return settings


def prompt_ids(run, prompt) -> list[int]:
    """What generation feeds the model for ``prompt``: its ids, or the start token when it is empty."""
    try:
        return encode_prompt(run.tokenizer, prompt) if prompt else start_ids(run.tokenizer)
    except BabyError as e:
        raise HTTPError(400, str(e)) from None


def token_ids(ids, run, limits) -> list[int]:
    most = limits.max_prompt_chars + limits.max_tokens + 1
    if not isinstance(ids, list) or not 2 <= len(ids) <= most or not all(is_int(i) for i in ids):
        raise HTTPError(400, f"ids must be a list of 2 to {most:,} token ids")
    if not all(0 <= i < run.gpt.config.vocab_size for i in ids):
        raise HTTPError(400, f"ids must be token ids of this run, 0 .. {run.gpt.config.vocab_size - 1}")
    return ids


# --- answers -------------------------------------------------------------------------------------------------

def static_text(name) -> str:
    return resources.files("littlebaby.serve").joinpath("static", name).read_text(encoding="utf-8")


def jsonable(value):
    """value with NumPy scalars made Python numbers and NaN / infinity made null (JSON has neither)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def json_response(data, status=200) -> Response:
    return Response(json.dumps(jsonable(data), allow_nan=False), status_code=status,
                    media_type="application/json", headers={"Cache-Control": "no-store"})


def floats(array):
    """A float array as nested lists of the shortest decimals that read back as the same float32 values."""
    array = np.asarray(array, dtype=np.float32)
    return np.vectorize(float, otypes=[object])(array.astype(str)).tolist()


def event(name, data) -> str:
    return f"event: {name}\ndata: {json.dumps(jsonable(data), allow_nan=False)}\n\n"


def token_text(tokenizer, token) -> str:
    return tokenizer.decode([token])


def token_list(tokenizer, ids) -> list[dict]:
    return [{"id": int(i), "text": token_text(tokenizer, int(i))} for i in ids]


def distribution_json(probs, token, tokenizer, k) -> dict:
    return {"top": [{"id": int(i), "text": token_text(tokenizer, int(i)), "p": float(probs[i])}
                    for i in inspect.ranked(probs, k)],
            "p_token": float(probs[token]), "rank": inspect.rank_of(probs, token)}


def explanation_json(found, run, ids, limits) -> dict:
    tok = run.tokenizer
    lens_names = ["embeddings"] + [f"block {i}" for i in range(run.gpt.config.n_layers)]
    return {"position": found.position, "token": {"id": found.token, "text": token_text(tok, found.token)},
            "window": found.window, "context": token_list(tok, ids[found.window:found.position]),
            "sampled": distribution_json(found.sampled, found.token, tok, limits.top_k_shown),
            "raw": distribution_json(found.raw, found.token, tok, limits.top_k_shown),
            "attention": floats(found.attention),
            "lens": [{"layer": name, **distribution_json(p, found.token, tok, limits.lens_top_k)}
                     for name, p in zip(lens_names, found.lens)]}


async def http_error(request, error: HTTPError):
    return json_response({"error": str(error)}, error.status)


async def not_found(request, error):
    return json_response({"error": f"not found: {request.url.path[:200]}"}, 404)


async def not_allowed(request, error):
    return json_response({"error": f"{request.method} is not allowed here"}, 405)
