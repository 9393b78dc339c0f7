"""The memory policy: what goes into each request, and what to fold into the summary.

Pure: no network, no disk, no clocks that matter; testable with plain data.

A conversation is a list of messages. A *summary* covers every message up to and including
``summary.covers_seq``; the messages after it are *unfolded*. Each request is:

    system prompt | recalled snippets | summary block | the newest unfolded messages

always within ``max_tokens`` (prompt tokens, counted in the chat format), always ending
with the newest message, and always made of whole exchanges (an exchange starts at a user
message and runs to the next one), so the verbatim part never opens with a reply.

The recalled and summary blocks are sent as user-role messages, never system ones
(``chatmem.framing``; the README's security section has the measurements).
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

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
RECENCY_K, RECENCY_WEIGHT = 3, 0.1
"""The recency prior of a message ``age`` messages before the newest: weight / (K + age), on
the scale of recall's evidence (reciprocal ranks, ``chatmem.recall``): the last few turns
outrank the best search hit, turns some 20 back rank with the 15th. Tuned on half of LoCoMo
(``python -m bench.bench_locomo --tune``) and a follow-up test (``test_recall_budget.py``)."""
RECALL_THRESHOLD = 0.0  # the least score (prior plus evidence) worth a candidate's room
FOLD_RECALL_ROOM = 0.2  # folding leaves this share of the budget (at most the ceiling) to recall


@dataclass
class Message:
    """One message of a conversation; ``tokens`` includes its chat-format framing."""

    role: str
    content: str
    seq: int
    tokens: int
    name: str | None = None
    usage: dict[str, Any] | None = None
    id: int | None = None  # the store's row id, when stored

    def to_api(self) -> dict[str, Any]:
        out: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.name:
            out["name"] = self.name
        return out


@dataclass(frozen=True)
class Summary:
    """A rolling summary covering every message with ``seq <= covers_seq``."""

    text: str
    covers_seq: int
    tokens: int  # of the framed summary block message
    model: str | None = None
    created_at: float | None = None


@dataclass(frozen=True)
class Recalled:
    """An older message brought back for the current request, with why (its score)."""

    text: str
    seq: int | None = None
    score: float = 0.0  # relevance: the evidence from recall (plus the recency prior once sent)
    bm25: float | None = None  # the keyword search's score, when it found this message
    dense: float | None = None  # cosine similarity of the embeddings, when they found it


@dataclass(frozen=True)
class Part:
    """One message of a request, with what kind of memory it came from."""

    kind: str  # "system", "summary", "recalled" or "verbatim"
    message: dict[str, Any]
    tokens: int
    seq: int | None = None


@dataclass(frozen=True)
class Budget:
    """Where the prompt's tokens go, for the inspector's gauge."""

    system: int
    summary: int
    recalled: int
    recent: int
    priming: int
    reply_reserve: int
    limit: int

    @property
    def total(self) -> int:
        """Prompt tokens of the request (framing and reply priming included)."""
        return self.system + self.summary + self.recalled + self.recent + self.priming

    @property
    def free(self) -> int:
        return max(0, self.limit - self.total)

    def as_dict(self) -> dict[str, int]:
        return {
            "system": self.system,
            "summary": self.summary,
            "recalled": self.recalled,
            "recent": self.recent,
            "priming": self.priming,
            "reply_reserve": self.reply_reserve,
            "total": self.total,
            "limit": self.limit,
        }


@dataclass(frozen=True)
class Context:
    """The exact request to send, and how it was built."""

    parts: tuple[Part, ...]
    budget: Budget
    trimmed: int = 0  # unfolded messages left out of this request to fit
    dropped_summary: bool = False
    dropped_recalled: int = 0
    recalled: tuple[Recalled, ...] = ()

    @property
    def messages(self) -> list[dict[str, Any]]:
        return [p.message for p in self.parts]


@dataclass(frozen=True)
class FoldPlan:
    """Which messages a fold summarises: ``messages`` end at ``covers_seq``."""

    messages: tuple[Message, ...]
    previous: Summary | None

    @property
    def covers_seq(self) -> int:
        return self.messages[-1].seq


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
    def prior(self, seq: int, newest_seq: int) -> float:
        """The recency prior of message ``seq`` when ``newest_seq`` is the newest message."""
        return self.recency_weight / (self.recency_k + max(0, newest_seq - seq))

    def context(
        self, recalled: Sequence[str | Recalled] = (), *, limit: int | None = None
    ) -> Context:
        """The request to send now: within ``limit`` (default ``max_tokens``) tokens.

        The newest ``keep_recent`` messages (whole exchanges) go first. The rest of the budget
        is shared by one relevance score: each older unfolded message has a recency prior
        (:meth:`prior`), and each of ``recalled`` (candidates from recall, their ``score``
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

        while True:
            room = limit - priming - system_tokens - summary_tokens
            keep = self.keep_recent if candidates and ceiling > 0 else None
            tail, tail_tokens, newest_fits = self._fit_tail(self.messages, first, room, keep)
            if newest_fits:
                break
            if summary_msg:
                summary_msg, summary_tokens = None, 0
                continue
            newest = self.messages[-1] if unfolded_count else None
            needed = system_tokens + priming + (newest.tokens if newest else 0)
            raise ContextOverflow(needed, limit, "The newest message")

        start = len(self.messages) - len(tail)
        first_tail = tail[0].seq if tail else self.next_seq
        eligible = [c for c in candidates if c.seq is None or c.seq < first_tail]
        spare = room - tail_tokens
        picked: dict[int | str, Recalled] = {}
        if ceiling > 0 and eligible:
            picked, spare = self._pick(eligible, first, start, spare, ceiling)
        verbatim, recent_tokens = self._extend_tail(first, start, spare, picked)
        verbatim.extend(tail)
        recent_tokens += tail_tokens
        first_verbatim = verbatim[0].seq if verbatim else self.next_seq
        quotes = [c for c in picked.values() if c.seq is None or c.seq < first_verbatim]
        free = limit - priming - system_tokens - summary_tokens - recent_tokens
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
        parts.extend(Part("verbatim", m.to_api(), m.tokens, m.seq) for m in verbatim)
        budget = Budget(
            system=system_tokens,
            summary=summary_tokens,
            recalled=recall_tokens,
            recent=recent_tokens,
            priming=priming,
            reply_reserve=self.reply_reserve,
            limit=limit,
        )
        in_verbatim = {m.seq for m in verbatim}
        offered = [c for c in candidates if c.seq is None or c.seq not in in_verbatim]
        return Context(
            parts=tuple(parts),
            budget=budget,
            trimmed=unfolded_count - len(verbatim),
            dropped_summary=self.summary is not None and summary_msg is None,
            dropped_recalled=len({c.seq if c.seq is not None else c.text for c in offered})
            - len(chosen),
            recalled=tuple(chosen),
        )

    def _pick(
        self,
        candidates: Sequence[Recalled],
        first: int,
        start: int,
        room: int,
        ceiling: int,
    ) -> tuple[dict[int | str, Recalled], int]:
        """The candidates worth their room, best first, keyed by seq (or text): each older
        unfolded message within reach of the recent ones scores its recency prior, a recalled
        candidate its evidence plus its prior. Stops at the first score under the threshold.
        Returns them and the room left.

        Messages picked for their prior alone keep room for the recent messages they join.
        """
        newest_seq = self.messages[-1].seq if self.messages else 0
        evidence: dict[int | str, Recalled] = {}
        for cand in candidates:
            key: int | str = cand.seq if cand.seq is not None else cand.text
            if key not in evidence or cand.score > evidence[key].score:
                evidence[key] = cand
        pool: list[tuple[float, int | str, int, bool]] = []  # (score, key, cost, is quote)
        near: dict[int, Message] = {}
        used = 0
        for i in range(start - 1, first - 1, -1):  # reach: as far back as the room allows
            msg = self.messages[i]
            used += msg.tokens
            if used > room:
                break
            near[msg.seq] = msg
        for seq, msg in near.items():
            hit = evidence.get(seq)
            score = self.prior(seq, newest_seq) + (hit.score if hit else 0.0)
            pool.append((score, seq, msg.tokens, False))
        for key, cand in evidence.items():
            if isinstance(key, int) and key in near:
                continue
            prior = self.prior(key, newest_seq) if isinstance(key, int) else 0.0
            cost = self._line_cost(cand.text)
            pool.append((cand.score + prior, key, cost, True))
        pool.sort(key=lambda item: (-item[0], -item[1] if isinstance(item[1], int) else 0))
        picked: dict[int | str, Recalled] = {}
        header = self.counter.message(memory_message(recall_block([])))
        quoted = 0  # tokens of the recalled block so far (its header comes with the first)
        for score, key, cost, is_quote in pool:
            if score < self.recall_threshold:
                break
            if is_quote and not quoted:
                cost += header
            if cost > room or (is_quote and quoted + cost > ceiling):
                continue
            room -= cost
            if is_quote:
                quoted += cost
            hit = evidence.get(key)
            if hit is not None:
                picked[key] = Recalled(hit.text, hit.seq, score, hit.bm25, hit.dense)
            else:  # kept for its prior: a marker with no text, sent only as a recent message
                picked[key] = Recalled(text="", seq=int(key), score=score)
        return picked, room

    def _extend_tail(
        self, first: int, start: int, spare: int, picked: dict[int | str, Recalled]
    ) -> tuple[list[Message], int]:
        """Older messages joining the recent ones: those picked (their room already kept),
        then any that fit the ``spare`` room left, walking back; whole exchanges only.

        Returns them (oldest first) and their tokens; ``picked`` keeps the quotes left over.
        """
        i = start
        while i > first:
            msg = self.messages[i - 1]
            if msg.seq in picked:
                i -= 1
                continue
            if msg.tokens > spare:
                break
            spare -= msg.tokens
            i -= 1
        while i < start and self.messages[i].role != "user":
            i += 1
        joined = self.messages[i:start]
        for msg in joined:
            picked.pop(msg.seq, None)
        for key in [k for k, c in picked.items() if not c.text]:
            del picked[key]
        return list(joined), sum(m.tokens for m in joined)

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
        messages: Sequence[Message], first: int, room: int, count: int | None = None
    ) -> tuple[list[Message], int, bool]:
        """The newest whole exchanges of ``messages[first:]`` that fit in ``room`` tokens
        (with ``count``: only as many as it takes to hold the newest ``count`` messages).

        Returns (messages, their tokens, ok). The kept part always starts at a user
        message. ``ok`` is False when the room is negative or the newest message is a
        user message that cannot be kept. Walks back from the newest message only as far
        as the room allows, so the cost does not grow with the history.
        """
        end = len(messages)
        start, used, suffix = end, 0, 0
        for i in range(end - 1, first - 1, -1):
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
        return (
            self.counter.message(self.system_message())
            + (self.counter.message(summary_msg) if summary_msg else 0)
            + self._unfolded_tokens()
            + self.counter.format.reply_priming
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
