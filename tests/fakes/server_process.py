"""Running the fake OpenAI-compatible server: in this process, as a subprocess, or from a shell.

* :class:`FakeOpenAIServer`: in this process on a background thread (a context manager);
* :func:`start_server_process`: ``python -m tests.fakes.server_process --port 0`` as a child
  process, waiting until it listens (:class:`FakeServerProcess`, ``.stop()``);
* :class:`FakeControl`: a client for the ``/_control/*`` endpoints of either;
* the command line::

    python -m tests.fakes.server_process --port 0 [--latency-ms 300] [--context-window 4096]

  prints exactly one line, ``listening on http://127.0.0.1:PORT``, then serves until killed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import queue
import re
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.fakes.handler import FakeHTTPServer
from tests.fakes.replies import FakeState

__all__ = [
    "HOST",
    "FakeControl",
    "FakeOpenAIServer",
    "FakeServerProcess",
    "free_port",
    "main",
    "start_server_process",
    "stop_process",
]

HOST = "127.0.0.1"
REPO_ROOT = Path(__file__).resolve().parents[2]
MODULE = "tests.fakes.server_process"


def _strip_v1(url: str) -> str:
    url = url.rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


class FakeControl:
    """Client for the ``/_control`` endpoints (urllib, no proxies)."""

    def __init__(self, base_url: str, timeout: float = 10.0) -> None:
        self.base = _strip_v1(base_url)
        self.timeout = timeout
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def _call(self, method: str, path: str, payload: Any = None) -> Any:
        data = None if payload is None else json.dumps(payload).encode("utf-8")
        request = urllib.request.Request(
            self.base + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                return json.loads(response.read().decode("utf-8"))
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace")
            raise RuntimeError(f"fake control {method} {path} -> {exc.code}: {detail}") from exc

    def health(self) -> bool:
        return bool(self._call("GET", "/_control/health").get("ok"))

    def config(self, **changes: Any) -> dict[str, Any]:
        """Merge ``changes`` into the server config; returns the whole new config."""
        if not changes:
            return self._call("GET", "/_control/config")
        return self._call("POST", "/_control/config", changes)

    def fail(self, *failures: dict[str, Any] | str) -> int:
        """Queue failures (dicts, or a kind string such as ``"429"``); returns the queue size."""
        items = [{"kind": f} if isinstance(f, str) else dict(f) for f in failures]
        return int(self._call("POST", "/_control/fail", {"failures": items})["queued"])

    def requests(self, kind: str | None = None) -> list[dict[str, Any]]:
        """Logged chat requests, oldest first; ``kind`` filters "chat" or "summary"."""
        entries = self._call("GET", "/_control/requests")["requests"]
        return [e for e in entries if kind is None or e["kind"] == kind]

    def pending_failures(self) -> list[dict[str, Any]]:
        return self._call("GET", "/_control/requests")["failures"]

    def reset(self) -> None:
        """Clear the failure queue and request log; restore the startup config."""
        self._call("POST", "/_control/reset", {})


class FakeOpenAIServer:
    """The fake server in this process, on a background thread."""

    def __init__(
        self, host: str = HOST, port: int = 0, access_log: bool = False, **config: Any
    ) -> None:
        self.host = host
        self.requested_port = port
        self.state = FakeState(config)
        self.access_log = access_log
        self._httpd: FakeHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> FakeOpenAIServer:
        if self._httpd is not None:
            return self
        httpd = self.bind()
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fake-openai-server",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is None:
            return
        self.state.wake.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None
        self._thread = None

    def serve_forever(self) -> None:
        """Serve on the calling thread (used by the command line)."""
        self.bind().serve_forever(poll_interval=0.2)

    def bind(self) -> FakeHTTPServer:
        """Bind and listen without serving yet (connections queue in the backlog)."""
        if self._httpd is None:
            self._httpd = FakeHTTPServer(
                (self.host, self.requested_port), self.state, self.access_log
            )
        return self._httpd

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("server not started")
        return int(self._httpd.server_address[1])

    @property
    def base(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return self.base + "/v1"

    @property
    def control(self) -> FakeControl:
        return FakeControl(self.base)

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class FakeServerProcess:
    """The fake server as a child process (``python -m tests.fakes.server_process``)."""

    def __init__(self, process: subprocess.Popen[str], port: int) -> None:
        self.process = process
        self.port = port
        self.base = f"http://{HOST}:{port}"
        self.url = self.base + "/v1"
        self.control = FakeControl(self.base)

    def stop(self, timeout: float = 5.0) -> None:
        stop_process(self.process, timeout)
        for pipe in (self.process.stdout, self.process.stderr):
            if pipe is not None:
                with contextlib.suppress(OSError, ValueError):
                    pipe.close()

    def __enter__(self) -> FakeServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def stop_process(process: subprocess.Popen[Any], timeout: float) -> None:
    """SIGTERM, then SIGKILL if ``process`` has not exited within ``timeout`` seconds."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout)


def start_server_process(*args: str, timeout: float = 15.0) -> FakeServerProcess:
    """Start ``python -m tests.fakes.server_process --port 0 *args``; wait until it listens.

    Raises RuntimeError (with the child's stderr) if it does not start within ``timeout``.
    """
    command = [sys.executable, "-m", MODULE, "--port", "0", *args]
    process = subprocess.Popen(
        command,
        cwd=str(REPO_ROOT),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(
        target=lambda: lines.put(process.stdout.readline() if process.stdout else ""),
        daemon=True,
    ).start()
    line = ""
    with contextlib.suppress(queue.Empty):
        line = lines.get(timeout=timeout)
    match = re.fullmatch(r"listening on http://127\.0\.0\.1:(\d+)\s*", line or "")
    if match is None:
        process.kill()
        process.wait(timeout=5)
        err = ""
        if process.stderr is not None:
            err = process.stderr.read()
        raise RuntimeError(
            f"fake OpenAI server did not start within {timeout:g}s "
            f"(first line {line!r}); command {command}; stderr:\n{err}"
        )
    if process.stderr is not None:
        # Drain stderr so a chatty child can never block on a full pipe.
        threading.Thread(target=_drain, args=(process.stderr,), daemon=True).start()
    return FakeServerProcess(process, int(match.group(1)))


def _drain(stream: Any) -> None:
    try:
        for _line in stream:
            pass
    except (OSError, ValueError):
        return


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


# --------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=f"python -m {MODULE}",
        description="OpenAI-compatible fake server for chatmem tests and benchmarks.",
    )
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--latency-ms", type=float, default=0)
    parser.add_argument("--summary-latency-ms", type=float, default=None)
    parser.add_argument("--chunk-delay-ms", type=float, default=0)
    parser.add_argument("--context-window", type=int, default=None)
    parser.add_argument("--reply-words", type=int, default=None)
    parser.add_argument("--summary-words", type=int, default=None)
    parser.add_argument("--embedding-dims", type=int, default=256)
    parser.add_argument(
        "--model",
        action="append",
        dest="models",
        default=None,
        help="a model name for /v1/models (repeatable); any name is accepted anyway",
    )
    parser.add_argument("--access-log", action="store_true", help="log requests to stderr")
    opts = parser.parse_args(argv)
    config: dict[str, Any] = {
        "latency_ms": opts.latency_ms,
        "summary_latency_ms": opts.summary_latency_ms,
        "chunk_delay_ms": opts.chunk_delay_ms,
        "context_window": opts.context_window,
        "reply_words": opts.reply_words,
        "summary_words": opts.summary_words,
        "embedding_dims": opts.embedding_dims,
    }
    if opts.models:
        config["models"] = opts.models
    server = FakeOpenAIServer(HOST, opts.port, access_log=opts.access_log, **config)
    server.bind()
    sys.stdout.write(f"listening on http://{HOST}:{server.port}\n")
    sys.stdout.flush()
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
