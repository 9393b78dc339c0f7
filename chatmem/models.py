"""Chat models: any OpenAI-compatible server, or the bundled local model.

A model streams a reply as text chunks and reports the server's ``usage``. Every failure
becomes a :class:`ModelError` whose ``user_message`` is one plain sentence fit to show.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlsplit, urlunsplit

from chatmem.config import check_credentials
from chatmem.errors import ModelError
from chatmem.local import LOCAL_CONTEXT_WINDOW, LOCAL_MODEL_NAME, LocalChat
from chatmem.local import local_model_path as local_model_path  # re-exported
from chatmem.redact import basic_token, redact, register, url_credentials, url_secrets
from chatmem.replies import ReplyStream, Usage
from chatmem.servers import LLAMA_CPP_PYTHON_WINDOW, ServerProfile, context_overflow, probe
from chatmem.tokens import TokenCounter, counter_for_model, encoding_name_for_model

log = logging.getLogger(__name__)

DEFAULT_OPENAI_MODEL = "gpt-4o-mini"
DEFAULT_CONTEXT_WINDOW = 8192  # for a model we know nothing about

# Context windows (prompt + reply) of known models, by name prefix, most specific first.
CONTEXT_WINDOWS: tuple[tuple[str, int], ...] = (
    ("gpt-4o-mini", 128_000),
    ("gpt-4o", 128_000),
    ("chatgpt-4o", 128_000),
    ("gpt-4.1", 1_047_576),
    ("gpt-4.5", 128_000),
    ("gpt-5", 400_000),
    ("o1-mini", 128_000),
    ("o1", 200_000),
    ("o3", 200_000),
    ("o4", 200_000),
    ("gpt-4-turbo", 128_000),
    ("gpt-4-32k", 32_768),
    ("gpt-4", 8_192),
    ("gpt-3.5-turbo-instruct", 4_096),
    ("gpt-3.5", 16_385),
)


def context_window_for(model: str) -> int | None:
    """The context window of a known model name, or None."""
    name = model.strip().lower().rsplit("/", 1)[-1]
    for prefix, window in CONTEXT_WINDOWS:
        if name.startswith(prefix):
            return window
    return None


@runtime_checkable
class ChatModel(Protocol):
    """What chatmem needs of a chat model."""

    name: str  # the model id sent to the server
    label: str  # who is answering, in words for the UI
    context_window: int  # prompt + reply tokens the model accepts
    counter: TokenCounter  # counts tokens the way this model does

    def stream(self, messages: list[dict[str, Any]], *, max_reply_tokens: int) -> ReplyStream:
        """Start a reply to ``messages``."""
        ...


# --------------------------------------------------------------------------------------
# OpenAI and compatible servers
# --------------------------------------------------------------------------------------
def describe_server(base_url: str | None) -> str:
    return "OpenAI" if not base_url else f"the server at {redact(base_url)}"


@dataclass(frozen=True)
class ServerAccess:
    """How to reach an OpenAI-compatible server: the key, the base URL (None: OpenAI), the
    timeout in seconds and the SDK's retries. The chat models and the embedder take one."""

    api_key: str | None = None
    base_url: str | None = None
    timeout: float = 60.0
    max_retries: int = 2

    @property
    def given(self) -> bool:
        """A key or a base URL: a server to talk to (else the bundled local model answers)."""
        return bool(self.api_key or self.base_url)


def openai_client(access: ServerAccess) -> tuple[Any, str | None, dict[str, str]]:
    """An openai SDK client for ``access.base_url`` (None: OpenAI), that URL without credentials,
    and the Authorization header a plain HTTP request to the server needs (for the probes of
    :mod:`chatmem.servers`; empty without credentials).

    The credentials are registered for scrubbing (see :mod:`chatmem.redact`). A user name and
    password in ``base_url`` leave the URL and go out explicitly as HTTP Basic auth (what httpx
    would do with them, but the password is then in no URL the SDK keeps, logs or puts in an
    error). With an API key as well: a SettingsError, since the one Authorization header cannot
    carry both (see :func:`chatmem.config.check_credentials`). The chat models and the
    embedder build their clients here, so they authenticate alike.
    """
    import openai

    api_key, base_url = access.api_key, access.base_url
    check_credentials(api_key, base_url)
    register(api_key, *url_secrets(base_url))
    credentials = url_credentials(base_url)
    headers: dict[str, str] = {}
    if base_url is not None and credentials is not None:
        parts = urlsplit(base_url)
        base_url = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
        headers["Authorization"] = f"Basic {basic_token(*credentials)}"
    client = openai.OpenAI(
        api_key=api_key or "not-needed",
        base_url=base_url,
        timeout=access.timeout,
        max_retries=access.max_retries,
        default_headers=headers or None,
    )
    bearer = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    return client, base_url, headers or bearer


def error_from_openai(exc: Exception, where: str, partial: str = "", model: str = "") -> ModelError:
    """Turn an openai SDK exception into a ModelError with a plain sentence."""
    import openai

    # Failures told in one fixed sentence, checked in order (a timeout is also a connection
    # error): SDK classes, sentence, kind, retryable. A retryable one keeps the partial reply;
    # a refused key or model comes before any reply, so it has none.
    fixed: tuple[tuple[type[Exception] | tuple[type[Exception], ...], str, str, bool], ...] = (
        (
            openai.APITimeoutError,
            "{where} took too long to answer, so the request timed out.",
            "timeout",
            True,
        ),
        (
            openai.APIConnectionError,
            "Could not reach {where}: the connection failed or was cut off.",
            "connection",
            True,
        ),
        (
            (openai.AuthenticationError, openai.PermissionDeniedError),
            "{where} rejected the API key; check OPENAI_API_KEY.",
            "auth",
            False,
        ),
        (
            openai.NotFoundError,
            "{where} does not serve the model {model!r}; set CHATMEM_MODEL to one it has.",
            "model_not_found",
            False,
        ),
    )
    for classes, sentence, kind, retryable in fixed:
        if isinstance(exc, classes):
            return ModelError(
                sentence.format(where=where, model=model),
                kind=kind,
                retryable=retryable,
                partial=partial if retryable else "",
            )
    if isinstance(exc, openai.RateLimitError):
        retry_after = None
        with contextlib.suppress(ValueError, AttributeError):
            retry_after = float(exc.response.headers.get("retry-after", ""))
        wait = f" Try again in {retry_after:g} s." if retry_after else " Try again shortly."
        return ModelError(
            f"{where} is rate-limiting requests right now.{wait}",
            kind="rate_limit",
            retry_after=retry_after,
        )
    if isinstance(exc, openai.APIStatusError):
        body = exc.body if isinstance(exc.body, dict) else {}
        detail = body.get("error", body) if isinstance(body, dict) else {}
        message = str(detail.get("message", "")) if isinstance(detail, dict) else ""
        code = str(detail.get("code", "")) if isinstance(detail, dict) else ""
        if not message and isinstance(exc.body, str):
            message = exc.body
        overflow = context_overflow(message, detail if isinstance(detail, dict) else None)
        if overflow is None and code == "context_length_exceeded":
            overflow = context_overflow(code)
        if overflow is not None:
            return ModelError(
                f"The conversation was too long for the model's context window at {where}.",
                kind="context_length",
                limit=overflow.limit,
                requested=overflow.requested,
                prompt_tokens=overflow.prompt_tokens,
            )
        if exc.status_code >= 500:
            return ModelError(
                f"{where} had an internal error (HTTP {exc.status_code}).",
                kind="server",
                partial=partial,
            )
        # the server's own words, which may repeat what it was sent (a key, a password)
        return ModelError(
            f"{where} refused the request (HTTP {exc.status_code}): "
            f"{redact(message) or 'no detail'}",
            kind="bad_request",
            retryable=False,
        )
    return ModelError(f"{where} failed: {redact(str(exc))}", kind="unknown", partial=partial)


class OpenAIChat:
    """A model behind the OpenAI API or any OpenAI-compatible server (via the openai SDK)."""

    def __init__(
        self,
        model: str = DEFAULT_OPENAI_MODEL,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 2,
        context_window: int | None = None,
        profile: ServerProfile | None = None,
    ) -> None:
        self._client, base_url, authorization = openai_client(
            ServerAccess(api_key, base_url, timeout, max_retries)
        )
        self.name = model
        self.base_url = base_url  # without a user name or password (sent as a header)
        known = context_window_for(model)
        tiktoken_counter = counter_for_model(model)
        if profile is None:
            profile = probe(
                base_url,
                model,
                headers=authorization,
                known_model=known is not None,
                fallback=tiktoken_counter,
            )
        self.profile = profile
        self.counter = profile.counter
        self.interrupts = profile.interrupts  # a new request ends one in progress
        guess = LLAMA_CPP_PYTHON_WINDOW if profile.kind == "llama-cpp-python" else None
        self.context_window = (
            context_window or profile.window or guess or known or DEFAULT_CONTEXT_WINDOW
        )
        self.notice: str | None = None  # something the user should know at start
        if context_window is None and profile.window_note:
            self.notice = profile.window_note
        elif context_window is None and profile.window is None and known is None:
            counted = (
                f"estimates its tokens with {encoding_name_for_model(model)}, calibrated by what "
                "the server reports,"
                if not self.counter.exact
                else f"counts its tokens with {self.counter.label}"
            )
            self.notice = (
                f"chatmem does not know the model {model!r}: it {counted} and assumes a "
                f"{self.context_window:,}-token context window (set CHATMEM_CONTEXT_WINDOW if "
                "that is wrong)."
            )
        where = f" at {redact(base_url)}" if base_url else " (OpenAI)"
        # a server serving one model answers any name with it: say which model really answers
        self.label = f"{profile.served or model}{where}"

    def __repr__(self) -> str:  # never show the key
        shown = redact(self.base_url) if self.base_url else None
        return f"OpenAIChat(model={self.name!r}, base_url={shown!r})"

    def stream(self, messages: list[dict[str, Any]], *, max_reply_tokens: int) -> ReplyStream:
        return ReplyStream(self._events(messages, max_reply_tokens))

    def _events(
        self, messages: list[dict[str, Any]], max_reply_tokens: int
    ) -> Iterator[str | Usage]:
        import openai

        where = describe_server(self.base_url)
        # OpenAI's newer models take max_completion_tokens; compatible servers take max_tokens
        limit_arg = "max_completion_tokens" if self.base_url is None else "max_tokens"
        produced: list[str] = []
        try:
            stream = self._client.chat.completions.create(
                model=self.name,
                messages=messages,  # type: ignore[arg-type]
                stream=True,
                stream_options={"include_usage": True},
                **{limit_arg: max_reply_tokens},
            )
            finished = reported = False
            chunks = 0
            try:
                for chunk in stream:
                    chunks += 1
                    if chunk.usage is not None:
                        reported = True
                        yield Usage(chunk.usage.prompt_tokens, chunk.usage.completion_tokens)
                    for choice in chunk.choices:
                        if choice.delta and choice.delta.content:
                            produced.append(choice.delta.content)
                            yield choice.delta.content
                        if choice.finish_reason:
                            finished = True
            except Exception:  # the connection dropped: before any data, ask why below
                if chunks:
                    raise
            if not chunks:
                # llama-cpp-python answers an over-long streamed request with a 200 and no
                # data (or a dropped connection): ask once, not streamed, for one token, to
                # hear the server's reason (a context-length error raises here)
                stream.close()
                for attempt in (1, 2):  # the server may drop the connection it kept alive
                    try:
                        self._client.chat.completions.create(
                            model=self.name,
                            messages=messages,  # type: ignore[arg-type]
                            **{limit_arg: 1},
                        )
                        break
                    except openai.APIConnectionError:
                        if attempt == 2:
                            raise
            if not finished:
                raise ModelError(
                    f"The reply from {where} was cut off before it finished.",
                    kind="incomplete",
                    partial="".join(produced),
                )
            if not reported:
                usage = self._counted_usage(messages, "".join(produced))
                if usage is not None:
                    yield usage
        except openai.OpenAIError as exc:
            raise error_from_openai(exc, where, "".join(produced), self.name) from exc
        except Exception as exc:  # a transport failure while reading the stream
            if isinstance(exc, ModelError):
                raise
            raise ModelError(
                f"The reply from {where} was cut off: {type(exc).__name__}.",
                kind="incomplete",
                partial="".join(produced),
            ) from exc

    def _counted_usage(self, messages: list[dict[str, Any]], reply: str) -> Usage | None:
        """Usage for a stream that carried none: the whole request counted by the server's
        tokenizer where it has one, else (once, to calibrate an estimate) a one-token
        non-streamed call, which reports it."""
        count = self.profile.count_prompt
        try:
            if count is not None:
                return Usage(count(messages), self.counter.text(reply), source="tokenizer")
            if self.counter.exact or self.counter.drift.calls:
                return None
            limit_arg = "max_completion_tokens" if self.base_url is None else "max_tokens"
            answer = self._client.chat.completions.create(
                model=self.name,
                messages=messages,  # type: ignore[arg-type]
                **{limit_arg: 1},
            )
        except Exception as exc:  # the reply arrived; only its figures are missing
            log.info("could not count the request's tokens after the reply: %s", exc)
            return None
        if answer.usage is None:
            return None
        return Usage(answer.usage.prompt_tokens, None, source="non-streamed call")


def make_model(
    model: str | None = None,
    access: ServerAccess | None = None,
    *,
    context_window: int | None = None,
    local_path: str | None = None,
) -> ChatModel:
    """The model settings ask for: OpenAI with a key, a compatible server with a base URL,
    else the bundled local model."""
    if access is not None and access.given:
        name = model or DEFAULT_OPENAI_MODEL
        return OpenAIChat(name, **asdict(access), context_window=context_window)
    if model and model not in (LOCAL_MODEL_NAME, "local"):
        log.warning(
            "No API key or base URL is set, so %r is not reachable: using the local model.", model
        )
    return LocalChat(local_path, context_window=context_window or LOCAL_CONTEXT_WINDOW)
