"""One conversation: memory + model + (optional) store, and the turn loop.

A turn: the user's message is stored before any network call; the request is built by the
memory policy within ``max_tokens``; the reply streams; then a finish step stores the reply
(or what arrived of it) and, if the history has outgrown the budget, schedules a fold on a
background worker so the user never waits for it. The finish step runs however the reply
ends: completed, failed, or abandoned by a consumer that stopped reading.

Settings become a session in :mod:`chatmem.factory`; the store is written through a
:class:`~chatmem.journal.Journal`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from chatmem.config import Settings, check_bound, load_settings
from chatmem.corrections import Corrections
from chatmem.errors import (
    ContextOverflow,
    ModelError,
    NotFoundError,
    StoreError,
)
from chatmem.events import Event, EventKind
from chatmem.factory import Overrides, assemble, build_recall, check_budget, saved_overrides
from chatmem.folding import Folding
from chatmem.inspection import SessionView, SummaryVersion, TurnStat
from chatmem.journal import Journal
from chatmem.memory import Context, Memory, Message, Recalled
from chatmem.models import ChatModel, ReplyStream, Usage
from chatmem.recall import RECALL_SHARE, HybridRecall, RecallIndex, candidates, scores_data
from chatmem.servers import after_overflow
from chatmem.summarize import Summarizer
from chatmem.sync import StoreSync
from chatmem.text import clean_message, title_from

if TYPE_CHECKING:
    from chatmem.store import Store, StoredMessage

log = logging.getLogger(__name__)

NEW_TITLE = "New chat"


@dataclass
class _Reply:
    """One reply in progress: what the finish step needs, however the reply ended."""

    context: Context
    stream: ReplyStream | None = None
    completed: bool = False
    error: ModelError | None = None
    finished: bool = False
    question: int | None = None  # the seq of the user message this reply answers

    @property
    def partial(self) -> str:
        text = self.stream.text if self.stream is not None else ""
        return text or (self.error.partial if self.error is not None else "")


class ChatMemory(Folding, Corrections, SessionView):
    """A chatbot that remembers within a token budget.

    >>> bot = ChatMemory(system="You are a friendly assistant. Be concise.")
    >>> bot.ask("Hi, my name is Sam.")  # doctest: +SKIP

    Arguments left as None take their value from ``settings`` (default: the environment,
    ``.env`` and ``.streamlit/secrets.toml``, see :mod:`chatmem.config`).

    With a ``store`` and no ``conversation_id`` a new conversation is created, owned by
    ``owner``: at once, or with ``defer_create=True`` when the first message is stored (so a
    session that never sends anything leaves no empty conversation behind). With ``fit=True``
    a budget too large for the model is lowered instead of refused (:attr:`setup_notes`).
    """

    def __init__(
        self,
        system: str | None = None,
        max_tokens: int | None = None,
        keep_recent: int | None = None,
        model: str | ChatModel | None = None,
        *,
        summary_max_tokens: int | None = None,
        reply_reserve: int | None = None,
        background: bool = True,
        recall: bool = True,
        recall_share: float = RECALL_SHARE,
        recall_index: RecallIndex | None = None,
        summary_model: ChatModel | None = None,
        settings: Settings | None = None,
        store: Store | None = None,
        conversation_id: str | None = None,
        owner: str | None = None,
        defer_create: bool = False,
        fit: bool = False,
    ) -> None:
        self.settings = settings or load_settings()
        # Overrides takes these arguments in the order of this signature.
        overrides = Overrides(
            system, max_tokens, keep_recent, model, summary_max_tokens, reply_reserve, summary_model
        )
        setup = assemble(self.settings, overrides, fit=fit)
        self.setup_notes = setup.notes
        self.model: ChatModel = setup.model
        self.summarizer = Summarizer(setup.summary_model, self.model.counter)
        self.memory = Memory(
            system=setup.system,
            counter=self.model.counter,
            summary_max_tokens=setup.summary_max_tokens,
            reply_reserve=setup.reply_reserve,
        )
        self.memory.max_tokens = setup.max_tokens
        self.memory.keep_recent = setup.keep_recent
        self.background = background
        if not 0.0 <= recall_share <= 0.95:
            raise ValueError(f"recall_share must be from 0 to 0.95; got {recall_share!r}.")
        self._recall_share = recall_share
        self.recall = recall
        self.title = NEW_TITLE
        self.owner = owner
        self.fold_failures = 0  # in a row; reset by a successful fold
        self.last_context: Context | None = None
        self._events: list[Event] = []
        self._stats: list[TurnStat] = []
        self._versions: list[SummaryVersion] = []  # made by this session (no store)
        self._lock = threading.RLock()
        self._executor: ThreadPoolExecutor | None = None
        self._fold: Future[None] | None = None
        self._fold_listeners: list[Callable[[Event], object]] = []
        self._journal = Journal(store, conversation_id, secrets=self.settings.secrets())
        self.recall_index: RecallIndex = recall_index or build_recall(
            self.settings,
            self.model,
            store=store,
            conversation_id=lambda: self.conversation_id,
            on_event=self._recall_event,
            background=background,
        )
        self._sync = StoreSync(self._journal, self.memory, self.recall_index)
        self._question: int | None = None  # the seq of this session's newest question
        if store is not None:
            if conversation_id is None:
                if not defer_create:
                    self._journal.create(self._settings_record(), owner)
            else:
                self._load()

    @classmethod
    def resume(
        cls, store: Store, conversation_id: str, model: str | ChatModel | None = None, **kw: Any
    ) -> ChatMemory:
        """Reopen a stored conversation with the settings it was saved with.

        Reads the latest summary and the messages after it, not the whole history.
        Keyword arguments override the stored settings. Raises NotFoundError (a LookupError)
        for an unknown id.
        """
        info = store.get_conversation(conversation_id)
        if info is None:
            raise NotFoundError(f"No conversation with id {conversation_id!r}.")
        for key, value in saved_overrides(info.settings).items():
            if kw.get(key) is None:
                kw[key] = value
        return cls(model=model, store=store, conversation_id=conversation_id, **kw)

    def _load(self) -> None:
        """Fill the memory from the store (:meth:`chatmem.sync.StoreSync.load`)."""
        self.title = self._sync.load()
        newest = self.memory.messages[-1] if self.memory.messages else None
        if newest is not None and newest.role == "user":  # left without a reply: a retry's
            self._question = newest.seq

    # -- the seed API --------------------------------------------------------------------
    @property
    def max_tokens(self) -> int:
        return self.memory.max_tokens

    @max_tokens.setter
    def max_tokens(self, value: int) -> None:
        check_budget(self.model, self.memory.system, value, self.memory.reply_reserve)
        with self._lock:
            self.memory.max_tokens = int(value)
        self._save_settings()

    @property
    def keep_recent(self) -> int:
        return self.memory.keep_recent

    @keep_recent.setter
    def keep_recent(self, value: int) -> None:
        value = check_bound("keep_recent", value)
        with self._lock:  # never while a request is being built
            self.memory.keep_recent = value
        self._save_settings()

    @property
    def recall(self) -> bool:
        """Whether older messages relevant to the current one are recalled into requests."""
        return self.memory.recall_share > 0

    @recall.setter
    def recall(self, on: bool) -> None:
        self.memory.recall_share = self._recall_share if on else 0.0

    @property
    def summary(self) -> str:
        """The rolling summary's text ("" before the first fold)."""
        s = self.memory.summary
        return s.text if s else ""

    @property
    def recent(self) -> list[dict[str, Any]]:
        """The messages after the summary, verbatim."""
        with self._lock:
            return [m.to_api() for m in self.memory.unfolded()]

    @property
    def system(self) -> str:
        return self.memory.system

    def ask(self, text: str) -> str:
        """Send a message and return the whole reply."""
        return "".join(self.ask_stream(text))

    def ask_stream(self, text: str) -> Iterator[str]:
        """Send a message and yield the reply as it streams."""
        self.add_user_message(text)
        yield from self.reply_stream()

    # -- the turn loop -------------------------------------------------------------------
    def add_user_message(self, text: str) -> Message:
        """Store and remember the user's message (first, even when it is too large to send).
        Raises ValueError or ContextOverflow."""
        if not isinstance(text, str) or not text.strip():
            raise ValueError("The message is empty.")
        text = clean_message(text)
        self._spare_fold()  # counting may ask the server's tokenize route
        with self._lock:
            self._journal.create(self._settings_record(), self.owner)
            if self._journal.active and not self.memory.messages and self.title == NEW_TITLE:
                self.title = title_from(text)
                self._journal.rename(self.title)
            tokens = self.memory.count("user", text)
            try:
                self.memory.check_fits("user", text)
            except ContextOverflow as exc:
                failed = self._journal.append("user", text, tokens=tokens, status="failed")
                self._sync.appended(failed)
                self._record(EventKind.TOO_LONG, str(exc), needed=exc.needed, limit=exc.limit)
                raise
            stored = self._journal.append("user", text, tokens=tokens)
            msg = self._hold(stored, "user", text, tokens)
            self._question = msg.seq
            return msg

    def _hold(
        self,
        stored: StoredMessage | None,
        role: str,
        text: str,
        tokens: int,
        usage: dict[str, Any] | None = None,
        reply_to: int | None = None,
    ) -> Message:
        """Put the message this session just stored into memory: directly when it is the
        next one, else by catching up with what others wrote before it (it comes along)."""
        if not self._sync.appended(stored):
            assert stored is not None
            held = self.memory.message(stored.seq)
            assert held is not None, "a stored ok message is caught up"
            return held
        msg = self.memory.add(
            role,
            text,
            usage=usage,
            tokens=tokens,
            seq=stored.seq if stored else None,
            id=stored.id if stored else None,
            reply_to=reply_to,
        )
        self.recall_index.add(msg.seq, role, text)
        return msg

    def reply_stream(self) -> Iterator[str]:
        """Answer the newest message (after add_user_message, or to retry a failed reply).

        However the reply ends, :meth:`_finish_reply` runs once: the reply (or the part that
        arrived) is stored and a fold is scheduled, even when the consumer stops early.
        """
        self._spare_fold()
        with self._lock:
            self.catch_up()
            reply = _Reply(self._context(), question=self._question)
        self._record_request(reply.context)
        try:
            yield from self._stream(reply)
        finally:
            self._finish_reply(reply)

    def _stream(self, reply: _Reply) -> Iterator[str]:
        """Stream the reply; on the server's context-length error, shrink once and retry."""
        shrunk = False
        while True:
            self.last_context = reply.context
            reply.stream = self.model.stream(
                reply.context.messages, max_reply_tokens=self.memory.reply_reserve
            )
            try:
                yield from reply.stream
                reply.completed = True
                return
            except ModelError as exc:
                if exc.kind != "context_length" or shrunk:
                    reply.error = exc
                    raise
                shrunk = True
                # the server counts differently from us: shrink by its own count and retry
                limit, note, figures = after_overflow(
                    exc, reply.context.budget.total, self.model, self.memory
                )
                self._record(EventKind.CONTEXT_SHRUNK, note, **figures)
                try:  # no budget left (None) is a budget of 0: nothing fits
                    with self._lock:
                        reply.context = self._context(limit=limit or 0)
                except ContextOverflow:
                    reply.error = exc
                    raise exc from None

    def _finish_reply(self, reply: _Reply) -> None:
        """The one way a turn ends: store what arrived, record it, schedule a fold."""
        if reply.finished:
            return
        reply.finished = True
        if reply.completed:
            assert reply.stream is not None
            self._store_reply(reply, reply.stream.text, reply.stream.usage)
        else:
            partial = clean_message(reply.partial)
            seq = None  # the seq the part that arrived is stored with
            if partial:
                with self._lock:
                    cut = self._journal.append(
                        "assistant", partial, status="incomplete", reply_to=reply.question
                    )
                    self._sync.appended(cut)
                seq = cut.seq if cut is not None else None
            if reply.error is not None:
                error = reply.error
                self._record(
                    EventKind.ERROR,
                    error.user_message,
                    error_kind=error.kind,
                    partial_chars=len(partial),
                    seq=seq,
                )
            else:
                self._record(
                    EventKind.STOPPED,
                    "The reply was stopped before it finished; what arrived is kept.",
                    partial_chars=len(partial),
                    seq=seq,
                )
        self.schedule_fold()

    def _store_reply(self, reply: _Reply, text: str, usage: Usage | None) -> None:
        context = reply.context
        text = clean_message(text)
        usage_dict = usage.as_dict() if usage else None
        with self._lock:
            tokens = self.memory.count("assistant", text)
            stored = self._journal.append(
                "assistant", text, tokens=tokens, usage=usage_dict, reply_to=reply.question
            )
            msg = self._hold(stored, "assistant", text, tokens, usage_dict, reply.question)
            if self._question == reply.question:
                self._question = None  # answered: the next request is about a new question
            reported = usage.prompt_tokens if usage else None
            self.model.counter.observe(context.budget.total, reported)  # drift, calibration
            done, by = (usage.completion_tokens, usage.source) if usage else (None, "")
            stat = TurnStat("chat", msg.seq, context.budget.total, reported, done, counted_by=by)
            self._stats.append(stat)
        if isinstance(self.recall_index, HybridRecall):
            self.recall_index.after_turn()  # embeds the reply off the reply's path

    def _record_request(self, context: Context) -> None:
        if context.recalled:
            self._record(
                EventKind.RECALL,
                f"Recalled {len(context.recalled)} older messages for this request.",
                seqs=[r.seq for r in context.recalled],
                for_seq=self._question or self.memory.messages[-1].seq,
                **scores_data(context.recalled),
            )
        if context.dropped_pins:
            seqs = ", ".join(str(s) for s in context.dropped_pins)
            self._record(
                EventKind.TRIM,
                f"The pinned messages no longer fit the budget: left pinned message(s) {seqs} "
                "out of this request. Unpin some, or raise the budget.",
                dropped_pins=list(context.dropped_pins),
            )
        if context.trimmed:
            self._record(
                EventKind.TRIM,
                f"Left {context.trimmed} older messages out of this request to fit the budget.",
                trimmed=context.trimmed,
            )

    # -- building requests -----------------------------------------------------------------
    def _context(self, limit: int | None = None, recalled: list[Recalled] | None = None) -> Context:
        """The next request, with older messages recalled when some are out of the window."""
        mem = self.memory
        newest = mem.message(self._question) if self._question is not None else None
        newest = newest or (mem.messages[-1] if mem.messages else None)
        if (
            recalled is None
            and self.recall
            and newest is not None
            and newest.role == "user"
            and (mem.summary is not None or mem.history_tokens() > (limit or mem.max_tokens))
        ):
            recalled = candidates(self.recall_index, newest.content, before_seq=newest.seq)
        if limit is None:  # a calibrated estimate budgets below max_tokens, by what it measured
            limit = mem.counter.limit_for(mem.max_tokens)
        return mem.context(recalled or [], limit=limit, answering=self._question)

    def catch_up(self) -> int:
        """Read what other sessions wrote to this conversation since this one last looked
        (messages, replies, summary versions) into memory; returns the messages read. A store
        that cannot be read leaves the memory as it is (logged): the turn goes on."""
        with self._lock:
            try:
                return self._sync.catch_up()
            except StoreError as exc:
                log.warning("could not catch up with the conversation: %s", exc)
                return 0

    # -- plumbing ------------------------------------------------------------------------
    def _record(self, kind: EventKind, message: str, **data: Any) -> Event:
        event = self._journal.add_event(Event(kind, message, data=data))
        with self._lock:
            self._events.append(event)
        if kind in (EventKind.ERROR, EventKind.FOLD_FAILED):
            log.warning("%s: %s", kind, message)
        return event

    def _recall_event(self, kind: str, message: str, **data: Any) -> None:
        with self._lock:
            self._record(EventKind(kind), message, **data)

    def _settings_record(self) -> dict[str, Any]:
        return {
            "model": self.model.name,
            "max_tokens": self.memory.max_tokens,
            "keep_recent": self.memory.keep_recent,
            "system": self.memory.system,
        }

    def _save_settings(self) -> None:
        journal = getattr(self, "_journal", None)  # None while __init__ sets the memory up
        if journal is not None:
            journal.save_settings(self._settings_record())

    def close(self) -> None:
        """Wait for a running fold (and background embedding) and stop the workers."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        if isinstance(self.recall_index, HybridRecall):
            self.recall_index.close()

    def __enter__(self) -> ChatMemory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
