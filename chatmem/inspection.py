"""The read side of a session: what the gauge, the inspector and the CLI draw.

:class:`SessionView` is mixed into :class:`~chatmem.session.ChatMemory`; every method here
only reads. The UI uses these, never the memory's internals.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from chatmem.diffs import RequestDiff, request_diff
from chatmem.errors import StoreError
from chatmem.events import Event, EventKind
from chatmem.marks import Mark, MemoryMarks, memory_marks
from chatmem.memory import Budget, Context, Memory, Message, Recalled, Summary
from chatmem.recall import RecallIndex, recall_unavailable
from chatmem.text import snippet

if TYPE_CHECKING:
    from chatmem.journal import Journal
    from chatmem.models import ChatModel
    from chatmem.store import Store


@dataclass(frozen=True)
class TurnStat:
    """Tokens of one model call, estimated beside what the server reported."""

    kind: str  # "chat" or "summary"
    seq: int | None  # the reply's seq for chat calls
    prompt_estimate: int
    prompt_reported: int | None
    completion_reported: int | None
    at: float = field(default_factory=time.time)
    # who counted ``prompt_reported``: "server" (its usage), "tokenizer" (the server's
    # tokenizer after a stream that carried none), "non-streamed call"; "" when nobody did
    counted_by: str = "server"


@dataclass(frozen=True)
class SummaryVersion:
    """One version of the rolling summary, with the figures of the fold that made it."""

    number: int
    text: str
    tokens: int
    covers_seq: int
    created_at: float | None
    messages: int | None = None  # messages folded into this version
    before_tokens: int | None = None
    edited_by: str | None = None  # "person": a person wrote it (None: a fold did)
    restored_from: int | None = None  # the number of the earlier version it copies


@dataclass(frozen=True)
class FoldStory:
    """The last fold, before and after: the previous summary and the messages it folded,
    then the summary it made."""

    before_summary: str | None
    folded: list[tuple[int, str, str]]  # (seq, speaker, text), at most FOLD_STORY_MESSAGES
    folded_count: int
    before_tokens: int | None  # the fold's input (previous summary and messages), if recorded
    after_text: str
    after_tokens: int
    covers_seq: int
    number: int  # the version it made


RECALL_EVENTS_READ = 20  # the newest events searched for the last request's recall
FOLD_STORY_MESSAGES = 40  # folded messages a story quotes (the count says how many there were)


class SessionView:
    """Read-only views of a session (see the module docstring)."""

    memory: Memory
    model: ChatModel
    last_context: Context | None
    recall: bool
    recall_index: RecallIndex
    _lock: threading.RLock
    _journal: Journal
    _events: list[Event]
    _stats: list[TurnStat]
    _versions: list[SummaryVersion]

    def _context(self, limit: int | None = None, recalled: list[Recalled] | None = None) -> Context:
        raise NotImplementedError

    def context(self) -> Context:
        """The request that would be sent for the newest message, built now."""
        with self._lock:
            return self._context()

    def next_request(self) -> Context:
        """The next request as the memory stands now, for the gauge and the inspector.

        What the next message will recall is not known until it is sent, so the snippets
        recalled for the latest message stay in, re-fitted to the current budget (only those
        still older than the verbatim messages). The gauge then shows the share recall takes
        instead of dropping it to zero between turns. With recall off, none.
        """
        with self._lock:
            last = self.last_context
            newest = self.memory.messages[-1] if self.memory.messages else None
            if not self.recall or newest is None or newest.role == "user":
                # a message waits for its reply: its own recall applies
                return self._context()
            if last is None:  # reopened: what the last request recalled is in the store
                return self._context(recalled=self._stored_recall(newest) or None)
            return self._context(recalled=list(last.recalled)) if last.recalled else self._context()

    def _stored_recall(self, newest: Message) -> list[Recalled]:
        """What the last request recalled, read back from its ``recall`` event (so a reopened
        conversation's gauge counts what it did before the reload); read once per reply."""
        cached: tuple[int, list[Recalled]] | None = getattr(self, "_restored_recall", None)
        if cached is not None and cached[0] == newest.seq:
            return cached[1]
        found: list[Recalled] = []
        store, cid = self._journal.store, self.conversation_id
        question = next((m.seq for m in reversed(self.memory.messages) if m.role == "user"), None)
        if store is not None and cid is not None and question is not None:
            try:
                events = store.list_events(cid, limit=RECALL_EVENTS_READ)
                for event in reversed(events):
                    if event.kind != EventKind.RECALL or event.data.get("for_seq") != question:
                        continue
                    seqs = [s for s in event.data.get("seqs", []) if isinstance(s, int)]
                    scores = event.data.get("scores") or []
                    rows = {m.seq: m for m in store.messages_at(cid, seqs)}
                    found = [
                        Recalled(
                            snippet(rows[s].name or rows[s].role, rows[s].content),
                            s,
                            float(scores[i]) if i < len(scores) else 0.0,
                        )
                        for i, s in enumerate(seqs)
                        if s in rows
                    ]
                    break
            except StoreError:
                found = []
        self._restored_recall = (newest.seq, found)
        return found

    def memory_marks(
        self, context: Context | None = None, overrides: dict[int, Mark] | None = None
    ) -> MemoryMarks:
        """What the model sees of each message (the chat's marks), for ``context`` (default:
        :meth:`next_request`). ``overrides``: marks that win over the request's (default: the
        messages people pinned or left out)."""
        with self._lock:
            context = context if context is not None else self.next_request()
            memory = self.memory
            known = {m.seq: m.tokens for m in memory.messages}
            if overrides is None:
                overrides = dict.fromkeys(memory.pins, Mark.PINNED)
                overrides |= dict.fromkeys(memory.excluded, Mark.EXCLUDED)
            return memory_marks(context, memory.summary, known, overrides)

    def request_changes(self, context: Context | None = None) -> RequestDiff | None:
        """The next request (or ``context``) against the last one sent; None before the first
        request of this session."""
        with self._lock:
            last = self.last_context
            if last is None:
                return None
            current = context if context is not None else self.next_request()
            return request_diff(last, current, self.memory.covers_seq)

    def budget(self) -> Budget:
        with self._lock:
            return self._context().budget

    @property
    def events(self) -> list[Event]:
        """What happened in this session (folds, trims, recalls, errors), oldest first."""
        with self._lock:
            return list(self._events)

    def history_events(self, limit: int = 200) -> list[Event]:
        """The conversation's events, oldest first: from the store when there is one (so a
        reopened conversation shows its past), else this session's."""
        store, cid = self._journal.store, self.conversation_id
        if store is not None and cid is not None:
            return store.list_events(cid, limit=limit)
        return self.events[-limit:]

    @property
    def stats(self) -> list[TurnStat]:
        """Tokens of each model call this session made, oldest first."""
        with self._lock:
            return list(self._stats)

    def summary_versions(self, events: Sequence[Event] | None = None) -> list[SummaryVersion]:
        """Every version of the rolling summary, oldest first, with its fold's figures.

        From the store when there is one (all versions, also from earlier sessions), else
        the versions this session made. The figures come from the ``fold`` events: pass
        ``events`` when they were just read (``history_events()``), so they are not read again.
        """
        store, cid = self._journal.store, self.conversation_id
        if store is None or cid is None:
            with self._lock:
                return list(self._versions)
        folds = {
            e.data.get("covers_seq"): e.data
            for e in (events if events is not None else store.list_events(cid, limit=10_000))
            if e.kind == EventKind.FOLD and isinstance(e.data.get("covers_seq"), int)
        }
        return [
            SummaryVersion(
                number=number,
                text=s.text,
                tokens=s.tokens,
                covers_seq=s.covers_seq,
                created_at=s.created_at.timestamp(),
                messages=fold.get("messages"),
                before_tokens=fold.get("before_tokens"),
                edited_by=s.edited_by,
                restored_from=s.restored_from,
            )
            for number, s in enumerate(store.list_summaries(cid), start=1)
            # a corrected version covers what its fold did, but no fold made it
            for fold in [{} if s.edited_by or s.restored_from else folds.get(s.covers_seq, {})]
        ]

    def last_fold(self, versions: Sequence[SummaryVersion] | None = None) -> FoldStory | None:
        """The newest summary version beside what it was made from (None before a fold).
        Pass ``versions`` when they were just read (:meth:`summary_versions`)."""
        versions = list(versions) if versions is not None else self.summary_versions()
        if not versions:
            return None
        last = versions[-1]
        previous = versions[-2] if len(versions) > 1 else None
        first = previous.covers_seq + 1 if previous else 1
        folded: list[tuple[int, str, str]] = []
        store, cid = self._journal.store, self.conversation_id
        if store is not None and cid is not None:
            rows = store.messages(
                cid, after_seq=first - 1, before_seq=last.covers_seq + 1, limit=FOLD_STORY_MESSAGES
            )
            folded = [(m.seq, m.name or m.role, m.content) for m in rows if m.status == "ok"]
        else:
            with self._lock:
                folded = [
                    (m.seq, m.name or m.role, m.content)
                    for m in self.memory.messages
                    if first <= m.seq <= last.covers_seq
                ][:FOLD_STORY_MESSAGES]
        return FoldStory(
            before_summary=previous.text if previous else None,
            folded=folded,
            folded_count=last.messages if last.messages is not None else len(folded),
            before_tokens=last.before_tokens,
            after_text=last.text,
            after_tokens=last.tokens,
            covers_seq=last.covers_seq,
            number=last.number,
        )

    def stored_message_count(self) -> int:
        """Messages in the conversation (every one stored, failed and cut-off ones too);
        without a store, those this session holds."""
        store, cid = self._journal.store, self.conversation_id
        if store is not None and cid is not None:
            return store.count_messages(cid)
        return self.message_count

    @property
    def current_summary(self) -> Summary | None:
        """The summary the next request carries (None before the first fold)."""
        return self.memory.summary

    @property
    def message_count(self) -> int:
        """Messages this session holds in memory (those after the summary it loaded, and
        every one sent since)."""
        return len(self.memory.messages)

    def newest_message(self) -> Message | None:
        with self._lock:
            return self.memory.messages[-1] if self.memory.messages else None

    def message_at(self, seq: int) -> tuple[str, str] | None:
        """(speaker, text) of the message ``seq``: from memory, else from the store."""
        with self._lock:
            for m in reversed(self.memory.messages):
                if m.seq == seq:
                    return (m.name or m.role, m.content)
                if m.seq < seq:
                    break
        store, cid = self._journal.store, self.conversation_id
        if store is None or cid is None:
            return None
        found = store.messages(cid, after_seq=seq - 1, before_seq=seq + 1)
        return (found[0].name or found[0].role, found[0].content) if found else None

    @property
    def recall_unavailable(self) -> str | None:
        """Why recall finds nothing right now (the store's index is damaged), or None."""
        return recall_unavailable(self.recall_index)

    @property
    def reply_reserve(self) -> int:
        return self.memory.reply_reserve

    @property
    def summary_max_tokens(self) -> int:
        return self.memory.summary_max_tokens

    @property
    def recall_share(self) -> float:
        """The share of the budget recalled messages may take (0 with recall off)."""
        return self.memory.recall_share

    @property
    def counter_label(self) -> str:
        """How tokens are counted, in words (e.g. ``tiktoken o200k_base``)."""
        return self.memory.counter.label or self.model.name

    @property
    def model_label(self) -> str:
        return self.model.label

    @property
    def counter_exactness(self) -> str:
        """How exact the token counts are: "exact (server tokenizer)", "exact (local
        tokenizer)" or "estimated, ±x% measured" (the largest drift seen from the server's
        reported counts)."""
        return self.memory.counter.exactness

    @property
    def model_notice(self) -> str | None:
        """What the user should know about the model from the start (an unknown model, a
        context window the server does not publish), as the CLI prints it."""
        notice = getattr(self.model, "notice", None)
        return notice if isinstance(notice, str) and notice else None

    @property
    def waits_for_fold(self) -> bool:
        """Whether a request waits for a running fold (a server where a new request ends the
        one in progress); elsewhere it goes at once, without what the fold will summarise."""
        return bool(getattr(self.model, "interrupts", False))

    @property
    def store(self) -> Store | None:
        return self._journal.store

    @property
    def conversation_id(self) -> str | None:
        return self._journal.conversation_id
