"""Per-browser-session state: one ChatMemory and what the UI shows about it.

Everything here lives in ``st.session_state`` under :data:`SESSION_KEY`. The fold worker
thread never calls Streamlit: its only UI hook appends to a plain list
(:attr:`ChatSession.summary_versions`), which the script thread reads on the next run.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import streamlit as st

from chatmem.config import Settings, SettingsError, load_settings
from chatmem.models import ModelError, make_model
from chatmem.session import ChatMemory, Event
from chatmem.ui.text import first_upper

SESSION_KEY = "chatmem"
ERROR_KEY = "chatmem_error"
MAX_TOKENS_KEY = "max_tokens"  # the sidebar slider keys (tests and e2e find them by key)
KEEP_RECENT_KEY = "keep_recent"
MAX_TOKENS_FLOOR = 256
MAX_TOKENS_CAP = 32_000
KEEP_RECENT_RANGE = (2, 40)
PAGE_SIZE = 50  # messages rendered at once; older ones behind "Show earlier messages"


@dataclass
class SummaryVersion:
    """One version of the rolling summary, as the inspector lists it."""

    number: int
    text: str
    tokens: int
    covers_seq: int
    created_at: float | None
    messages: int | None = None  # messages folded into this version
    before_tokens: int | None = None


@dataclass
class ChatSession:
    """One browser session's conversation and the UI state around it."""

    bot: ChatMemory
    transcript: list[dict[str, Any]] = field(default_factory=list)  # role, content, status
    summary_versions: list[SummaryVersion] = field(default_factory=list)
    seen_events: int = 0  # events already toasted
    busy: bool = False  # a reply is being produced; the chat input is disabled
    pending: str | None = None  # user text submitted, not yet sent
    retry: bool = False  # the next run re-asks for the newest message's reply
    error: str | None = None  # one sentence: why the last reply failed
    can_retry: bool = False
    notice: str | None = None  # a problem with the last message (too long, empty)
    settings_notice: str | None = None  # a slider value the memory refused
    show: int = PAGE_SIZE  # how many of the newest transcript entries to render
    setup_notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self.bot.on_fold(self._on_fold)

    # Called on the fold worker thread: plain data only, never Streamlit.
    def _on_fold(self, event: Event) -> None:
        if event.kind != "fold":
            return
        summary = self.bot.memory.summary
        if summary is None:
            return
        with self._lock:
            self.summary_versions.append(
                SummaryVersion(
                    number=len(self.summary_versions) + 1,
                    text=summary.text,
                    tokens=summary.tokens,
                    covers_seq=summary.covers_seq,
                    created_at=summary.created_at,
                    messages=event.data.get("messages"),
                    before_tokens=event.data.get("before_tokens"),
                )
            )

    def new_events(self) -> list[Event]:
        """Events not shown yet; marks them shown."""
        events = self.bot.events[self.seen_events :]
        self.seen_events += len(events)
        return events

    def add(self, role: str, content: str, status: str = "ok") -> None:
        self.transcript.append({"role": role, "content": content, "status": status})


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(high, value))


def max_tokens_limit(bot: ChatMemory) -> int:
    """The highest budget the slider offers: the model's window minus the reply reserve."""
    window = bot.model.context_window - bot.memory.reply_reserve
    return max(MAX_TOKENS_FLOOR, min(MAX_TOKENS_CAP, window))


def create_session(
    settings: Settings | None = None,
    *,
    max_tokens: int | None = None,
    keep_recent: int | None = None,
) -> ChatSession:
    """A new conversation from the settings. Raises SettingsError or ModelError."""
    settings = settings or load_settings()
    model = make_model(
        settings.model,
        api_key=settings.api_key,
        base_url=settings.base_url,
        timeout=settings.timeout,
        max_retries=settings.max_retries,
        context_window=settings.context_window,
        local_path=settings.local_model_path,
    )
    notes: list[str] = []
    wanted = max_tokens if max_tokens is not None else settings.max_tokens
    room = model.context_window - settings.reply_reserve
    if wanted > room:
        asked, wanted = wanted, max(MAX_TOKENS_FLOOR, min(MAX_TOKENS_CAP, room))
        notes.append(
            f"max_tokens {asked:,} does not fit {model.name}'s context window "
            f"of {model.context_window:,} tokens with the reply reserve; using {wanted:,}."
        )
    try:
        bot = ChatMemory(
            model=model,
            settings=settings,
            max_tokens=max(MAX_TOKENS_FLOOR, wanted),
            keep_recent=_clamp(settings.keep_recent, *KEEP_RECENT_RANGE),
            summary_max_tokens=settings.summary_max_tokens,
            reply_reserve=settings.reply_reserve,
        )
    except ValueError as exc:  # a budget that cannot work with this model
        raise SettingsError(first_upper(str(exc))) from None
    if keep_recent is not None:
        bot.keep_recent = _clamp(keep_recent, *KEEP_RECENT_RANGE)
    return ChatSession(bot=bot, setup_notes=notes)


def ensure_session() -> ChatSession | None:
    """This browser session's conversation, created on first use.

    On a settings or model problem, stores the one-sentence reason (see :func:`setup_error`)
    and returns None; nothing is raised into the page.
    """
    sess = st.session_state.get(SESSION_KEY)
    if isinstance(sess, ChatSession):
        return sess
    try:
        sess = create_session()
    except (SettingsError, ModelError) as exc:
        message = exc.user_message if isinstance(exc, ModelError) else str(exc)
        st.session_state[ERROR_KEY] = first_upper(message)
        return None
    st.session_state.pop(ERROR_KEY, None)
    st.session_state[SESSION_KEY] = sess
    st.session_state.setdefault(MAX_TOKENS_KEY, sess.bot.max_tokens)
    st.session_state.setdefault(KEEP_RECENT_KEY, sess.bot.keep_recent)
    return sess


def setup_error() -> str | None:
    """Why the conversation could not be created, if it could not."""
    return st.session_state.get(ERROR_KEY)


def require_session() -> ChatSession:
    """For pages: the session, or a clear error and a stop."""
    sess = ensure_session()
    if sess is None:
        st.error(setup_error() or "The chat could not start.", icon=":material/error:")
        st.caption(
            "Check the settings (environment, `.env` or `.streamlit/secrets.toml`) and reload "
            "the page."
        )
        st.stop()
    return sess


def new_chat() -> None:
    """Start a fresh conversation with the current slider settings (a button callback)."""
    old = st.session_state.get(SESSION_KEY)
    try:
        sess = create_session(
            max_tokens=st.session_state.get(MAX_TOKENS_KEY),
            keep_recent=st.session_state.get(KEEP_RECENT_KEY),
        )
    except (SettingsError, ModelError, ValueError) as exc:
        message = first_upper(exc.user_message if isinstance(exc, ModelError) else str(exc))
        if isinstance(old, ChatSession):  # keep the current chat and say why
            old.notice = f"A new chat could not start: {message}"
        else:
            st.session_state[ERROR_KEY] = message
        return
    if isinstance(old, ChatSession) and not old.bot.folding:
        old.bot.close()
    st.session_state[SESSION_KEY] = sess
    st.session_state[MAX_TOKENS_KEY] = sess.bot.max_tokens
    st.session_state[KEEP_RECENT_KEY] = sess.bot.keep_recent
