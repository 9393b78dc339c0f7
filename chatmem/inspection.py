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

from chatmem.events import Event, EventKind
from chatmem.memory import Budget, Context, Memory, Message, Recalled, Summary
from chatmem.recall import RecallIndex, recall_unavailable

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
            if (
                not self.recall
                or last is None
                or not last.recalled
                or newest is None
                or newest.role == "user"  # a message waits for its reply: its own recall applies
            ):
                return self._context()
            return self._context(recalled=list(last.recalled))

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
    def store(self) -> Store | None:
        return self._journal.store

    @property
    def conversation_id(self) -> str | None:
        return self._journal.conversation_id
