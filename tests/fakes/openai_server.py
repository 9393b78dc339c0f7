"""A real OpenAI-compatible HTTP server for tests and benchmarks (standard library only).

Run it as a process::

    python -m tests.fakes.openai_server --port 0 [--latency-ms 300] [--context-window 4096]

It prints exactly one line, ``listening on http://127.0.0.1:PORT``, then serves until killed.
In-process use: ``with FakeOpenAIServer(latency_ms=10) as server: ... server.url ...``.

Replies are deterministic so conversation memory can be tested end to end:

* a request whose system messages contain ``running recap`` is a *summary request*; the reply
  is a recap with one line ``- The user's <key> is <value>.`` per fact found in the messages
  (statements ``my <key> is <value>`` and earlier recap lines);
* a chat request whose last user message is ``what is my <key>?`` is answered from the facts in
  the request (``Your <key> is <value>.`` or ``I don't know your <key>.``);
* any other chat request gets ``You said: <first 12 words>``.

Failures (429, 500, 503, timeouts, cut connections, context-length errors) can be queued
through the ``/_control/*`` endpoints; see ``tests/fakes/README.md``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import copy
import hashlib
import json
import math
import queue
import re
import socket
import socketserver
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_CONFIG",
    "SUMMARY_MARKER",
    "FakeControl",
    "FakeOpenAIServer",
    "FakeServerProcess",
    "build_recap",
    "embed_text",
    "estimate_message_tokens",
    "estimate_text_tokens",
    "extract_facts",
    "free_port",
    "is_summary_request",
    "main",
    "start_server_process",
]

HOST = "127.0.0.1"
SUMMARY_MARKER = "running recap"
REPO_ROOT = Path(__file__).resolve().parents[2]

DEFAULT_CONFIG: dict[str, Any] = {
    "latency_ms": 0,  # before the response headers / first chunk
    "summary_latency_ms": None,  # overrides latency_ms for summary requests when set
    "chunk_delay_ms": 0,  # between stream chunks
    "context_window": None,  # prompt tokens above this -> 400 context_length_exceeded
    "reply_words": None,  # pad chat echo replies with filler up to this many words
    "summary_words": None,  # pad/truncate recaps to exactly this many words
    "models": ["gpt-4o-mini", "gpt-4o", "fake-model"],
    "embedding_dims": 256,
}

_PIECE_RE = re.compile(r"\w+|[^\w\s]")
_FACT_RE = re.compile(r"\bmy ([a-z][a-z ]{0,30}?) (?:is|are) ([^.,!?\n]+)", re.IGNORECASE)
_RECAP_LINE_RE = re.compile(
    r"\bthe user's ([a-z][a-z ]{0,30}?) (?:is|are) ([^.,!?\n]+)", re.IGNORECASE
)
_QUESTION_RE = re.compile(r"what(?:'s| is| are) my ([a-z][a-z ]{0,30}?)\??$", re.IGNORECASE)
_ECHO_PREFIX = "You said:"
_REPLY_FILLER = ["the", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog"]
_RECAP_FILLER = ["Recap", "filler."]
_NO_FACTS = "- No durable facts yet."


# --------------------------------------------------------------------------- text helpers


def estimate_text_tokens(text: str) -> int:
    """Deliberately inexact token estimate: regex word and punctuation pieces."""
    return len(_PIECE_RE.findall(text))


def content_text(content: Any) -> str:
    """Text of a message ``content``: a string, a list of parts, or None."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"])
            elif isinstance(part, str):
                parts.append(part)
        return "\n".join(parts)
    return str(content)


def estimate_message_tokens(messages: list[dict[str, Any]]) -> int:
    """Prompt tokens as the fake reports them: pieces per content, +4 a message, +3."""
    total = 3
    for message in messages:
        text = content_text(message.get("content")) if isinstance(message, dict) else ""
        total += 4 + estimate_text_tokens(text)
    return total


def _message_texts(messages: list[dict[str, Any]]) -> list[str]:
    return [content_text(m.get("content")) for m in messages if isinstance(m, dict)]


def is_summary_request(messages: list[dict[str, Any]]) -> bool:
    """A summary request has a system message containing ``running recap`` (any case)."""
    for message in messages:
        if not isinstance(message, dict) or message.get("role") not in ("system", "developer"):
            continue
        if SUMMARY_MARKER in content_text(message.get("content")).lower():
            return True
    return False


def _is_echo_of_fake(text: str, pos: int) -> bool:
    """True when ``pos`` lies on a line after the fake's own ``You said:`` echo.

    The echo repeats (and may cut) the user's words, so it is not a source of facts:
    a cut echo such as ``... my favourite food is spicy`` must not override the full value.
    """
    line_start = text.rfind("\n", 0, pos) + 1
    return _ECHO_PREFIX.lower() in text[line_start:pos].lower()


def extract_facts(texts: list[str]) -> dict[str, str]:
    """Facts from ``my <key> is <value>`` statements and ``The user's <key> is <value>`` lines.

    Keys are stripped and lowercased; later values win; first-seen order is kept.
    """
    facts: dict[str, str] = {}
    for text in texts:
        matches = [*_FACT_RE.finditer(text), *_RECAP_LINE_RE.finditer(text)]
        matches.sort(key=lambda m: m.start())
        for match in matches:
            if _is_echo_of_fake(text, match.start()):
                continue
            key = " ".join(match.group(1).split()).lower()
            value = match.group(2).strip()
            if key and value:
                facts[key] = value
    return facts


def build_recap(texts: list[str], summary_words: int | None = None) -> str:
    """The deterministic recap: one ``- The user's <key> is <value>.`` line per fact."""
    facts = extract_facts(texts)
    lines = [f"- The user's {key} is {value}." for key, value in facts.items()] or [_NO_FACTS]
    recap = "\n".join(lines)
    if summary_words is None:
        return recap
    target = max(1, int(summary_words))
    words = recap.split()
    if len(words) >= target:
        # Truncate word by word, keeping the line structure of what is left.
        kept: list[str] = []
        remaining = target
        for line in lines:
            line_words = line.split()
            if remaining <= 0:
                break
            kept.append(" ".join(line_words[:remaining]))
            remaining -= len(line_words)
        return "\n".join(kept)
    filler = [_RECAP_FILLER[i % len(_RECAP_FILLER)] for i in range(target - len(words))]
    return recap + "\n" + " ".join(filler)


def _last_user_text(messages: list[dict[str, Any]]) -> str | None:
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return content_text(message.get("content"))
    return None


def chat_reply(messages: list[dict[str, Any]], reply_words: int | None = None) -> str:
    """The deterministic chat reply (see the module docstring)."""
    last = (_last_user_text(messages) or "").strip()
    question = _QUESTION_RE.search(last)
    if question:
        key = " ".join(question.group(1).split()).lower()
        facts = extract_facts(_message_texts(messages))
        if key in facts:
            return f"Your {key} is {facts[key]}."
        return f"I don't know your {key}."
    words = last.split()[:12] or ["(nothing)"]
    reply_list = [_ECHO_PREFIX.split()[0], _ECHO_PREFIX.split()[1], *words]
    if reply_words is not None and len(reply_list) < int(reply_words):
        extra = int(reply_words) - len(reply_list)
        reply_list += [_REPLY_FILLER[i % len(_REPLY_FILLER)] for i in range(extra)]
    return " ".join(reply_list)


def _truncate_to_tokens(reply: str, max_tokens: int) -> tuple[str, bool]:
    """Cut ``reply`` at a word boundary so its estimate fits ``max_tokens`` (>= one word)."""
    if estimate_text_tokens(reply) <= max_tokens:
        return reply, False
    out = []
    used = 0
    for piece in re.findall(r"\S+\s*", reply):
        cost = estimate_text_tokens(piece)
        if out and used + cost > max_tokens:
            break
        out.append(piece)
        used += cost
    return "".join(out).rstrip(), True


def embed_text(text: str, dims: int = 256) -> list[float]:
    """Deterministic embedding: hashed bag of lowercase words, signed, L2-normalised."""
    vector = [0.0] * dims
    words = re.findall(r"\w+", text.lower()) or [""]
    for word in words:
        digest = hashlib.blake2b(word.encode("utf-8"), digest_size=8).digest()
        number = int.from_bytes(digest, "little")
        index = number % dims
        sign = 1.0 if (number >> 63) & 1 else -1.0
        vector[index] += sign
    norm = math.sqrt(sum(v * v for v in vector))
    if norm == 0.0:  # words cancelled out; fall back to a fixed unit vector
        vector[0] = norm = 1.0
    return [v / norm for v in vector]


def _error_body(
    message: str, type_: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def _context_length_body(window: int, tokens: int) -> dict[str, Any]:
    return _error_body(
        f"This model's maximum context length is {window} tokens. However, your messages "
        f"resulted in {tokens} tokens. Please reduce the length of the messages.",
        "invalid_request_error",
        "messages",
        "context_length_exceeded",
    )


# --------------------------------------------------------------------------- server state


class _State:
    """Config, failure queue and request log, shared by all handler threads."""

    def __init__(self, config: dict[str, Any]) -> None:
        unknown = set(config) - set(DEFAULT_CONFIG)
        if unknown:
            raise ValueError(f"unknown config keys: {sorted(unknown)}")
        self.startup = {**copy.deepcopy(DEFAULT_CONFIG), **copy.deepcopy(config)}
        self.lock = threading.Lock()
        self.config: dict[str, Any] = copy.deepcopy(self.startup)
        self.failures: list[dict[str, Any]] = []
        self.requests: list[dict[str, Any]] = []
        self.wake = threading.Event()  # set on reset/stop: ends pending sleeps early
        self.counter = 0

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return copy.deepcopy(self.config)

    def merge_config(self, update: dict[str, Any]) -> dict[str, Any]:
        unknown = set(update) - set(DEFAULT_CONFIG)
        if unknown:
            raise ValueError(
                f"unknown config keys: {sorted(unknown)}; known: {sorted(DEFAULT_CONFIG)}"
            )
        with self.lock:
            self.config.update(copy.deepcopy(update))
            return copy.deepcopy(self.config)

    def reset(self) -> None:
        with self.lock:
            self.config = copy.deepcopy(self.startup)
            self.failures.clear()
            self.requests.clear()
            self.wake.set()
            self.wake = threading.Event()

    def take_failure(self, kind: str) -> dict[str, Any] | None:
        """Pop the first queued failure that applies to a ``kind`` ("chat"/"summary") request."""
        with self.lock:
            for i, failure in enumerate(self.failures):
                only = failure.get("only")
                if only in (None, "", "any", kind):
                    return self.failures.pop(i)
            return None

    def next_id(self) -> int:
        with self.lock:
            self.counter += 1
            return self.counter

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            with self.lock:
                event = self.wake
            event.wait(seconds)


# --------------------------------------------------------------------------- HTTP handler


class _ClientGone(Exception):
    """The client closed the connection; nothing more can be sent."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "chatmem-fake-openai/1.0"
    server: _HTTPServer

    # ---- plumbing

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.access_log:
            sys.stderr.write(f"{self.address_string()} - {format % args}\n")

    @property
    def state(self) -> _State:
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
        self._send_json(status, _error_body(message, type_, None, code))

    def _dispatch(self, method: str) -> None:
        self._headers_sent = False
        try:
            body = self._read_body() if method == "POST" else b""
            path = self.path.split("?", 1)[0].rstrip("/") or "/"
            route = path[3:] if path.startswith("/v1/") else path
            handler = self._routes().get((method, route))
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
        with self.state.lock:
            self.state.failures.extend(copy.deepcopy(failures))
            queued = len(self.state.failures)
        self._send_json(200, {"queued": queued})

    def _requests(self, body: bytes) -> None:
        with self.state.lock:
            entries = copy.deepcopy(self.state.requests)
            pending = copy.deepcopy(self.state.failures)
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
        }
        with self.state.lock:
            self.state.requests.append(entry)

        def done(status: int | None) -> None:
            with self.state.lock:
                entry["status"] = status

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
            self._send_json(400, _context_length_body(int(window), prompt_tokens))
            done(400)
            return

        if summary:
            reply = build_recap(_message_texts(messages), config.get("summary_words"))
        else:
            reply = chat_reply(messages, config.get("reply_words"))
        limit = request.get("max_completion_tokens") or request.get("max_tokens")
        truncated = False
        if isinstance(limit, int) and limit > 0:
            reply, truncated = _truncate_to_tokens(reply, limit)
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
        if kind == "cut":  # non-streaming: close without any response
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return None
        if kind == "context_length":
            limit = int(failure.get("context_window") or window or 4096)
            tokens = int(failure.get("tokens") or max(prompt_tokens, limit + 1))
            self._send_json(400, _context_length_body(limit, tokens))
            return 400
        if kind == "429":
            headers = {"Retry-After": str(failure.get("retry_after", 1))}
            if "retry_after_ms" in failure:
                headers["retry-after-ms"] = str(failure["retry_after_ms"])
            self._send_json(
                429,
                _error_body(
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
            self._send_json(status, _error_body(message or default, "server_error"))
            return status
        self._send_error(500, f"unknown injected failure kind {kind!r}", "server_error")
        return 500

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
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        events.append(chunk([{"index": 0, "delta": {}, "logprobs": None, "finish_reason": finish}]))
        if include_usage:
            events.append(chunk([], usage))
        events.append("[DONE]")
        for i, event in enumerate(events):
            send(event, first=i == 0)
        self._write(b"0\r\n\r\n")


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # benchmarks open many connections at once

    def __init__(self, address: tuple[str, int], state: _State, access_log: bool) -> None:
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


# --------------------------------------------------------------------------- public classes


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
        self.state = _State(config)
        self.access_log = access_log
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> FakeOpenAIServer:
        if self._httpd is not None:
            return self
        self._httpd = _HTTPServer((self.host, self.requested_port), self.state, self.access_log)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
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
        if self._httpd is None:
            self._httpd = _HTTPServer((self.host, self.requested_port), self.state, self.access_log)
        self._httpd.serve_forever(poll_interval=0.2)

    def bind(self) -> None:
        """Bind and listen without serving yet (connections queue in the backlog)."""
        if self._httpd is None:
            self._httpd = _HTTPServer((self.host, self.requested_port), self.state, self.access_log)

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
    """The fake server as a child process (``python -m tests.fakes.openai_server``)."""

    def __init__(self, process: subprocess.Popen[str], port: int) -> None:
        self.process = process
        self.port = port
        self.base = f"http://{HOST}:{port}"
        self.url = self.base + "/v1"
        self.control = FakeControl(self.base)

    def stop(self, timeout: float = 5.0) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout)
        for pipe in (self.process.stdout, self.process.stderr):
            if pipe is not None:
                with contextlib.suppress(OSError, ValueError):
                    pipe.close()

    def __enter__(self) -> FakeServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_server_process(*args: str, timeout: float = 15.0) -> FakeServerProcess:
    """Start ``python -m tests.fakes.openai_server --port 0 *args`` and wait until it listens.

    Raises RuntimeError (with the child's stderr) if it does not start within ``timeout``.
    """
    command = [sys.executable, "-m", "tests.fakes.openai_server", "--port", "0", *args]
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
        prog="python -m tests.fakes.openai_server",
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
