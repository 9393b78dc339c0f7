"""Settings become the parts of a running session here, and only here.

:func:`assemble` turns :class:`~chatmem.config.Settings` plus a caller's overrides into a
:class:`Setup`: the chat model, the summary model and every memory setting, checked against
the one set of bounds in :mod:`chatmem.config`. :func:`build_recall` picks the recall index.
``ChatMemory.__init__`` is their only caller, so the library, ``python -m chatmem`` and the
app (which all construct ``ChatMemory``) cannot disagree about what a setting means.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from chatmem.config import (
    KEEP_RECENT_RANGE,
    LOCAL_EMBEDDINGS,
    MAX_TOKENS_CAP,
    MAX_TOKENS_MIN,
    Settings,
    check_bound,
)
from chatmem.errors import SettingsError
from chatmem.models import ChatModel, OpenAIChat, ServerAccess, make_model
from chatmem.recall import FtsIndex, HybridRecall, RecallIndex, StoreRecall

if TYPE_CHECKING:
    from chatmem.store import Store

# Tokens a request needs beyond the system prompt: the reply priming and a short message.
_ROOM_FOR_A_MESSAGE = 3 + 16


@dataclass(frozen=True)
class Setup:
    """Everything a session is built from, resolved and checked."""

    model: ChatModel
    summary_model: ChatModel
    system: str
    max_tokens: int
    keep_recent: int
    summary_max_tokens: int
    reply_reserve: int
    notes: tuple[str, ...] = ()  # changes made to fit the model (with ``fit=True``), in words


def server_access(settings: Settings) -> ServerAccess:
    """The server the settings name: key, base URL, timeout and retries."""
    return ServerAccess(settings.api_key, settings.base_url, settings.timeout, settings.max_retries)


def build_model(settings: Settings, name: str | None = None) -> ChatModel:
    """The chat model the settings ask for (``name`` overrides ``settings.model``)."""
    return make_model(
        name or settings.model,
        server_access(settings),
        context_window=settings.context_window,
        local_path=settings.local_model_path,
    )


def build_summary_model(settings: Settings, chat: ChatModel) -> ChatModel:
    """``CHATMEM_SUMMARY_MODEL`` on the same server, or the chat model itself.

    The local model has no second model to offer, so it summarises with itself.
    """
    name = settings.summary_model
    if not name or settings.uses_local_model or name == chat.name:
        return chat
    return make_model(name, server_access(settings))


@dataclass(frozen=True)
class Overrides:
    """What a caller sets over the settings for one session; None takes the setting.

    The fields follow ``ChatMemory``'s arguments of the same names, in the same order.
    """

    system: str | None = None
    max_tokens: int | None = None
    keep_recent: int | None = None
    model: str | ChatModel | None = None
    summary_max_tokens: int | None = None
    reply_reserve: int | None = None
    summary_model: ChatModel | None = None

    def value(self, settings: Settings, name: str) -> Any:
        """The override called ``name``, or the setting of that name when it is None."""
        mine = getattr(self, name)
        return getattr(settings, name) if mine is None else mine


def assemble(settings: Settings, overrides: Overrides | None = None, *, fit: bool = False) -> Setup:
    """Resolve ``settings`` and ``overrides`` into a :class:`Setup`.

    Raises SettingsError (a ``ValueError``) with one sentence for a value out of bounds or a
    budget that cannot work with the model. With ``fit=True`` (the app, reopening saved
    conversations) a budget too large for the model's window, or a ``keep_recent`` out of
    bounds, is brought within reach instead, and :attr:`Setup.notes` says so.
    """
    over = overrides or Overrides()
    model = over.model
    chat = model if isinstance(model, ChatModel) else build_model(settings, model)
    notes: list[str] = []
    reserve = check_bound("reply_reserve", over.value(settings, "reply_reserve"))
    cap = check_bound("summary_max_tokens", over.value(settings, "summary_max_tokens"))
    keep = over.value(settings, "keep_recent")
    if fit and isinstance(keep, int):
        keep = clamp_keep_recent(keep)
    keep = check_bound("keep_recent", keep)
    budget = check_bound("max_tokens", over.value(settings, "max_tokens"))
    system_text = settings.system_prompt if over.system is None else over.system
    if fit and budget > chat.context_window - reserve:
        fitted = max_tokens_limit(chat, reserve)
        notes.append(
            f"max_tokens {budget:,} does not fit {chat.name}'s context window of "
            f"{chat.context_window:,} tokens with the reply reserve; using {fitted:,}."
        )
        budget = fitted
    check_budget(chat, system_text, budget, reserve)
    return Setup(
        model=chat,
        summary_model=over.summary_model or build_summary_model(settings, chat),
        system=system_text,
        max_tokens=budget,
        keep_recent=keep,
        summary_max_tokens=cap,
        reply_reserve=reserve,
        notes=tuple(notes),
    )


def check_budget(model: ChatModel, system: str, max_tokens: int, reply_reserve: int) -> int:
    """``max_tokens`` if it is a budget that can work with ``model`` and the system prompt,
    else a SettingsError (a ValueError) saying what would."""
    check_bound("max_tokens", max_tokens)
    room = model.context_window - reply_reserve
    if max_tokens > room:
        raise SettingsError(
            f"max_tokens ({max_tokens:,}) plus the reply reserve ({reply_reserve:,}) is more "
            f"than {model.name}'s context window of {model.context_window:,} tokens; use at "
            f"most {room:,}."
        )
    needed = model.counter.message({"role": "system", "content": system})
    if max_tokens < needed + _ROOM_FOR_A_MESSAGE:
        raise SettingsError(
            f"max_tokens ({max_tokens:,}) leaves no room after the system prompt, which needs "
            f"{needed:,} tokens; use at least {needed + _ROOM_FOR_A_MESSAGE:,}."
        )
    return max_tokens


def clamp_keep_recent(value: int) -> int:
    """``value`` brought within the bounds of ``keep_recent``."""
    low, high = KEEP_RECENT_RANGE
    return max(low, min(high, value))


def max_tokens_limit(model: ChatModel, reply_reserve: int) -> int:
    """The highest budget worth offering: the model's window minus the reply reserve
    (never above :data:`~chatmem.config.MAX_TOKENS_CAP`, never below the minimum)."""
    return max(MAX_TOKENS_MIN, min(MAX_TOKENS_CAP, model.context_window - reply_reserve))


def saved_overrides(saved: Mapping[str, Any] | None) -> dict[str, Any]:
    """The settings a stored conversation was saved with, as overrides for :func:`assemble`."""
    saved = saved or {}
    out: dict[str, Any] = {}
    for key in ("max_tokens", "keep_recent"):
        if isinstance(saved.get(key), int) and not isinstance(saved.get(key), bool):
            out[key] = saved[key]
    if isinstance(saved.get("system"), str):
        out["system"] = saved["system"]
    return out


def build_recall(
    settings: Settings,
    model: ChatModel,
    *,
    store: Store | None,
    conversation_id: Callable[[], str | None],
    on_event: Callable[..., None],
    background: bool,
) -> RecallIndex:
    """BM25 (the store's full-text index when there is a store, else one in memory),
    blended with embeddings unless the settings turn them off: the offline model by default,
    an OpenAI-compatible one when the settings name it and the chat model is such a server."""
    lexical: RecallIndex = (
        FtsIndex() if store is None else StoreRecall(store, conversation_id, on_event=on_event)
    )
    name = settings.active_embedding_model
    if not name:
        return lexical
    from chatmem.embeddings import Embedder, LocalEmbedder

    embedder: Embedder | LocalEmbedder
    if name == LOCAL_EMBEDDINGS or not isinstance(model, OpenAIChat):
        embedder = LocalEmbedder()
    else:
        access = server_access(settings)
        embedder = Embedder(name, replace(access, base_url=access.base_url or model.base_url))
    return HybridRecall(
        lexical,
        embedder,
        store=store,
        conversation_id=conversation_id,
        on_event=on_event,
        background=background,
    )
