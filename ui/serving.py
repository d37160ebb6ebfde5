"""Run an ASGI app (the ragtune API) with uvicorn in a background thread: what `ragtune ui
--with_api` uses so one command gives both, and what the UI tests use for a live API."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

from ragtune.errors import RagtuneError


def free_port(host: str = "127.0.0.1") -> int:
    """A port that is free right now on `host`."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class RunningServer:
    server: Any  # uvicorn.Server
    thread: threading.Thread
    url: str

    def stop(self, timeout_s: float = 10.0) -> None:
        """Ask uvicorn to shut down (the app's lifespan closes its models) and wait."""
        self.server.should_exit = True
        self.thread.join(timeout_s)


def serve_in_thread(app: Any, host: str = "127.0.0.1", port: int = 0,
                    log_level: str = "warning", start_timeout_s: float = 600.0) -> RunningServer:
    """Start uvicorn (h11, as `ragtune serve`) in a daemon thread; return once it listens."""
    import uvicorn

    from api.commands import uvicorn_config

    config = uvicorn_config(app, host, port or free_port(host), log_level)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="ragtune-api", daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout_s
    while not server.started:
        if not thread.is_alive():
            raise RagtuneError(f"the API did not start on {host}:{config.port} (port in use, or "
                               "its models failed to load; see the log)")
        if time.monotonic() > deadline:
            server.should_exit = True
            raise RagtuneError(f"the API did not start within {start_timeout_s:.0f} s")
        time.sleep(0.05)
    bound = server.servers[0].sockets[0].getsockname()[1]
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    return RunningServer(server, thread, f"http://{shown}:{bound}")
