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
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from chatmem.config import Settings, check_bound, load_settings
from chatmem.errors import ContextOverflow, ModelError, NotFoundError, SummaryError
from chatmem.events import Event, EventKind
from chatmem.factory import assemble, build_recall, check_budget, saved_overrides
from chatmem.inspection import SessionView, SummaryVersion, TurnStat
from chatmem.journal import Journal
from chatmem.memory import ROLES, Context, FoldPlan, Memory, Message, Recalled, Summary
from chatmem.models import ChatModel, ReplyStream, Usage
from chatmem.recall import RECALL_SHARE, HybridRecall, RecallIndex, candidates, scores_data
from chatmem.store import history as store_history
from chatmem.summarize import Summarizer
from chatmem.text import clean_message, title_from

if TYPE_CHECKING:
    from chatmem.store import Store, StoredMessage

log = logging.getLogger(__name__)

RESUME_BUDGETS = 2  # a resumed session holds the newest unfolded messages up to this many budgets
NEW_TITLE = "New chat"


@dataclass
class _Reply:
    """One reply in progress: what the finish step needs, however the reply ended."""

    context: Context
    stream: ReplyStream | None = None
    completed: bool = False
    error: ModelError | None = None
    finished: bool = False

    @property
    def partial(self) -> str:
        text = self.stream.text if self.stream is not None else ""
        return text or (self.error.partial if self.error is not None else "")


class ChatMemory(SessionView):
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
        setup = assemble(
            self.settings,
            model=model,
            summary_model=summary_model,
            system=system,
            max_tokens=max_tokens,
            keep_recent=keep_recent,
            summary_max_tokens=summary_max_tokens,
            reply_reserve=reply_reserve,
            fit=fit,
        )
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
        """Fill the memory from the store: the latest summary and the newest messages after it.

        Only as many of the unfolded messages as ``RESUME_BUDGETS`` budgets hold are read and
        counted (newest first, the one that crosses the line included): a request never holds
        more, and a fold then has them to summarise. Older ones (a conversation imported or
        never folded can have 250,000) stay in the store, where recall finds them; holding
        more than the budget, the memory recalls for every request until the next fold.
        """
        store, cid = self._journal.store, self._journal.conversation_id
        assert store is not None and cid is not None
        mem = self.memory
        room = RESUME_BUDGETS * mem.max_tokens
        # no message is shorter than its framing, so this many always cross the room
        page = room // max(1, min(mem.count(role, "") for role in ROLES)) + 1
        # Store.load takes no limit yet: its body does (chatmem.store.history)
        loaded = store_history.load(store, cid, 0, tail_limit=page)
        if loaded.summary is not None:
            mem.summary = self._summary(
                loaded.summary.text,
                loaded.summary.covers_seq,
                loaded.summary.model,
                loaded.summary.created_at.timestamp(),
            )
        covers = mem.covers_seq
        kept: list[tuple[StoredMessage, int]] = []
        used = 0
        batch = loaded.messages
        while batch:
            for m in reversed(batch):
                if m.status != "ok":
                    continue  # failed or cut-off messages stay in the store, out of requests
                tokens = mem.count(m.role, m.content, m.name)
                kept.append((m, tokens))
                used += tokens
                if used > room:
                    break
            if used > room or len(batch) < page:
                break  # full, or that was the oldest unfolded message
            older = store.messages(cid, before_seq=batch[0].seq, limit=page)  # past failed ones
            batch = tuple(m for m in older if m.seq > covers)
        for m, tokens in reversed(kept):
            msg = mem.add(
                m.role, m.content, name=m.name, usage=m.usage, seq=m.seq, id=m.id, tokens=tokens
            )
            self.recall_index.add(msg.seq, m.name or m.role, m.content)
        self.title = loaded.info.title

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
        self.memory.keep_recent = check_bound("keep_recent", value)
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
        """Store and remember the user's message. Raises ValueError or ContextOverflow.

        The message is written to the store first, even when it is too large to send.
        """
        if not isinstance(text, str) or not text.strip():
            raise ValueError("The message is empty.")
        text = clean_message(text)
        with self._lock:
            self._journal.create(self._settings_record(), self.owner)
            if self._journal.active and not self.memory.messages and self.title == NEW_TITLE:
                self.title = title_from(text)
                self._journal.rename(self.title)
            tokens = self.memory.count("user", text)
            try:
                self.memory.check_fits("user", text)
            except ContextOverflow as exc:
                self._journal.append("user", text, tokens=tokens, status="failed")
                self._record(EventKind.TOO_LONG, str(exc), needed=exc.needed, limit=exc.limit)
                raise
            stored = self._journal.append("user", text, tokens=tokens)
            msg = self.memory.add(
                "user",
                text,
                tokens=tokens,
                seq=stored.seq if stored else None,
                id=stored.id if stored else None,
            )
            self.recall_index.add(msg.seq, "user", text)
            return msg

    def reply_stream(self) -> Iterator[str]:
        """Answer the newest message (after add_user_message, or to retry a failed reply).

        However the reply ends, :meth:`_finish_reply` runs once: the reply (or the part that
        arrived) is stored and a fold is scheduled, even when the consumer stops early.
        """
        with self._lock:
            reply = _Reply(self._context())
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
                # the server counts differently from us: shrink by its overflow and retry
                over = exc.overflow if exc.overflow and exc.overflow > 0 else 0
                total = reply.context.budget.total
                limit = total - over - (16 + total // 20)
                self._record(
                    EventKind.CONTEXT_SHRUNK,
                    f"The server said the request was {over} tokens too long; "
                    f"retrying with a {limit}-token budget.",
                    overflow=over,
                    limit=limit,
                )
                try:
                    with self._lock:
                        reply.context = self._context(limit=limit)
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
            self._store_reply(reply.context, reply.stream.text, reply.stream.usage)
        else:
            partial = clean_message(reply.partial)
            if partial:
                self._journal.append("assistant", partial, status="incomplete")
            if reply.error is not None:
                error = reply.error
                self._record(
                    EventKind.ERROR,
                    error.user_message,
                    error_kind=error.kind,
                    partial_chars=len(partial),
                )
            else:
                self._record(
                    EventKind.STOPPED,
                    "The reply was stopped before it finished; what arrived is kept.",
                    partial_chars=len(partial),
                )
        self.schedule_fold()

    def _store_reply(self, context: Context, text: str, usage: Usage | None) -> None:
        text = clean_message(text)
        usage_dict = usage.as_dict() if usage else None
        with self._lock:
            tokens = self.memory.count("assistant", text)
            stored = self._journal.append("assistant", text, tokens=tokens, usage=usage_dict)
            msg = self.memory.add(
                "assistant",
                text,
                usage=usage_dict,
                tokens=tokens,
                seq=stored.seq if stored else None,
                id=stored.id if stored else None,
            )
            self.recall_index.add(msg.seq, "assistant", text)
            self._stats.append(
                TurnStat(
                    "chat",
                    msg.seq,
                    context.budget.total,
                    usage.prompt_tokens if usage else None,
                    usage.completion_tokens if usage else None,
                )
            )
        if isinstance(self.recall_index, HybridRecall):
            self.recall_index.after_turn()  # embeds the reply off the reply's path

    def _record_request(self, context: Context) -> None:
        if context.recalled:
            self._record(
                EventKind.RECALL,
                f"Recalled {len(context.recalled)} older messages for this request.",
                seqs=[r.seq for r in context.recalled],
                for_seq=self.memory.messages[-1].seq,
                **scores_data(context.recalled),
            )
        if context.trimmed:
            self._record(
                EventKind.TRIM,
                f"Left {context.trimmed} older messages out of this request to fit the budget.",
                trimmed=context.trimmed,
            )

    # -- folding -------------------------------------------------------------------------
    @property
    def folding(self) -> bool:
        """True while a fold is running in the background."""
        return self._fold is not None and not self._fold.done()

    def schedule_fold(self) -> bool:
        """Fold old messages into the summary if the history has outgrown the budget.

        Runs on the background worker (or inline with ``background=False``). Returns True
        if a fold was started.
        """
        with self._lock:
            if self.folding or not self.memory.needs_fold():
                return False
            plan = self.memory.plan_fold()
            if plan is None:
                return False
            if not self.background:
                self._run_fold(plan)
                return True
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    max_workers=1, thread_name_prefix="chatmem-fold"
                )
            self._fold = self._executor.submit(self._run_fold, plan)
            return True

    def wait_for_fold(self, timeout: float | None = None) -> None:
        """Block until a running fold (if any) has finished."""
        fold = self._fold
        if fold is not None:
            fold.result(timeout=timeout)

    def on_fold(self, listener: Callable[[Event], object]) -> None:
        """Call ``listener(event)`` when a fold lands or fails (from the worker thread)."""
        self._fold_listeners.append(listener)

    def _run_fold(self, plan: FoldPlan) -> None:
        try:
            event = self._fold_now(plan)
        except Exception as exc:  # never let a fold kill the chat
            if not isinstance(exc, SummaryError):
                log.exception("fold crashed")
            reason = str(exc) if isinstance(exc, SummaryError) else f"The fold crashed: {exc}"
            with self._lock:
                self.fold_failures += 1
                event = self._record(
                    EventKind.FOLD_FAILED,
                    f"{reason} The summary was left as it was; older messages are trimmed "
                    "until a later fold succeeds.",
                    failures_in_a_row=self.fold_failures,
                )
        for listener in list(self._fold_listeners):
            try:
                listener(event)
            except Exception:  # a UI callback must not break the worker
                log.exception("fold listener failed")

    def _fold_now(self, plan: FoldPlan) -> Event:
        previous = plan.previous.text if plan.previous else None
        before = sum(m.tokens for m in plan.messages) + (
            plan.previous.tokens if plan.previous else 0
        )
        result = self.summarizer.summarize(previous, plan.messages, self.memory.summary_cap)
        with self._lock:
            summary = self._summary(
                result.text, plan.covers_seq, self.summarizer.model.name, time.time()
            )
            self.memory.set_summary(summary)
            self.fold_failures = 0
            self._journal.add_summary(
                summary.text,
                summary.tokens,
                summary.covers_seq,
                model=summary.model,
                usage=result.usage.as_dict(),
            )
            self._stats.append(
                TurnStat(
                    "summary",
                    None,
                    result.usage.prompt_tokens or 0,
                    result.usage.prompt_tokens,
                    result.usage.completion_tokens,
                )
            )
            self._versions.append(
                SummaryVersion(
                    number=len(self._versions) + 1,
                    text=summary.text,
                    tokens=summary.tokens,
                    covers_seq=summary.covers_seq,
                    created_at=summary.created_at,
                    messages=len(plan.messages),
                    before_tokens=before,
                )
            )
            return self._record(
                EventKind.FOLD,
                f"Folded {len(plan.messages)} messages: {before:,} → {summary.tokens:,} tokens",
                messages=len(plan.messages),
                before_tokens=before,
                after_tokens=summary.tokens,
                covers_seq=summary.covers_seq,
                calls=result.calls,
            )

    def _summary(self, text: str, covers_seq: int, model: str | None, created_at: float) -> Summary:
        return Summary(
            text=text,
            covers_seq=covers_seq,
            tokens=self.memory.summary_tokens(text),
            model=model,
            created_at=created_at,
        )

    # -- building requests -----------------------------------------------------------------
    def _context(self, limit: int | None = None, recalled: list[Recalled] | None = None) -> Context:
        """The next request, with older messages recalled when some are out of the window."""
        mem = self.memory
        newest = mem.messages[-1] if mem.messages else None
        if (
            recalled is None
            and self.recall
            and newest is not None
            and newest.role == "user"
            and (mem.summary is not None or mem.history_tokens() > (limit or mem.max_tokens))
        ):
            recalled = candidates(self.recall_index, newest.content, before_seq=newest.seq)
        return mem.context(recalled or [], limit=limit)

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
