"""Checking an import file: parsed strictly, validated field by field, nothing written.

Two ways in:

* a parsed document (a dict, as ``export_json`` returns): :func:`validate_import`;
* the file itself (bytes, str, or a binary file object such as Streamlit's ``UploadedFile``):
  :func:`import_source`, then :func:`check_import` and :func:`import_rows`. The file is read
  as a stream (ijson): one entry at a time is held, and the first limit crossed (file size,
  entries, nesting; values in one entry as each list or object closes) stops the reading
  there, so a file far over the limits is refused where it crosses one, in memory that does
  not grow with the file.

Either way the first problem raises ``ImportValidationError`` naming where it is
(``messages[3].role: unknown role 'wizard' ...``). :func:`check_import` checks all of the file
before anything is written, keeping what the checks need (the conversation's fields, the
message seqs) and the checked rows while they are small (32 MB); :func:`import_rows` hands the
rows to the writing transaction, reading the file a second time if they were not kept.
Problems are reported in file order (an export's order: format, version, conversation,
messages, summaries, events).

Strict JSON as the standard library's ``json`` reads it: no NaN or Infinity, no duplicate keys
in an object, UTF-8 (a leading byte order mark is allowed), one value. ijson's C backend gets
two things wrong, so the bytes are checked before it sees them and such a file is read with
ijson's pure-Python backend instead, as the standard library would: a lone surrogate escape
(``"\\ud800"``, which it reads as ``?``; the field holding it is refused as before), and an
integer of more digits than Python converts (which can crash it).
"""

from __future__ import annotations

import base64
import json
import math
import sys
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from chatmem.errors import ImportValidationError
from chatmem.store.records import (
    MAX_CONTENT_CHARS,
    MAX_INT,
    MAX_KIND_CHARS,
    MAX_NAME_CHARS,
    MAX_TITLE_CHARS,
    ROLES,
    STATUSES,
    clean_settings,
    count_problem,
    format_time,
    json_object_problem,
    role_problem,
    short,
    status_problem,
    text_problem,
    type_name,
)

EXPORT_FORMAT: Final = "chatmem.conversation"
EXPORT_VERSION: Final = 1

MAX_IMPORT_MESSAGES: Final = 250_000
MAX_IMPORT_SUMMARIES: Final = 10_000
MAX_IMPORT_EVENTS: Final = 100_000
MAX_IMPORT_BYTES: Final = 512 * 1024 * 1024
MAX_IMPORT_DEPTH: Final = 100
"""Nesting levels of a streamed file (the document is level 1, a message level 3)."""
MAX_ENTRY_VALUES: Final = 100_000
"""JSON values (each scalar, list and object) in one entry, or in one top-level field."""

"""What ``Store.import_json`` reads as a file (a dict is a document already parsed)."""

_TOP_FIELDS: Final = ("format", "version", "conversation", "messages")
_TOP_OPTIONAL: Final = ("summaries", "events", "exported_at", "embeddings")
_CONVERSATION_FIELDS: Final = (("title",), ("id", "created_at", "updated_at", "settings", "owner"))
_MESSAGE_FIELDS: Final = (
    ("seq", "role", "content"),
    ("name", "tokens", "status", "usage", "created_at", "reply_to", "pinned", "excluded"),
)
MARK_FIELDS: Final = {"pinned": "pin", "excluded": "exclude"}
"""A message's fields for a person's marks, and the mark each stands for."""
_MESSAGE_KEYS: Final = frozenset(_MESSAGE_FIELDS[0] + _MESSAGE_FIELDS[1])
_SUMMARY_FIELDS: Final = (
    ("text", "tokens", "covers_seq"),
    ("model", "usage", "created_at", "edited_by", "restored_from"),
)
_EVENT_FIELDS: Final = (("kind",), ("data", "created_at"))
_EMBEDDING_FIELDS: Final = (("seq", "model", "vector"), ())
MAX_IMPORT_EMBEDDINGS: Final = 1_000_000
EMBEDDING_MAX_DIMS: Final = 16_384
"""Longest embedding vector stored or imported (text-embedding-3-large has 3,072)."""
_LISTS: Final = {
    "messages": MAX_IMPORT_MESSAGES,
    "summaries": MAX_IMPORT_SUMMARIES,
    "events": MAX_IMPORT_EVENTS,
    "embeddings": MAX_IMPORT_EMBEDDINGS,
}


@dataclass
class ValidImport:
    conversation: dict[str, Any]
    messages: list[dict[str, Any]]
    summaries: list[dict[str, Any]]
    events: list[dict[str, Any]]
    embeddings: list[dict[str, Any]]

    def rows(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """("message" | "summary" | "event" | "embedding", row), as :func:`import_rows` hands
        them out."""
        for msg in self.messages:
            yield "message", msg
        for summ in self.summaries:
            yield "summary", summ
        for ev in self.events:
            yield "event", ev
        for vec in self.embeddings:
            yield "embedding", vec


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r} in an object")
        out[key] = value
    return out


def parse_import(data: object) -> object:
    """bytes/str -> parsed JSON, all at once (the standard library's parser); anything else is
    passed through. Imports stream instead (:func:`check_import`); this reads the same files
    the same way, into memory."""
    if isinstance(data, bytes | bytearray | memoryview):
        raw = bytes(data)
        if len(raw) > MAX_IMPORT_BYTES:
            raise ImportValidationError(
                "", f"file too large ({len(raw):,} bytes; the limit is {MAX_IMPORT_BYTES:,})"
            )
        try:
            data = raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            bad = raw[exc.start : exc.start + 1].hex()
            raise ImportValidationError(
                "", f"not valid UTF-8 (byte 0x{bad} at offset {exc.start})"
            ) from None
    if isinstance(data, str):
        if len(data) > MAX_IMPORT_BYTES:
            raise ImportValidationError(
                "", f"file too large ({len(data):,} characters; the limit is {MAX_IMPORT_BYTES:,})"
            )
        try:
            return json.loads(
                data, parse_constant=_reject_constant, object_pairs_hook=_no_duplicate_keys
            )
        except json.JSONDecodeError as exc:
            raise ImportValidationError(
                "", f"not JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})"
            ) from None
        except ValueError as exc:  # NaN/Infinity, duplicate keys
            raise ImportValidationError("", f"not valid JSON ({exc})") from None
        except RecursionError:
            raise ImportValidationError("", "not valid JSON (nested too deeply)") from None
    return data


def validate_import(doc: object) -> ValidImport:
    """The checked contents of a parsed export document, or ImportValidationError."""
    return _Validator().document(doc)


def _join(where: str, key: str) -> str:
    if not key.isidentifier():  # show odd field names quoted, control characters escaped
        return f"{where}[{short(key)}]"
    return f"{where}.{key}" if where else key


def _plain(text: str, max_chars: int) -> bool:
    """``text_problem(text) is None`` for a str, quickly for ASCII."""
    if len(text) > max_chars or "\x00" in text:
        return False
    return text.isascii() or text_problem(text, max_chars=max_chars) is None


def _at(at: str, field: str) -> str:
    """The location of ``field`` (a name chatmem chose) in the entry at ``at``."""
    if not field:
        return at
    return f"{at}.{field}" if at else field


def _too_many(limit: int) -> str:
    return f"too many entries ({limit + 1:,} or more; the limit is {limit:,})"


class _Validator:
    """Checks an export document field by field; the first problem raises.

    The checks of one entry (a message, a summary, an event) and of the conversation are
    shared by the parsed-document path (:meth:`document`) and the streamed one
    (:class:`_StreamValidator`).
    """

    def fail(self, where: str, problem: str) -> None:
        raise ImportValidationError(where, problem)

    # The checks take the entry's location and the field's name, joined only for a message:
    # a 250,000-message file would otherwise build two million location strings.
    def check(self, problem: str | None, at: str, field: str = "") -> None:
        if problem:
            self.fail(_at(at, field), problem)

    def obj(
        self, value: object, where: str, required: tuple[str, ...], optional: tuple[str, ...]
    ) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.fail(where or "top level", f"expected an object, got {type_name(value)}")
        assert isinstance(value, dict)
        for key in value:
            if not isinstance(key, str):
                self.fail(where or "top level", f"field names must be strings, got {short(key)}")
            if key not in required and key not in optional:
                self.fail(_join(where, key), "unknown field")
        for key in required:
            if key not in value:
                self.fail(_join(where, key), "missing required field")
        return value

    def text(
        self, value: object, at: str, field: str, *, max_chars: int, optional: bool = False
    ) -> Any:
        if optional and value is None:
            return None
        self.check(text_problem(value, max_chars=max_chars), at, field)
        return value

    def count(
        self, value: object, at: str, field: str, *, minimum: int = 0, optional: bool = False
    ) -> int | None:
        if optional and value is None:
            return None
        self.check(count_problem(value, minimum=minimum), at, field)
        assert isinstance(value, int)
        return value

    def json_object(self, value: object, at: str, field: str) -> Any:
        if value is None:
            return None
        self.check(json_object_problem(value), at, field)
        return value

    def time(self, value: object, at: str, field: str) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str):
            self.fail(
                _at(at, field), f"expected an ISO 8601 timestamp string, got {type_name(value)}"
            )
        assert isinstance(value, str)
        try:
            return format_time(datetime.fromisoformat(value))
        except (ValueError, OverflowError):
            self.fail(_at(at, field), f"not an ISO 8601 timestamp: {short(value)}")
        raise AssertionError  # unreachable

    # -- the fields ------------------------------------------------------------------------
    def format(self, value: object) -> None:
        if value != EXPORT_FORMAT:
            self.fail("format", f"expected {EXPORT_FORMAT!r}, got {short(value)}")

    def version(self, version: object) -> None:
        if isinstance(version, bool) or not isinstance(version, int):
            self.fail("version", f"expected an integer, got {type_name(version)}")
        if version != EXPORT_VERSION:
            self.fail(
                "version",
                f"unsupported version {version} (this chatmem reads version {EXPORT_VERSION})",
            )

    def conversation(self, raw: object) -> dict[str, Any]:
        at = "conversation"
        conv = self.obj(raw, at, *_CONVERSATION_FIELDS)
        self.text(conv.get("id"), at, "id", max_chars=MAX_TITLE_CHARS, optional=True)
        self.text(conv["title"], at, "title", max_chars=MAX_TITLE_CHARS)
        self.text(conv.get("owner"), at, "owner", max_chars=MAX_TITLE_CHARS, optional=True)
        settings = self.json_object(conv.get("settings"), at, "settings") or {}
        created = self.time(conv.get("created_at"), at, "created_at")
        self.time(conv.get("updated_at"), at, "updated_at")
        return {
            "title": conv["title"].strip() or "New chat",
            "settings": clean_settings(settings),
            "created_at": created,
        }

    def message(self, index: int, at: str, raw: object, seqs: dict[int, int]) -> dict[str, Any]:
        """The message at ``index`` (``at``) as a row; records its seq in ``seqs``."""
        if type(raw) is dict and raw.keys() <= _MESSAGE_KEYS:
            # The usual message, checked in one expression; anything else (and any problem)
            # goes through the checks below, in their order, which name the first problem.
            seq, role, content = raw.get("seq"), raw.get("role"), raw.get("content")
            status, name, tokens = raw.get("status", "ok"), raw.get("name"), raw.get("tokens")
            if (
                type(seq) is int
                and 0 < seq <= MAX_INT
                and seq not in seqs
                and role in ROLES
                and status in STATUSES
                and type(content) is str
                and _plain(content, MAX_CONTENT_CHARS)
                and (name is None or (type(name) is str and _plain(name, MAX_NAME_CHARS)))
                and (tokens is None or (type(tokens) is int and 0 <= tokens <= MAX_INT))
                and raw.get("reply_to") is None
                and all(raw.get(key) in (None, False) for key in MARK_FIELDS)
                and all(type(raw.get(key, False)) is bool for key in MARK_FIELDS)
            ):
                seqs[seq] = index
                return {
                    "seq": seq,
                    "role": role,
                    "content": content,
                    "name": name,
                    "tokens": tokens,
                    "status": status,
                    "usage": self.json_object(raw.get("usage"), at, "usage"),
                    "created_at": self.time(raw.get("created_at"), at, "created_at"),
                    "reply_to": None,
                }
        msg = self.obj(raw, at, *_MESSAGE_FIELDS)
        seq = self.count(msg["seq"], at, "seq", minimum=1)
        assert seq is not None
        if seq in seqs:
            self.fail(f"{at}.seq", f"duplicate seq {seq} (also used by messages[{seqs[seq]}])")
        seqs[seq] = index
        role = msg["role"]
        self.check(role_problem(role), at, "role")
        status = msg.get("status", "ok")
        self.check(status_problem(status), at, "status")
        marks = []
        for key, kind in MARK_FIELDS.items():
            flag = msg.get(key)
            if flag is not None and type(flag) is not bool:
                self.fail(_at(at, key), f"expected true or false, got {type_name(flag)}")
            if flag:
                marks.append(kind)
        return {
            "seq": seq,
            "role": role,
            "content": self.text(msg["content"], at, "content", max_chars=MAX_CONTENT_CHARS),
            "name": self.text(msg.get("name"), at, "name", max_chars=MAX_NAME_CHARS, optional=True),
            "tokens": self.count(msg.get("tokens"), at, "tokens", optional=True),
            "status": status,
            "usage": self.json_object(msg.get("usage"), at, "usage"),
            "created_at": self.time(msg.get("created_at"), at, "created_at"),
            "reply_to": self.count(msg.get("reply_to"), at, "reply_to", minimum=1, optional=True),
        } | ({"marks": marks} if marks else {})

    def covers(self, at: str, covers: object, seqs: dict[int, int]) -> None:
        if covers not in seqs:
            span = f"message seqs are {min(seqs)}..{max(seqs)}" if seqs else "there are none"
            self.fail(f"{at}.covers_seq", f"{covers} points at no message ({span})")

    def summary(self, at: str, raw: object, seqs: dict[int, int] | None) -> dict[str, Any]:
        """The summary at ``at`` as a row; its covers_seq is checked against ``seqs`` unless
        that is None (the messages are not known yet: the caller checks it later)."""
        summ = self.obj(raw, at, *_SUMMARY_FIELDS)
        covers = self.count(summ["covers_seq"], at, "covers_seq", minimum=1)
        if seqs is not None:
            self.covers(at, covers, seqs)
        return {
            "text": self.text(summ["text"], at, "text", max_chars=MAX_CONTENT_CHARS),
            "tokens": self.count(summ["tokens"], at, "tokens"),
            "covers_seq": covers,
            "model": self.text(
                summ.get("model"), at, "model", max_chars=MAX_NAME_CHARS, optional=True
            ),
            "usage": self.json_object(summ.get("usage"), at, "usage"),
            "created_at": self.time(summ.get("created_at"), at, "created_at"),
            "edited_by": self.text(
                summ.get("edited_by"), at, "edited_by", max_chars=MAX_NAME_CHARS, optional=True
            ),
            "restored_from": self.count(
                summ.get("restored_from"), at, "restored_from", minimum=1, optional=True
            ),
        }

    def event(self, at: str, raw: object) -> dict[str, Any]:
        ev = self.obj(raw, at, *_EVENT_FIELDS)
        kind = self.text(ev["kind"], at, "kind", max_chars=MAX_KIND_CHARS)
        if not kind:
            self.fail(f"{at}.kind", "empty")
        return {
            "kind": kind,
            "data": self.json_object(ev.get("data"), at, "data") or {},
            "created_at": self.time(ev.get("created_at"), at, "created_at"),
        }

    def embedding(self, at: str, raw: object, seqs: dict[int, int] | None) -> dict[str, Any]:
        """A stored embedding: the seq of a message of the file, the model's name, and the
        vector as base64 of float32 little-endian numbers (as ``export_json`` writes it).
        ``seqs`` None: the messages come later in the file (checked with :meth:`known`)."""
        vec = self.obj(raw, at, *_EMBEDDING_FIELDS)
        seq = self.count(vec["seq"], at, "seq", minimum=1)
        if seqs is not None:
            self.known(at, seq, seqs)
        model = self.text(vec["model"], at, "model", max_chars=MAX_NAME_CHARS)
        if not model:
            self.fail(f"{at}.model", "empty")
        blob = b""
        if isinstance(vec["vector"], str):
            try:
                blob = base64.b64decode(vec["vector"], validate=True)
            except ValueError:
                blob = b"?"
        dims, odd = divmod(len(blob), 4)
        if odd or not 0 < dims <= EMBEDDING_MAX_DIMS:
            self.fail(
                f"{at}.vector",
                f"expected base64 of 1 to {EMBEDDING_MAX_DIMS:,} float32 numbers",
            )
        values = array("f", blob)
        if sys.byteorder == "big":
            values.byteswap()
        if not all(math.isfinite(v) for v in values):
            self.fail(f"{at}.vector", "contains NaN or infinity")
        return {"seq": seq, "model": model, "dims": dims, "vector": blob}

    def known(self, at: str, seq: int | None, seqs: dict[int, int]) -> None:
        if seq not in seqs:
            self.fail(f"{at}.seq", f"{seq} is not the seq of a message in the file")

    # -- a parsed document -------------------------------------------------------------------
    def entries(self, value: object, where: str, limit: int) -> Iterator[tuple[int, str, Any]]:
        """(index, location, item) for each entry of the list ``value`` (``where``)."""
        if not isinstance(value, list):
            self.fail(where, f"expected a list, got {type_name(value)}")
        assert isinstance(value, list)
        if len(value) > limit:
            self.fail(where, f"too many entries ({len(value):,}; the limit is {limit:,})")
        for i, item in enumerate(value):
            yield i, f"{where}[{i}]", item

    def document(self, doc: object) -> ValidImport:
        if not isinstance(doc, dict):
            self.fail("", f"expected a JSON object at the top level, got {type_name(doc)}")
        assert isinstance(doc, dict)
        if "format" not in doc:
            self.fail("format", "missing: this is not a chatmem conversation export")
        self.format(doc["format"])
        if "version" not in doc:
            self.fail("version", "missing required field")
        self.version(doc["version"])
        self.obj(doc, "", _TOP_FIELDS, _TOP_OPTIONAL)
        self.time(doc.get("exported_at"), "", "exported_at")
        conversation = self.conversation(doc["conversation"])
        seqs: dict[int, int] = {}
        messages = [
            self.message(i, at, raw, seqs)
            for i, at, raw in self.entries(doc["messages"], "messages", MAX_IMPORT_MESSAGES)
        ]
        summaries = [
            self.summary(at, raw, seqs)
            for _, at, raw in self.entries(
                doc.get("summaries", []), "summaries", MAX_IMPORT_SUMMARIES
            )
        ]
        events = [
            self.event(at, raw)
            for _, at, raw in self.entries(doc.get("events", []), "events", MAX_IMPORT_EVENTS)
        ]
        embeddings = [
            self.embedding(at, raw, seqs)
            for _, at, raw in self.entries(
                doc.get("embeddings", []), "embeddings", MAX_IMPORT_EMBEDDINGS
            )
        ]
        return ValidImport(conversation, messages, summaries, events, embeddings)
