"""People correct a session's memory: edit or restore the summary, pin or exclude a message.

:class:`Corrections` is mixed into :class:`~chatmem.session.ChatMemory`. Each correction is
stored first (a summary version by compare-and-set like a fold, or a ``message_marks`` row),
then applied to memory, then recorded as an event; other sessions of the conversation read
it at their next catch-up (:class:`~chatmem.sync.StoreSync`). A correction that cannot be made
raises :class:`~chatmem.errors.CorrectionRefused` with the reason and changes nothing.

- **Edit**: a new summary version with the person's text, marked ``edited_by="person"``,
  covering what the current version covers; refused over the summary cap.
- **Restore**: a new version copying an earlier one's text, marked ``restored_from``. It
  covers what the current version covers: the messages folded since that earlier version are
  no longer in the recap (they stay in the store, where recall finds them).
- **Pin**: the message is in every request, wherever it is (folded or not), counted in the
  budget. Pins together may take :data:`PIN_SHARE` of ``max_tokens``: a pin past that is
  refused. If the budget is lowered below the pins later, a request leaves the oldest pins
  out until the newest message fits (``Context.dropped_pins``; a ``trim`` event says so).
- **Exclude**: the message is never sent (not verbatim, not recalled) and no later fold reads
  it; a summary written before keeps what it read (edit it to take that out). Undone by
  ``exclude(seq, False)``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Final

from chatmem.errors import CorrectionRefused, SummaryConflict
from chatmem.events import Event, EventKind
from chatmem.inspection import SummaryVersion
from chatmem.journal import Journal
from chatmem.memory import Memory, Message, Summary
from chatmem.sync import StoreSync, stored_as_message
from chatmem.text import clean_message

PIN_SHARE: Final = 0.5
"""Share of ``max_tokens`` the pinned messages may take together, so the newest exchange
always keeps room next to them."""
PERSON: Final = "person"  # ``edited_by`` of a version a person wrote


def pin_limit(memory: Memory) -> int:
    """Tokens the pinned messages may take together."""
    return int(memory.max_tokens * PIN_SHARE)


CONFLICTS: Final = {  # a correction the other one rules out, by what it would change
    "pins": "Message {seq} is left out of requests; include it again before pinning it.",
    "excluded": "Message {seq} is pinned; unpin it before leaving it out.",
}


def pin_problem(memory: Memory, message: Message) -> str | None:
    """Why ``message`` cannot be pinned (the pins would pass :func:`pin_limit`), or None."""
    used = sum(p.tokens for p in memory.sent_pins() if p.seq != message.seq)
    limit = pin_limit(memory)
    if used + message.tokens > limit:
        return (
            f"Message {message.seq} was not pinned: with it the pinned messages would take "
            f"{used + message.tokens:,} tokens, over the {limit:,} they may use (half of the "
            f"{memory.max_tokens:,}-token budget). Unpin another message or raise the budget."
        )
    return None


@dataclass(frozen=True)
class MarkRow:
    """A message as the corrections view lists it."""

    seq: int
    role: str
    text: str
    tokens: int
    pinned: bool
    excluded: bool


class Corrections:
    """A person's corrections of a session's memory (see the module docstring)."""

    memory: Memory
    _lock: threading.RLock
    _journal: Journal
    _sync: StoreSync
    _versions: list[SummaryVersion]

    def _record(self, kind: EventKind, message: str, **data: Any) -> Event:
        raise NotImplementedError

    def catch_up(self) -> int:
        raise NotImplementedError

    summary_versions: Callable[[], list[SummaryVersion]]  # from SessionView

    # -- the summary ----------------------------------------------------------------------
    def edit_summary(self, text: str, based_on: Summary | None = None) -> Summary:
        """Make ``text`` the summary: a new version marked as edited by a person.

        ``based_on``: the summary the person started from (``current_summary`` when the editor
        opened); if another version landed since, the edit is refused so nothing is lost.
        Raises CorrectionRefused (empty, over the cap, no summary yet, changed meanwhile).
        """
        with self._lock:
            self.catch_up()
            current = self.memory.summary
            if based_on is not None and current != based_on:
                raise CorrectionRefused(
                    "The summary changed while you were editing it (a fold or another tab "
                    "wrote a new version). Your text was not saved: compare it with the new "
                    "version and save again."
                )
            return self._new_version(text, edited_by=PERSON, restored_from=None)

    def restore_summary(self, number: int) -> Summary:
        """Make version ``number`` (1 = the first, as ``summary_versions()`` numbers them) the
        summary again: a new version that copies its text, marked restored from ``number``."""
        with self._lock:
            self.catch_up()
            versions = self.summary_versions()
            if not 1 <= number <= len(versions):
                raise CorrectionRefused(
                    f"There is no summary version {number}; the versions are 1 to {len(versions)}."
                    if versions
                    else "There is no summary version to restore yet."
                )
            if number == len(versions):
                raise CorrectionRefused(f"Version {number} is already the current summary.")
            return self._new_version(versions[number - 1].text, None, restored_from=number)

    def _new_version(self, text: str, edited_by: str | None, restored_from: int | None) -> Summary:
        mem = self.memory
        current = mem.summary
        if current is None:
            raise CorrectionRefused(
                "There is no summary yet: the first fold writes one, then it can be corrected."
            )
        text = clean_message(text).strip() if isinstance(text, str) else ""
        if not text:
            raise CorrectionRefused("The summary cannot be empty; your text was not saved.")
        tokens = mem.counter.text(text)
        if tokens > mem.summary_cap:
            raise CorrectionRefused(
                f"The summary is {tokens:,} tokens, over its cap of {mem.summary_cap:,} "
                "(summary_max_tokens, at most a third of the budget). Shorten it and save "
                "again; your text is kept."
            )
        summary = Summary(
            text=text,
            covers_seq=current.covers_seq,
            tokens=mem.summary_tokens(text),
            model=None,
            created_at=time.time(),
        )
        try:
            stored = self._journal.add_summary(
                text,
                summary.tokens,
                summary.covers_seq,
                model=None,
                usage=None,
                extends=current.id,
                edited_by=edited_by,
                restored_from=restored_from,
            )
        except SummaryConflict:
            self.catch_up()
            raise CorrectionRefused(
                "A new summary version landed while this one was being saved (a fold or "
                "another tab). Nothing was changed: look at the new version and try again."
            ) from None
        if stored is not None:
            summary = replace(summary, id=stored.id)
            self._sync.summary_id = stored.id
        mem.set_summary(summary)
        number = len(self.summary_versions()) if stored is not None else len(self._versions) + 1
        if stored is None:
            self._versions.append(
                SummaryVersion(
                    number=number,
                    text=text,
                    tokens=summary.tokens,
                    covers_seq=summary.covers_seq,
                    created_at=summary.created_at,
                    edited_by=edited_by,
                    restored_from=restored_from,
                )
            )
        if restored_from is None:
            kind, what = EventKind.SUMMARY_EDITED, "A person edited the summary"
        else:
            kind, what = EventKind.SUMMARY_RESTORED, f"Restored summary version {restored_from}"
        self._record(
            kind,
            f"{what}: version {number}, {current.tokens:,} → {summary.tokens:,} tokens.",
            version=number,
            restored_from=restored_from,
            before_tokens=current.tokens,
            after_tokens=summary.tokens,
            covers_seq=summary.covers_seq,
        )
        return summary

    # -- pins and exclusions --------------------------------------------------------------
    def pinned_seqs(self) -> list[int]:
        """The seqs of the pinned messages (sent in every request), oldest first."""
        with self._lock:
            return sorted(self.memory.pins)

    def excluded_seqs(self) -> list[int]:
        """The seqs of the messages left out of requests and folds, oldest first."""
        with self._lock:
            return sorted(self.memory.excluded)

    @property
    def summary_cap(self) -> int:
        """Tokens the summary text may take (what an edit is checked against)."""
        return self.memory.summary_cap

    def count_text(self, text: str) -> int:
        """Tokens of ``text`` as the summary cap counts them."""
        return self.memory.counter.text(text)

    def pin_room(self) -> tuple[int, int]:
        """(tokens the pinned messages take, tokens they may take together)."""
        with self._lock:
            return sum(p.tokens for p in self.memory.sent_pins()), pin_limit(self.memory)

    def mark_rows(self, limit: int = 60) -> list[MarkRow]:
        """The newest ``limit`` messages (from the store when there is one, so folded ones
        too) and every pinned or excluded one, newest first: what a person can mark."""
        store, cid = self._journal.store, self._journal.conversation_id
        with self._lock:
            mem = self.memory
            found = {m.seq: m for m in mem.messages[-limit:]} | dict(mem.pins)
            wanted = set(mem.excluded)
        if store is not None and cid is not None:
            newest = store.messages(cid, before_seq=self._sync.seen_seq + 1, limit=limit)
            stored = [m for m in newest if m.status == "ok" and m.seq not in found]
            missing = wanted - found.keys() - {m.seq for m in stored}
            stored += [m for m in store.messages_at(cid, missing) if m.status == "ok"]
            found |= {m.seq: stored_as_message(self.memory, m) for m in stored}
        return [
            MarkRow(
                m.seq,
                m.name or m.role,
                m.content,
                m.tokens,
                m.seq in mem.pins,
                m.seq in mem.excluded,
            )
            for m in sorted(found.values(), key=lambda m: m.seq, reverse=True)
        ]

    def _marked_message(self, seq: int, what: str) -> Message:
        if isinstance(seq, bool) or not isinstance(seq, int):
            raise CorrectionRefused(f"A message number is a whole number, not {seq!r}.")
        msg = self.memory.message(seq) or self.memory.pins.get(seq)
        msg = msg or self._sync.stored_message(seq)
        if msg is None:
            raise CorrectionRefused(
                f"There is no message {seq} to {what} (only stored, delivered messages can be)."
            )
        return msg

    def _unless_already(self, seq: int, verb: str, kind: str, on: bool) -> Message | None:
        """Message ``seq``, read after a catch-up, or None when it already is in (``on``) or
        out of ``memory.<kind>`` (``pins`` or ``excluded``). Raises CorrectionRefused, also
        to pin a message left out or leave out a pinned one."""
        self.catch_up()
        msg = self._marked_message(seq, verb)
        if (seq in getattr(self.memory, kind)) == on:
            return None
        if on and seq in getattr(self.memory, "excluded" if kind == "pins" else "pins"):
            raise CorrectionRefused(CONFLICTS[kind].format(seq=seq))
        return msg

    def pin(self, seq: int, on: bool = True) -> bool:
        """Pin message ``seq`` (sent in every request, counted in the budget), or unpin it
        with ``on=False``. Returns False when it already was so. Raises CorrectionRefused."""
        with self._lock:
            if (msg := self._unless_already(seq, "pin" if on else "unpin", "pins", on)) is None:
                return False
            mem = self.memory
            problem = pin_problem(mem, msg) if on else None
            if problem:
                raise CorrectionRefused(problem)
            self._journal.mark(seq, "pin", on)
            if on:
                mem.pins[seq] = msg
                text = f"Pinned message {seq} ({msg.tokens:,} tokens): every request sends it."
            else:
                mem.pins.pop(seq, None)
                text = f"Unpinned message {seq}: it is folded and trimmed like any other."
            self._record(EventKind.PIN, text, seq=seq, on=on, tokens=msg.tokens)
            return True

    def exclude(self, seq: int, on: bool = True) -> bool:
        """Leave message ``seq`` out of every request and later fold, or take it back with
        ``on=False``. Returns False when it already was so. Raises CorrectionRefused."""
        with self._lock:
            verb = "leave out" if on else "include"
            if (msg := self._unless_already(seq, verb, "excluded", on)) is None:
                return False
            mem = self.memory
            newest = mem.messages[-1] if mem.messages else None
            if on and newest is not None and newest.seq == seq and newest.role == "user":
                raise CorrectionRefused(
                    f"Message {seq} is the question waiting for a reply; it cannot be left out."
                )
            self._journal.mark(seq, "exclude", on)
            if on:
                mem.excluded.add(seq)
                text = f"Left message {seq} out: it is not sent, and later folds skip it."
            else:
                mem.excluded.discard(seq)
                text = f"Message {seq} is included again."
            self._record(EventKind.EXCLUDE, text, seq=seq, on=on, tokens=msg.tokens)
            return True
