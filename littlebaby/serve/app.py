"""The web app of `baby serve`: the page, the runs of one --out folder, streamed generation, the inspections.

    GET  /                               the page (static/index.html); /static/app.js, /static/style.css
    GET  /api/runs                       every run of --out, as `baby runs` lists them, with its eval losses
    GET  /api/runs/RUN                   one run: its record (config, data) and every loss of its report
    POST /api/runs/RUN/generate          {prompt, max_tokens, temperature, top_k, top_p, seed} -> server-sent
                                         events: start (the context tokens), token (one per step), done
    POST /api/runs/RUN/inspect           {ids, position, temperature, top_k, top_p} -> why ids[position] came out
    POST /api/runs/RUN/attention         {prompt} -> the (T, T) attention map of every layer and head
    GET  /api/status                     generations running and the limits

RUN is what `baby generate` takes (a GUID, a unique prefix, ``last``, ``pretrained``: the baby that ships with
littlebaby, listed after the runs of --out as a built-in); anything else is a 404, never a path.
Serving reads the run folder and writes nothing there but the completion files `baby generate` writes.
"""

import dataclasses
import pathlib
import threading
import time

import anyio
import numpy as np
from starlette.applications import Starlette
from starlette.responses import HTMLResponse, Response, StreamingResponse
from starlette.routing import Route

from littlebaby import api, builtin
from littlebaby.errors import BabyError
from littlebaby.sampling import sample_ids
from littlebaby.kvcache import window_start
from littlebaby.runs import RUN_NAME, RunPaths, load_record, read_json, resolve_run, run_ids
from littlebaby.serve import inspect
from littlebaby.serve.protocol import (HTTPError, check_prompt, event, explanation_json, floats, generation_settings,
                                       http_error, is_int, json_response, not_allowed, not_found, prompt_ids,
                                       read_body, sampling_settings, static_text, token_list, token_text, token_ids)

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


class Runs:
    """The runs of one --out folder; loaded models are kept (a few) until their weights file changes."""

    KEEP = 4

    def __init__(self, out):
        self.out = pathlib.Path(out)
        self.lock = threading.Lock()
        self.loaded = {}              # guid -> (weights file's (mtime, size), api.Run)

    def resolve(self, name) -> str:
        if not isinstance(name, str) or not (name in ("last", builtin.NAME) or RUN_NAME.fullmatch(name)):
            raise HTTPError(404, f"no run named {name[:80]!r}: give a GUID, a unique prefix of one, last, "
                                 f"or {builtin.NAME}")
        try:
            if name == builtin.NAME or name == self.builtin_guid():
                with builtin.shipped_files():
                    return builtin.guid()
            return resolve_run(name, self.out)
        except BabyError as e:
            raise HTTPError(404, str(e)) from None

    @staticmethod
    def builtin_guid() -> str | None:
        """The shipped baby's GUID, or None when the package's copy cannot be read."""
        try:
            return builtin.guid()
        except (BabyError, OSError):
            return None

    def folder(self, guid) -> pathlib.Path:
        """Where the run's files are: --out, or the package's folder for the shipped baby (only ever read)."""
        return builtin.folder() if guid == self.builtin_guid() else self.out

    def guids(self) -> list[str]:
        """The runs of --out, then the shipped baby."""
        shipped = self.builtin_guid()
        return run_ids(self.out) + ([shipped] if shipped else [])

    def load(self, name) -> api.Run:
        """The run named ``name`` with its model and tokenizer (called in a worker thread)."""
        guid = self.resolve(name)
        model = RunPaths(self.folder(guid), guid).model
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
                run = api.load_run(builtin.NAME if self.folder(guid) != self.out else guid, self.out)
            except BabyError as e:
                raise HTTPError(500, f"run {guid} cannot be loaded: {e}") from None
            self.loaded[guid] = (stamp, run)
            while len(self.loaded) > self.KEEP:
                self.loaded.pop(next(iter(self.loaded)))
            return run

    def summary(self, guid, curves=False) -> dict:
        """A run as `baby runs` lists it; with ``curves``, every loss of its report as well."""
        folder = self.folder(guid)
        try:
            record = load_record(folder, guid)
        except BabyError as e:
            return {"guid": guid, "error": str(e)}
        paths = RunPaths(folder, guid)
        row = {"guid": guid, "builtin": folder != self.out, "created": record.created, "kind": record.kind,
               "parent": record.parent, "tokenizer": record.tokenizer, "model": record.model, "training": record.training,
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

    def reserve(self) -> "Slot":
        with self.lock:
            if self.active >= self.limit:
                raise HTTPError(429, f"{self.active} generations are running, the most this server runs at "
                                     f"once; stop one or wait for one to finish")
            self.active += 1
        return Slot(self)


class Slot:
    """One generation's place among the running ones, given back once, by whichever end comes first."""

    def __init__(self, generations):
        self.generations = generations
        self.held = True

    def release(self):
        with self.generations.lock:
            if self.held:
                self.held = False
                self.generations.active -= 1


class GenerationResponse(StreamingResponse):
    """A stream whose slot is given back however it ends. The stream itself gives it back when its last event
    is out, before the response's end reaches the client (who may start the next generation at once); this
    covers a client that leaves, whose stream is cancelled mid-way."""

    def __init__(self, content, slot):
        super().__init__(content, media_type="text/event-stream",
                         headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
        self.slot = slot

    async def __call__(self, scope, receive, send):
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.slot.release()


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
        rows = await anyio.to_thread.run_sync(lambda: [runs.summary(g) for g in runs.guids()])
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
        slot = generations.reserve()
        return GenerationResponse(stream(run, ids, settings, slot), slot)

    async def stream(run, ids, s, slot):
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
                                               s["temperature"], s["top_k"], s["top_p"], s["seed"], out=runs.out)
            saved = await anyio.to_thread.run_sync(save)
            yield event("done", {"text": text, "tail": pieces[-1], "seconds": seconds,
                                 "tokens_per_s": saved.tokens_per_s, "saved": saved.path.name})
        except BabyError as e:
            yield event("error", {"message": str(e)})
        finally:
            steps.close()
            slot.release()

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
