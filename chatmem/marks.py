"""What the model sees of each message: the marks the chat draws beside its messages.

Pure: built from a request (:class:`~chatmem.memory.Context`, usually ``next_request()``) and
the current summary, nothing else. Each stored message gets one :class:`Mark`:

- *sent word for word*: it is in the request's verbatim part;
- *recalled for this reply*: a quote of it is in the request's recalled block;
- *in the summary only*: it was folded into the summary and is not sent otherwise;
- *left out*: none of these (trimmed to fit the budget, or never sent: failed, cut off).

People's corrections add two more states, *pinned* and *excluded*: they arrive as
``overrides`` (seq → mark), which win over what the request alone says.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from chatmem.memory import Context, Summary


class Mark(StrEnum):
    SENT = "sent word for word"
    RECALLED = "recalled for this reply"
    SUMMARY = "in the summary only"
    LEFT_OUT = "left out"
    # set by people's corrections (passed as ``overrides``)
    PINNED = "pinned"
    EXCLUDED = "excluded"


MARK_ICONS: Mapping[Mark, str] = {
    Mark.SENT: ":material/visibility:",
    Mark.RECALLED: ":material/history:",
    Mark.SUMMARY: ":material/notes:",
    Mark.LEFT_OUT: ":material/visibility_off:",
    Mark.PINNED: ":material/push_pin:",
    Mark.EXCLUDED: ":material/block:",
}


@dataclass(frozen=True)
class MessageMark:
    """The mark of one message and its tokens, in words (for a tooltip)."""

    mark: Mark
    detail: str
    tokens: int | None = None


@dataclass(frozen=True)
class MemoryMarks:
    """The marks of a conversation's messages for one request."""

    sent: Mapping[int, int]  # seq -> tokens, in the verbatim part
    recalled: frozenset[int]
    recalled_tokens: int
    summary_covers: int  # 0 without a summary
    summary_tokens: int
    summary_sent: bool
    window_start: int | None  # seq of the first verbatim message
    known_tokens: Mapping[int, int] = field(default_factory=dict)  # seq -> tokens, if counted
    overrides: Mapping[int, Mark] = field(default_factory=dict)

    def of(self, seq: int | None, status: str = "ok") -> MessageMark:
        """The mark of the message ``seq`` (None: never stored) with ``status``."""
        if seq is None or status != "ok":
            why = "never sent" if seq is None or status != "incomplete" else "cut off"
            return MessageMark(Mark.LEFT_OUT, f"Left out: {why}, so no request holds it.")
        tokens = self.known_tokens.get(seq)
        if seq in self.overrides:
            mark = self.overrides[seq]
            return MessageMark(mark, f"{mark.capitalize()}{_tokens(tokens)}.", tokens)
        if seq in self.sent:
            tokens = self.sent[seq]
            return MessageMark(Mark.SENT, f"Sent word for word: {tokens:,} tokens.", tokens)
        if seq in self.recalled:
            also = " (also in the summary)" if seq <= self.summary_covers else ""
            return MessageMark(
                Mark.RECALLED,
                f"Quoted in the recalled block{also}: {self.recalled_tokens:,} tokens for "
                f"{len(self.recalled)} quote(s).",
                tokens,
            )
        if seq <= self.summary_covers:
            if self.summary_sent:
                detail = (
                    f"Folded into the summary ({self.summary_tokens:,} tokens, covers "
                    f"messages 1–{self.summary_covers}); its own words are not sent."
                )
            else:
                detail = "Folded into the summary, which does not fit this budget: not sent."
            return MessageMark(Mark.SUMMARY, detail, tokens)
        return MessageMark(
            Mark.LEFT_OUT,
            f"Left out to fit the budget{_tokens(tokens)}; not in the summary yet.",
            tokens,
        )

    def window_starts_at(self, seq: int | None) -> bool:
        """Whether the verbatim window begins at the message ``seq``."""
        return seq is not None and seq == self.window_start


def _tokens(tokens: int | None) -> str:
    return f" ({tokens:,} tokens)" if tokens is not None else ""


def memory_marks(
    context: Context,
    summary: Summary | None,
    known_tokens: Mapping[int, int] | None = None,
    overrides: Mapping[int, Mark] | None = None,
) -> MemoryMarks:
    """The marks for ``context`` (the request) with ``summary`` (the current one)."""
    sent = {p.seq: p.tokens for p in context.parts if p.kind == "verbatim" and p.seq is not None}
    recalled = frozenset(r.seq for r in context.recalled if r.seq is not None)
    summary_sent = any(p.kind == "summary" for p in context.parts)
    return MemoryMarks(
        sent=sent,
        recalled=recalled,
        recalled_tokens=context.budget.recalled,
        summary_covers=summary.covers_seq if summary is not None else 0,
        summary_tokens=context.budget.summary if summary_sent else 0,
        summary_sent=summary_sent,
        window_start=min(sent) if sent else None,
        known_tokens=dict(known_tokens or {}),
        overrides=dict(overrides or {}),
    )
