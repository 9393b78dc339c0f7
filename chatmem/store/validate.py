"""Checking an import file: parsed strictly, validated field by field, nothing written.

The first problem raises ``ImportValidationError`` naming where it is
(``messages[3].role: unknown role 'wizard' ...``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from chatmem.errors import ImportValidationError
from chatmem.store.records import (
    MAX_CONTENT_CHARS,
    MAX_KIND_CHARS,
    MAX_NAME_CHARS,
    MAX_TITLE_CHARS,
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


@dataclass
class ValidImport:
    conversation: dict[str, Any]
    messages: list[dict[str, Any]]
    summaries: list[dict[str, Any]]
    events: list[dict[str, Any]]


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
    """bytes/str -> parsed JSON; anything else is passed through to the validator."""
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


class _Validator:
    """Checks an export document field by field; the first problem raises."""

    def fail(self, where: str, problem: str) -> None:
        raise ImportValidationError(where, problem)

    def check(self, problem: str | None, where: str) -> None:
        if problem:
            self.fail(where, problem)

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

    def text(self, value: object, where: str, *, max_chars: int, optional: bool = False) -> Any:
        if optional and value is None:
            return None
        self.check(text_problem(value, max_chars=max_chars), where)
        return value

    def count(
        self, value: object, where: str, *, minimum: int = 0, optional: bool = False
    ) -> int | None:
        if optional and value is None:
            return None
        self.check(count_problem(value, minimum=minimum), where)
        assert isinstance(value, int)
        return value

    def json_object(self, value: object, where: str, *, optional: bool = True) -> Any:
        if optional and value is None:
            return None
        self.check(json_object_problem(value), where)
        return value

    def time(self, value: object, where: str) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str):
            self.fail(where, f"expected an ISO 8601 timestamp string, got {type_name(value)}")
        assert isinstance(value, str)
        try:
            return format_time(datetime.fromisoformat(value))
        except (ValueError, OverflowError):
            self.fail(where, f"not an ISO 8601 timestamp: {short(value)}")
        raise AssertionError  # unreachable

    def entries(
        self,
        value: object,
        where: str,
        limit: int,
        required: tuple[str, ...],
        optional: tuple[str, ...],
    ) -> Iterator[tuple[int, str, dict[str, Any]]]:
        """(index, location, object) for each entry of the list ``value`` (``where``)."""
        if not isinstance(value, list):
            self.fail(where, f"expected a list, got {type_name(value)}")
        assert isinstance(value, list)
        if len(value) > limit:
            self.fail(where, f"too many entries ({len(value):,}; the limit is {limit:,})")
        for i, item in enumerate(value):
            at = f"{where}[{i}]"
            yield i, at, self.obj(item, at, required, optional)

    def document(self, doc: object) -> ValidImport:
        if not isinstance(doc, dict):
            self.fail("", f"expected a JSON object at the top level, got {type_name(doc)}")
        assert isinstance(doc, dict)
        if "format" not in doc:
            self.fail("format", "missing: this is not a chatmem conversation export")
        if doc["format"] != EXPORT_FORMAT:
            self.fail("format", f"expected {EXPORT_FORMAT!r}, got {short(doc['format'])}")
        if "version" not in doc:
            self.fail("version", "missing required field")
        version = doc["version"]
        if isinstance(version, bool) or not isinstance(version, int):
            self.fail("version", f"expected an integer, got {type_name(version)}")
        if version != EXPORT_VERSION:
            self.fail(
                "version",
                f"unsupported version {version} (this chatmem reads version {EXPORT_VERSION})",
            )
        self.obj(
            doc,
            "",
            required=("format", "version", "conversation", "messages"),
            optional=("summaries", "events", "exported_at"),
        )
        self.time(doc.get("exported_at"), "exported_at")

        conv = self.obj(
            doc["conversation"],
            "conversation",
            required=("title",),
            optional=("id", "created_at", "updated_at", "settings", "owner"),
        )
        self.text(conv.get("id"), "conversation.id", max_chars=MAX_TITLE_CHARS, optional=True)
        self.text(conv["title"], "conversation.title", max_chars=MAX_TITLE_CHARS)
        self.text(conv.get("owner"), "conversation.owner", max_chars=MAX_TITLE_CHARS, optional=True)
        settings = self.json_object(conv.get("settings"), "conversation.settings") or {}
        created = self.time(conv.get("created_at"), "conversation.created_at")
        self.time(conv.get("updated_at"), "conversation.updated_at")

        messages, seqs = self.messages(doc["messages"])
        summaries = self.summaries(doc.get("summaries", []), seqs)
        events = self.events(doc.get("events", []))
        return ValidImport(
            conversation={
                "title": conv["title"].strip() or "New chat",
                "settings": clean_settings(settings),
                "created_at": created,
            },
            messages=messages,
            summaries=summaries,
            events=events,
        )

    def messages(self, raw: object) -> tuple[list[dict[str, Any]], dict[int, int]]:
        """The messages, and where each seq is (seq -> index in the list)."""
        messages: list[dict[str, Any]] = []
        seqs: dict[int, int] = {}
        for i, at, msg in self.entries(
            raw,
            "messages",
            MAX_IMPORT_MESSAGES,
            required=("seq", "role", "content"),
            optional=("name", "tokens", "status", "usage", "created_at"),
        ):
            seq = self.count(msg["seq"], f"{at}.seq", minimum=1)
            assert seq is not None
            if seq in seqs:
                self.fail(f"{at}.seq", f"duplicate seq {seq} (also used by messages[{seqs[seq]}])")
            seqs[seq] = i
            role = msg["role"]
            self.check(role_problem(role), f"{at}.role")
            status = msg.get("status", "ok")
            self.check(status_problem(status), f"{at}.status")
            messages.append(
                {
                    "seq": seq,
                    "role": role,
                    "content": self.text(
                        msg["content"], f"{at}.content", max_chars=MAX_CONTENT_CHARS
                    ),
                    "name": self.text(
                        msg.get("name"), f"{at}.name", max_chars=MAX_NAME_CHARS, optional=True
                    ),
                    "tokens": self.count(msg.get("tokens"), f"{at}.tokens", optional=True),
                    "status": status,
                    "usage": self.json_object(msg.get("usage"), f"{at}.usage"),
                    "created_at": self.time(msg.get("created_at"), f"{at}.created_at"),
                }
            )
        return messages, seqs

    def summaries(self, raw: object, seqs: dict[int, int]) -> list[dict[str, Any]]:
        summaries: list[dict[str, Any]] = []
        for _, at, summ in self.entries(
            raw,
            "summaries",
            MAX_IMPORT_SUMMARIES,
            required=("text", "tokens", "covers_seq"),
            optional=("model", "usage", "created_at"),
        ):
            covers = self.count(summ["covers_seq"], f"{at}.covers_seq", minimum=1)
            if covers not in seqs:
                span = f"message seqs are {min(seqs)}..{max(seqs)}" if seqs else "there are none"
                self.fail(f"{at}.covers_seq", f"{covers} points at no message ({span})")
            summaries.append(
                {
                    "text": self.text(summ["text"], f"{at}.text", max_chars=MAX_CONTENT_CHARS),
                    "tokens": self.count(summ["tokens"], f"{at}.tokens"),
                    "covers_seq": covers,
                    "model": self.text(
                        summ.get("model"), f"{at}.model", max_chars=MAX_NAME_CHARS, optional=True
                    ),
                    "usage": self.json_object(summ.get("usage"), f"{at}.usage"),
                    "created_at": self.time(summ.get("created_at"), f"{at}.created_at"),
                }
            )
        return summaries

    def events(self, raw: object) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        for _, at, ev in self.entries(
            raw, "events", MAX_IMPORT_EVENTS, required=("kind",), optional=("data", "created_at")
        ):
            kind = self.text(ev["kind"], f"{at}.kind", max_chars=MAX_KIND_CHARS)
            if not kind:
                self.fail(f"{at}.kind", "empty")
            events.append(
                {
                    "kind": kind,
                    "data": self.json_object(ev.get("data"), f"{at}.data") or {},
                    "created_at": self.time(ev.get("created_at"), f"{at}.created_at"),
                }
            )
        return events
