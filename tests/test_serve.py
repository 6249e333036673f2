"""`baby serve` over real HTTP: the runs, streamed generation that matches `baby generate`, the inspections
against gpt_forward, every bound a clear 4xx, no path ever read from a request, disconnects, concurrency,
Ctrl-C, and nothing written in the run folder but completion files."""

import hashlib
import importlib.util
import json
import os
import pathlib
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading

import numpy as np
import pytest

pytest.importorskip("starlette", reason="baby serve needs the serve extra: pip install -e \".[serve]\"")
pytest.importorskip("uvicorn", reason="baby serve needs the serve extra: pip install -e \".[serve]\"")

from live_server import LiveServer, read_event  # noqa: E402

from littlebaby import builtin  # noqa: E402
from littlebaby.api import generate, load_run, train  # noqa: E402
from littlebaby.cli import main  # noqa: E402
from littlebaby.kvcache import window_start  # noqa: E402
from littlebaby.model import gpt_forward  # noqa: E402
from littlebaby.runs import run_ids  # noqa: E402
from littlebaby.serve import server as serve_server  # noqa: E402
from littlebaby.serve.app import Limits  # noqa: E402
from littlebaby.serve.inspect import attention_weights, sampling_probs, softmax  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def folder(trained, tmp_path_factory):
    """A copy of the tiny trained run (n_ctx 8, so generation outgrows its window) that serving may add to."""
    out = tmp_path_factory.mktemp("serve") / "runs"
    shutil.copytree(trained, out)
    return out


@pytest.fixture(scope="module")
def live(folder):
    server = LiveServer(folder)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def guid(folder):
    (only,) = run_ids(folder)
    return only


def gen_path(guid):
    return f"/api/runs/{guid}/generate"


def generated(live, guid, **settings):
    """(events, the done event's data) of one generation read to its end."""
    events = live.events(gen_path(guid), settings)
    assert events[-1][0] == "done", events[-1]
    return events, events[-1][1]


def files_of(folder) -> dict:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in folder.rglob("*") if p.is_file()}


def test_runs_are_listed_with_their_losses_and_config(live, guid, folder):
    status, data = live.get("/api/runs")
    assert status == 200 and data["out"] == str(folder.resolve())
    run, shipped = data["runs"]                               # the runs of --out, then the pretrained baby
    assert run["guid"] == guid and run["has_model"] and run["model"]["n_ctx"] == 8 and not run["builtin"]
    assert shipped["guid"] == builtin.guid() and shipped["builtin"] and shipped["has_model"]
    report = json.loads((folder / "outputs" / f"report_{guid}.json").read_text())
    assert run["report"]["evals"] == report["evals"] and run["report"]["steps"] == 4
    status, detail = live.get(f"/api/runs/{guid[:8]}")     # a prefix, as `baby generate` takes
    assert status == 200 and detail["guid"] == guid and detail["report"]["loss"] == report["loss"]
    assert live.get("/api/runs/last")[1]["guid"] == guid


def test_the_pretrained_baby_is_served_by_name_and_writes_only_under_out(live, folder):
    before = files_of(builtin.folder())
    status, detail = live.get(f"/api/runs/{builtin.NAME}")
    assert status == 200 and detail["guid"] == builtin.guid() and detail["builtin"] and detail["report"]["loss"]
    events, done = generated(live, builtin.NAME, prompt="ROMEO:", max_tokens=12, seed=0)
    assert events[0][1]["run"] == builtin.guid() and done["text"].startswith("ROMEO:")
    assert (folder / "outputs" / done["saved"]).read_text(encoding="utf-8") == done["text"]   # under --out
    assert files_of(builtin.folder()) == before                 # the package's copy is only read


def test_the_page_and_its_two_files_are_served_and_no_other_path(live):
    status, page = live.get("/")
    assert status == 200 and '<script src="/static/app.js">' in page
    assert "http" not in page and "//" not in page     # nothing from the network: the page works offline
    for name, marker in (("app.js", "serverEvents"), ("style.css", ".tok")):
        status, text = live.get(f"/static/{name}")
        assert status == 200 and marker in text
    for path in ("/static/index.html", "/static/../../etc/passwd", "/static/..%2F..%2F..%2Fetc%2Fpasswd",
                 "/static/%2e%2e%2fapp.py", "/../../etc/passwd", "/api/runs/../../etc/passwd",
                 "/api/runs/..%2F..%2Fetc%2Fpasswd", "/api/runs/%2e%2e", "/api/runs/..%2Fconfigs",
                 "/api/runs/0123abcd-0000-0000-0000-000000000000", "/api/runs/deadbeef/generate",
                 "/etc/passwd", "/configs", "/outputs/"):
        status, body = live.request("POST" if path.endswith("generate") else "GET", path,
                                    body={} if path.endswith("generate") else None)
        assert status == 404, (path, status)
        assert "root:" not in json.dumps(body) and "error" in body, (path, body)


def test_generation_streams_the_text_baby_generate_writes(live, guid, folder, capsys):
    settings = {"prompt": "ANNE:", "max_tokens": 40, "temperature": 0.8, "top_k": 5, "seed": 7}
    events, done = generated(live, guid, **settings)
    names = [name for name, _ in events]
    assert names == ["start"] + ["token"] * 40 + ["done"]
    start = events[0][1]
    assert [t["text"] for t in start["tokens"]] == list("ANNE:") and start["seed"] == 7
    tokens = [data for name, data in events if name == "token"]
    assert [t["i"] for t in tokens] == list(range(5, 45))
    assert "ANNE:" + "".join(t["piece"] for t in tokens) + done["tail"] == done["text"]

    code = main(["generate", guid, "--prompt", "ANNE:", "--max-tokens", "40", "--temperature", "0.8",
                 "--top-k", "5", "--seed", "7", "--out", str(folder)])
    assert code == 0
    assert capsys.readouterr().out == done["text"] + "\n"
    saved = folder / "outputs" / done["saved"]
    assert saved.read_text(encoding="utf-8") == done["text"]
    record = json.loads(saved.with_suffix(".json").read_text())
    assert (record["seed"], record["top_k"], record["max_tokens"], record["prompt"]) == (7, 5, 40, "ANNE:")


def test_an_empty_seed_is_drawn_and_reported_so_the_text_can_be_reproduced(live, guid):
    events, done = generated(live, guid, prompt="", max_tokens=25)
    start = events[0][1]
    assert start["start_token"] and [t["text"] for t in start["tokens"]] == ["\n"]
    _, again = generated(live, guid, prompt="", max_tokens=25, seed=start["seed"])
    assert again["text"] == done["text"]


def test_a_bpe_run_streams_the_text_baby_generate_writes(tmp_path):
    """Byte-level BPE: a token may end inside a character, so pieces can be empty until the character is whole."""
    (tmp_path / "t.txt").write_text("".join(f"ANNE: \u00e9t\u00e9 {n} \U0001f339 roses.\n" for n in range(60)),
                                    encoding="utf-8")
    run = train(data=str(tmp_path / "t.txt"), out=str(tmp_path), steps=2, quiet=True, tokenizer="bpe",
                vocab_size=270, n_ctx=8, n_emb=16, head_size=16, n_heads=2, n_layers=1, batch_size=4)
    live = LiveServer(tmp_path)
    try:
        events, done = generated(live, run.guid, prompt="ANNE: \U0001f339", max_tokens=30, seed=4)
    finally:
        live.stop()
    expected = generate(run.guid, prompt="ANNE: \U0001f339", max_tokens=30, seed=4, out=str(tmp_path)).text
    assert done["text"] == expected
    pieces = "".join(data["piece"] for name, data in events if name == "token")
    assert "ANNE: \U0001f339" + pieces + done["tail"] == expected


def test_inspect_serves_the_numbers_gpt_forward_computes(live, guid, folder):
    """Every sampled token of a generation longer than the context: the window, both distributions, the attention
    and the logit lens, against gpt_forward on the same window."""
    settings = {"temperature": 0.8, "top_k": 5}
    events, _ = generated(live, guid, prompt="BEN:", max_tokens=20, seed=3, **settings)
    ids = [t["id"] for t in events[0][1]["tokens"]] + [d["id"] for n, d in events if n == "token"]
    run = load_run(guid, folder)
    for position in range(4, len(ids)):
        status, data = live.post(f"/api/runs/{guid}/inspect", {"ids": ids, "position": position, **settings})
        assert status == 200, data
        window = window_start(position, 8)
        assert data["window"] == window and data["token"]["id"] == ids[position]
        logits, cache = gpt_forward(run.gpt.params, run.gpt.config, np.array([ids[window:position]]))
        raw, sampled = softmax(logits[0, -1]), sampling_probs(logits[0, -1], **settings)
        for served, probs in ((data["raw"], raw), (data["sampled"], sampled)):
            top = np.argsort(-probs, kind="stable")[:10]
            top = top[probs[top] > 0]
            assert [e["id"] for e in served["top"]] == top.tolist()
            assert [e["p"] for e in served["top"]] == probs[top].tolist()   # the same float64 numbers
            assert served["p_token"] == probs[ids[position]]
        # the token was drawn from the served distribution: top-k 5 leaves only five with any mass
        assert data["sampled"]["p_token"] > 0 and data["sampled"]["rank"] <= 5
        attention = np.array(data["attention"], dtype=np.float32)               # (L, NH, S)
        expected = np.stack([attention_weights(c)[0, :, -1, :] for c in cache[2]])
        np.testing.assert_array_equal(attention, expected)     # float32 decimals that read back exactly
        assert [row["p_token"] for row in data["lens"]][-1] == raw[ids[position]]
        assert [row["layer"] for row in data["lens"]] == ["embeddings", "block 0"]


def test_attention_map_of_the_prompt_is_gpt_forwards(live, guid, folder):
    prompt = "ANNE:\nI have 3 roses"                       # 19 characters: the model sees the last window of them
    status, data = live.post(f"/api/runs/{guid}/attention", {"prompt": prompt})
    assert status == 200, data
    run = load_run(guid, folder)
    ids = run.tokenizer.encode(prompt)
    window = ids[window_start(len(ids), 8):]
    assert [t["id"] for t in data["tokens"]] == window.tolist() and data["cropped"] == len(ids) - len(window)
    _, cache = gpt_forward(run.gpt.params, run.gpt.config, window[None])
    expected = np.stack([attention_weights(c)[0] for c in cache[2]])            # (L, NH, T, T)
    np.testing.assert_array_equal(np.array(data["attention"], dtype=np.float32), expected)


@pytest.mark.parametrize("body,status,says", [
    ({"prompt": "x" * 4001}, 413, "at most 4,000"),
    ({"prompt": 5}, 400, "prompt must be a string"),
    ({"max_tokens": 0}, 400, "max_tokens must be a whole number from 1 to 2,000"),
    ({"max_tokens": 2001}, 400, "from 1 to 2,000"),
    ({"max_tokens": True}, 400, "max_tokens"),
    ({"temperature": -1}, 400, "temperature must be 0"),
    ({"top_k": 0}, 400, "top_k must be"),
    ({"top_p": 1.5}, 400, "top_p must be"),
    ({"seed": "seven"}, 400, "seed must be"),
    ({"prompt": "\u00e9t\u00e9"}, 400, "the prompt cannot be encoded"),
    ({"steps": 3}, 400, "unknown field 'steps'"),
])
def test_a_generation_out_of_bounds_gets_a_4xx_that_says_why(live, guid, body, status, says):
    got, data = live.post(gen_path(guid), body)
    assert got == status and says in data["error"], data


def test_other_bad_requests_get_a_4xx_that_says_why(live, guid):
    assert live.request("POST", gen_path(guid), raw=b"{not json")[0] == 400
    assert live.request("POST", gen_path(guid), raw=b"[1, 2]")[1]["error"] == "the request body must be a JSON object"
    status, data = live.request("POST", gen_path(guid), raw=b'{"prompt": "' + b"a" * 1_000_001 + b'"}')
    assert status == 413 and "over 1,000,000 bytes" in data["error"]
    inspect_path = f"/api/runs/{guid}/inspect"
    assert live.post(inspect_path, {"ids": [1, 2, 3], "position": 0})[0] == 400
    assert "token ids of this run" in live.post(inspect_path, {"ids": [1, 999], "position": 1})[1]["error"]
    assert live.post(inspect_path, {"ids": [1] * 7000, "position": 1})[0] == 400
    assert live.get(gen_path(guid))[0] == 405


def stream_until_start(live, guid, max_tokens):
    response = live.open_stream(gen_path(guid), {"prompt": "A", "max_tokens": max_tokens, "seed": 1})
    assert response.status == 200
    assert read_event(response)[0] == "start"
    return response


def test_generations_past_the_limit_get_429_and_a_client_that_leaves_stops_its_own(folder, guid):
    live = LiveServer(folder, Limits(max_generations=2, max_tokens=10_000_000))   # hours of tokens if not stopped
    try:
        completions = len(list((folder / "outputs").glob("completion_*")))
        first, second = (stream_until_start(live, guid, 10_000_000) for _ in range(2))
        assert read_event(first)[0] == "token" and live.generations.active == 2
        status, data = live.post(gen_path(guid), {"max_tokens": 5})
        assert status == 429 and "2 generations are running" in data["error"]
        first.connection.close()          # the client leaves mid-stream
        second.connection.close()
        assert live.wait_idle(10), f"{live.generations.active} generations still running after their clients left"
        assert len(list((folder / "outputs").glob("completion_*"))) == completions   # a stopped one saves nothing
        _, done = generated(live, guid, prompt="A", max_tokens=5, seed=1)           # the slots are free again
        assert done["text"].startswith("A")
    finally:
        live.stop()


def test_twenty_concurrent_generations_give_the_sequential_texts(live, guid):
    settings = [{"prompt": "BEN:", "max_tokens": 30, "temperature": 0.9, "seed": seed} for seed in range(20)]
    sequential = [generated(live, guid, **s)[1]["text"] for s in settings]
    concurrent = [None] * 20

    def one(i):
        concurrent[i] = generated(live, guid, **settings[i])[1]["text"]

    threads = [threading.Thread(target=one, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert concurrent == sequential
    assert len(set(sequential)) > 1     # the seeds matter: not twenty copies of one text by accident


def test_stopping_the_server_ends_an_open_stream(folder, guid):
    live = LiveServer(folder, Limits(max_tokens=10_000_000))
    response = stream_until_start(live, guid, 10_000_000)
    live.stop()                          # Ctrl-C: the stream says why it ends, and the server is gone
    events = []
    while (found := read_event(response)) is not None:
        events.append(found[0])
    assert events[-1] == "stopped" and set(events[:-1]) <= {"token"}


def test_serving_writes_nothing_in_the_run_folder_but_completion_files(trained, tmp_path, guid):
    out = tmp_path / "runs"
    shutil.copytree(trained, out)
    before = files_of(out)
    live = LiveServer(out)
    try:
        live.get("/api/runs")
        live.get(f"/api/runs/{guid}")
        _, done = generated(live, guid, prompt="ANNE:", max_tokens=10, seed=0)
        live.post(f"/api/runs/{guid}/inspect", {"ids": [1, 2, 3, 4], "position": 3})
        live.post(f"/api/runs/{guid}/attention", {"prompt": "ANNE:"})
        live.post(gen_path(guid), {"max_tokens": -1})
        stream_until_start(live, guid, 2000).connection.close()
        assert live.wait_idle()
    finally:
        live.stop()
    after = files_of(out)
    assert {k: v for k, v in after.items() if k in before} == before      # nothing changed, nothing removed
    added = sorted(set(after) - set(before))
    assert added == [f"outputs/completion_{guid}_{done['saved'].split('_')[-1][:-4]}.{ext}" for ext in ("json", "txt")]


def test_ctrl_c_stops_baby_serve_cleanly(trained):
    process = subprocess.Popen([sys.executable, "-m", "littlebaby", "serve", "last", "--port", "0", "--out",
                                str(trained)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               cwd=REPO)
    try:
        ready, _, _ = select.select([process.stdout], [], [], 30)
        assert ready, "baby serve printed no URL within 30 s"
        line = process.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)/\?run=[0-9a-f-]{36}", line)
        assert match, line
        with socket.create_connection(("127.0.0.1", int(match.group(1))), timeout=10) as connection:
            connection.sendall(b"GET /api/status HTTP/1.1\r\nHost: x\r\n\r\n")
            assert connection.recv(100).startswith(b"HTTP/1.1 200")
        process.send_signal(signal.SIGINT)
        code = process.wait(15)
        err = process.stderr.read()
    finally:
        process.kill()
        process.wait()
    assert code == 0 and "server stopped" in err and "Traceback" not in err, err


def test_baby_serve_without_the_extra_says_what_to_install(monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "uvicorn" else real(name, *a))
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert err == "error: baby serve needs the serve extra (uvicorn not installed): pip install -e \".[serve]\"\n"


def test_baby_serve_refuses_an_unknown_run_and_a_taken_port(trained, capsys):
    assert main(["serve", "abcdef12", "--out", str(trained)]) == 2
    assert "no run matches 'abcdef12'" in capsys.readouterr().err
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        assert main(["serve", "--port", str(taken.getsockname()[1]), "--out", str(trained)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot listen on 127.0.0.1:") and "choose another --port" in err
    assert main(["serve", "--port", "70000", "--out", str(trained)]) == 2


def test_another_host_than_loopback_warns(trained, monkeypatch, capsys):
    class Interrupted:   # uvicorn, as it returns after a Ctrl-C
        def run(self, sockets):
            raise KeyboardInterrupt

    monkeypatch.setattr(serve_server, "make_server", lambda *args: Interrupted())
    assert serve_server.serve(None, str(trained), host="0.0.0.0", port=0) == 0
    captured = capsys.readouterr()
    assert "warning: listening on 0.0.0.0, not on this machine's loopback" in captured.err
    assert re.search(r"at http://0\.0\.0\.0:\d+/", captured.out)
    assert serve_server.serve(None, str(trained), host="127.0.0.1", port=0) == 0
    assert "warning" not in capsys.readouterr().err
    assert serve_server.is_loopback("::1") and not serve_server.is_loopback("192.168.1.2")


def test_serve_pretrained_opens_the_page_on_the_shipped_baby(tmp_path, monkeypatch, capsys):
    class Interrupted:
        def run(self, sockets):
            raise KeyboardInterrupt

    monkeypatch.setattr(serve_server, "make_server", lambda *args: Interrupted())
    assert main(["serve", "pretrained", "--port", "0", "--out", str(tmp_path)]) == 0   # an --out with no runs
    assert re.search(rf"at http://127\.0\.0\.1:\d+/\?run={builtin.guid()}", capsys.readouterr().out)


def test_the_static_files_are_package_data():
    text = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    assert '"littlebaby.serve" = ["static/*.html", "static/*.js", "static/*.css"]' in text
    static = REPO / "littlebaby" / "serve" / "static"
    assert sorted(p.name for p in static.iterdir()) == ["app.js", "index.html", "style.css"]
    assert os.path.getsize(static / "app.js") < 40_000
