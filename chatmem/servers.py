"""Which kind of server answers at a base URL, and how to count tokens the way it does.

:func:`probe` runs once when a model is set up (cached per server and model, a few short
HTTP requests, never on the path of a turn) and returns a :class:`ServerProfile`: a token
counter, most exact first, the context window where the server says it, and what the server
does that the turn loop must know (it sends no usage; a new request ends a running one).

- **llama-cpp-python** (``python -m llama_cpp.server``): the model's chat template (from the
  GGUF's metadata when the file named by ``/v1/models`` is readable here, else ChatML,
  checked once against the server's own count) rendered here, counted by
  ``/extras/tokenize/count``. Its window is not published: learnt from its first overflow.
- **llama.cpp's llama-server**: ``/apply-template`` and ``/tokenize``; the window from ``/props``.
- **vLLM**: ``/tokenize`` with ``messages``, which also returns ``max_model_len``.
- **Ollama**: ``/api/show`` for the window and the model file; the GGUF's own tokenizer and
  template through llama-cpp-python (``vocab_only``) when that file is readable here.
- anything else: tiktoken, exact for OpenAI's model names; for other names an estimate
  calibrated by the ``usage`` the server reports (:class:`~chatmem.tokens.CalibratedCounter`).

A message's cost is measured as the template frames it (the conversation with the message
minus the conversation without it) and cached per message, so a turn sends only its new text;
the template's fixed overhead is measured once on a short probe conversation.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chatmem.tokens import (
    CalibratedCounter,
    ChatFormat,
    MessageCounter,
    TokenCounter,
    content_text,
)

log = logging.getLogger(__name__)

PROBE_TIMEOUT = 3.0
VERIFY_TIMEOUT = 60.0
# The fixed anchor a message is measured after, and the conversation the overhead is measured on.
ANCHOR: dict[str, str] = {"role": "system", "content": "."}
PROBE_CONVERSATION: tuple[dict[str, str], ...] = (
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Hi there."},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "Bye."},
)
# ChatML, the template of many small open models (SmolLM2, Qwen): tried when the server's
# own template cannot be read, and used only if the server's count confirms it.
CHATML_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
LLAMA_CPP_PYTHON_WINDOW = 2048  # its server's default n_ctx
OLLAMA_WINDOW = 2048  # Ollama's num_ctx when a model file sets none (older default; newer: more)

Messages = Sequence[Mapping[str, Any]]
Whole = Callable[[Messages, bool], int]  # tokens of a rendered conversation


@dataclass
class ServerProfile:
    """What the probe found about a server."""

    kind: str  # openai, llama-cpp-python, llama-server, vllm, ollama, unknown
    counter: TokenCounter
    window: int | None = None  # the context window the server says it has
    window_note: str = ""  # where the window came from, when it is a guess
    interrupts: bool = False  # a new request ends the one in progress (llama-cpp-python)
    count_prompt: Callable[[Messages], int] | None = None  # a whole request, by the server's count
    template_ok: bool = True  # the rendered template matched the server's count
    served: str | None = None  # the model the server answers with, when not the name asked for


_profiles: dict[tuple[str, str], ServerProfile] = {}
_probe_lock = threading.Lock()


def server_root(base_url: str) -> str:
    """The server's address without the OpenAI ``/v1`` path."""
    root = base_url.rstrip("/")
    return root[:-3] if root.endswith("/v1") else root


class _Http:
    """Small JSON requests (the standard library's, so a probe imports nothing heavy) that
    never raise: None for any failure."""

    def __init__(self, root: str, headers: Mapping[str, str], timeout: float) -> None:
        self._root = root.rstrip("/")
        self._headers = {"Accept": "application/json", **headers}
        self._timeout = timeout

    def get(self, path: str) -> Any:
        return self._send("GET", path, None)

    def post(self, path: str, payload: Mapping[str, Any], timeout: float | None = None) -> Any:
        return self._send("POST", path, payload, timeout)

    def _send(
        self,
        method: str,
        path: str,
        payload: Mapping[str, Any] | None,
        timeout: float | None = None,
    ) -> Any:
        import json
        import urllib.request

        data = None if payload is None else json.dumps(payload).encode("utf-8")
        headers = dict(self._headers)
        if data is not None:
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(
            self._root + path, data=data, headers=headers, method=method
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout or self._timeout) as response:
                if response.status != 200:
                    return None
                return json.loads(response.read().decode("utf-8"))
        except Exception as exc:  # refused, timeout, an HTTP error status, not JSON
            log.debug("probe %s %s failed: %s", method, path, type(exc).__name__)
            return None


def render_template(template: str, bos: str = "", eos: str = "") -> Callable[[Messages, bool], str]:
    """A chat template (Jinja, as in a GGUF or a Hugging Face tokenizer) as a function of the
    messages and whether to add the reply's prompt, rendered in a sandbox."""
    import jinja2
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise jinja2.TemplateError(message)

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols]
    )
    compiled = env.from_string(template)

    def render(messages: Messages, add_generation_prompt: bool) -> str:
        return compiled.render(
            messages=[dict(m) for m in messages],
            bos_token=bos,
            eos_token=eos,
            add_generation_prompt=add_generation_prompt,
            raise_exception=raise_exception,
        )

    return render


def template_counter(
    whole: Whole,
    encode: Callable[[str], int],
    *,
    label: str,
    source: str,
    tail: Mapping[str, Any] | None = None,
) -> MessageCounter:
    """A counter whose message costs and fixed overhead are measured with ``whole``.

    ``tail``: a message each one is measured before, for a rendering that moves part of a
    message next to the newest user message (the local model's fact notes, see
    :func:`chatmem.prompting.facts_last`): the part is then counted where it is sent.
    """
    after = [dict(tail)] if tail else []
    anchor = whole([ANCHOR, *after], False)
    try:
        empty = whole([], False)
    except Exception:  # a template that refuses an empty conversation
        empty = 0

    def measure(message: Mapping[str, Any]) -> int:
        msg = {"role": message.get("role", "user"), "content": content_text(message.get("content"))}
        if msg["role"] == "system":
            return whole([msg], False) - empty
        return whole([ANCHOR, msg, *after], False) - anchor

    overhead = whole(PROBE_CONVERSATION, True) - sum(measure(m) for m in PROBE_CONVERSATION)
    return MessageCounter(encode, measure, overhead, label=label, source=source)


_vocabs: list[Any] = []  # GGUF vocabularies loaded here, freed at exit


@atexit.register
def _close_vocabs() -> None:
    """Free llama.cpp vocabularies before interpreter teardown (their finalizer fails later)."""
    while _vocabs:
        with contextlib.suppress(Exception):
            _vocabs.pop().close()


def _gguf_vocab(path: Path) -> tuple[Callable[[str], int], str | None, str, str] | None:
    """The tokenizer and chat template of a GGUF file read here (vocabulary only), or None."""
    try:
        import llama_cpp

        llm = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
    except Exception as exc:
        log.debug("could not read %s: %s", path, exc)
        return None
    _vocabs.append(llm)
    template = llm.metadata.get("tokenizer.chat_template")

    def piece(token: int) -> str:
        return llm.detokenize([token], special=True).decode("utf-8", "replace")

    bos, eos = piece(llm.token_bos()), piece(llm.token_eos())

    def encode(text: str) -> int:
        return len(llm.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    return encode, template, bos, eos


# --------------------------------------------------------------------------------------
# Per server kind
# --------------------------------------------------------------------------------------
def _llama_cpp_python(http: _Http, model: str, fallback: TokenCounter) -> ServerProfile | None:
    seen = http.post("/extras/tokenize/count", {"input": "", "model": model})
    if not isinstance(seen, dict) or not isinstance(seen.get("count"), int):
        return None
    auto = seen["count"]  # tokens the route adds to any text (a beginning-of-text token)

    def encode(text: str) -> int:
        got = http.post("/extras/tokenize/count", {"input": text, "model": model})
        if not isinstance(got, dict) or not isinstance(got.get("count"), int):
            raise ConnectionError("the server's tokenize route did not answer")
        return got["count"] - auto

    template, bos, eos = None, "", ""
    listed = http.get("/v1/models")
    entries = [
        e
        for e in (listed.get("data", []) if isinstance(listed, dict) else [])
        if isinstance(e, dict)
    ]
    # the server answers a model name it does not list with its first (default) model
    chosen = next((e for e in entries if e.get("id") == model), entries[0] if entries else None)
    path = Path(str(chosen.get("id", ""))) if chosen else None
    source, label = "server", "the server's tokenizer and ChatML"
    if path is not None and path.suffix == ".gguf" and path.is_file():
        vocab = _gguf_vocab(path)
        if vocab and vocab[1]:
            # The model file is readable here: its own tokenizer counts without a request
            # (on this server any request, a tokenize one too, ends a reply in progress).
            encode, template, bos, eos = vocab
            source, label = "local", f"{path.name}'s tokenizer and chat template"
    render = render_template(template or CHATML_TEMPLATE, bos, eos)

    def whole(messages: Messages, gen: bool) -> int:
        return encode(render(messages, gen))

    counter = template_counter(whole, encode, label=label, source=source)
    # one short non-streamed call checks the rendering against the server's own count
    answer = http.post(
        "/v1/chat/completions",
        {"model": model, "messages": list(PROBE_CONVERSATION), "max_tokens": 1, "temperature": 0},
        timeout=VERIFY_TIMEOUT,  # the model's first call may load it
    )
    usage = answer.get("usage") if isinstance(answer, dict) else None
    reported = usage.get("prompt_tokens") if isinstance(usage, dict) else None
    ours = counter.messages(PROBE_CONVERSATION)
    ok = reported is None or reported == ours
    if not ok:
        log.warning("%s: %d tokens where the server counts %d; estimating", label, ours, reported)
        counter = CalibratedCounter(
            encode, ChatFormat(5, 1, 4), label="the server's tokenizer, calibrated"
        )
    return ServerProfile(
        "llama-cpp-python",
        counter,
        None,
        window_note=(
            "llama-cpp-python's server does not publish its context window: assuming its "
            f"default of {LLAMA_CPP_PYTHON_WINDOW:,} tokens until it says otherwise (set "
            "CHATMEM_CONTEXT_WINDOW to its --n_ctx)."
        ),
        interrupts=True,
        count_prompt=(lambda messages: whole(messages, True)) if ok else None,
        template_ok=ok,
        served=Path(str(chosen["id"])).name if chosen and chosen.get("id") != model else None,
    )


def _llama_server(http: _Http, model: str) -> ServerProfile | None:
    props = http.get("/props")
    if not isinstance(props, dict):
        return None
    settings = props.get("default_generation_settings")
    n_ctx = settings.get("n_ctx") if isinstance(settings, dict) else props.get("n_ctx")
    if not isinstance(n_ctx, int) and "chat_template" not in props:
        return None

    def tokens(text: str, special: bool) -> int:
        got = http.post(
            "/tokenize", {"content": text, "add_special": special, "parse_special": True}
        )
        if not isinstance(got, dict) or not isinstance(got.get("tokens"), list):
            raise ConnectionError("the server's tokenize route did not answer")
        return len(got["tokens"])

    def whole(messages: Messages, gen: bool) -> int:
        rendered = http.post("/apply-template", {"messages": [dict(m) for m in messages]})
        if not isinstance(rendered, dict) or not isinstance(rendered.get("prompt"), str):
            raise ConnectionError("the server's apply-template route did not answer")
        return tokens(rendered["prompt"], True)

    counter = template_counter(
        whole,
        lambda text: tokens(text, False),
        label="the server's tokenizer and template",
        source="server",
    )
    window = n_ctx if isinstance(n_ctx, int) and n_ctx > 0 else None
    return ServerProfile("llama-server", counter, window, count_prompt=lambda m: whole(m, True))


def _vllm(http: _Http, model: str) -> ServerProfile | None:
    first = http.post(
        "/tokenize", {"model": model, "messages": [ANCHOR], "add_generation_prompt": False}
    )
    if not isinstance(first, dict) or "max_model_len" not in first or "count" not in first:
        return None

    def whole(messages: Messages, gen: bool) -> int:
        got = http.post(
            "/tokenize",
            {"model": model, "messages": [dict(m) for m in messages], "add_generation_prompt": gen},
        )
        if not isinstance(got, dict) or not isinstance(got.get("count"), int):
            raise ConnectionError("the server's tokenize route did not answer")
        return got["count"]

    def encode(text: str) -> int:
        got = http.post("/tokenize", {"model": model, "prompt": text, "add_special_tokens": False})
        if not isinstance(got, dict) or not isinstance(got.get("count"), int):
            raise ConnectionError("the server's tokenize route did not answer")
        return got["count"]

    counter = template_counter(
        whole, encode, label="the server's tokenizer and template", source="server"
    )
    window = first.get("max_model_len")
    return ServerProfile(
        "vllm",
        counter,
        window if isinstance(window, int) else None,
        count_prompt=lambda m: whole(m, True),
    )


_NUM_CTX = re.compile(r"^\s*num_ctx\s+(\d+)", re.MULTILINE)
_FROM = re.compile(r"^FROM\s+(\S+)", re.MULTILINE)


def _ollama(http: _Http, model: str, fallback: TokenCounter) -> ServerProfile | None:
    shown = http.post("/api/show", {"model": model})
    if not isinstance(shown, dict) or not ("model_info" in shown or "modelfile" in shown):
        return None
    found = _NUM_CTX.search(str(shown.get("parameters", "")))
    window, note = (int(found.group(1)), "") if found else (None, "")
    if window is None:
        info = shown.get("model_info") if isinstance(shown.get("model_info"), dict) else {}
        trained = next((v for k, v in info.items() if k.endswith(".context_length")), None)
        window = min(OLLAMA_WINDOW, trained) if isinstance(trained, int) else OLLAMA_WINDOW
        note = (
            f"Ollama does not say its num_ctx for {model!r}: assuming {window:,} tokens (it drops "
            "the oldest part of a longer request without an error; set CHATMEM_CONTEXT_WINDOW "
            "to the num_ctx it runs with)."
        )
    counter: TokenCounter | None = None
    source = _FROM.search(str(shown.get("modelfile", "")))
    path = Path(source.group(1)) if source else None
    vocab = _gguf_vocab(path) if path is not None and path.is_file() else None
    if vocab is not None and vocab[1]:
        encode, template, bos, eos = vocab
        render = render_template(template, bos, eos)
        counter = template_counter(
            lambda m, gen: encode(render(m, gen)),
            encode,
            label="the model file's tokenizer",
            source="local",
        )
    if counter is None:
        counter = CalibratedCounter(fallback._encode_len, label=f"{fallback.label}, calibrated")
    return ServerProfile("ollama", counter, window, window_note=note)


# --------------------------------------------------------------------------------------
def probe(
    base_url: str | None,
    model: str,
    *,
    headers: Mapping[str, str] | None = None,
    known_model: bool,
    fallback: TokenCounter,
    timeout: float = PROBE_TIMEOUT,
) -> ServerProfile:
    """The profile of the server at ``base_url`` serving ``model`` (cached per server and model).

    ``fallback`` is the tiktoken counter for the model's name, ``known_model`` whether that
    name is one of OpenAI's (then tiktoken is exact wherever it is served).
    """
    if base_url is None:
        return ServerProfile("openai", fallback)
    key = (server_root(base_url), model)
    with _probe_lock:
        cached = _profiles.get(key)
    if cached is not None:
        return cached
    http = _Http(server_root(base_url), headers or {}, timeout)
    reached = http.get("/v1/models") is not None or http.get("/health") is not None
    profile: ServerProfile | None = None
    for attempt in (
        lambda: _llama_server(http, model),
        lambda: _llama_cpp_python(http, model, fallback),
        lambda: _vllm(http, model),
        lambda: _ollama(http, model, fallback),
    ):
        try:
            profile = attempt()
        except Exception as exc:  # a route that answered once and then failed
            log.warning("probing %s failed: %s", redact_root(base_url), exc)
            profile = None
        if profile is not None:
            break
    if profile is None:
        counter = (
            fallback
            if known_model
            else CalibratedCounter(fallback._encode_len, label=f"{fallback.label}, calibrated")
        )
        profile = ServerProfile("unknown", counter)
    if reached:
        with _probe_lock:
            _profiles[key] = profile
    return profile


def redact_root(base_url: str) -> str:
    from chatmem.redact import redact

    return redact(server_root(base_url))


# --------------------------------------------------------------------------------------
# Overflow: how many tokens the server counted, and the budget to retry with
# --------------------------------------------------------------------------------------
def retry_limit(
    *,
    estimate: int,
    budget: int,
    window: int,
    reply_reserve: int,
    limit: int | None,
    prompt_tokens: int | None,
    requested: int | None,
) -> int | None:
    """The budget (in this side's tokens) to retry an overflowing request with, or None when
    no positive budget would do.

    ``estimate`` is what was counted here for the request, ``prompt_tokens`` what the server
    counted for its prompt part (preferred), ``limit``/``requested`` the window and total the
    server named. The target is the smaller of the budget and the window less the reply.
    """
    window = min(window, limit) if limit else window
    target = min(budget, window - reply_reserve)
    if prompt_tokens and prompt_tokens > 0:
        new = int(target * estimate / prompt_tokens)
    elif limit and requested and requested > limit:
        new = min(target, estimate - (requested - limit))
    else:
        new = target
    new -= 16 + max(0, new) // 20
    return new if new > 0 else None


_OVERFLOW_PATTERNS: tuple[tuple[re.Pattern[str], tuple[str, ...]], ...] = (
    # OpenAI, llama-cpp-python's server and older vLLM: "maximum context length is W tokens.
    # However, you requested T tokens (P in the messages, C in the completion)"
    (
        re.compile(
            r"maximum context length is (\d[\d,]*) tokens.*?requested (\d[\d,]*) tokens"
            r"(?:\s*\((\d[\d,]*) in the messages)?",
            re.IGNORECASE | re.DOTALL,
        ),
        ("limit", "requested", "prompt"),
    ),
    # OpenAI: "... However, your messages resulted in P tokens"
    (
        re.compile(
            r"maximum context length is (\d[\d,]*) tokens.*?resulted in (\d[\d,]*) tokens",
            re.IGNORECASE | re.DOTALL,
        ),
        ("limit", "prompt"),
    ),
    # newer vLLM: "maximum context length is W tokens and your request has P input tokens"
    (
        re.compile(
            r"maximum context length is (\d[\d,]*) tokens.*?has (\d[\d,]*) input tokens",
            re.IGNORECASE | re.DOTALL,
        ),
        ("limit", "prompt"),
    ),
    # llama.cpp through Python: "Requested tokens (P) exceed context window of W"
    (
        re.compile(r"requested tokens \((\d+)\) exceed context window of (\d+)", re.IGNORECASE),
        ("prompt", "limit"),
    ),
    # vLLM's scheduler, LM Studio: "Input prompt (P tokens) is too long and exceeds limit of W",
    # "Input length P exceeds context length W"
    (
        re.compile(
            r"input (?:prompt \((\d+) tokens\) is too long and exceeds limit of|length (\d+) "
            r"exceeds context length) (\d+)",
            re.IGNORECASE,
        ),
        ("prompt", "prompt2", "limit"),
    ),
)
# Overflows told without figures: llama-server ("the request exceeds the available context
# size"), Ollama ("the input length exceeds the context length"), and the generic code.
_OVERFLOW_WORDS = re.compile(
    r"exceeds? the available context size|input length exceeds the context length|"
    r"context[_ ]length[_ ]exceeded|exceed_context_size",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Overflow:
    """A server's context-length error, with the figures it gave."""

    limit: int | None = None
    requested: int | None = None
    prompt_tokens: int | None = None


def context_overflow(message: str, detail: Mapping[str, Any] | None = None) -> Overflow | None:
    """The overflow a server's error message (and its JSON ``detail``) describes, or None."""
    detail = detail or {}
    code = f"{detail.get('code', '')} {detail.get('type', '')}"
    n_prompt, n_ctx = detail.get("n_prompt_tokens"), detail.get("n_ctx")
    if isinstance(n_prompt, int) and isinstance(n_ctx, int):  # llama-server
        return Overflow(limit=n_ctx, prompt_tokens=n_prompt)
    for pattern, names in _OVERFLOW_PATTERNS:
        found = pattern.search(message)
        if found:
            values: dict[str, int] = {}
            for name, value in zip(names, found.groups(), strict=True):
                if value:
                    values[name.rstrip("2")] = int(value.replace(",", ""))
            return Overflow(values.get("limit"), values.get("requested"), values.get("prompt"))
    if _OVERFLOW_WORDS.search(message) or _OVERFLOW_WORDS.search(code):
        return Overflow()
    return None


def after_overflow(
    error: Any, estimate: int, model: Any, memory: Any
) -> tuple[int | None, str, dict[str, Any]]:
    """What a session does with a server's context-length ``error`` (a ModelError) on a
    request it counted as ``estimate``: a window the server named that is smaller than the
    one assumed is kept from now on (``max_tokens`` lowered to fit it); returns the budget to
    retry with (None: no positive budget fits), a sentence and the figures for the event."""
    if error.limit and error.limit < model.context_window:
        model.context_window = error.limit
        memory.max_tokens = min(memory.max_tokens, max(1, error.limit - memory.reply_reserve))
    limit = retry_limit(
        estimate=estimate,
        budget=memory.max_tokens,
        window=model.context_window,
        reply_reserve=memory.reply_reserve,
        limit=error.limit,
        prompt_tokens=error.prompt_tokens,
        requested=error.requested,
    )
    counted = error.prompt_tokens or error.requested
    note = (
        (f"The server counted {counted:,} tokens: " if counted else "The server said ")
        + f"the request was too long for its window of {model.context_window:,}; "
        + (f"retrying with a {limit:,}-token budget." if limit else "nothing smaller fits.")
    )
    return limit, note, {"overflow": error.overflow, "limit": limit, "server_prompt": counted}
