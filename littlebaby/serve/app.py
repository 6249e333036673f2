"""The web app of `baby serve`: the page, the runs of one --out folder, streamed generation, the inspections.

    GET  /                               the page (static/index.html); /static/app.js, /static/style.css
    GET  /api/runs                       every run of --out, as `baby runs` lists them, with its eval losses
    GET  /api/runs/RUN                   one run: its record (config, data) and every loss of its report
    POST /api/runs/RUN/generate          {prompt, max_tokens, temperature, top_k, top_p, seed} -> server-sent
                                         events: start (the context tokens), token (one per step), done
    POST /api/runs/RUN/inspect           {ids, position, temperature, top_k, top_p} -> why ids[position] came out
    POST /api/runs/RUN/attention         {prompt} -> the (T, T) attention map of every layer and head
    GET  /api/status                     generations running and the limits

RUN is what `baby generate` takes (a GUID, a unique prefix, ``last``); anything else is a 404, never a path.
Serving reads the run folder and writes nothing there but the completion files `baby generate` writes.
"""

import dataclasses
import json
import math
import pathlib
import secrets
import threading
import time
from importlib import resources

import anyio
import numpy as np
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from littlebaby import api
from littlebaby.errors import BabyError
from littlebaby.generate import check_settings, encode_prompt, sample_ids, start_ids
from littlebaby.kvcache import window_start
from littlebaby.runs import RUN_NAME, RunPaths, load_record, read_json, resolve_run, run_ids
from littlebaby.serve import inspect

STATIC = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}  # all it serves


@dataclasses.dataclass(frozen=True)
class Limits:
    """What one request may ask for; beyond it the answer is a 4xx that says the limit."""
    max_prompt_chars: int = 4000      # characters of a prompt
    max_tokens: int = 2000            # tokens one generation may ask for
    max_generations: int = 20         # generations streaming at once (each one is a thread step per token)
    max_body_bytes: int = 1_000_000   # bytes of a request body
    top_k_shown: int = 10             # entries of each distribution in an inspection
    lens_top_k: int = 5               # predictions per layer in the logit lens


class HTTPError(Exception):
    """An answer other than 200, with the one line the page shows."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


class Runs:
    """The runs of one --out folder; loaded models are kept (a few) until their weights file changes."""

    KEEP = 4

    def __init__(self, out):
        self.out = pathlib.Path(out)
        self.lock = threading.Lock()
        self.loaded = {}              # guid -> (weights file's (mtime, size), api.Run)

    def resolve(self, name) -> str:
        if not isinstance(name, str) or not (name == "last" or RUN_NAME.fullmatch(name)):
            raise HTTPError(404, f"no run named {name[:80]!r}: give a GUID, a unique prefix of one, or last")
        try:
            return resolve_run(name, self.out)
        except BabyError as e:
            raise HTTPError(404, str(e)) from None

    def load(self, name) -> api.Run:
        """The run named ``name`` with its model and tokenizer (called in a worker thread)."""
        guid = self.resolve(name)
        model = RunPaths(self.out, guid).model
        try:
            stat = model.stat()
        except FileNotFoundError:
            raise HTTPError(409, f"run {guid} has no model yet (still training, or stopped: "
                                 f"`baby train --resume {guid}` finishes it)") from None
        stamp = (stat.st_mtime_ns, stat.st_size)
        with self.lock:
            if guid in self.loaded and self.loaded[guid][0] == stamp:
                return self.loaded[guid][1]
            try:
                run = api.load_run(guid, self.out)
            except BabyError as e:
                raise HTTPError(500, f"run {guid} cannot be loaded: {e}") from None
            self.loaded[guid] = (stamp, run)
            while len(self.loaded) > self.KEEP:
                self.loaded.pop(next(iter(self.loaded)))
            return run

    def summary(self, guid, curves=False) -> dict:
        """A run as `baby runs` lists it; with ``curves``, every loss of its report as well."""
        try:
            record = load_record(self.out, guid)
        except BabyError as e:
            return {"guid": guid, "error": str(e)}
        paths = RunPaths(self.out, guid)
        row = {"guid": guid, "created": record.created, "kind": record.kind, "parent": record.parent,
               "tokenizer": record.tokenizer, "model": record.model, "training": record.training,
               "has_model": paths.model.exists(), "report": None}
        if paths.report_json.exists():
            try:
                report = read_json(paths.report_json, "report")
            except BabyError as e:
                row["error"] = str(e)
                return row
            keys = ["status", "steps", "planned_steps", "final_train_loss", "final_val_loss", "final_val_bpc",
                    "num_params", "tokens_per_s", "total_time_s", "evals"] + (["loss"] if curves else [])
            row["report"] = {key: report.get(key) for key in keys}
        if curves:
            row["data"] = record.data
            row["plan"] = record.plan
        return row


class Generations:
    """Counts the generations streaming now; at the limit a new one is refused."""

    def __init__(self, limit):
        self.limit = limit
        self.active = 0
        self.lock = threading.Lock()

    def reserve(self):
        with self.lock:
            if self.active >= self.limit:
                raise HTTPError(429, f"{self.active} generations are running, the most this server runs at "
                                     f"once; stop one or wait for one to finish")
            self.active += 1

    def release(self):
        with self.lock:
            self.active -= 1


class GenerationResponse(StreamingResponse):
    """A stream whose generation slot is given back however it ends: finished, stopped, or disconnected."""

    def __init__(self, content, release):
        super().__init__(content, media_type="text/event-stream",
                         headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
        self.release = release

    async def __call__(self, scope, receive, send):
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.release()


def create_app(out=".", selected=None, limits=Limits(), stopping=None) -> Starlette:
    """The app for the runs in ``out``; ``selected`` is the run the page opens with. ``stopping`` (a
    threading.Event) ends every stream at its next token when set: the server is shutting down."""
    runs = Runs(out)
    generations = Generations(limits.max_generations)
    stopping = stopping or threading.Event()
    save_lock = threading.Lock()      # completion files are named by the second: one writer at a time

    async def page(request):
        return HTMLResponse(static_text("index.html"), headers={"Cache-Control": "no-store"})

    async def static(request):
        name = request.path_params["name"]
        if name not in STATIC:
            raise HTTPError(404, "not found")
        return Response(static_text(name), media_type=STATIC[name], headers={"Cache-Control": "no-store"})

    async def list_runs(request):
        rows = await anyio.to_thread.run_sync(lambda: [runs.summary(g) for g in run_ids(runs.out)])
        return json_response({"out": str(runs.out.resolve()), "selected": selected, "runs": rows})

    async def one_run(request):
        guid = runs.resolve(request.path_params["run"])
        return json_response(await anyio.to_thread.run_sync(lambda: runs.summary(guid, curves=True)))

    async def status(request):
        return json_response({"active_generations": generations.active, **dataclasses.asdict(limits)})

    async def generate(request):
        body = await read_body(request, limits, ("prompt", "max_tokens", "temperature", "top_k", "top_p", "seed"))
        run = await anyio.to_thread.run_sync(runs.load, request.path_params["run"])
        settings = generation_settings(body, limits)
        ids = prompt_ids(run, settings["prompt"])
        generations.reserve()
        return GenerationResponse(stream(run, ids, settings), generations.release)

    async def stream(run, ids, s):
        """Server-sent events: start, then one token per step, then done (or stopped, or error)."""
        rng = np.random.default_rng(s["seed"])
        steps = sample_ids(run.gpt, ids, s["max_tokens"], s["temperature"], s["top_k"], s["top_p"], rng)
        decoder, pieces = run.tokenizer.stream_decoder(), [s["prompt"]]
        yield event("start", {"run": run.guid, "seed": s["seed"], "n_ctx": run.gpt.config.n_ctx,
                              "start_token": not s["prompt"], "tokens": token_list(run.tokenizer, ids)})
        start = time.perf_counter()
        try:
            for i in range(s["max_tokens"]):
                if stopping.is_set():
                    yield event("stopped", {"message": "the server is shutting down"})
                    return
                token = int((await anyio.to_thread.run_sync(next, steps))[0])
                pieces.append(decoder.push(token))
                yield event("token", {"i": len(ids) + i, "id": token, "text": token_text(run.tokenizer, token),
                                      "piece": pieces[-1]})
            pieces.append(decoder.flush())
            seconds = time.perf_counter() - start
            text = "".join(pieces)

            def save():
                with save_lock:
                    return api.save_generation(run, [text], seconds, s["prompt"], s["max_tokens"],
                                               s["temperature"], s["top_k"], s["top_p"], s["seed"])
            saved = await anyio.to_thread.run_sync(save)
            yield event("done", {"text": text, "tail": pieces[-1], "seconds": seconds,
                                 "tokens_per_s": saved.tokens_per_s, "saved": saved.path.name})
        except BabyError as e:
            yield event("error", {"message": str(e)})
        finally:
            steps.close()

    async def inspect_token(request):
        body = await read_body(request, limits, ("ids", "position", "temperature", "top_k", "top_p"))
        run = await anyio.to_thread.run_sync(runs.load, request.path_params["run"])
        ids = token_ids(body.get("ids"), run, limits)
        position = body.get("position")
        if not is_int(position) or not 1 <= position < len(ids):
            raise HTTPError(400, f"position must be an index of a token after the first, 1 .. {len(ids) - 1}")
        s = sampling_settings(body)
        found = await anyio.to_thread.run_sync(
            lambda: inspect.explain(run.gpt, ids, position, s["temperature"], s["top_k"], s["top_p"]))
        return json_response(explanation_json(found, run, ids, limits))

    async def attention_map(request):
        body = await read_body(request, limits, ("prompt",))
        run = await anyio.to_thread.run_sync(runs.load, request.path_params["run"])
        prompt = body.get("prompt", "")
        check_prompt(prompt, limits)
        ids = prompt_ids(run, prompt)
        window = ids[window_start(len(ids), run.gpt.config.n_ctx):]  # what the model sees of the prompt
        traced = await anyio.to_thread.run_sync(inspect.trace, run.gpt, window)
        return json_response({"tokens": token_list(run.tokenizer, window), "start_token": not prompt,
                              "cropped": len(ids) - len(window), "attention": floats(traced.attention)})

    routes = [Route("/", page), Route("/static/{name}", static), Route("/api/runs", list_runs),
              Route("/api/status", status), Route("/api/runs/{run}", one_run),
              Route("/api/runs/{run}/generate", generate, methods=["POST"]),
              Route("/api/runs/{run}/inspect", inspect_token, methods=["POST"]),
              Route("/api/runs/{run}/attention", attention_map, methods=["POST"])]
    handlers = {HTTPError: http_error, 404: not_found, 405: not_allowed}
    app = Starlette(routes=routes, exception_handlers=handlers)
    app.state.generations = generations
    app.state.stopping = stopping
    return app


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
