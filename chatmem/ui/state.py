"""Per-browser-session state: one ChatMemory, the store it writes to, and what the UI shows.

Everything here lives in ``st.session_state`` under :data:`SESSION_KEY`. The fold worker
thread never calls Streamlit: the script thread reads the session's events on the next run.

Conversations are durable: one :class:`~chatmem.store.Store` per process (``st.cache_resource``,
URL from ``CHATMEM_DATABASE_URL``, a SQLite file under ``.chatmem/`` by default) receives every
message before the model is called. The open conversation's id travels in the URL as
``?c=<id>``, set when the first message is stored, so a reload or a shared link reopens it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

import streamlit as st

from chatmem.config import Settings, load_settings
from chatmem.errors import (
    ChatmemError,
    ConversationUnavailable,
    ModelError,
    NotFoundError,
)
from chatmem.events import Event, EventKind
from chatmem.factory import max_tokens_limit
from chatmem.redact import redact
from chatmem.session import ChatMemory
from chatmem.store import ConversationInfo, Store, StoredMessage, resolve_database_url
from chatmem.ui.text import first_upper
from chatmem.ui.turns import Turn, running

SESSION_KEY = "chatmem"
ERROR_KEY = "chatmem_error"
SETTINGS_KEY = "chatmem_settings"
MAX_TOKENS_KEY = "max_tokens"  # the sidebar widget keys (tests and e2e find them by key)
KEEP_RECENT_KEY = "keep_recent"
RECALL_KEY = "recall"
QUERY_KEY = "c"  # ?c=<conversation id>
PAGE_SIZE = 50  # messages rendered at once; older ones behind "Show earlier messages"
_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")

UNAVAILABLE = (
    "There is no conversation with this id that you can open: it may have been deleted, or "
    "the link is incomplete."
)
NO_REPLY = (
    "No reply to your last message was saved: the app may have stopped while it was "
    "answering. Retry to ask again."
)

CUT_OFF = "The last reply was cut off before it finished. Retry to ask again."
CUT_STATUSES = ("incomplete", "stopped")  # a reply that did not finish; Retry replaces it


@dataclass
class ChatSession:
    """One browser session's conversation and the UI state around it."""

    bot: ChatMemory
    store: Store | None = None
    owner: str | None = None  # who the conversation belongs to (None: local mode)
    # role, content, status ("ok", "failed", "incomplete", "stopped", "too_long", "unsaved")
    # and seq when stored
    transcript: list[dict[str, Any]] = field(default_factory=list)
    seen_events: int = 0  # events already toasted
    turn: Turn | None = None  # the reply in flight (on its own thread); input disabled
    attached: bool = False  # the turn was started by another browser session (a reload)
    unsaved: str | None = None  # user text the store could not take: shown, sent again by Retry
    error: str | None = None  # one sentence: why the last reply failed
    can_retry: bool = False
    notice: str | None = None  # a problem with the last message (too long, empty)
    settings_notice: str | None = None  # a slider value the memory refused
    show: int = PAGE_SIZE  # how many of the newest transcript entries to render
    setup_notes: list[str] = field(default_factory=list)
    missing: str | None = None  # a conversation id from the URL that cannot be opened
    missing_reason: str = UNAVAILABLE
    older_done: bool = False  # the store has nothing older than the transcript's first entry
    snippets: dict[int, tuple[str, str]] = field(default_factory=dict)  # seq -> speaker, text

    def new_events(self) -> list[Event]:
        """Events not shown yet; marks them shown."""
        events = self.bot.events[self.seen_events :]
        self.seen_events += len(events)
        return events

    @property
    def busy(self) -> bool:
        """A reply is in flight: the chat input and New chat are disabled."""
        return self.turn is not None

    def start_turn(self, text: str | None = None) -> None:
        """Start a turn on its own thread: send ``text``, or with None re-ask the newest
        message's reply (or resend the message the store refused).

        Clears the last problem; a new message also clears the offer to retry.
        """
        if self.turn is not None:
            return
        self.error = None
        self.notice = None
        if text is None and self.unsaved is not None:  # Retry sends the unsaved message again
            text, self.unsaved = self.unsaved, None
            if self.transcript and self.transcript[-1].get("status") == "unsaved":
                self.transcript.pop()
        if text is None:
            while self.transcript and self.transcript[-1].get("status") in CUT_STATUSES:
                self.transcript.pop()  # a retry replaces the cut-off reply
        else:
            self.unsaved = None  # a new message replaces the offer to resend the unsaved one
            self.can_retry = False
        self.attached = False
        self.turn = Turn(self.bot, text).start()

    def settle(self) -> bool:
        """Take the outcome of a turn that has ended into the transcript; True if one had.

        Called at the start of every run, on any page, so a reply that ended while another
        page was open (or no run was going) is drawn by the next run.
        """
        turn = self.turn
        if turn is None or not turn.done:
            return False
        self.turn = None
        if self.attached:  # another session's turn: the store has what it wrote
            self.attached = False
            self.bot.catch_up()
            self.transcript = newest_page(self.store, self.conversation_id)
            return True
        out = turn.outcome
        if turn.text is not None and out.user_status is not None:
            self.add("user", turn.text, out.user_status, seq=out.user_seq)
        if out.reply is not None:
            self.add("assistant", out.reply, out.reply_status, seq=out.reply_seq)
        self.error, self.notice = out.error, out.notice
        self.can_retry = out.can_retry
        if out.unsaved is not None:
            self.unsaved = out.unsaved
        return True

    def add(self, role: str, content: str, status: str = "ok", seq: int | None = None) -> None:
        self.transcript.append({"role": role, "content": content, "status": status, "seq": seq})

    @property
    def conversation_id(self) -> str | None:
        return self.bot.conversation_id

    def stored_before(self) -> int:
        """Messages in the store older than the oldest one in the transcript."""
        if not self.transcript or self.store is None or self.conversation_id is None:
            return 0
        if self.older_done:
            return 0
        first = self.transcript[0].get("seq")
        return first - 1 if isinstance(first, int) and first > 1 else 0

    def hidden(self) -> int:
        """Messages not on screen: older transcript entries plus older stored ones."""
        return max(0, len(self.transcript) - self.show) + self.stored_before()

    def show_earlier(self, count: int = PAGE_SIZE) -> None:
        """Put ``count`` more older messages on screen, reading older pages from the store."""
        off_screen = max(0, len(self.transcript) - self.show)
        if off_screen < count and self.stored_before():
            assert self.store is not None and self.conversation_id is not None
            first = self.transcript[0]["seq"]
            older = self.store.messages(
                self.conversation_id, before_seq=first, limit=count - off_screen
            )
            older_entries = [entry_for(m) for m in older]
            self.transcript[:0] = mark_stopped(self.store, self.conversation_id, older_entries)
            self.older_done = len(older) < count - off_screen
        self.show += count


def newest_page(store: Store | None, cid: str | None) -> list[dict[str, Any]]:
    """The newest page of a stored transcript (failed and cut-off messages too); older pages
    are read when asked for. Never the whole unfolded tail: a conversation never folded has
    it all."""
    if store is None or cid is None:
        return []
    top = 2**31 - 1  # the highest seq (a 32-bit column): below it, and it
    newest = store.messages(cid, before_seq=top, limit=PAGE_SIZE)
    newest += store.messages(cid, after_seq=top - 1)
    return mark_stopped(store, cid, [entry_for(m) for m in newest[-PAGE_SIZE:]])


def mark_stopped(store: Store, cid: str, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Show as "stopped" the cut-off replies that were stopped on purpose.

    The store keeps them as ``incomplete`` (what they are); the ``stopped`` event recorded
    with each names its seq. Only the newest events are read (``Store.list_events``).
    """
    if not any(e["status"] == "incomplete" for e in entries):
        return entries
    seqs = {e.data.get("seq") for e in store.list_events(cid) if e.kind == EventKind.STOPPED}
    for entry in entries:
        if entry["status"] == "incomplete" and entry["seq"] in seqs:
            entry["status"] = "stopped"
    return entries


def entry_for(message: StoredMessage) -> dict[str, Any]:
    """A transcript entry for a stored message."""
    return {
        "role": message.role,
        "content": message.content,
        "status": message.status,
        "seq": message.seq,
    }


def shown(text: str, bot: ChatMemory | None = None) -> str:
    """``text`` with URL passwords and the API key taken out, before it goes on a page."""
    known = bot.settings.secrets() if bot is not None else ()
    return redact(text, *known, os.environ.get("OPENAI_API_KEY"))


def model_label(bot: ChatMemory) -> str:
    """Who is answering, fit to show (never a key or a URL password)."""
    return shown(bot.model_label, bot)


def slider_max_tokens(bot: ChatMemory) -> int:
    """The highest budget the slider offers: the model's window minus the reply reserve."""
    return max_tokens_limit(bot.model, bot.reply_reserve)


# -- settings, store and who is asking ----------------------------------------------------
def app_settings() -> Settings:
    """The settings, read once per browser session. Raises SettingsError."""
    settings = st.session_state.get(SETTINGS_KEY)
    if isinstance(settings, Settings):
        return settings
    settings = load_settings()
    st.session_state[SETTINGS_KEY] = settings
    return settings


@st.cache_resource(show_spinner=False, max_entries=4, on_release=lambda store: store.close())
def _open_store(url: str) -> Store:
    return Store(url)


def shared_store(settings: Settings) -> Store:
    """The process's one store for ``settings.database_url``. Raises StoreError."""
    url = resolve_database_url(settings.database_url)  # relative paths made absolute
    return _open_store(url.render_as_string(hide_password=False))


def signed_in() -> bool:
    """True when Streamlit's OIDC sign-in (``st.login``) says a user is logged in."""
    return bool(st.user.get("is_logged_in", False))


def current_owner(settings: Settings) -> str | None:
    """Whose conversations this session sees: the signed-in user's email (or subject id)
    when sign-in is required; None (everything, local mode) when it is not."""
    if not settings.require_login:
        return None
    if not signed_in():
        raise PermissionError("Sign in to see conversations.")
    owner = st.user.get("email") or st.user.get("sub")
    if not owner:
        raise PermissionError("The sign-in did not say who you are (no email or subject id).")
    return str(owner)


def may_open(info: ConversationInfo, owner: str | None, login_required: bool) -> bool:
    """Whether a session of ``owner`` may open (or change) the conversation ``info``."""
    return not login_required or (owner is not None and info.owner == owner)


def requested_id() -> str | None:
    """The conversation id in the URL (``?c=``), if it looks like one."""
    raw = st.query_params.get(QUERY_KEY)
    return raw[:64] if raw else None


def show_id_in_url(sess: ChatSession) -> None:
    """Keep ``?c=<id>`` in the address bar while a stored conversation is open."""
    cid = sess.conversation_id
    if cid and st.query_params.get(QUERY_KEY) != cid:
        st.query_params[QUERY_KEY] = cid


# -- making sessions ----------------------------------------------------------------------
def create_session(
    settings: Settings | None,
    store: Store | None,
    owner: str | None,
    *,
    recall: bool = True,
    max_tokens: int | None = None,
    keep_recent: int | None = None,
) -> ChatSession:
    """A new conversation from the settings. Raises SettingsError or ModelError.

    With a store, the conversation is saved from its first message on (not before, so an
    unused session leaves nothing behind).
    """
    bot = ChatMemory(
        settings=settings or load_settings(),
        max_tokens=max_tokens,
        keep_recent=keep_recent,
        recall=recall,
        store=store,
        owner=owner,
        defer_create=True,
        fit=True,
    )
    return ChatSession(bot=bot, store=store, owner=owner, setup_notes=list(bot.setup_notes))


def open_session(
    settings: Settings, store: Store, cid: str, owner: str | None, *, recall: bool = True
) -> ChatSession:
    """Reopen a stored conversation with the settings it was saved with.

    Raises ConversationUnavailable (unknown id, or another owner's), SettingsError, ModelError
    or StoreError.
    """
    info = store.get_conversation(cid) if _ID_RE.fullmatch(cid) else None
    if info is None or not may_open(info, owner, settings.require_login):
        raise ConversationUnavailable(UNAVAILABLE)
    try:
        bot = ChatMemory.resume(store, cid, settings=settings, recall=recall, owner=owner, fit=True)
    except NotFoundError:  # deleted in the meantime
        raise ConversationUnavailable(UNAVAILABLE) from None
    sess = ChatSession(bot=bot, store=store, owner=owner, setup_notes=list(bot.setup_notes))
    sess.transcript = newest_page(store, cid)
    turn = running(cid)
    if turn is not None:  # a reply still streaming for the session this one replaces
        sess.turn, sess.attached = turn, True
        return sess
    last = sess.transcript[-1] if sess.transcript else None
    if last is not None and last["role"] == "user" and last["status"] == "ok":
        sess.notice = NO_REPLY  # e.g. the app was stopped while the reply streamed
        sess.can_retry = True
    elif last is not None and last["role"] == "assistant" and last["status"] == "incomplete":
        sess.notice = CUT_OFF
        sess.can_retry = True
    elif last is not None and last["status"] == "stopped":
        sess.can_retry = True  # no warning: it was stopped on purpose
    return sess


def _fail(message: str) -> None:
    st.session_state[ERROR_KEY] = first_upper(message)


def _install(sess: ChatSession) -> ChatSession:
    st.session_state.pop(ERROR_KEY, None)
    old = st.session_state.get(SESSION_KEY)
    if isinstance(old, ChatSession) and old is not sess and not old.bot.folding and not old.busy:
        old.bot.close()
    st.session_state[SESSION_KEY] = sess
    st.session_state[MAX_TOKENS_KEY] = sess.bot.max_tokens
    st.session_state[KEEP_RECENT_KEY] = sess.bot.keep_recent
    show_id_in_url(sess)
    return sess


def ensure_session() -> ChatSession | None:
    """This browser session's conversation: the one in the URL (``?c=``), the one already
    open, or a new one.

    On a settings, model or storage problem, stores the one-sentence reason (see
    :func:`setup_error`) and returns None; nothing is raised into the page. A URL naming a
    conversation that cannot be opened leaves :attr:`ChatSession.missing` set.
    """
    st.session_state.setdefault(RECALL_KEY, True)
    sess = st.session_state.get(SESSION_KEY)
    wanted = requested_id()
    if isinstance(sess, ChatSession):
        sess.settle()
        if wanted is None or wanted == sess.conversation_id:
            sess.missing = None
            show_id_in_url(sess)  # page links drop the query string; put the id back
            return sess
        if wanted == sess.missing:
            return sess
    try:
        settings = app_settings()
        store = shared_store(settings)
        owner = current_owner(settings)
        recall = bool(st.session_state.get(RECALL_KEY, True))
        if wanted is not None:
            try:
                return _install(open_session(settings, store, wanted, owner, recall=recall))
            except ChatmemError as exc:
                if not isinstance(sess, ChatSession):
                    sess = _install(create_session(settings, store, owner, recall=recall))
                sess.missing = wanted
                sess.missing_reason = _reason(exc)
                return sess
        return _install(create_session(settings, store, owner, recall=recall))
    except (ChatmemError, PermissionError) as exc:
        _fail(_reason(exc))
    return sess if isinstance(sess, ChatSession) else None


def _reason(exc: Exception) -> str:
    if isinstance(exc, ConversationUnavailable):
        return UNAVAILABLE
    if isinstance(exc, ModelError):
        return exc.user_message
    return first_upper(str(exc))


def setup_error() -> str | None:
    """Why the conversation could not be created, if it could not."""
    error = st.session_state.get(ERROR_KEY)
    return shown(error) if error else None


def open_page(heading: str) -> ChatSession:
    """Start a page: wide layout, the session (or a clear error and a stop), its heading."""
    st.set_page_config(layout="wide")
    sess = require_session()
    st.markdown(f"## {heading}")
    return sess


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
    """Start a fresh conversation with the current sidebar settings (a button callback)."""
    old = st.session_state.get(SESSION_KEY)
    try:
        settings = app_settings()
        sess = create_session(
            settings,
            shared_store(settings),
            current_owner(settings),
            recall=bool(st.session_state.get(RECALL_KEY, True)),
            max_tokens=st.session_state.get(MAX_TOKENS_KEY),
            keep_recent=st.session_state.get(KEEP_RECENT_KEY),
        )
    except (ChatmemError, PermissionError) as exc:
        message = first_upper(exc.user_message if isinstance(exc, ModelError) else str(exc))
        if isinstance(old, ChatSession):  # keep the current chat and say why
            old.notice = f"A new chat could not start: {message}"
        else:
            _fail(message)
        return
    st.query_params.pop(QUERY_KEY, None)
    _install(sess)


def open_in_chat(cid: str) -> None:
    """Go to the chat page with the conversation ``cid`` open (not from a callback)."""
    st.switch_page("app_pages/chat.py", query_params={QUERY_KEY: cid})
