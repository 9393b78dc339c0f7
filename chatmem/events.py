"""Events: what happened to a conversation's memory, in one shape everywhere.

A session records an :class:`Event` for every fold, failed fold, trim, recall, shrunk
request, error and correction by a person. The same object is kept in memory
(``ChatMemory.events()``), written to the store's ``events`` table, exported, and drawn by
the inspector: no second shape.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class EventKind(StrEnum):
    """Every kind of event chatmem records."""

    FOLD = "fold"  # older messages folded into a new summary version
    FOLD_FAILED = "fold_failed"  # a fold failed; the summary stays as it was
    TRIM = "trim"  # older messages left out of one request to fit the budget
    RECALL = "recall"  # older messages recalled into one request
    CONTEXT_SHRUNK = "context_shrunk"  # the server counted more; the request was rebuilt smaller
    TOO_LONG = "too_long"  # a message too large for the budget was refused before any call
    ERROR = "error"  # a model call failed; the user's message is kept
    STOPPED = "stopped"  # the reply was abandoned before it finished; what arrived is kept
    RECALL_FALLBACK = "recall_fallback"  # embedding a query failed; BM25 alone for this turn
    EMBEDDINGS_OFF = "embeddings_off"  # embeddings cannot work with these settings; BM25 only
    RECALL_UNAVAILABLE = "recall_unavailable"  # the store's search index is damaged; no recall
    SUMMARY_EDITED = "summary_edited"  # a person wrote a new summary version
    SUMMARY_RESTORED = "summary_restored"  # a person restored an earlier summary version
    PIN = "pin"  # a person pinned a message (always sent) or unpinned it
    EXCLUDE = "exclude"  # a person left a message out of requests and folds, or took it back


def event_kind(raw: str) -> EventKind | str:
    """``raw`` as an :class:`EventKind`; a kind this version does not know stays a string
    (an older or newer file may carry one)."""
    try:
        return EventKind(raw)
    except ValueError:
        return raw


@dataclass(frozen=True)
class Event:
    """One thing that happened: ``kind``, a sentence for people, when, and its figures.

    ``id`` is the store's row id once stored (None for a session without a store).
    """

    kind: EventKind | str
    message: str
    at: float = field(default_factory=time.time)
    data: dict[str, Any] = field(default_factory=dict)
    id: int | None = None

    def payload(self) -> dict[str, Any]:
        """What the store keeps in its ``data`` column: the message and the figures."""
        return {"message": self.message, **self.data}

    @classmethod
    def from_payload(
        cls, kind: str, payload: dict[str, Any], at: float, id: int | None = None
    ) -> Event:
        """The event a stored row describes (the inverse of :meth:`payload`)."""
        data = dict(payload)
        message = data.pop("message", "")
        return cls(event_kind(kind), str(message), at=at, data=data, id=id)
