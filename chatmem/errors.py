"""Every error chatmem raises, under one root: :class:`ChatmemError`.

``except ChatmemError`` catches anything chatmem itself raises. Two errors keep ``ValueError``
as a second base because callers of the seed API catch them that way: a bad setting
(:class:`SettingsError`) and a message too large for the budget (:class:`ContextOverflow`).
Code that handles both must catch them by name, never as ``ValueError``.

This module imports nothing from chatmem, so every layer can use it.
"""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass


class ChatmemError(Exception):
    """The root of every error chatmem raises."""


class SettingsError(ChatmemError, ValueError):
    """A setting has a value chatmem cannot use; the message says which and why."""


class ContextOverflow(ChatmemError, ValueError):
    """A message cannot fit in the budget even on its own."""

    def __init__(self, needed: int, limit: int, what: str = "This message") -> None:
        self.needed = needed
        self.limit = limit
        super().__init__(
            f"{what} needs {needed:,} tokens with the system prompt, but the budget "
            f"(max_tokens) is {limit:,}. Shorten it or raise max_tokens."
        )


class TokenizerUnavailable(ChatmemError):
    """The BPE data for an encoding could not be found offline."""


@dataclass(eq=False)
class ModelError(ChatmemError):
    """A model call failed. ``user_message`` is one plain sentence for people.

    ``kind`` names the failure (``rate_limit``, ``server``, ``timeout``, ``connection``,
    ``auth``, ``model_not_found``, ``context_length``, ``cut_off``, ``bad_request``,
    ``local_model``); ``partial`` is the text that arrived before a stream broke. For a
    context-length error, ``limit``, ``requested`` and ``prompt_tokens`` are what the server
    said: its window, the tokens asked for in all, and the prompt part by its count.
    """

    user_message: str
    _: KW_ONLY
    kind: str
    retryable: bool = True
    retry_after: float | None = None
    limit: int | None = None
    requested: int | None = None
    prompt_tokens: int | None = None
    partial: str = ""

    def __post_init__(self) -> None:
        self.user_message = self.user_message[:1].upper() + self.user_message[1:]
        super().__init__(self.user_message)

    @property
    def overflow(self) -> int | None:
        """For a context-length error: how many tokens too many the server counted."""
        counted = self.prompt_tokens if self.prompt_tokens is not None else self.requested
        if self.limit is None or counted is None:
            return None
        return counted - self.limit


class SummaryError(ChatmemError):
    """A summary call failed or returned nothing usable; the old summary stays."""


class EmbeddingError(ChatmemError):
    """An embeddings call failed. ``retryable`` says whether a later call may succeed.

    ``kind``: timeout, connection, rate_limit, server (worth retrying later); auth,
    model_not_found (embeddings cannot work with these settings); bad_request, bad_response
    (these inputs cannot be embedded).
    """

    def __init__(self, message: str, *, kind: str, retryable: bool) -> None:
        super().__init__(message)
        self.kind = kind
        self.retryable = retryable


class StoreError(ChatmemError):
    """Any failure of the store: bad URL, unreachable database, bad argument, lost race..."""


class NotFoundError(StoreError, LookupError):
    """The conversation (or message) asked for does not exist."""


class ImportValidationError(StoreError):
    """An import file was rejected; nothing was written.

    ``where`` locates the problem (``"messages[3].role"``; empty for the file as a whole) and
    ``problem`` says what is wrong; ``str(error)`` is ``"where: problem"``.
    """

    def __init__(self, where: str, problem: str) -> None:
        self.where = where
        self.problem = problem
        super().__init__(f"{where}: {problem}" if where else problem)


class SearchIndexError(StoreError):
    """The full-text index of message content cannot be read or written: damaged, or missing.

    The messages themselves are intact; ``Store.rebuild_search_index`` (``python -m chatmem
    --reindex``) builds the index again from them.
    """

    def __init__(
        self,
        message: str = (
            "The full-text search index of the saved messages is damaged or missing (the "
            "messages themselves are intact); run `python -m chatmem --reindex` to rebuild it."
        ),
    ) -> None:
        super().__init__(message)


class LocationError(StoreError):
    """The SQLite database cannot be created or written where the URL points (read-only
    folder or file, part of the path a file). One sentence, without the path."""


class ConversationUnavailable(ChatmemError, LookupError):
    """The conversation asked for does not exist, or belongs to someone else."""


class SummaryConflict(StoreError):
    """A summary version was folded on top of one that is no longer the newest: another
    session's fold landed first. ``newest_id`` is the version to build on instead."""

    def __init__(self, newest_id: int | None, extends_id: int | None) -> None:
        self.newest_id = newest_id
        self.extends_id = extends_id
        super().__init__(
            f"the summary extends version {extends_id}, but version {newest_id} is newer"
        )


class CorrectionRefused(ChatmemError):
    """A person's correction of the memory was refused (a summary over its cap, a pin that
    would not fit, a summary changed meanwhile); nothing was changed and the message says
    why. The text the person wrote is theirs to keep: the caller leaves it in the editor."""
