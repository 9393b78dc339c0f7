"""What recall brought back, turn by turn, for the gauge and the inspector (no Streamlit).

Recall runs when a message is sent: the older messages most relevant to it (BM25, plus
embeddings when configured) get a share of the budget. The latest request's recalled
snippets are in ``bot.last_context.recalled``; earlier turns are the ``recall`` events, which
name the messages (seqs) and their scores, and are kept in the store with the conversation.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from chatmem.events import Event, EventKind
from chatmem.memory import Context
from chatmem.text import query_terms, snippet

MAX_TURNS = 20  # recall turns the inspector lists, newest first


@dataclass(frozen=True)
class RecallHit:
    seq: int | None
    score: float
    snippet: str
    matched: tuple[str, ...] = ()  # the query words found in it: why it was recalled
    bm25: float | None = None  # the keyword search's score (None: keywords did not find it)
    dense: float | None = None  # cosine similarity of the embeddings (None: not found so)
    beside: int | None = None  # recalled as the neighbour of this hit (seq), not found itself

    @property
    def found_by(self) -> str:
        """How recall found it, in words: which searches, or the hit it sits next to."""
        searches = [name for name, v in (("keywords", self.bm25), ("meaning", self.dense)) if v]
        if searches:
            return " + ".join(searches)
        return f"next to #{self.beside}" if self.beside is not None else "—"


@dataclass(frozen=True)
class RecallTurn:
    """One request's recall: for which message, when, and what came back."""

    for_seq: int | None
    for_text: str | None
    at: float | None
    hits: tuple[RecallHit, ...] = field(default=())
    note: str = ""


def matched_terms(query: str | None, text: str) -> tuple[str, ...]:
    """The content words of ``query`` that occur in ``text`` (whole words, any case, a plural
    matching its singular)."""
    if not query:
        return ()
    words = {_plain(w) for w in re.findall(r"\w+", text.lower())}
    return tuple(t for t in query_terms(query) if _plain(t) in words)


def _plain(word: str) -> str:
    return word[:-1] if len(word) > 3 and word.endswith("s") else word


class MessageLookup:
    """Message texts by seq, cached: ``fetch`` is ``ChatMemory.message_at``."""

    def __init__(
        self,
        fetch: Callable[[int], tuple[str, str] | None],
        cache: dict[int, tuple[str, str]] | None = None,
    ) -> None:
        self._fetch = fetch
        self._cache = cache if cache is not None else {}

    def get(self, seq: int | None) -> tuple[str, str] | None:
        """(speaker, text) of the message ``seq``, or None if unknown."""
        if seq is None:
            return None
        if seq in self._cache:
            return self._cache[seq]
        found = self._fetch(seq)
        if found is not None:
            self._cache[seq] = found
        return found


def _numbers(values: object, count: int) -> list[float | None]:
    """A stored list of optional scores, ``count`` long (None where missing or not a number)."""
    items = values if isinstance(values, list) else []
    out = [float(v) if isinstance(v, int | float) else None for v in items[:count]]
    return out + [None] * (count - len(out))


def recall_turns(
    events: Sequence[Event],
    lookup: MessageLookup,
    last: Context | None,
    limit: int = MAX_TURNS,
) -> list[RecallTurn]:
    """Recall turns, newest first, from the conversation's ``recall`` events.

    The newest turn uses the snippets exactly as sent (``last.recalled``) when they belong
    to it; older turns rebuild each snippet from the message it names.
    """
    recalls = [e for e in events if e.kind == EventKind.RECALL][-limit:]
    turns: list[RecallTurn] = []
    sent = {r.seq: r for r in last.recalled} if last is not None else {}
    for index, event in enumerate(reversed(recalls)):
        data = event.data
        seqs = [s for s in data.get("seqs") or [] if isinstance(s, int)]
        scores = [float(s) for s in data.get("scores") or [] if isinstance(s, int | float)]
        bm25 = _numbers(data.get("bm25"), len(seqs))
        dense = _numbers(data.get("dense"), len(seqs))
        beside = [
            int(v) if v is not None else None for v in _numbers(data.get("beside"), len(seqs))
        ]
        for_seq = data.get("for_seq") if isinstance(data.get("for_seq"), int) else None
        asked = lookup.get(for_seq)
        query = asked[1] if asked else None
        exact = index == 0 and bool(sent) and set(seqs) == set(sent)
        hits = []
        for i, seq in enumerate(seqs):
            score = scores[i] if i < len(scores) else 0.0
            if exact:
                text = sent[seq].text
            else:
                found = lookup.get(seq)
                text = snippet(*found) if found else "(message not found)"
            matched = matched_terms(query, text)
            hits.append(RecallHit(seq, score, text, matched, bm25[i], dense[i], beside[i]))
        hits.sort(key=lambda h: -h.score)
        turns.append(
            RecallTurn(
                for_seq=for_seq,
                for_text=query,
                at=event.at,
                hits=tuple(hits),
                note=event.message,
            )
        )
    return turns
