"""The fake's HTTP side: routes, JSON and SSE responses, usage, OpenAI-shaped error bodies.

:class:`FakeHTTPServer` is a standard-library ``ThreadingHTTPServer`` whose handler speaks the
OpenAI API well enough for the ``openai`` SDK (``/v1/chat/completions`` with streaming,
``/v1/models``, ``/v1/embeddings``) plus the ``/_control/*`` endpoints. What it answers comes
from ``replies.py``; starting and stopping it is ``server_process.py``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import socket
import socketserver
import struct
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.fakes import shapes
from tests.fakes.replies import (
    FakeState,
    build_recap,
    chat_reply,
    embed_text,
    estimate_message_tokens,
    estimate_text_tokens,
    is_summary_request,
    message_texts,
    truncate_to_tokens,
)

__all__ = ["FakeHTTPServer", "context_length_body", "error_body"]


def error_body(
    message: str, type_: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """An OpenAI-style ``{"error": {...}}`` body."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def context_length_body(window: int, tokens: int) -> dict[str, Any]:
    """The 400 body OpenAI sends for ``context_length_exceeded``."""
    return error_body(
        f"This model's maximum context length is {window} tokens. However, your messages "
        f"resulted in {tokens} tokens. Please reduce the length of the messages.",
        "invalid_request_error",
        "messages",
        "context_length_exceeded",
    )


class _ClientGone(Exception):
    """The client closed the connection; nothing more can be sent."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "chatmem-fake-openai/1.0"
    server: FakeHTTPServer

    # ---- plumbing

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.access_log:
            sys.stderr.write(f"{self.address_string()} - {format % args}\n")

    @property
    def state(self) -> FakeState:
        return self.server.state

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            data = bytearray()
            while True:
                size_line = self.rfile.readline(65537)
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(data)
                data += self.rfile.read(size)
                self.rfile.readline(65537)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _write(self, data: bytes) -> None:
        try:
            self.wfile.write(data)
            self.wfile.flush()
        except OSError as exc:
            raise _ClientGone() from exc

    def _hang_up(self) -> None:
        """Close the connection at once, mid-response if need be (a ``cut`` failure)."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode("utf-8")
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
        except OSError as exc:
            raise _ClientGone() from exc
        self._headers_sent = True
        self._write(data)

    def _send_error(self, status: int, message: str, type_: str, code: str | None = None) -> None:
        self._send_json(status, error_body(message, type_, None, code))

    def _dispatch(self, method: str) -> None:
        self._headers_sent = False
        try:
            body = self._read_body() if method == "POST" else b""
            path = self.path.split("?", 1)[0].rstrip("/") or "/"
            route = path[3:] if path.startswith("/v1/") else path
            handler = self._routes().get((method, route))
            shaped = self._shaped(method, path)
            if handler is None and shaped is not None:
                handler = shaped
            if handler is None and method == "GET" and route.startswith("/models/"):
                handler = self._get_model
            if handler is None:
                self._send_error(
                    404,
                    f"Unknown request URL: {method} {self.path}",
                    "invalid_request_error",
                    "unknown_url",
                )
                return
            handler(body)
        except _ClientGone:
            self.close_connection = True
        except Exception as exc:  # never crash the server on a bad request
            self.close_connection = True
            if not self._headers_sent:
                with contextlib.suppress(_ClientGone):
                    self._send_error(500, f"fake server error: {exc!r}", "server_error")

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _routes(self) -> dict[tuple[str, str], Any]:
        return {
            ("POST", "/chat/completions"): self._chat,
            ("POST", "/embeddings"): self._embeddings,
            ("GET", "/models"): self._models,
            ("GET", "/_control/health"): self._health,
            ("GET", "/_control/config"): self._get_config,
            ("POST", "/_control/config"): self._set_config,
            ("POST", "/_control/fail"): self._fail,
            ("GET", "/_control/requests"): self._requests,
            ("POST", "/_control/reset"): self._reset,
        }

    def _shaped(self, method: str, path: str) -> Any:
        """The route of another server's shape (``shape`` config), or None."""
        config = self.state.snapshot()
        route = shapes.routes(config.get("shape"), config.get("context_window")).get((method, path))
        if route is None:
            return None

        def answer(body: bytes) -> None:
            request = self._parse_json(body) if method == "POST" else {}
            if request is None:
                return
            status, payload = route(request if isinstance(request, dict) else {})
            self._send_json(status, payload)

        return answer

    def _parse_json(self, body: bytes) -> Any:
        """Parsed JSON body, or None after answering 400."""
        try:
            return json.loads(body.decode("utf-8") or "null")
        except (UnicodeDecodeError, ValueError):
            self._send_error(
                400,
                "We could not parse the JSON body of your request. (HINT: This likely means "
                "you aren't using your HTTP library correctly.)",
                "invalid_request_error",
            )
            return None

    # ---- control endpoints

    def _health(self, body: bytes) -> None:
        self._send_json(200, {"ok": True})

    def _get_config(self, body: bytes) -> None:
        self._send_json(200, self.state.snapshot())

    def _set_config(self, body: bytes) -> None:
        update = self._parse_json(body)
        if update is None:
            return
        if not isinstance(update, dict):
            self._send_error(400, "config must be a JSON object", "invalid_request_error")
            return
        try:
            config = self.state.merge_config(update)
        except ValueError as exc:
            self._send_error(400, str(exc), "invalid_request_error")
            return
        self._send_json(200, config)

    def _fail(self, body: bytes) -> None:
        data = self._parse_json(body)
        if data is None:
            return
        failures = data.get("failures") if isinstance(data, dict) else None
        if not isinstance(failures, list) or not all(
            isinstance(f, dict) and "kind" in f for f in failures
        ):
            self._send_error(
                400, 'expected {"failures": [{"kind": ...}, ...]}', "invalid_request_error"
            )
            return
        self._send_json(200, {"queued": self.state.add_failures(failures)})

    def _requests(self, body: bytes) -> None:
        entries, pending = self.state.log_snapshot()
        self._send_json(200, {"requests": entries, "count": len(entries), "failures": pending})

    def _reset(self, body: bytes) -> None:
        self.state.reset()
        self._send_json(200, {"ok": True})

    # ---- OpenAI endpoints

    def _models(self, body: bytes) -> None:
        names = self.state.snapshot()["models"]
        data = [
            {"id": n, "object": "model", "created": 0, "owned_by": "chatmem-fake"} for n in names
        ]
        self._send_json(200, {"object": "list", "data": data})

    def _get_model(self, body: bytes) -> None:
        name = self.path.split("?", 1)[0].rstrip("/").rsplit("/models/", 1)[-1]
        self._send_json(
            200, {"id": name, "object": "model", "created": 0, "owned_by": "chatmem-fake"}
        )

    def _embeddings(self, body: bytes) -> None:
        request = self._parse_json(body)
        if request is None:
            return
        if not isinstance(request, dict) or "input" not in request:
            self._send_error(400, "'input' is a required property", "invalid_request_error")
            return
        raw = request["input"]
        if isinstance(raw, str):
            inputs = [raw]
        elif isinstance(raw, list) and raw and all(isinstance(x, int) for x in raw):
            inputs = [" ".join(str(x) for x in raw)]  # one token array
        elif isinstance(raw, list):
            inputs = [x if isinstance(x, str) else " ".join(str(t) for t in x) for x in raw]
        else:
            self._send_error(400, "'input' must be a string or a list", "invalid_request_error")
            return
        dims = int(request.get("dimensions") or self.state.snapshot()["embedding_dims"])
        b64 = request.get("encoding_format") == "base64"
        data = []
        for i, text in enumerate(inputs):
            vector = embed_text(text, dims)
            embedding: Any = vector
            if b64:
                embedding = base64.b64encode(struct.pack(f"<{dims}f", *vector)).decode("ascii")
            data.append({"object": "embedding", "index": i, "embedding": embedding})
        tokens = sum(estimate_text_tokens(t) for t in inputs)
        self._send_json(
            200,
            {
                "object": "list",
                "data": data,
                "model": request.get("model", "fake-embedding"),
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            },
        )

    def _chat(self, body: bytes) -> None:
        request = self._parse_json(body)
        if request is None:
            return
        if not isinstance(request, dict) or not isinstance(request.get("messages"), list):
            self._send_error(400, "'messages' is a required property", "invalid_request_error")
            return
        if not request.get("model"):
            self._send_error(400, "you must provide a model parameter", "invalid_request_error")
            return
        messages = request["messages"]
        config = self.state.snapshot()
        summary = is_summary_request(messages)
        kind = "summary" if summary else "chat"
        prompt_tokens = estimate_message_tokens(messages)
        stream = bool(request.get("stream"))
        failure = self.state.take_failure(kind)
        entry = {
            "kind": kind,
            "summary": summary,
            "stream": stream,
            "prompt_tokens": prompt_tokens,
            "failure": failure,
            "status": None,
            "time": time.time(),
            "body": request,
            "headers": {name.lower(): value for name, value in self.headers.items()},
        }
        self.state.log_request(entry)

        def done(status: int | None) -> None:
            self.state.set_status(entry, status)

        latency = config["latency_ms"]
        if summary and config.get("summary_latency_ms") is not None:
            latency = config["summary_latency_ms"]
        self.state.sleep(float(latency or 0) / 1000)

        window = config.get("context_window")
        if failure is not None and failure.get("kind") == "timeout":
            self.state.sleep(float(failure.get("seconds", 30)))
            failure = None  # then answer normally (the client has usually given up by now)
        if failure is not None and not (failure.get("kind") == "cut" and stream):
            done(self._answer_failure(failure, prompt_tokens, window))
            return
        if window and prompt_tokens > int(window):
            limit = request.get("max_completion_tokens") or request.get("max_tokens") or 0
            shaped = shapes.overflow_body(config.get("shape"), int(window), prompt_tokens, limit)
            self._send_json(400, shaped or context_length_body(int(window), prompt_tokens))
            done(400)
            return

        if summary:
            reply = build_recap(message_texts(messages), config.get("summary_words"))
        else:
            reply = chat_reply(messages, config.get("reply_words"), bool(config.get("forget")))
        limit = request.get("max_completion_tokens") or request.get("max_tokens")
        truncated = False
        if isinstance(limit, int) and limit > 0:
            reply, truncated = truncate_to_tokens(reply, limit)
        finish = "length" if truncated else "stop"
        completion_tokens = estimate_text_tokens(reply)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        cid = f"chatcmpl-fake{self.state.next_id():06d}"
        created = int(time.time())
        model = request["model"]
        if stream:
            options = request.get("stream_options") or {}
            include_usage = bool(isinstance(options, dict) and options.get("include_usage"))
            cut = failure is not None and failure.get("kind") == "cut"
            self._stream(
                cid,
                created,
                model,
                reply,
                finish,
                usage,
                include_usage,
                cut,
                float(config.get("chunk_delay_ms") or 0) / 1000,
            )
            done(None if cut else 200)
            return
        self._send_json(
            200,
            {
                "id": cid,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "system_fingerprint": "fp_fake",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": reply, "refusal": None},
                        "logprobs": None,
                        "finish_reason": finish,
                    }
                ],
                "usage": usage,
            },
        )
        done(200)

    def _answer_failure(
        self, failure: dict[str, Any], prompt_tokens: int, window: Any
    ) -> int | None:
        kind = str(failure.get("kind"))
        message = failure.get("message")
        if failure.get("echo"):
            message = f"{message or f'Injected failure {kind}.'} {self._echo_credentials()}"
        if kind == "cut":  # non-streaming: close without any response
            self._hang_up()
            return None
        if kind == "context_length":
            limit = int(failure.get("context_window") or window or 4096)
            tokens = int(failure.get("tokens") or max(prompt_tokens, limit + 1))
            self._send_json(400, context_length_body(limit, tokens))
            return 400
        if kind == "429":
            headers = {"Retry-After": str(failure.get("retry_after", 1))}
            if "retry_after_ms" in failure:
                headers["retry-after-ms"] = str(failure["retry_after_ms"])
            self._send_json(
                429,
                error_body(
                    message or "Rate limit reached for requests (fake). Please try again later.",
                    "rate_limit_error",
                    None,
                    "rate_limit_exceeded",
                ),
                headers,
            )
            return 429
        if kind.isdigit():
            status = int(kind)
            default = {
                500: "The server had an error while processing your request. Sorry about that!",
                503: "The engine is currently overloaded, please try again later.",
            }.get(status, f"Injected failure {status}.")
            self._send_json(status, error_body(message or default, "server_error"))
            return status
        self._send_error(500, f"unknown injected failure kind {kind!r}", "server_error")
        return 500

    def _echo_credentials(self) -> str:
        """What a careless server says back about the credentials it got (an ``echo``
        failure): the Authorization header as received and, for Basic auth, the decoded
        user name and password."""
        auth = self.headers.get("Authorization", "")
        said = f"Rejected Authorization header {auth!r}."
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "basic":
            with contextlib.suppress(ValueError):
                user, _, password = base64.b64decode(token).decode("utf-8").partition(":")
                said += f" User {user!r} with password {password!r} is not allowed."
        return said

    def _stream(
        self,
        cid: str,
        created: int,
        model: str,
        reply: str,
        finish: str,
        usage: dict[str, int],
        include_usage: bool,
        cut: bool,
        delay: float,
    ) -> None:
        try:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream; charset=utf-8")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
        except OSError as exc:
            raise _ClientGone() from exc
        self._headers_sent = True

        def chunk(choices: list[dict[str, Any]], with_usage: Any = None) -> dict[str, Any]:
            event: dict[str, Any] = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "system_fingerprint": "fp_fake",
                "choices": choices,
            }
            if include_usage:
                event["usage"] = with_usage
            return event

        def send(event: Any, first: bool = False) -> None:
            if not first and delay > 0:
                self.state.sleep(delay)
            text = event if isinstance(event, str) else json.dumps(event)
            data = f"data: {text}\n\n".encode()
            self._write(b"%x\r\n%s\r\n" % (len(data), data))

        pieces = re.findall(r"\S+\s*", reply)
        events: list[Any] = [
            chunk(
                [
                    {
                        "index": 0,
                        "delta": {"role": "assistant", "content": ""},
                        "logprobs": None,
                        "finish_reason": None,
                    }
                ]
            )
        ]
        for piece in pieces:
            events.append(
                chunk(
                    [
                        {
                            "index": 0,
                            "delta": {"content": piece},
                            "logprobs": None,
                            "finish_reason": None,
                        }
                    ]
                )
            )
        if cut:
            keep = 1 + max(1, len(pieces) // 2)
            for i, event in enumerate(events[:keep]):
                send(event, first=i == 0)
            self._hang_up()
            return
        events.append(chunk([{"index": 0, "delta": {}, "logprobs": None, "finish_reason": finish}]))
        if include_usage:
            events.append(chunk([], usage))
        events.append("[DONE]")
        for i, event in enumerate(events):
            send(event, first=i == 0)
        self._write(b"0\r\n\r\n")


class FakeHTTPServer(ThreadingHTTPServer):
    """The fake's HTTP server: one thread a connection, sharing one :class:`FakeState`."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # benchmarks open many connections at once

    def __init__(self, address: tuple[str, int], state: FakeState, access_log: bool) -> None:
        self.state = state
        self.access_log = access_log
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(), which can stall without DNS.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError) or not self.access_log:
            return  # client went away, or quiet mode
        super().handle_error(request, client_address)
