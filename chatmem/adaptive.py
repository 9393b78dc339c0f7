"""The adaptive recall budget: which older messages and recalled quotes earn room in a request.

After the newest ``keep_recent`` messages, every older message within reach competes with
every recall candidate by one score: a recency prior (:func:`prior`) plus the candidate's
evidence from search (reciprocal ranks, ``chatmem.recall``). Those taken that sit next to
the recent messages are sent verbatim; the others become quotes in the recalled block, which
keeps under its ceiling. Pure, like ``chatmem.memory``, whose ``Memory.context`` calls it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Final

from chatmem.request import Message, Recalled

RECENCY_K: Final = 3
RECENCY_WEIGHT: Final = 0.1
"""The recency prior of a message ``age`` messages before the newest: weight / (K + age), on
the scale of recall's evidence (reciprocal ranks): the last few turns outrank the best search
hit, turns some 20 back rank with the 15th. Tuned on half of LoCoMo
(``python -m bench.bench_locomo --tune``) and a follow-up test (``test_recall_budget.py``)."""
RECALL_THRESHOLD: Final = 0.0  # the least score (prior plus evidence) worth a candidate's room

NEIGHBOUR_SHARE = 0.5
NEIGHBOUR_HITS = 40
"""A hit's neighbours (the message just before and just after it: the question a reply
answers, the reply to a question) join the candidates with ``NEIGHBOUR_SHARE`` of its
evidence, or their own if they are hits with more; only the best ``NEIGHBOUR_HITS`` hits
lend it, so the extra work stays bounded. Tuned on half of LoCoMo (``bench_locomo --tune``)."""

Key = int | str  # a candidate's seq, or its text when it has none
Picked = dict[Key, "Recalled | None"]  # None: kept for its prior alone (no quote to send)


def prior(seq: int, newest_seq: int, weight: float = RECENCY_WEIGHT, k: float = RECENCY_K) -> float:
    """The recency prior of message ``seq`` when ``newest_seq`` is the newest message."""
    return weight / (k + max(0, newest_seq - seq))


def pick(
    candidates: Sequence[Recalled],
    window: Sequence[Message],
    start: int,
    room: int,
    *,
    ceiling: int,
    header: int,
    line_cost: Callable[[str], int],
    score_prior: Callable[[int], float],
    threshold: float = RECALL_THRESHOLD,
) -> tuple[Picked, int]:
    """The candidates worth their room, best first, keyed by seq (or text).

    Each message of ``window[:start]`` within reach of the recent ones (walking back as far
    as ``room`` allows) scores its prior; a recalled candidate its evidence plus its prior.
    Stops at the first score under ``threshold``. A quote costs its line (``line_cost``) and,
    for the first, the block's ``header``; quotes together stay within ``ceiling``. Returns
    the picks (a candidate with its total score, or None for a message kept for its prior)
    and the room left. Messages picked for their prior alone keep room for the recent
    messages they join.
    """
    evidence: dict[Key, Recalled] = {}
    for cand in candidates:
        key: Key = cand.seq if cand.seq is not None else cand.text
        if key not in evidence or cand.score > evidence[key].score:
            evidence[key] = cand
    pool: list[tuple[float, Key, int, bool]] = []  # (score, key, cost, is quote)
    near: dict[int, Message] = {}
    used = 0
    for i in range(start - 1, -1, -1):
        msg = window[i]
        used += msg.tokens
        if used > room:
            break
        near[msg.seq] = msg
    for seq, msg in near.items():
        hit = evidence.get(seq)
        pool.append((score_prior(seq) + (hit.score if hit else 0.0), seq, msg.tokens, False))
    for key, cand in evidence.items():
        if isinstance(key, int) and key in near:
            continue
        base = score_prior(key) if isinstance(key, int) else 0.0
        pool.append((cand.score + base, key, line_cost(cand.text), True))
    pool.sort(key=lambda item: (-item[0], -item[1] if isinstance(item[1], int) else 0))
    picked: Picked = {}
    quoted = 0  # tokens of the recalled block so far (its header comes with the first)
    for score, key, cost, is_quote in pool:
        if score < threshold:
            break
        if is_quote and not quoted:
            cost += header
        if cost > room or (is_quote and quoted + cost > ceiling):
            continue
        room -= cost
        if is_quote:
            quoted += cost
        hit = evidence.get(key)
        picked[key] = dataclasses.replace(hit, score=score) if hit is not None else None
    return picked, room


def extend_tail(
    window: Sequence[Message], start: int, spare: int, picked: Picked
) -> tuple[list[Message], int]:
    """Older messages of ``window[:start]`` joining the recent ones: those picked (their room
    already kept), then any that fit the ``spare`` room left, walking back; whole exchanges.

    Returns them (oldest first) and their tokens; ``picked`` keeps only the quotes left over.
    """
    i = start
    while i > 0:
        msg = window[i - 1]
        if msg.seq in picked:
            i -= 1
            continue
        if msg.tokens > spare:
            break
        spare -= msg.tokens
        i -= 1
    while i < start and window[i].role != "user":
        i += 1
    joined = window[i:start]
    for msg in joined:
        picked.pop(msg.seq, None)
    for key in [k for k, c in picked.items() if c is None]:
        del picked[key]
    return list(joined), sum(m.tokens for m in joined)


def with_neighbours(
    hits: Sequence[Recalled],
    lines: Callable[[Sequence[int]], dict[int, str]],
    before_seq: int,
    share: float = NEIGHBOUR_SHARE,
    best: int = NEIGHBOUR_HITS,
) -> list[Recalled]:
    """``hits`` (best first) and their neighbours, each neighbour scored ``share`` of the
    best hit next to it (or its own score, if it is a better hit itself); ``lines`` gives
    the recall lines of seqs. Best first."""
    if share <= 0:
        return list(hits)
    by_seq = {h.seq: h for h in hits if h.seq is not None}
    lent: dict[int, float] = {}
    lender: dict[int, int] = {}  # the hit each neighbour's score came from
    for hit in hits[:best]:
        if hit.seq is None:
            continue
        for seq in (hit.seq - 1, hit.seq + 1):
            if 0 < seq < before_seq and share * hit.score > lent.get(seq, 0.0):
                lent[seq], lender[seq] = share * hit.score, hit.seq
    texts = lines([seq for seq in lent if seq not in by_seq])
    out = [
        dataclasses.replace(h, score=lent[h.seq]) if lent.get(h.seq, 0.0) > h.score else h
        for h in hits
    ]
    out += [
        Recalled(texts[seq], seq, score, beside=lender[seq])
        for seq, score in lent.items()
        if seq in texts
    ]
    out.sort(key=lambda r: -r.score)
    return out
