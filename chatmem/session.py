"""One conversation: memory + model + (optional) store, and the turn loop.

A turn: the user's message is stored before any network call; the request is built by the
memory policy within ``max_tokens``; the reply streams; then, if the history has outgrown
the budget, a fold is scheduled on a background worker so the user never waits for it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from chatmem.config import Settings, load_settings
from chatmem.memory import (
    Budget,
    Context,
    ContextOverflow,
    FoldPlan,
    Memory,
    Message,
    Recalled,
    Summary,
    summary_block,
)
from chatmem.models import ChatModel, ModelError, OpenAIChat, Usage, make_model
from chatmem.recall import FtsIndex, HybridRecall, RecallIndex, StoreRecall
from chatmem.summarize import Summarizer, SummaryError
from chatmem.tokens import clean_text

if TYPE_CHECKING:
    from chatmem.store import Store

log = logging.getLogger(__name__)

KEEP_RECENT_LIMITS = (1, 200)
MIN_MAX_TOKENS = 64


@dataclass(frozen=True)
class Event:
    """Something the inspector shows: a fold, a trim, an error."""

    kind: str  # fold, fold_failed, trim, error, context_shrunk, too_long
    message: str
    at: float = field(default_factory=time.time)
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TurnStat:
    """Tokens of one model call, estimated beside what the server reported."""

    kind: str  # "chat" or "summary"
    seq: int | None  # the reply's seq for chat calls
    prompt_estimate: int
    prompt_reported: int | None
    completion_reported: int | None
    at: float = field(default_factory=time.time)


def clean_message(text: str) -> str:
    """Text every part of chatmem can count, store and show: no NUL, no lone surrogates."""
    return clean_text(text).replace("\x00", "\ufffd")


def title_from(text: str, limit: int = 60) -> str:
    """A conversation title from its first message."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1].rsplit(" ", 1)[0] + "…"


class ChatMemory:
    """A chatbot that remembers within a token budget.

    >>> bot = ChatMemory(system="You are a friendly assistant. Be concise.")
    >>> bot.ask("Hi, my name is Sam.")  # doctest: +SKIP

    With a ``store`` and no ``conversation_id`` a new conversation is created, owned by
    ``owner``: at once, or with ``defer_create=True`` when the first message is stored (so a
    session that never sends anything leaves no empty conversation behind).
    """

    def __init__(
        self,
        system: str | None = None,
        max_tokens: int = 3000,
        keep_recent: int = 6,
        model: str | ChatModel | None = None,
        *,
        summary_max_tokens: int = 300,
        reply_reserve: int = 512,
        background: bool = True,
        recall: bool = True,
        recall_share: float = 0.2,
        recall_index: RecallIndex | None = None,
        summary_model: ChatModel | None = None,
        settings: Settings | None = None,
        store: Store | None = None,
        conversation_id: str | None = None,
        owner: str | None = None,
        defer_create: bool = False,
    ) -> None:
        self.settings = settings or load_settings()
        if isinstance(model, ChatModel):
            self.model: ChatModel = model
        else:
            self.model = make_model(
                model or self.settings.model,
                api_key=self.settings.api_key,
                base_url=self.settings.base_url,
                timeout=self.settings.timeout,
                max_retries=self.settings.max_retries,
                context_window=self.settings.context_window,
                local_path=self.settings.local_model_path,
            )
        if (
            summary_model is None
            and self.settings.summary_model
            and not self.settings.uses_local_model
        ):
            summary_model = make_model(
                self.settings.summary_model,
                api_key=self.settings.api_key,
                base_url=self.settings.base_url,
                timeout=self.settings.timeout,
                max_retries=self.settings.max_retries,
            )
        self.summarizer = Summarizer(summary_model or self.model, self.model.counter)
        self.memory = Memory(
            system=system if system is not None else self.settings.system_prompt,
            counter=self.model.counter,
            summary_max_tokens=summary_max_tokens,
            reply_reserve=reply_reserve,
        )
        self._check_budget(max_tokens, reply_reserve)
        self.memory.max_tokens = max_tokens
        self.keep_recent = keep_recent
        self.background = background
        if not 0.0 <= recall_share < 0.9:
            raise ValueError(f"recall_share must be from 0 to 0.9; got {recall_share!r}.")
        self._recall_share = recall_share
        self.recall = recall
        self.title = "New chat"
        self.events: list[Event] = []
        self.stats: list[TurnStat] = []
        self.fold_failures = 0  # in a row; reset by a successful fold
        self.last_context: Context | None = None
        self._lock = threading.RLock()
        self._executor: ThreadPoolExecutor | None = None
        self._fold: Future[None] | None = None
        self._fold_listeners: list[Any] = []
        self.store = store
        self.conversation_id = conversation_id
        self.owner = owner
        self.recall_index: RecallIndex = recall_index or self._default_recall()
        if store is not None:
            if conversation_id is None:
                if not defer_create:
                    self._create_conversation()
            else:
                self._load(conversation_id)

    def _default_recall(self) -> RecallIndex:
        """BM25 (the store's full-text index when there is a store), blended with embeddings
        when the settings name an embedding model and the chat model is OpenAI-compatible
        (never with the local model)."""
        store = self.store
        lexical: RecallIndex = (
            FtsIndex() if store is None else StoreRecall(store, lambda: self.conversation_id)
        )
        name = self.settings.active_embedding_model
        if not name or not isinstance(self.model, OpenAIChat):
            return lexical
        from chatmem.embeddings import Embedder

        embedder = Embedder(
            name,
            api_key=self.settings.api_key,
            base_url=self.settings.base_url or self.model.base_url,
            timeout=self.settings.timeout,
            max_retries=self.settings.max_retries,
        )
        return HybridRecall(
            lexical,
            embedder,
            store=store,
            conversation_id=lambda: self.conversation_id,
            on_event=self._recall_event,
            background=self.background,
        )

    def _recall_event(self, kind: str, message: str, **data: Any) -> None:
        with self._lock:
            self._record(kind, message, **data)

    @classmethod
    def resume(
        cls, store: Store, conversation_id: str, model: str | ChatModel | None = None, **kw: Any
    ) -> ChatMemory:
        """Reopen a stored conversation with the settings it was saved with.

        Reads the latest summary and the messages after it, not the whole history.
        Keyword arguments override the stored settings.
        """
        info = store.get_conversation(conversation_id)
        if info is None:
            raise LookupError(f"No conversation with id {conversation_id!r}.")
        saved = info.settings or {}
        for key in ("max_tokens", "keep_recent"):
            if isinstance(saved.get(key), int):
                kw.setdefault(key, saved[key])
        if isinstance(saved.get("system"), str):
            kw.setdefault("system", saved["system"])
        return cls(model=model, store=store, conversation_id=conversation_id, **kw)

    def _create_conversation(self) -> None:
        assert self.store is not None
        info = self.store.create_conversation(settings=self._settings_record(), owner=self.owner)
        self.conversation_id = info.id

    def _load(self, conversation_id: str) -> None:
        """Fill the memory from the store: the latest summary and the messages after it."""
        assert self.store is not None
        loaded = self.store.load(conversation_id)
        counter = self.memory.counter
        if loaded.summary is not None:
            block = {"role": "system", "content": summary_block(loaded.summary.text)}
            self.memory.summary = Summary(
                text=loaded.summary.text,
                covers_seq=loaded.summary.covers_seq,
                tokens=counter.message(block),
                model=loaded.summary.model,
                created_at=loaded.summary.created_at.timestamp(),
            )
        for m in loaded.messages:
            if m.status != "ok":
                continue  # failed or cut-off messages stay in the store, out of requests
            msg = self.memory.add(m.role, m.content, name=m.name, usage=m.usage, seq=m.seq, id=m.id)
            self.recall_index.add(msg.seq, m.name or m.role, m.content)
        self.title = loaded.info.title

    # -- the seed API --------------------------------------------------------------------
    @property
    def max_tokens(self) -> int:
        return self.memory.max_tokens

    @max_tokens.setter
    def max_tokens(self, value: int) -> None:
        self._check_budget(value, self.memory.reply_reserve)
        with self._lock:
            self.memory.max_tokens = int(value)
        self._save_settings()

    @property
    def keep_recent(self) -> int:
        return self.memory.keep_recent

    @keep_recent.setter
    def keep_recent(self, value: int) -> None:
        low, high = KEEP_RECENT_LIMITS
        if not isinstance(value, int) or not low <= value <= high:
            raise ValueError(
                f"keep_recent must be a whole number from {low} to {high}; got {value!r}."
            )
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
        """Store and remember the user's message. Raises ValueError or ContextOverflow.

        The message is written to the store first, even when it is too large to send.
        """
        if not isinstance(text, str) or not text.strip():
            raise ValueError("The message is empty.")
        text = clean_message(text)
        with self._lock:
            if self.store is not None and self.conversation_id is None:
                self._create_conversation()  # deferred until there is something to keep
            if self.store is not None and not self.memory.messages and self.title == "New chat":
                self.title = title_from(text)
                self._store_call("rename_conversation", self.title)
            tokens = self.memory.count("user", text)
            try:
                self.memory.check_fits("user", text)
            except ContextOverflow as exc:
                self._store_call("append_message", "user", text, tokens=tokens, status="failed")
                self._record("too_long", str(exc), needed=exc.needed, limit=exc.limit)
                raise
            stored = self._store_call("append_message", "user", text, tokens=tokens)
            msg = self.memory.add(
                "user",
                text,
                tokens=tokens,
                seq=getattr(stored, "seq", None),
                id=getattr(stored, "id", None),
            )
            self.recall_index.add(msg.seq, "user", text)
            return msg

    def reply_stream(self) -> Iterator[str]:
        """Answer the newest message (after add_user_message, or to retry a failed reply)."""
        with self._lock:
            context = self._context()
        if context.recalled:
            self._record(
                "recall",
                f"Recalled {len(context.recalled)} older messages for this request.",
                seqs=[r.seq for r in context.recalled],
                for_seq=self.memory.messages[-1].seq,
                scores=[round(r.score, 3) for r in context.recalled],
            )
        if context.trimmed:
            self._record(
                "trim",
                f"Left {context.trimmed} older messages out of this request to fit the budget.",
                trimmed=context.trimmed,
            )
        shrunk = False
        while True:
            self.last_context = context
            reply = self.model.stream(context.messages, max_reply_tokens=self.memory.reply_reserve)
            try:
                yield from reply
                break
            except ModelError as exc:
                if exc.kind == "context_length" and not shrunk:
                    # the server counts differently from us: shrink by its overflow and retry
                    over = exc.overflow if exc.overflow and exc.overflow > 0 else 0
                    margin = 16 + context.budget.total // 20
                    limit = context.budget.total - over - margin
                    self._record(
                        "context_shrunk",
                        f"The server said the request was {over} tokens too long; "
                        f"retrying with a {limit}-token budget.",
                        overflow=over,
                        limit=limit,
                    )
                    shrunk = True
                    with self._lock:
                        try:
                            context = self._context(limit=limit)
                        except ContextOverflow:
                            self._fail(exc, reply.text)
                            raise exc from None
                    continue
                self._fail(exc, reply.text)
                raise
        self._finish(context, reply.text, reply.usage)

    def _fail(self, exc: ModelError, partial: str) -> None:
        partial = partial or exc.partial
        if partial:
            self._store_call("append_message", "assistant", partial, status="incomplete")
        self._record("error", exc.user_message, error_kind=exc.kind, partial_chars=len(partial))

    def _finish(self, context: Context, text: str, usage: Usage | None) -> None:
        text = clean_message(text)
        usage_dict = usage.as_dict() if usage else None
        with self._lock:
            tokens = self.memory.count("assistant", text)
            stored = self._store_call(
                "append_message", "assistant", text, tokens=tokens, usage=usage_dict
            )
            msg = self.memory.add(
                "assistant",
                text,
                usage=usage_dict,
                tokens=tokens,
                seq=getattr(stored, "seq", None),
                id=getattr(stored, "id", None),
            )
            self.recall_index.add(msg.seq, "assistant", text)
            self.stats.append(
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
        self.schedule_fold()

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

    def on_fold(self, listener: Any) -> None:
        """Call ``listener(event)`` when a fold lands or fails (from the worker thread)."""
        self._fold_listeners.append(listener)

    def _run_fold(self, plan: FoldPlan) -> None:
        cap = self.memory.summary_cap
        previous = plan.previous.text if plan.previous else None
        before = sum(m.tokens for m in plan.messages) + (
            plan.previous.tokens if plan.previous else 0
        )
        try:
            result = self.summarizer.summarize(previous, plan.messages, cap)
        except SummaryError as exc:
            with self._lock:
                self.fold_failures += 1
                event = self._record(
                    "fold_failed",
                    f"{exc} The summary was left as it was; older messages are trimmed until a "
                    "later fold succeeds.",
                    failures_in_a_row=self.fold_failures,
                )
            self._notify(event)
            return
        except Exception as exc:  # never let a fold bug kill the chat
            log.exception("fold crashed")
            with self._lock:
                self.fold_failures += 1
                event = self._record("fold_failed", f"The fold crashed: {exc}")
            self._notify(event)
            return
        with self._lock:
            block = {"role": "system", "content": summary_block(result.text)}
            summary = Summary(
                text=result.text,
                covers_seq=plan.covers_seq,
                tokens=self.memory.counter.message(block),
                model=self.summarizer.model.name,
                created_at=time.time(),
            )
            self.memory.set_summary(summary)
            self.fold_failures = 0
            self._store_call(
                "add_summary",
                summary.text,
                summary.tokens,
                summary.covers_seq,
                model=summary.model,
                usage=result.usage.as_dict(),
            )
            self.stats.append(
                TurnStat(
                    "summary",
                    None,
                    result.usage.prompt_tokens or 0,
                    result.usage.prompt_tokens,
                    result.usage.completion_tokens,
                )
            )
            event = self._record(
                "fold",
                f"Folded {len(plan.messages)} messages: {before:,} → {summary.tokens:,} tokens",
                messages=len(plan.messages),
                before_tokens=before,
                after_tokens=summary.tokens,
                covers_seq=summary.covers_seq,
                calls=result.calls,
            )
        self._notify(event)

    def _notify(self, event: Event) -> None:
        for listener in list(self._fold_listeners):
            try:
                listener(event)
            except Exception:  # a UI callback must not break the worker
                log.exception("fold listener failed")

    # -- inspection ----------------------------------------------------------------------
    def _context(self, limit: int | None = None) -> Context:
        """The next request, with older messages recalled when some are out of the window."""
        mem = self.memory
        recalled: list[Recalled] = []
        newest = mem.messages[-1] if mem.messages else None
        if (
            self.recall
            and newest is not None
            and newest.role == "user"
            and (mem.summary is not None or mem.history_tokens() > (limit or mem.max_tokens))
        ):
            recalled = self.recall_index.search(newest.content, before_seq=newest.seq, limit=20)
        return mem.context(recalled, limit=limit)

    def context(self) -> Context:
        """The request that would be sent next (for the inspector)."""
        with self._lock:
            return self._context()

    def budget(self) -> Budget:
        with self._lock:
            return self._context().budget

    @property
    def model_label(self) -> str:
        return self.model.label

    # -- plumbing ------------------------------------------------------------------------
    def _check_budget(self, max_tokens: int, reply_reserve: int) -> None:
        if not isinstance(max_tokens, int) or max_tokens < MIN_MAX_TOKENS:
            raise ValueError(
                f"max_tokens must be a whole number of at least {MIN_MAX_TOKENS}; "
                f"got {max_tokens!r}."
            )
        window = self.model.context_window
        if max_tokens + reply_reserve > window:
            raise ValueError(
                f"max_tokens ({max_tokens:,}) plus the reply reserve ({reply_reserve:,}) is more "
                f"than {self.model.name}'s context window of {window:,} tokens; use at most "
                f"{window - reply_reserve:,}."
            )
        needed = self.memory.counter.message(self.memory.system_message()) + 3 + 16
        if max_tokens < needed:
            raise ValueError(
                f"max_tokens ({max_tokens:,}) leaves no room after the system prompt, which "
                f"needs {needed - 19:,} tokens; use at least {needed:,}."
            )

    def _record(self, kind: str, message: str, **data: Any) -> Event:
        event = Event(kind, message, data=data)
        self.events.append(event)
        self._store_call("add_event", kind, {"message": message, **data})
        if kind in ("error", "fold_failed"):
            log.warning("%s: %s", kind, message)
        return event

    def _settings_record(self) -> dict[str, Any]:
        return {
            "model": self.model.name,
            "max_tokens": self.memory.max_tokens,
            "keep_recent": self.memory.keep_recent,
            "system": self.memory.system,
        }

    def _save_settings(self) -> None:
        if getattr(self, "store", None) is not None and self.conversation_id:
            self._store_call("update_settings", self._settings_record())

    def _store_call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        if self.store is None or self.conversation_id is None:
            return None
        return getattr(self.store, method)(self.conversation_id, *args, **kwargs)

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
