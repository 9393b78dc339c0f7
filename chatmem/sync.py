"""The store is the truth; a session's memory is a cache of it.

Several sessions (browser tabs, app replicas, processes) may hold one conversation. Each keeps
its :class:`~chatmem.memory.Memory` in step with the store through a :class:`StoreSync`:

- **resume** (:meth:`StoreSync.load`): the newest summary version and the newest unfolded
  messages, never the whole history;
- **catch-up** (:meth:`StoreSync.catch_up`, before each request): the messages appended since
  the last seq this session saw, and the newest summary version if another session's fold
  landed, read by index range (``Store.changes``), so the cost follows the new rows;
- **fold input** (:meth:`StoreSync.fold_input`): what a fold summarises is read from the store
  (every message after the version it extends, up to the seq it will cover), so a summary
  never claims a message it did not read. The fold then lands by compare-and-set
  (``Store.add_summary(extends=...)``), and a fold that lost the race is rebuilt on the newer
  version (``ChatMemory._fold_now``). Excluded messages are left out of it.
- **marks** (:meth:`StoreSync.take_marks`): the pins and exclusions people made, on resume and
  at each catch-up (the ones after the newest mark id held), so every tab sends the same.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

from chatmem.errors import StoreError
from chatmem.journal import Journal
from chatmem.memory import ROLES, FoldPlan, Memory, Message, Summary
from chatmem.recall import RecallIndex
from chatmem.store import history as store_history

if TYPE_CHECKING:
    from chatmem.store import StoredMark, StoredMessage, StoredSummary

log = logging.getLogger(__name__)

RESUME_BUDGETS: Final = 2  # a resumed session holds the newest unfolded messages up to this many
CATCH_UP_PAGE: Final = 1_000  # messages read per catch-up query
FOLD_READ_LIMIT: Final = 500
"""Most messages one fold reads. A conversation resumed with more unfolded messages than that
(an import never folded) is folded a part at a time, oldest first, over the next turns."""


def summary_from(memory: Memory, stored: StoredSummary) -> Summary:
    return Summary(
        text=stored.text,
        covers_seq=stored.covers_seq,
        tokens=memory.summary_tokens(stored.text),
        model=stored.model,
        created_at=stored.created_at.timestamp(),
        id=stored.id,
    )


class StoreSync:
    """Keeps one session's memory in step with the conversation in the store."""

    def __init__(self, journal: Journal, memory: Memory, recall_index: RecallIndex) -> None:
        self.journal = journal
        self.memory = memory
        self.recall_index = recall_index
        self.seen_seq = 0  # every message up to this seq is in memory (or was skipped: not ok)
        self.summary_id: int | None = None  # the newest summary version held
        self.mark_id = 0  # the newest pin or exclusion held

    @property
    def active(self) -> bool:
        return self.journal.active

    def _hold(self, m: StoredMessage, tokens: int | None = None) -> None:
        """Put a stored message into memory (ok ones only: failed or cut-off messages stay in
        the store, out of requests)."""
        self.seen_seq = max(self.seen_seq, m.seq)
        held = self.memory.messages
        if m.status != "ok" or (held and m.seq <= held[-1].seq):
            return  # not for requests, or already held
        msg = self.memory.add(
            m.role,
            m.content,
            name=m.name,
            usage=m.usage,
            seq=m.seq,
            id=m.id,
            tokens=tokens if tokens is not None else self.memory.count(m.role, m.content, m.name),
            reply_to=m.reply_to,
        )
        self.recall_index.add(msg.seq, m.name or m.role, m.content)

    def _take_summary(self, stored: StoredSummary) -> None:
        self.summary_id = stored.id
        if stored.covers_seq >= self.memory.covers_seq:
            self.memory.set_summary(summary_from(self.memory, stored))

    # -- resume ---------------------------------------------------------------------------
    def load(self) -> str:
        """Fill the memory from the store: the latest summary and the newest messages after
        it; returns the conversation's title.

        Only as many of the unfolded messages as ``RESUME_BUDGETS`` budgets hold are read and
        counted (newest first, the one that crosses the line included): a request never holds
        more. Older ones (a conversation imported or never folded can have 250,000) stay in
        the store, where recall finds them, and the next folds read them from there.
        """
        store, cid = self.journal.store, self.journal.conversation_id
        assert store is not None and cid is not None
        mem = self.memory
        room = RESUME_BUDGETS * mem.max_tokens
        # no message is shorter than its framing, so this many always cross the room
        page = room // max(1, min(mem.count(role, "") for role in ROLES)) + 1
        loaded = store_history.load(store, cid, 0, tail_limit=page)
        if loaded.summary is not None:
            self._take_summary(loaded.summary)
        covers = mem.covers_seq
        batch = loaded.messages
        self.seen_seq = max([covers, *(m.seq for m in batch)])
        kept: list[tuple[StoredMessage, int]] = []
        used = 0
        while batch:
            for m in reversed(batch):
                if m.status != "ok":
                    continue
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
            self._hold(m, tokens)
        self.take_marks(store.marks(cid))
        return loaded.info.title

    # -- catch-up -------------------------------------------------------------------------
    def appended(self, stored: StoredMessage | None) -> bool:
        """Whether the message this session just stored is the next one after what memory
        holds (then the caller adds it); otherwise others wrote in between: catch up."""
        if stored is None:
            return True
        if stored.seq == self.seen_seq + 1:
            self.seen_seq = stored.seq
            return True
        try:
            self.catch_up()
        except StoreError as exc:  # the message is stored: hold it, and catch up later
            log.warning("could not catch up with the conversation: %s", exc)
            return self.memory.message(stored.seq) is None and stored.status == "ok"
        return False

    def catch_up(self) -> int:
        """Read what others appended since :attr:`seen_seq` (messages, replies, summary
        versions) into memory; returns how many messages were read."""
        store, cid = self.journal.store, self.journal.conversation_id
        if store is None or cid is None:
            return 0
        read = 0
        while True:
            changes = store.changes(
                cid, self.seen_seq, self.summary_id, limit=CATCH_UP_PAGE, mark_id=self.mark_id
            )
            for m in changes.messages:
                self._hold(m)
            read += len(changes.messages)
            if changes.summary is not None:
                self._take_summary(changes.summary)
            self.take_marks(changes.marks)
            if not changes.more:
                return read

    # -- marks ----------------------------------------------------------------------------
    def take_marks(self, marks: Sequence[StoredMark]) -> None:
        """Apply pins and exclusions (oldest first) to memory; a pinned message memory does
        not hold (folded, or older than what was resumed) is read from the store."""
        mem = self.memory
        for mark in marks:
            self.mark_id = max(self.mark_id, mark.id)
            if mark.kind == "exclude":
                (mem.excluded.add if mark.value else mem.excluded.discard)(mark.seq)
            elif not mark.value:
                mem.pins.pop(mark.seq, None)
            else:
                held = mem.message(mark.seq) or self.stored_message(mark.seq)
                if held is not None:
                    mem.pins[mark.seq] = held

    def stored_message(self, seq: int) -> Message | None:
        """Message ``seq`` read from the store, as memory holds messages (ok ones only)."""
        store, cid = self.journal.store, self.journal.conversation_id
        if store is None or cid is None:
            return None
        found = [m for m in store.messages_at(cid, [seq]) if m.status == "ok"]
        return stored_as_message(self.memory, found[0]) if found else None

    # -- folding --------------------------------------------------------------------------
    def fold_input(self, plan: FoldPlan) -> tuple[Sequence[Message], int]:
        """The messages a fold of ``plan`` summarises, read from the store, and the seq it
        covers: every ok message after the version it extends, up to ``plan.covers_seq``
        (at most :data:`FOLD_READ_LIMIT`, oldest first). Without a store: the plan's own."""
        store, cid = self.journal.store, self.journal.conversation_id
        excluded = self.memory.excluded
        if store is None or cid is None:
            return [m for m in plan.messages if m.seq not in excluded], plan.covers_seq
        after = plan.previous.covers_seq if plan.previous else 0
        rows = store.messages(
            cid, after_seq=after, before_seq=plan.covers_seq + 1, limit=FOLD_READ_LIMIT
        )
        covers = rows[-1].seq if rows else plan.covers_seq
        held = {m.seq: m for m in plan.messages}
        messages = [
            held.get(m.seq) or stored_as_message(self.memory, m)
            for m in rows
            if m.status == "ok" and m.seq not in excluded
        ]
        return messages, covers


def stored_as_message(memory: Memory, m: StoredMessage) -> Message:
    """A stored message as memory holds one (its stored token count, else counted)."""
    tokens = m.tokens if m.tokens is not None else memory.count(m.role, m.content, m.name)
    return Message(
        m.role,
        m.content,
        m.seq,
        tokens,
        name=m.name,
        usage=m.usage,
        id=m.id,
        reply_to=m.reply_to,
    )
