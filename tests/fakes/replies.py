"""What the fake model answers: deterministic replies, token estimates, injected failures.

Replies are deterministic so conversation memory can be tested end to end:

* a request whose system messages contain ``running recap`` is a *summary request*; the reply
  is a recap with one line ``- The user's <key> is <value>.`` per fact found in the messages
  (statements ``my <key> is <value>`` and earlier recap lines);
* a chat request whose last user message is ``what is my <key>?`` is answered from the facts in
  the request (``Your <key> is <value>.`` or ``I don't know your <key>.``);
* any other chat request gets ``You said: <first 12 words>``.

:class:`FakeState` holds the server's config, its queue of injected failures (which request
takes which failure) and its request log. No HTTP here: see ``handler.py``.
"""

from __future__ import annotations

import copy
import hashlib
import math
import re
import threading
from typing import Any

__all__ = [
    "DEFAULT_CONFIG",
    "SUMMARY_MARKER",
    "FakeState",
    "build_recap",
    "chat_reply",
    "content_text",
    "embed_text",
    "estimate_message_tokens",
    "estimate_text_tokens",
    "extract_facts",
    "is_summary_request",
    "message_texts",
    "truncate_to_tokens",
]

SUMMARY_MARKER = "running recap"

DEFAULT_CONFIG: dict[str, Any] = {
    "latency_ms": 0,  # before the response headers / first chunk
    "summary_latency_ms": None,  # overrides latency_ms for summary requests when set
    "chunk_delay_ms": 0,  # between stream chunks
    "context_window": None,  # prompt tokens above this -> 400 context_length_exceeded
    "reply_words": None,  # pad chat echo replies with filler up to this many words
    "summary_words": None,  # pad/truncate recaps to exactly this many words
    "forget": False,  # answer every fact question "I don't know", even with the fact sent
    "models": ["gpt-4o-mini", "gpt-4o", "fake-model"],
    "embedding_dims": 256,
    "shape": None,  # also answer as llama-server, vllm or ollama (see shapes.py)
}

_PIECE_RE = re.compile(r"\w+|[^\w\s]")
_FACT_RE = re.compile(r"\bmy ([a-z][a-z ]{0,30}?) (?:is|are) ([^.,!?\n]+)", re.IGNORECASE)
_RECAP_LINE_RE = re.compile(
    r"\bthe user's ([a-z][a-z ]{0,30}?) (?:is|are) ([^.,!?\n]+)", re.IGNORECASE
)
_QUESTION_RE = re.compile(r"what(?:'s| is| are) my ([a-z][a-z ]{0,30}?)\??$", re.IGNORECASE)
_ECHO_PREFIX = "You said:"
_REPLY_FILLER = ["the", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog"]
_RECAP_FILLER = "Recap filler {}."  # numbered: the same words over and over read as a loop
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


def message_texts(messages: list[dict[str, Any]]) -> list[str]:
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
    filler = " ".join(_RECAP_FILLER.format(i) for i in range(target - len(words))).split()
    return recap + "\n" + " ".join(filler[: target - len(words)])


def _last_user_text(messages: list[dict[str, Any]]) -> str | None:
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return content_text(message.get("content"))
    return None


def chat_reply(
    messages: list[dict[str, Any]], reply_words: int | None = None, forget: bool = False
) -> str:
    """The deterministic chat reply (see the module docstring); with ``forget``, a model that
    does not use what it is sent: every fact question gets ``I don't know your <key>.``"""
    last = (_last_user_text(messages) or "").strip()
    question = _QUESTION_RE.search(last)
    if question:
        key = " ".join(question.group(1).split()).lower()
        facts = {} if forget else extract_facts(message_texts(messages))
        if key in facts:
            return f"Your {key} is {facts[key]}."
        return f"I don't know your {key}."
    words = last.split()[:12] or ["(nothing)"]
    reply_list = [_ECHO_PREFIX.split()[0], _ECHO_PREFIX.split()[1], *words]
    if reply_words is not None and len(reply_list) < int(reply_words):
        extra = int(reply_words) - len(reply_list)
        reply_list += [_REPLY_FILLER[i % len(_REPLY_FILLER)] for i in range(extra)]
    return " ".join(reply_list)


def truncate_to_tokens(reply: str, max_tokens: int) -> tuple[str, bool]:
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


# --------------------------------------------------------------------------- server state


class FakeState:
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

    def add_failures(self, failures: list[dict[str, Any]]) -> int:
        """Queue injected failures (copies); returns the queue's new length."""
        with self.lock:
            self.failures.extend(copy.deepcopy(failures))
            return len(self.failures)

    def log_request(self, entry: dict[str, Any]) -> None:
        """Add a chat request's entry to the log (its ``status`` is set when answered)."""
        with self.lock:
            self.requests.append(entry)

    def set_status(self, entry: dict[str, Any], status: int | None) -> None:
        with self.lock:
            entry["status"] = status

    def log_snapshot(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Copies of the request log and of the failures still queued."""
        with self.lock:
            return copy.deepcopy(self.requests), copy.deepcopy(self.failures)

    def next_id(self) -> int:
        with self.lock:
            self.counter += 1
            return self.counter

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            with self.lock:
                event = self.wake
            event.wait(seconds)
