"""A session's writes to the store, for one conversation, as real methods.

``ChatMemory`` never names a store method in a string: it calls a :class:`Journal`. With no
store (a library user who keeps nothing), the journal records nothing and every method
returns None, so the session has one code path either way.

The journal is the only writer of a session's texts, so it is where credentials are kept out
of the store (and so out of every export): every text it writes passes through
:func:`chatmem.redact.redact` with the session's secrets (and every registered one).
Conversation text (messages, summaries, titles) loses only the known secrets long enough to
be credentials rather than words (:data:`~chatmem.redact.CONTENT_SECRET_MIN`); chatmem's own
texts (events, the settings record) lose every known secret and any ``user:password@``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from chatmem.errors import StoreError
from chatmem.events import Event
from chatmem.redact import CONTENT_SECRET_MIN, redact, redact_data, register
from chatmem.store.history import UNCHECKED

if TYPE_CHECKING:
    from chatmem.store import (
        LoadedConversation,
        Store,
        StoredMark,
        StoredMessage,
        StoredSummary,
    )

log = logging.getLogger(__name__)


class Journal:
    """Writes one conversation to ``store``; the conversation may be created later
    (:meth:`create`), when there is first something to keep."""

    def __init__(
        self,
        store: Store | None,
        conversation_id: str | None = None,
        secrets: tuple[str, ...] = (),
    ) -> None:
        self.store = store
        self.conversation_id = conversation_id
        self.secrets = secrets  # credentials that must never be written (see chatmem.redact)
        register(*secrets)  # ...nor logged

    def _text(self, text: str) -> str:
        """Conversation text, scrubbed of known secrets (its URLs kept as written)."""
        return redact(text, *self.secrets, urls=False, shortest=CONTENT_SECRET_MIN)

    def _data(self, value: Any) -> Any:
        """chatmem's own text or JSON-like data, scrubbed (URL user info dropped too)."""
        return redact_data(value, *self.secrets)

    @property
    def active(self) -> bool:
        """True when writes go somewhere: a store and a conversation in it."""
        return self.store is not None and self.conversation_id is not None

    def create(self, settings: dict[str, Any], owner: str | None) -> str | None:
        """Create the conversation (once); returns its id, or None without a store."""
        if self.store is not None and self.conversation_id is None:
            self.conversation_id = self.store.create_conversation(
                settings=self._data(settings), owner=owner
            ).id
        return self.conversation_id

    def load(self) -> LoadedConversation | None:
        if self.store is None or self.conversation_id is None:
            return None
        return self.store.load(self.conversation_id)

    def append(
        self,
        role: str,
        content: str,
        *,
        tokens: int | None = None,
        status: str = "ok",
        usage: dict[str, Any] | None = None,
        reply_to: int | None = None,
    ) -> StoredMessage | None:
        if self.store is None or self.conversation_id is None:
            return None
        return self.store.append_message(
            self.conversation_id,
            role,  # type: ignore[arg-type]
            self._text(content),
            tokens=tokens,
            status=status,  # type: ignore[arg-type]
            usage=usage,
            reply_to=reply_to,
        )

    def rename(self, title: str) -> None:
        if self.store is not None and self.conversation_id is not None:
            self.store.rename_conversation(self.conversation_id, self._text(title))

    def save_settings(self, settings: dict[str, Any]) -> None:
        if self.store is not None and self.conversation_id is not None:
            self.store.update_settings(self.conversation_id, self._data(settings))

    def add_summary(
        self,
        text: str,
        tokens: int,
        covers_seq: int,
        *,
        model: str | None,
        usage: dict[str, Any] | None,
        extends: Any = UNCHECKED,
        input_seqs: Iterable[int] | None = None,
        edited_by: str | None = None,
        restored_from: int | None = None,
    ) -> StoredSummary | None:
        """Store a summary version; with ``extends`` (the version it was built on, None for
        the first) by compare-and-set: ``SummaryConflict`` if a newer version landed.
        ``input_seqs``: the messages it read; ``edited_by``, ``restored_from``: a person's
        correction."""
        if self.store is None or self.conversation_id is None:
            return None
        return self.store.add_summary(
            self.conversation_id,
            self._text(text),
            tokens,
            covers_seq,
            model=self._data(model),
            usage=usage,
            extends=extends,
            input_seqs=input_seqs,
            edited_by=edited_by,
            restored_from=restored_from,
        )

    def mark(self, seq: int, kind: str, value: bool) -> StoredMark | None:
        """Store a pin or exclusion of message ``seq`` (or its undoing)."""
        if self.store is None or self.conversation_id is None:
            return None
        return self.store.mark_message(self.conversation_id, seq, kind, value)

    def add_event(self, event: Event) -> Event:
        """The event, scrubbed, as stored (with its row id), or as it would be stored when
        there is no store (what the session keeps and shows is never the raw text). An event
        the store cannot take (the database is down) is still returned, to be shown, and
        logged: recording what went wrong must not fail in turn."""
        event = replace(event, message=self._data(event.message), data=self._data(event.data))
        if self.store is None or self.conversation_id is None:
            return event
        try:
            return self.store.add_event(self.conversation_id, event)
        except StoreError as exc:
            log.warning("could not store the %s event: %s", event.kind, exc)
            return event
