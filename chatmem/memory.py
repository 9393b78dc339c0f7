"""The memory policy: what goes into each request, and what to fold into the summary.

Pure: no network, no disk, no clocks that matter; testable with plain data.

A conversation is a list of messages. A *summary* covers every message up to and including
``summary.covers_seq``; the messages after it are *unfolded*. Each request is:

    system prompt | recalled snippets | summary block | the newest unfolded messages

always within ``max_tokens`` (prompt tokens, counted in the chat format), always ending
with the newest message, and always made of whole exchanges (an exchange starts at a user
message and runs to the next one), so the verbatim part never opens with a reply.

The recalled and summary blocks are sent as user-role messages, never system ones
(``chatmem.framing``; the README's security section has the measurements). A person's
corrections shape each request: a pinned message (``Memory.pins``) is in every request,
counted in the budget; an excluded one (``Memory.excluded``) is never sent.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from chatmem.adaptive import RECALL_THRESHOLD, RECENCY_K, RECENCY_WEIGHT, extend_tail, pick, prior
from chatmem.errors import ContextOverflow
from chatmem.framing import (
    MEMORY_ROLE,
    RECALL_LABEL,
    SUMMARY_LABEL,
    memory_message,
    recall_block,
    recall_line,
    summary_block,
)
from chatmem.request import Budget, Context, FoldPlan, Message, Part, Recalled, Summary
from chatmem.tokens import TokenCounter

__all__ = [  # the labels and blocks are re-exported from chatmem.framing
    "MEMORY_ROLE",
    "RECALL_LABEL",
    "SUMMARY_LABEL",
    "Context",
    "ContextOverflow",
    "Memory",
    "Message",
    "Recalled",
    "Summary",
    "memory_message",
    "recall_block",
    "recall_line",
    "summary_block",
]

ROLES = ("system", "user", "assistant", "tool")
RECALL_SHARE = 0.9
"""Default ceiling of the recalled block, as a share of the budget (a person may lower it)."""
FOLD_RECALL_ROOM = 0.2  # folding leaves this share of the budget (at most the ceiling) to recall

ARRANGE_SLACK = 16
"""Messages before the part of the history that fits, also put in exchange order (a reply
there may belong to a question inside it)."""


def exchanges(messages: Sequence[Message], answering: int | None = None) -> list[Message]:
    """``messages`` (seq order) as whole exchanges: each reply right after the question it
    answers (``reply_to``), exchanges in the order of their questions, and the exchange of
    the question ``answering`` last, whatever was stored after it.

    Tabs of one conversation interleave in the store (question A, question B, reply B, reply
    A); pairing by the link, never by adjacency, keeps each reply with its question. A reply
    without a link, or whose question is not in ``messages``, stays after the message before
    it, as stored.
    """
    if not any(m.reply_to is not None for m in messages) and (
        answering is None or (messages and messages[-1].seq == answering)
    ):
        return list(messages)  # the common case: nothing to move
    groups: list[list[Message]] = []
    by_question: dict[int, list[Message]] = {}
    for m in messages:
        if m.role == "user":
            group = [m]
            groups.append(group)
            by_question[m.seq] = group
        elif m.reply_to is not None and m.reply_to in by_question:
            by_question[m.reply_to].append(m)
        elif groups:
            groups[-1].append(m)
        else:
            groups.append([m])
    if answering is not None and answering in by_question:
        last = by_question[answering]
        groups = [g for g in groups if g is not last] + [last]
    return [m for group in groups for m in group]


@dataclass
class Memory:
    """The state of one conversation's memory and the rules that govern it."""

    system: str
    counter: TokenCounter
    max_tokens: int = 3000
    keep_recent: int = 6
    summary_max_tokens: int = 300
    reply_reserve: int = 512
    fold_target: float = 0.8  # a fold leaves the request at most this share of max_tokens
    recall_share: float = 0.0  # most of max_tokens the recalled block may take (0: no recall)
    recall_threshold: float = RECALL_THRESHOLD  # least score worth a candidate's room
    recency_weight: float = RECENCY_WEIGHT
    recency_k: float = RECENCY_K
    messages: list[Message] = field(default_factory=list)
    summary: Summary | None = None
    pins: dict[int, Message] = field(default_factory=dict)  # seq -> always sent verbatim
    excluded: set[int] = field(default_factory=set)  # seqs never sent nor folded again
    _cum_tokens: list[int] = field(default_factory=list, repr=False, compare=False)
    _line_costs: dict[str, int] = field(default_factory=dict, repr=False, compare=False)

    # -- reading -------------------------------------------------------------------------
    @property
    def covers_seq(self) -> int:
        return self.summary.covers_seq if self.summary else 0

    @property
    def next_seq(self) -> int:
        return self.messages[-1].seq + 1 if self.messages else self.covers_seq + 1

    def _first_unfolded(self) -> int:
        """Index in ``messages`` of the first message after the summary (binary search)."""
        covers = self.covers_seq
        return bisect.bisect_right(self.messages, covers, key=lambda m: m.seq) if covers else 0

    def unfolded(self) -> list[Message]:
        """Messages after the summary, oldest first."""
        return self.messages[self._first_unfolded() :]

    def _cumulative(self) -> list[int]:
        """Running token totals over ``messages``, kept in step by ``add`` and ``truncate``."""
        if len(self._cum_tokens) != len(self.messages):  # the list was edited directly
            self._cum_tokens = list(itertools.accumulate(m.tokens for m in self.messages))
        return self._cum_tokens

    def truncate(self, count: int) -> None:
        """Forget every message after the first ``count`` (e.g. to ask what-if questions)."""
        del self.messages[count:]
        del self._cum_tokens[count:]

    def system_message(self) -> dict[str, Any]:
        return {"role": "system", "content": self.system}

    def summary_message(self) -> dict[str, Any] | None:
        if not self.summary:
            return None
        return memory_message(summary_block(self.summary.text))

    def summary_tokens(self, text: str) -> int:
        """Tokens of the summary block message that carries ``text``."""
        return self.counter.message(memory_message(summary_block(text)))

    @property
    def summary_cap(self) -> int:
        """Token cap of the summary text: its own setting, and never over a third of the budget."""
        return max(32, min(self.summary_max_tokens, self.max_tokens // 3))

    # -- writing -------------------------------------------------------------------------
    def count(self, role: str, content: str, name: str | None = None) -> int:
        msg: dict[str, Any] = {"role": role, "content": content}
        if name:
            msg["name"] = name
        return self.counter.message(msg)

    def check_fits(self, role: str, content: str, name: str | None = None) -> int:
        """The message's token count; raises ContextOverflow if it can never be sent."""
        tokens = self.count(role, content, name)
        needed = (
            self.counter.message(self.system_message()) + tokens + self.counter.format.reply_priming
        )
        if needed > self.max_tokens:
            raise ContextOverflow(needed, self.max_tokens)
        return tokens

    def add(
        self,
        role: str,
        content: str,
        *,
        name: str | None = None,
        usage: dict[str, Any] | None = None,
        seq: int | None = None,
        id: int | None = None,
        tokens: int | None = None,
        reply_to: int | None = None,
    ) -> Message:
        if role not in ROLES:
            raise ValueError(f"Unknown role {role!r}; expected one of {', '.join(ROLES)}.")
        msg = Message(
            role=role,
            content=content,
            seq=seq if seq is not None else self.next_seq,
            tokens=tokens if tokens is not None else self.count(role, content, name),
            name=name,
            usage=usage,
            id=id,
            reply_to=reply_to,
        )
        if self.messages and msg.seq <= self.messages[-1].seq:
            raise ValueError(f"Message seq {msg.seq} is not after {self.messages[-1].seq}.")
        cum = self._cumulative()
        cum.append((cum[-1] if cum else 0) + msg.tokens)
        self.messages.append(msg)
        return msg

    def set_summary(self, summary: Summary) -> None:
        if self.summary and summary.covers_seq < self.summary.covers_seq:
            raise ValueError("A new summary must cover at least what the old one did.")
        self.summary = summary

    # -- building a request --------------------------------------------------------------
    def message(self, seq: int) -> Message | None:
        """The held message with this seq (binary search), or None."""
        i = bisect.bisect_left(self.messages, seq, key=lambda m: m.seq)
        return self.messages[i] if i < len(self.messages) and self.messages[i].seq == seq else None

    def _window(self, first: int, room: int, answering: int | None) -> list[Message]:
        """The unfolded messages that can be in a request (those whose suffix fits ``room``,
        with :data:`ARRANGE_SLACK` more, and the question ``answering``), as exchanges."""
        cum = self._cumulative()
        total = cum[-1] if cum else 0
        # the first index whose suffix (from it to the end) fits the room
        start = bisect.bisect_left(cum, total - max(room, 0), lo=first) if cum else first
        start = max(first, start - ARRANGE_SLACK)
        if answering is not None:
            at = bisect.bisect_left(self.messages, answering, key=lambda m: m.seq)
            if first <= at < start:
                start = at
        return exchanges(self.messages[start:], answering)

    def context(
        self,
        recalled: Sequence[str | Recalled] = (),
        *,
        limit: int | None = None,
        answering: int | None = None,
    ) -> Context:
        """The request to send now: within ``limit`` (default ``max_tokens``) tokens.

        ``answering``: the seq of the question being answered (default: the newest message);
        its exchange goes last, and replies sit with their questions (:func:`exchanges`).

        The newest ``keep_recent`` messages (whole exchanges) go first. The rest of the budget
        is shared by one relevance score (``chatmem.adaptive``): each older unfolded message
        has a recency prior, and each of ``recalled`` (candidates from recall, their ``score``
        the search's evidence) adds its evidence to its own prior. Candidates are taken best
        first while their score is at least ``recall_threshold``; those next to the recent
        messages are sent verbatim, the others as quotes in the recalled block, which never
        takes more than ``recall_share`` of the budget. Whatever room is left goes to more
        recent messages, as before. A plain string (or a candidate without a seq) counts as
        relevant. When the newest message does not fit, the summary goes first; if it still
        does not fit, ContextOverflow is raised.
        """
        limit = self.max_tokens if limit is None else limit
        priming = self.counter.format.reply_priming
        system_msg = self.system_message()
        system_tokens = self.counter.message(system_msg)
        summary_msg = self.summary_message()
        summary_tokens = self.counter.message(summary_msg) if summary_msg else 0
        candidates = [
            r if isinstance(r, Recalled) else Recalled(text=r, score=math.inf) for r in recalled
        ]
        ceiling = int(limit * self.recall_share) if candidates else 0
        first = self._first_unfolded()
        unfolded_count = len(self.messages) - first
        pins = self.sent_pins()
        dropped_pins: list[int] = []

        while True:
            pin_tokens = sum(p.tokens for p in pins)
            pinned = {p.seq for p in pins}
            room = limit - priming - system_tokens - summary_tokens - pin_tokens
            window = self._window(first, room + pin_tokens + self._excluded_tokens(), answering)
            if self.excluded:
                window = [m for m in window if m.seq not in self.excluded]
            keep = self.keep_recent if candidates and ceiling > 0 else None
            tail, tail_tokens, newest_fits = self._fit_tail(window, 0, room, pinned, keep)
            if newest_fits:
                break
            if summary_msg:
                summary_msg, summary_tokens = None, 0
                continue
            if pins:  # the pins outgrew a lowered budget: the oldest wait, this request
                dropped_pins.append(pins.pop(0).seq)
                continue
            newest = window[-1] if unfolded_count and window else None
            needed = system_tokens + priming + (newest.tokens if newest else 0)
            raise ContextOverflow(needed, limit, "The newest message")

        start = len(window) - len(tail)
        in_tail = {m.seq for m in tail}
        eligible = [
            c
            for c in candidates
            if c.seq is None
            or (c.seq not in in_tail and c.seq not in pinned and c.seq not in self.excluded)
        ]
        spare = room - tail_tokens
        picked: dict[int | str, Recalled | None] = {}
        if ceiling > 0 and eligible:
            newest_seq = self.messages[-1].seq if self.messages else 0
            picked, spare = pick(
                eligible,
                window,
                start,
                spare,
                ceiling=ceiling,
                header=self.counter.message(memory_message(recall_block([]))),
                line_cost=self._line_cost,
                score_prior=lambda seq: prior(seq, newest_seq, self.recency_weight, self.recency_k),
                threshold=self.recall_threshold,
            )
        verbatim, _ = extend_tail(window, start, spare, picked)
        verbatim.extend(tail)
        recent_tokens = sum(m.tokens for m in verbatim if m.seq not in pinned)
        in_verbatim = {m.seq for m in verbatim}
        quotes = [
            c
            for c in picked.values()
            if c is not None and (c.seq is None or c.seq not in in_verbatim)
        ]
        free = limit - priming - system_tokens - summary_tokens - recent_tokens - pin_tokens
        chosen = self._fit_recalled(quotes, min(free, ceiling))
        recall_msg = self._recall_message(chosen) if chosen else None
        recall_tokens = self.counter.message(recall_msg) if recall_msg else 0

        # recalled quotes come before the summary: the recap is newer, so where the two
        # disagree the later text (the recap, then the recent messages) is the current one
        parts = [Part("system", system_msg, system_tokens)]
        if recall_msg:
            parts.append(Part("recalled", recall_msg, recall_tokens))
        if summary_msg:
            parts.append(Part("summary", summary_msg, summary_tokens))
        parts.extend(
            Part("pinned", p.to_api(), p.tokens, p.seq) for p in pins if p.seq not in in_verbatim
        )
        parts.extend(
            Part("pinned" if m.seq in pinned else "verbatim", m.to_api(), m.tokens, m.seq)
            for m in verbatim
        )
        budget = Budget(
            system=system_tokens,
            summary=summary_tokens,
            recalled=recall_tokens,
            recent=recent_tokens,
            priming=priming,
            reply_reserve=self.reply_reserve,
            limit=limit,
            pinned=pin_tokens,
        )
        covers = self.covers_seq
        left_out = sum(1 for s in self.excluded if s > covers)  # never sent: not trimmed
        sent_before = sum(1 for p in pins if p.seq > covers and p.seq not in in_verbatim)
        offered = [c for c in eligible if c.seq is None or c.seq not in in_verbatim]
        return Context(
            parts=tuple(parts),
            budget=budget,
            trimmed=max(0, unfolded_count - len(verbatim) - left_out - sent_before),
            dropped_summary=self.summary is not None and summary_msg is None,
            dropped_recalled=len({c.seq if c.seq is not None else c.text for c in offered})
            - len(chosen),
            recalled=tuple(chosen),
            dropped_pins=tuple(dropped_pins),
        )

    # -- corrections: pins and exclusions --------------------------------------------------
    def sent_pins(self) -> list[Message]:
        """The pinned messages every request carries (not excluded), oldest first."""
        return [self.pins[s] for s in sorted(self.pins) if s not in self.excluded]

    def _excluded_tokens(self) -> int:
        return sum(m.tokens for s in self.excluded if (m := self.message(s)) is not None)

    def _line_cost(self, text: str) -> int:
        """Tokens of a snippet's line in the recalled block, and its newline (cached)."""
        cost = self._line_costs.get(text)
        if cost is None:
            if len(self._line_costs) > 20_000:
                self._line_costs.clear()
            cost = self._line_costs[text] = self.counter.text(recall_line(text)) + 1
        return cost

    def _fit_recalled(self, candidates: Sequence[Recalled], room: int) -> list[Recalled]:
        """The most relevant candidates whose block fits in ``room``, oldest first.

        Each snippet line is counted once (and cached); one exact count of the finished
        block then confirms the fit, dropping the least relevant if merges differ.
        """
        if not candidates:
            return []
        used = self.counter.message(memory_message(recall_block([])))
        chosen: list[Recalled] = []
        seen: set[int | str] = set()
        for cand in sorted(candidates, key=lambda c: -c.score):
            key = cand.seq if cand.seq is not None else cand.text
            cost = self._line_cost(cand.text)
            if key not in seen and used + cost <= room:
                chosen.append(cand)
                seen.add(key)
                used += cost
        while chosen and self.counter.message(self._recall_message(chosen)) > room:
            chosen.pop()
        return sorted(chosen, key=lambda r: (r.seq is None, r.seq or 0))

    @staticmethod
    def _recall_message(recalled: Sequence[Recalled]) -> dict[str, Any]:
        ordered = sorted(recalled, key=lambda r: (r.seq is None, r.seq or 0))
        return memory_message(recall_block(r.text for r in ordered))

    @staticmethod
    def _fit_tail(
        messages: Sequence[Message],
        first: int,
        room: int,
        paid: frozenset[int] | set[int] = frozenset(),
        count: int | None = None,
    ) -> tuple[list[Message], int, bool]:
        """The newest whole exchanges of ``messages[first:]`` that fit in ``room`` tokens
        (with ``count``: only as many as it takes to hold the newest ``count`` messages).

        Returns (messages, their tokens, ok). The kept part always starts at a user
        message. ``ok`` is False when the room is negative or the newest message is a
        user message that cannot be kept. Messages in ``paid`` (pinned: counted apart) cost
        nothing here. Walks back from the newest message only as far
        as the room allows, so the cost does not grow with the history.
        """
        end = len(messages)
        start, used, suffix = end, 0, 0
        for i in range(end - 1, first - 1, -1):
            if messages[i].seq not in paid:
                suffix += messages[i].tokens
            if suffix > room:
                break
            if messages[i].role == "user":
                start, used = i, suffix
                if count is not None and end - i >= count:
                    break
        newest_is_user = end > first and messages[-1].role == "user"
        ok = room >= 0 and (not newest_is_user or start < end)
        return list(messages[start:end]), used, ok

    # -- folding -------------------------------------------------------------------------
    def history_tokens(self) -> int:
        """Tokens of system + summary + every unfolded message: the request with no trim."""
        summary_msg = self.summary_message()
        covers = self.covers_seq
        return (
            self.counter.message(self.system_message())
            + (self.counter.message(summary_msg) if summary_msg else 0)
            + self._unfolded_tokens()
            + self.counter.format.reply_priming
            + sum(p.tokens for p in self.sent_pins() if p.seq <= covers)  # folded, still sent
            - sum(m.tokens for s in self.excluded if s > covers and (m := self.message(s)))
        )

    def _unfolded_tokens(self) -> int:
        cum = self._cumulative()
        first = self._first_unfolded()
        return (cum[-1] if cum else 0) - (cum[first - 1] if first else 0)

    def needs_fold(self) -> bool:
        """True when the history no longer fits the part of the budget it may use.

        That part is ``max_tokens`` less the recall reserve, so messages are folded into
        the summary before requests would have to trim them.
        """
        return self.history_tokens() > self._history_limit() and self.plan_fold() is not None

    def _history_limit(self) -> int:
        """The part of the budget the summary and verbatim messages may use."""
        return self.max_tokens - int(self.max_tokens * min(self.recall_share, FOLD_RECALL_ROOM))

    def plan_fold(self) -> FoldPlan | None:
        """The oldest unfolded exchanges to fold so the rest fits well below the budget.

        Folds everything but the newest ``keep_recent`` messages (one more if needed to
        start at a user message), so the next fold is many turns away. Only when those
        recent messages are so long that the request would still exceed ``fold_target`` of
        the history's share of the budget (counting the summary at its cap) are further
        whole exchanges folded,
        always keeping the newest exchange.
        """
        unfolded = self.unfolded()
        user_idx = [i for i, m in enumerate(unfolded) if m.role == "user"]
        candidate = len(unfolded) - self.keep_recent
        if candidate <= 0 or not user_idx:
            return None
        before = [i for i in user_idx if i <= candidate]
        keep_from = before[-1] if before else user_idx[0]
        later = [i for i in user_idx if i > keep_from]
        fixed = (
            self.counter.message(self.system_message())
            + self.counter.format.reply_priming
            + self.counter.message(memory_message(summary_block("")))
            + self.summary_cap
            + sum(p.tokens for p in self.sent_pins() if p.seq <= self.covers_seq)
        )
        target = int(self._history_limit() * self.fold_target)
        kept = sum(m.tokens for m in unfolded[keep_from:])
        while fixed + kept > target and later:
            nxt = later.pop(0)
            kept -= sum(m.tokens for m in unfolded[keep_from:nxt])
            keep_from = nxt
        if keep_from == 0:
            return None
        return FoldPlan(messages=tuple(unfolded[:keep_from]), previous=self.summary)
