"""The records a request is built from and made of: stored messages as memory holds them,
the summary, recalled candidates, the parts of a request, its token budget, the request
itself (``Context``) and a fold's plan. Pure data; :mod:`chatmem.memory` builds them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


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
    reply_to: int | None = None  # a reply: the seq of the user message it answers

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
    id: int | None = None  # the store's version id: what the next fold extends


@dataclass(frozen=True)
class Recalled:
    """An older message brought back for the current request, with why (its score)."""

    text: str
    seq: int | None = None
    score: float = 0.0  # relevance: the evidence from recall (plus the recency prior once sent)
    bm25: float | None = None  # the keyword search's score, when it found this message
    dense: float | None = None  # cosine similarity of the embeddings, when they found it
    beside: int | None = None  # recalled as the neighbour of this hit (its seq), not found itself


@dataclass(frozen=True)
class Part:
    """One message of a request, with what kind of memory it came from."""

    kind: str  # "system", "summary", "recalled", "pinned" or "verbatim"
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
    pinned: int = 0  # pinned messages (sent wherever they are; see Memory.pins)

    @property
    def total(self) -> int:
        """Prompt tokens of the request (framing and reply priming included)."""
        return self.system + self.summary + self.recalled + self.recent + self.pinned + self.priming

    @property
    def free(self) -> int:
        return max(0, self.limit - self.total)

    def as_dict(self) -> dict[str, int]:
        return {
            "system": self.system,
            "summary": self.summary,
            "recalled": self.recalled,
            "recent": self.recent,
            "pinned": self.pinned,
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
    dropped_pins: tuple[int, ...] = ()  # pinned seqs left out: the pins outgrew the budget

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
