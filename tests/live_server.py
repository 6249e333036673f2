"""`baby serve`'s real server (uvicorn on a free loopback port) in a thread of the test process, and plain-socket
HTTP helpers that send paths exactly as written (no client tidies up ``..`` on the way)."""

import http.client
import json
import pathlib
import threading
import time

from littlebaby.serve.app import Limits
from littlebaby.serve.server import bind, make_server


class LiveServer:
    """The app for the runs in ``out`` on 127.0.0.1:<free port>, until stop()."""

    def __init__(self, out, limits=Limits()):
        self.out = pathlib.Path(out)
        sock = bind("127.0.0.1", 0)
        self.port = sock.getsockname()[1]
        self.server = make_server(sock, out, None, limits)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "the server did not start"
            time.sleep(0.01)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}/"

    @property
    def generations(self):
        return self.server.config.app.state.generations

    def wait_idle(self, seconds=5.0) -> bool:
        """True once no generation is streaming (within ``seconds``)."""
        deadline = time.monotonic() + seconds
        while self.generations.active:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def stop(self):
        self.server.handle_exit(2, None)   # what Ctrl-C does
        self.thread.join(10)
        assert not self.thread.is_alive(), "the server did not stop"

    def connect(self, timeout=30) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(self, method, path, body=None, raw=None):
        """(status, parsed JSON or text) of one request; ``raw`` bytes are sent as the body unparsed."""
        connection = self.connect()
        try:
            data = raw if raw is not None else None if body is None else json.dumps(body).encode()
            connection.request(method, path, body=data, headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            text = response.read().decode("utf-8")
            kind = response.getheader("Content-Type", "")
            return response.status, json.loads(text) if kind.startswith("application/json") else text
        finally:
            connection.close()

    def get(self, path):
        return self.request("GET", path)

    def post(self, path, body):
        return self.request("POST", path, body)

    def open_stream(self, path, body):
        """A generation's response, open: read events from it with ``read_event``; close() disconnects."""
        connection = self.connect()
        connection.request("POST", path, body=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        response.connection = connection
        return response

    def events(self, path, body) -> list:
        """Every (name, data) event of a generation, read to its end."""
        response = self.open_stream(path, body)
        assert response.status == 200, response.read()
        found = []
        while True:
            found_event = read_event(response)
            if found_event is None:
                break
            found.append(found_event)
        response.connection.close()
        return found


def read_event(response):
    """The next (name, data) server-sent event of an open response, None at its end."""
    name, data = None, None
    while True:
        line = response.readline()
        if not line:
            return None
        line = line.decode("utf-8").rstrip("\r\n")
        if line.startswith("event: "):
            name = line[len("event: "):]
        elif line.startswith("data: "):
            data = json.loads(line[len("data: "):])
        elif line == "" and name is not None:
            return name, data
