"""A session's writes to the store, for one conversation, as real methods.

``ChatMemory`` never names a store method in a string: it calls a :class:`Journal`. With no
store (a library user who keeps nothing), the journal records nothing and every method
returns None, so the session has one code path either way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from chatmem.events import Event

if TYPE_CHECKING:
    from chatmem.store import LoadedConversation, Store, StoredMessage, StoredSummary


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

    @property
    def active(self) -> bool:
        """True when writes go somewhere: a store and a conversation in it."""
        return self.store is not None and self.conversation_id is not None

    def create(self, settings: dict[str, Any], owner: str | None) -> str | None:
        """Create the conversation (once); returns its id, or None without a store."""
        if self.store is not None and self.conversation_id is None:
            self.conversation_id = self.store.create_conversation(settings=settings, owner=owner).id
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
    ) -> StoredMessage | None:
        if self.store is None or self.conversation_id is None:
            return None
        return self.store.append_message(
            self.conversation_id,
            role,  # type: ignore[arg-type]
            content,
            tokens=tokens,
            status=status,  # type: ignore[arg-type]
            usage=usage,
        )

    def rename(self, title: str) -> None:
        if self.store is not None and self.conversation_id is not None:
            self.store.rename_conversation(self.conversation_id, title)

    def save_settings(self, settings: dict[str, Any]) -> None:
        if self.store is not None and self.conversation_id is not None:
            self.store.update_settings(self.conversation_id, settings)

    def add_summary(
        self,
        text: str,
        tokens: int,
        covers_seq: int,
        *,
        model: str | None,
        usage: dict[str, Any] | None,
    ) -> StoredSummary | None:
        if self.store is None or self.conversation_id is None:
            return None
        return self.store.add_summary(
            self.conversation_id, text, tokens, covers_seq, model=model, usage=usage
        )

    def add_event(self, event: Event) -> Event:
        """The event as stored (with its row id), or as given without a store."""
        if self.store is None or self.conversation_id is None:
            return event
        return self.store.add_event(self.conversation_id, event)
