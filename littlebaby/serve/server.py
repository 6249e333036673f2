"""Run the app: bind the socket (so a taken port is one clear error), start uvicorn, stop cleanly on Ctrl-C."""

import ipaddress
import socket
import sys
import threading

import uvicorn

from littlebaby import builtin
from littlebaby.errors import BabyError
from littlebaby.runs import resolve_run
from littlebaby.serve.app import Limits, create_app

GRACE_S = 3   # how long Ctrl-C waits for open connections before closing them


def bind(host, port) -> socket.socket:
    """A listening TCP socket on host:port (port 0: any free port), or a BabyError saying why not."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except (socket.gaierror, UnicodeError) as e:
        raise BabyError(f"`host` {host!r} is not an address or a name this machine can resolve ({e})") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as e:
        sock.close()
        raise BabyError(f"cannot listen on {host}:{port}: {e.strerror or e}; choose another `port` "
                        f"(or stop what uses it)") from None
    sock.set_inheritable(True)
    return sock


def is_loopback(address) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def url_of(sock, run=None) -> str:
    host, port = sock.getsockname()[:2]
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{port}/" + (f"?run={run}" if run else "")


class Server(uvicorn.Server):
    """uvicorn's server, which also tells the streams to end at their next token when asked to stop."""

    def __init__(self, config, stopping):
        super().__init__(config)
        self.stopping = stopping

    def handle_exit(self, sig, frame):
        self.stopping.set()
        super().handle_exit(sig, frame)


def shipped_guid() -> str:
    """The pretrained baby's GUID, or one line saying its files are missing or damaged."""
    with builtin.shipped_files():
        return builtin.guid()


def make_server(sock, out=".", run=None, limits=Limits()) -> Server:
    """A uvicorn server of the app for the runs in ``out``, to run on the bound ``sock``."""
    stopping = threading.Event()
    app = create_app(out, run, limits, stopping)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                            timeout_graceful_shutdown=GRACE_S)
    return Server(config, stopping)


def serve(run=None, out=".", host="127.0.0.1", port=8000, limits=Limits()) -> int:
    """`baby serve`: check the run, bind, print the URL, serve until Ctrl-C."""
    guid = None if run is None else shipped_guid() if run == builtin.NAME else resolve_run(run, out)  # before binding
    sock = bind(host, port)
    address = sock.getsockname()[0]
    if not is_loopback(address):
        print(f"warning: listening on {address}, not on this machine's loopback: anyone who can reach this "
              f"machine can read your runs and generate with them", file=sys.stderr)
    server = make_server(sock, out, guid, limits)
    print(f"serving the runs in {out} at {url_of(sock, guid)}  (Ctrl-C stops)", flush=True)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:   # uvicorn hands the Ctrl-C back once it has shut down
        pass
    finally:
        sock.close()
    print("server stopped", file=sys.stderr)
    return 0
