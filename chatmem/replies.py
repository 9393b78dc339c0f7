"""What a chat model returns: a streamed reply and the token usage it reports. Shared by the
server clients (:mod:`chatmem.models`) and the in-process model (:mod:`chatmem.local`)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class Usage:
    """Token usage as the server reported it."""

    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    source: str = "server"  # "server": as the server reported it; "tokenizer": counted after

    def as_dict(self) -> dict[str, int | None]:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens}


class ReplyStream:
    """A streaming reply: iterate for text chunks; ``text`` and ``usage`` fill in as it goes."""

    def __init__(self, events: Iterator[str | Usage]) -> None:
        self._events = events
        self._parts: list[str] = []
        self.usage: Usage | None = None

    def __iter__(self) -> Iterator[str]:
        for event in self._events:
            if isinstance(event, Usage):
                self.usage = event
            elif event:
                self._parts.append(event)
                yield event

    @property
    def text(self) -> str:
        return "".join(self._parts)

    def read(self) -> str:
        """Consume the whole stream and return the text."""
        for _ in self:
            pass
        return self.text
