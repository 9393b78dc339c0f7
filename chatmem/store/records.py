"""What the store hands out (frozen records) and how values are checked on the way in.

Row -> record converters, the field validators every write path shares (append, update,
import), the secret filter for settings, and the time and JSON helpers.

Timestamps are stored as ISO 8601 text in UTC with microseconds
(``2024-05-01T12:00:00.000000+00:00``): fixed width, so text order is time order, and identical
on both backends. JSON columns are stored as text.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

from chatmem.errors import StoreError
from chatmem.events import Event

log = logging.getLogger("chatmem.store")

ROLES: Final = ("system", "user", "assistant", "tool")
STATUSES: Final = ("ok", "failed", "incomplete")
Role = Literal["system", "user", "assistant", "tool"]
Status = Literal["ok", "failed", "incomplete"]

MAX_CONTENT_CHARS: Final = 1_000_000
"""Longest message (and summary) text accepted, by ``append_message`` and by imports alike."""
MAX_TITLE_CHARS: Final = 1_000
MAX_NAME_CHARS: Final = 256
MAX_KIND_CHARS: Final = 100
MAX_INT: Final = 2**31 - 1  # seq and token columns are 32-bit INTEGER on PostgreSQL

TOKEN_COUNT_SETTINGS: Final = frozenset({"max_tokens", "summary_max_tokens"})
"""Setting names that contain "token" but are token counts, so they are kept."""
_SECRET_MARKERS: Final = ("key", "secret", "password", "passwd", "token", "credential")


# --------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConversationInfo:
    id: str
    title: str
    created_at: datetime
    updated_at: datetime
    settings: dict[str, Any]
    owner: str | None


@dataclass(frozen=True, slots=True)
class ConversationRow:
    """What every row that belongs to a conversation has (see ``schema._conversation_rows``):
    its serial ``id``, its conversation and when it was written. Built from rows by name."""

    id: int
    conversation_id: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class StoredMessage(ConversationRow):
    """A message; ``seq`` numbers it within its conversation (1, 2, 3...)."""

    seq: int
    role: str
    content: str
    name: str | None
    tokens: int | None
    status: str
    usage: dict[str, Any] | None
    reply_to: int | None = None  # a reply: the seq of the user message it answers


@dataclass(frozen=True, slots=True)
class StoredSummary(ConversationRow):
    """A summary version: it folds every message up to and including ``covers_seq``."""

    text: str
    tokens: int
    covers_seq: int
    model: str | None
    usage: dict[str, Any] | None
    extends_id: int | None = None  # the version this one was folded on top of
    input_runs: tuple[tuple[int, int], ...] | None = None  # seqs read, as (first, last) runs
    edited_by: str | None = None  # "person": a person wrote this version (None: a fold)
    restored_from: int | None = None  # the number of the earlier version it copies

    @property
    def input_seqs(self) -> frozenset[int] | None:
        """The seqs of the messages this version's fold read (None: not recorded)."""
        if self.input_runs is None:
            return None
        return frozenset(seq for first, last in self.input_runs for seq in range(first, last + 1))


@dataclass(frozen=True, slots=True)
class StoredMark(ConversationRow):
    """A person pinned (``kind`` "pin") or excluded ("exclude") message ``seq`` (``value``
    True), or undid it (False). The newest mark per (seq, kind) is in force."""

    seq: int
    kind: str
    value: bool


@dataclass(frozen=True, slots=True)
class Changes:
    """What others wrote to a conversation since a session last looked (``Store.changes``):
    the messages after ``after_seq``, oldest first, and the newest summary version if it is
    newer than the one the session knows. ``more`` is True when ``limit`` cut the messages.
    ``marks``: the pins and exclusions made after the mark id the session knows, oldest first."""

    messages: tuple[StoredMessage, ...]
    summary: StoredSummary | None
    more: bool = False
    marks: tuple[StoredMark, ...] = ()


@dataclass(frozen=True, slots=True)
class SearchHit:
    """One message found by ``Store.search_messages``; higher ``score`` = more relevant."""

    seq: int
    role: str
    name: str | None
    content: str
    score: float


@dataclass(frozen=True, slots=True)
class IndexRebuild:
    """What ``Store.rebuild_search_index`` did: the messages indexed again, in how many
    conversations."""

    conversations: int
    messages: int


@dataclass(frozen=True, slots=True)
class LoadedConversation:
    """What a session needs to resume, read without touching the folded history.

    ``messages`` are the messages not yet folded into ``summary`` (seq > ``summary.covers_seq``;
    all of them when there is no summary). ``earlier`` holds up to ``keep_tail`` messages just
    before that point, for display only: they are already inside the summary.
    """

    info: ConversationInfo
    summary: StoredSummary | None
    messages: tuple[StoredMessage, ...]
    earlier: tuple[StoredMessage, ...] = ()

    @property
    def display_messages(self) -> tuple[StoredMessage, ...]:
        """``earlier`` followed by ``messages``: what a transcript view shows."""
        return self.earlier + self.messages


# --------------------------------------------------------------------------------------------
# Time and JSON
# --------------------------------------------------------------------------------------------


def now() -> str:
    return format_time(datetime.now(UTC))


def format_time(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text)


def dumps(value: Any) -> str:
    # ensure_ascii keeps the text plain ASCII, so no value can upset a database encoding.
    return json.dumps(value, separators=(",", ":"), allow_nan=False, sort_keys=False)


def loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def dumps_or_none(value: Any) -> str | None:
    """A ``usage`` column: JSON text, or NULL for None."""
    return None if value is None else dumps(value)


# --------------------------------------------------------------------------------------------
# Row conversion
# --------------------------------------------------------------------------------------------


class Values:
    """A dict seen as a row (attributes and ``_mapping``), so freshly written rows convert
    like fetched ones."""

    def __init__(self, **values: Any) -> None:
        self.__dict__.update(values)
        self._mapping = values


# A record's fields are named as its table's columns; only JSON and time columns convert.


def conversation_record(row: Any) -> ConversationInfo:
    return ConversationInfo(
        **{
            **row._mapping,
            "settings": loads(row.settings) or {},
            "created_at": parse_time(row.created_at),
            "updated_at": parse_time(row.updated_at),
        }
    )


def message_record(row: Any) -> StoredMessage:
    return StoredMessage(**_with_usage(row))


def seq_runs(seqs: Iterable[int]) -> list[list[int]]:
    """Seqs as sorted ``[first, last]`` runs of consecutive numbers (compact JSON)."""
    runs: list[list[int]] = []
    for seq in sorted(set(seqs)):
        if runs and runs[-1][1] == seq - 1:
            runs[-1][1] = seq
        else:
            runs.append([seq, seq])
    return runs


def _runs(text: str | None) -> tuple[tuple[int, int], ...] | None:
    value = loads(text)
    return None if value is None else tuple((int(a), int(b)) for a, b in value)


def summary_record(row: Any) -> StoredSummary:
    values = _with_usage(row)
    values["input_runs"] = _runs(values.pop("input_seqs", None))
    return StoredSummary(**values)


def mark_record(row: Any) -> StoredMark:
    values = {**row._mapping, "created_at": parse_time(row.created_at)}
    return StoredMark(**values | {"value": bool(values["value"])})


def marks_in_force(marks: Iterable[StoredMark]) -> dict[str, set[int]]:
    """The seqs pinned and excluded after ``marks`` (oldest first): {"pin": ..., "exclude": ...}."""
    state: dict[str, set[int]] = {"pin": set(), "exclude": set()}
    for mark in marks:
        (state[mark.kind].add if mark.value else state[mark.kind].discard)(mark.seq)
    return state


def _with_usage(row: Any) -> dict[str, Any]:
    return {**row._mapping, "usage": loads(row.usage), "created_at": parse_time(row.created_at)}


def event_record(row: Any) -> Event:
    """An ``events`` row as an :class:`Event` (its ``data`` column is ``Event.payload()``)."""
    return Event.from_payload(
        row.kind, loads(row.data) or {}, at=parse_time(row.created_at).timestamp(), id=row.id
    )


# --------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------


def _is_secret_name(name: str) -> bool:
    lowered = name.lower()
    if lowered in TOKEN_COUNT_SETTINGS:
        return False
    return any(marker in lowered for marker in _SECRET_MARKERS)


def clean_settings(settings: Mapping[str, Any] | None) -> dict[str, Any]:
    """A copy of ``settings`` without anything that could be a secret.

    Drops, at any depth (nested dicts and lists too), every key whose name contains "key",
    "secret", "password", "passwd", "token" or "credential", case-insensitively, except the
    token counts in ``TOKEN_COUNT_SETTINGS`` (``max_tokens``, ``summary_max_tokens``).
    Dropped names are logged, never their values.
    """
    if settings is None:
        return {}
    if not isinstance(settings, Mapping):
        raise StoreError(f"settings: expected a dict, got {type(settings).__name__}")

    def clean(value: Any, where: str) -> Any:
        if isinstance(value, Mapping):
            out: dict[str, Any] = {}
            for key, item in value.items():
                name = str(key)
                path = f"{where}.{name}" if where else name
                if _is_secret_name(name):
                    log.warning("settings: dropped %r: secrets are never stored", path)
                    continue
                out[name] = clean(item, path)
            return out
        if isinstance(value, list | tuple):
            return [clean(item, f"{where}[{i}]") for i, item in enumerate(value)]
        return value

    return clean(settings, "")


def settings_json(settings: dict[str, Any]) -> str:
    try:
        return dumps(settings)
    except (TypeError, ValueError, RecursionError) as exc:
        raise StoreError(f"settings: not representable as JSON ({exc})") from None


# --------------------------------------------------------------------------------------------
# Field checks: a ``*_problem`` function says why a value can't be stored (None if it can);
# ``check`` turns a problem into a StoreError naming the field.
# --------------------------------------------------------------------------------------------


def text_problem(value: object, *, max_chars: int) -> str | None:
    """Why ``value`` can't be stored as text on both backends, or None if it can."""
    if not isinstance(value, str):
        return f"expected a string, got {type_name(value)}"
    if len(value) > max_chars:
        return f"too long ({len(value):,} characters; the limit is {max_chars:,})"
    if "\x00" in value:
        return "contains a NUL character (PostgreSQL cannot store it)"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid Unicode (it contains a lone surrogate)"
    return None


def count_problem(value: object, *, minimum: int = 0) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return f"expected an integer, got {type_name(value)}"
    if not minimum <= value <= MAX_INT:
        return f"{value} is out of range ({minimum}..{MAX_INT})"
    return None


def json_object_problem(value: object) -> str | None:
    """Why ``value`` is not a JSON-serialisable dict, or None."""
    if not isinstance(value, dict):
        return f"expected an object, got {type_name(value)}"
    try:
        dumps(value)
    except (TypeError, ValueError, RecursionError) as exc:
        return f"not representable as JSON ({exc})"
    return None


def role_problem(role: object) -> str | None:
    if role not in ROLES:
        return f"unknown role {short(role)} (expected {_or_list(ROLES)})"
    return None


def status_problem(status: object) -> str | None:
    if status not in STATUSES:
        return f"unknown status {short(status)} (expected {_or_list(STATUSES)})"
    return None


def type_name(value: object) -> str:
    names = {
        type(None): "null",
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "an object",
    }
    return names.get(type(value), type(value).__name__)


def short(value: object, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _or_list(items: Iterable[str]) -> str:
    items = list(items)
    return ", ".join(items[:-1]) + " or " + items[-1]


def check(problem: str | None, field: str) -> None:
    if problem is not None:
        raise StoreError(f"{field}: {problem}")


def check_seq(seq: object, *, minimum: int = 1) -> int:
    check(count_problem(seq, minimum=minimum), "seq")
    assert isinstance(seq, int)
    return seq


def check_limit(value: object, field: str) -> int:
    """``value`` if it is a non-negative integer (``limit``, ``keep_tail``), else StoreError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise StoreError(f"{field}: expected a non-negative integer, got {short(value)}")
    return value


def check_before_seq(before_seq: object) -> int | None:
    """A ``before_seq`` argument: None, or an integer (None when above every possible seq)."""
    if before_seq is None:
        return None
    if isinstance(before_seq, bool) or not isinstance(before_seq, int):
        raise StoreError(f"before_seq: expected an integer, got {short(before_seq)}")
    return None if before_seq > MAX_INT else before_seq  # and beyond a 32-bit parameter


def clean_title(title: object) -> str:
    check(text_problem(title, max_chars=MAX_TITLE_CHARS), "title")
    assert isinstance(title, str)
    return title.strip() or "New chat"


def message_values(
    role: object,
    content: object,
    *,
    tokens: object = None,
    name: object = None,
    status: object = "ok",
    usage: object = None,
    reply_to: object = None,
) -> dict[str, Any]:
    """The checked column values of a new message (the arguments of ``append_message``)."""
    check(role_problem(role), "role")
    check(text_problem(content, max_chars=MAX_CONTENT_CHARS), "content")
    if tokens is not None:
        check(count_problem(tokens), "tokens")
    if name is not None:
        check(text_problem(name, max_chars=MAX_NAME_CHARS), "name")
    check(status_problem(status), "status")
    if usage is not None:
        check(json_object_problem(usage), "usage")
    values: dict[str, Any] = {}
    if reply_to is not None:  # only then named: a database before migration 6 lacks the column
        check(count_problem(reply_to, minimum=1), "reply_to")
        values["reply_to"] = reply_to
    return values | {
        "role": role,
        "content": content,
        "name": name,
        "tokens": tokens,
        "status": status,
        "usage": dumps_or_none(usage),
    }
