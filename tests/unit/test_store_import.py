"""import_json refuses bad files with a message that says what and where, and writes nothing."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatmem import store as store_module
from chatmem.events import Event, EventKind
from chatmem.store import ImportValidationError, Store


def valid_doc() -> dict[str, Any]:
    return {
        "format": "chatmem.conversation",
        "version": 1,
        "exported_at": "2024-05-01T12:00:00+00:00",
        "conversation": {
            "id": "0123456789abcdef0123456789abcdef",
            "title": "Imported",
            "created_at": "2024-05-01T10:00:00+00:00",
            "updated_at": "2024-05-01T11:00:00+00:00",
            "settings": {"model": "gpt-4o-mini", "max_tokens": 3000},
            "owner": None,
        },
        "messages": [
            {"seq": 1, "role": "system", "content": "Be concise."},
            {"seq": 2, "role": "user", "content": "Hi, I'm Sam.", "tokens": 7},
            {"seq": 3, "role": "assistant", "content": "Hello Sam!", "usage": {"prompt_tokens": 1}},
            {"seq": 4, "role": "user", "content": "Remember tea.", "status": "ok"},
        ],
        "summaries": [{"text": "Sam.", "tokens": 2, "covers_seq": 3, "model": "m"}],
        "events": [{"kind": "fold", "data": {"covers_seq": 3}}],
    }


def edit(change: Callable[[dict[str, Any]], object]) -> dict[str, Any]:
    doc = valid_doc()
    change(doc)
    return doc


def as_text(doc: object) -> str:
    return json.dumps(doc)


BAD_FILES: list[tuple[str, object, str]] = [
    ("invalid-utf8", b'{"format": "chatmem.conversation", "x": "\xff\xfe"}', "not valid UTF-8"),
    ("not-json", "Dear diary, today I chatted.", "not JSON (Expecting value at line 1, column 1)"),
    ("truncated-json", as_text(valid_doc())[:-10], "not JSON"),
    ("json-list", "[1, 2, 3]", "expected a JSON object at the top level, got a list"),
    ("json-string", '"chatmem"', "expected a JSON object at the top level, got a string"),
    ("nan", as_text(valid_doc()).replace('"tokens": 7', '"tokens": NaN'), "NaN is not valid JSON"),
    (
        "duplicate-key",
        as_text(valid_doc()).replace('"seq": 1,', '"seq": 1, "seq": 5,'),
        "duplicate key 'seq'",
    ),
    (
        "missing-format",
        edit(lambda d: d.pop("format")),
        "format: missing: this is not a chatmem conversation export",
    ),
    (
        "wrong-format",
        edit(lambda d: d.update(format="openai.chat")),
        "format: expected 'chatmem.conversation', got 'openai.chat'",
    ),
    (
        "future-version",
        edit(lambda d: d.update(version=2)),
        "version: unsupported version 2 (this chatmem reads version 1)",
    ),
    (
        "version-as-string",
        edit(lambda d: d.update(version="1")),
        "version: expected an integer, got a string",
    ),
    (
        "missing-conversation",
        edit(lambda d: d.pop("conversation")),
        "conversation: missing required field",
    ),
    (
        "missing-messages",
        edit(lambda d: d.pop("messages")),
        "messages: missing required field",
    ),
    (
        "unknown-top-level-field",
        edit(lambda d: d.update(attachments=[])),
        "attachments: unknown field",
    ),
    (
        "missing-title",
        edit(lambda d: d["conversation"].pop("title")),
        "conversation.title: missing required field",
    ),
    (
        "settings-not-object",
        edit(lambda d: d["conversation"].update(settings="fast")),
        "conversation.settings: expected an object, got a string",
    ),
    (
        "messages-not-list",
        edit(lambda d: d.update(messages={"seq": 1})),
        "messages: expected a list, got an object",
    ),
    (
        "message-not-object",
        edit(lambda d: d["messages"].__setitem__(2, "hello")),
        "messages[2]: expected an object, got a string",
    ),
    (
        "content-not-string",
        edit(lambda d: d["messages"][1].update(content=42)),
        "messages[1].content: expected a string, got an integer",
    ),
    (
        "content-missing",
        edit(lambda d: d["messages"][1].pop("content")),
        "messages[1].content: missing required field",
    ),
    (
        "seq-not-int",
        edit(lambda d: d["messages"][0].update(seq="1")),
        "messages[0].seq: expected an integer, got a string",
    ),
    (
        "seq-bool",
        edit(lambda d: d["messages"][0].update(seq=True)),
        "messages[0].seq: expected an integer, got a boolean",
    ),
    (
        "seq-float",
        edit(lambda d: d["messages"][0].update(seq=1.5)),
        "messages[0].seq: expected an integer, got a number",
    ),
    (
        "seq-zero",
        edit(lambda d: d["messages"][0].update(seq=0)),
        "messages[0].seq: 0 is out of range (1..2147483647)",
    ),
    (
        "seq-huge",
        edit(lambda d: d["messages"][0].update(seq=2**40)),
        "messages[0].seq: 1099511627776 is out of range",
    ),
    (
        "unknown-role",
        edit(lambda d: d["messages"][3].update(role="wizard")),
        "messages[3].role: unknown role 'wizard' (expected system, user, assistant or tool)",
    ),
    (
        "unknown-status",
        edit(lambda d: d["messages"][3].update(status="maybe")),
        "messages[3].status: unknown status 'maybe' (expected ok, failed or incomplete)",
    ),
    (
        "unknown-message-field",
        edit(lambda d: d["messages"][0].update(colour="red")),
        "messages[0].colour: unknown field",
    ),
    (
        "odd-field-name-is-quoted",
        edit(lambda d: d["messages"][0].update({"bad key\n": 1})),
        "messages[0]['bad key\\n']: unknown field",
    ),
    (
        "negative-tokens",
        edit(lambda d: d["messages"][1].update(tokens=-5)),
        "messages[1].tokens: -5 is out of range",
    ),
    (
        "usage-not-object",
        edit(lambda d: d["messages"][2].update(usage=[1, 2])),
        "messages[2].usage: expected an object, got a list",
    ),
    (
        "oversize-content",
        edit(lambda d: d["messages"][0].update(content="x" * (store_module.MAX_CONTENT_CHARS + 1))),
        "messages[0].content: too long (1,000,001 characters; the limit is 1,000,000)",
    ),
    (
        "too-many-messages",
        edit(
            lambda d: d.update(
                messages=[{"seq": 1, "role": "user", "content": "x"}]
                * (store_module.MAX_IMPORT_MESSAGES + 1)
            )
        ),
        "messages: too many entries (250,001; the limit is 250,000)",
    ),
    (
        "nul-in-content",
        edit(lambda d: d["messages"][1].update(content="a\x00b")),
        "messages[1].content: contains a NUL character",
    ),
    (
        "lone-surrogate",
        as_text(valid_doc()).replace("Be concise.", "Be \\ud800 concise."),
        "messages[0].content: is not valid Unicode",
    ),
    (
        "duplicate-seq",
        edit(lambda d: d["messages"][3].update(seq=2)),
        "messages[3].seq: duplicate seq 2 (also used by messages[1])",
    ),
    (
        "bad-timestamp",
        edit(lambda d: d["messages"][0].update(created_at="yesterday")),
        "messages[0].created_at: not an ISO 8601 timestamp: 'yesterday'",
    ),
    (
        "summary-covers-nothing",
        edit(lambda d: d["summaries"][0].update(covers_seq=99)),
        "summaries[0].covers_seq: 99 points at no message (message seqs are 1..4)",
    ),
    (
        "summary-without-messages",
        edit(lambda d: d.update(messages=[])),
        "summaries[0].covers_seq: 3 points at no message (there are none)",
    ),
    (
        "summary-missing-tokens",
        edit(lambda d: d["summaries"][0].pop("tokens")),
        "summaries[0].tokens: missing required field",
    ),
    (
        "event-empty-kind",
        edit(lambda d: d["events"][0].update(kind="")),
        "events[0].kind: empty",
    ),
    (
        "event-data-not-object",
        edit(lambda d: d["events"][0].update(data=3)),
        "events[0].data: expected an object, got an integer",
    ),
    (
        "last-message-bad",  # everything before it is fine: still nothing may be written
        edit(
            lambda d: d.update(
                messages=[{"seq": i, "role": "user", "content": f"m{i}"} for i in range(1, 500)]
                + [{"seq": 500, "role": "robot", "content": "x"}]
            )
        ),
        "messages[499].role: unknown role 'robot'",
    ),
]


@pytest.fixture
def seeded(store: Store) -> Store:
    """A store that already holds one conversation, so "unchanged" is not trivially empty."""
    cid = store.create_conversation("existing").id
    store.append_message(cid, "user", "hello")
    store.add_summary(cid, "hi", 1, 1)
    store.add_event(cid, Event(EventKind.FOLD, "Folded."))
    return store


def test_the_valid_document_imports(seeded: Store, db_counts) -> None:
    before = db_counts(seeded)
    info = seeded.import_json(as_text(valid_doc()))
    assert info.title == "Imported" and info.settings == {
        "model": "gpt-4o-mini",
        "max_tokens": 3000,
    }
    after = db_counts(seeded)
    assert after == {
        "conversations": before["conversations"] + 1,
        "messages": before["messages"] + 4,
        "summaries": before["summaries"] + 1,
        "events": before["events"] + 1,
    }
    loaded = seeded.load(info.id)
    assert [m.seq for m in loaded.messages] == [4]
    assert loaded.info.created_at.isoformat() == "2024-05-01T10:00:00+00:00"


@pytest.mark.parametrize(
    ("data", "message"),
    [pytest.param(data, message, id=name) for name, data, message in BAD_FILES],
)
def test_bad_import_is_refused_and_writes_nothing(
    seeded: Store, db_counts, data: object, message: str
) -> None:
    before = db_counts(seeded)
    with pytest.raises(ImportValidationError) as caught:
        seeded.import_json(data)  # type: ignore[arg-type]
    assert message in str(caught.value)
    assert db_counts(seeded) == before


def test_bad_import_table_is_large_enough() -> None:
    assert len(BAD_FILES) >= 10
    assert len({name for name, _, _ in BAD_FILES}) == len(BAD_FILES)


# --------------------------------------------------------------------------------------------
# Fuzzing
# --------------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**64)
    | st.floats()
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)

FIELDS = [
    (),
    ("format",),
    ("version",),
    ("conversation",),
    ("conversation", "title"),
    ("conversation", "settings"),
    ("conversation", "created_at"),
    ("messages",),
    ("messages", 0),
    ("messages", 1, "seq"),
    ("messages", 1, "role"),
    ("messages", 1, "content"),
    ("messages", 2, "usage"),
    ("messages", 2, "tokens"),
    ("messages", 3, "status"),
    ("messages", 3, "name"),
    ("summaries",),
    ("summaries", 0, "covers_seq"),
    ("summaries", 0, "text"),
    ("events", 0),
    ("events", 0, "data"),
]


def _replace(doc: Any, path: tuple[Any, ...], value: object, delete: bool) -> Any:
    if not path:
        return value
    doc = copy.deepcopy(doc)
    target = doc
    for step in path[:-1]:
        target = target[step]
    if delete and isinstance(target, dict):
        target.pop(path[-1], None)
    else:
        target[path[-1]] = value
    return doc


def _import_and_check(store: Store, db_counts, data: object) -> None:
    before = db_counts(store)
    try:
        info = store.import_json(data)  # type: ignore[arg-type]
    except ImportValidationError as exc:
        assert str(exc)  # a message, always
        assert db_counts(store) == before
    else:  # accepted: exactly one new conversation; remove it to keep the next example clean
        assert db_counts(store)["conversations"] == before["conversations"] + 1
        assert store.delete_conversation(info.id)
        assert db_counts(store) == before


FUZZ = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@FUZZ
@given(value=json_values, encoding=st.sampled_from(["object", "text", "bytes"]))
def test_fuzz_random_json(seeded: Store, db_counts, value: object, encoding: str) -> None:
    if encoding == "text":
        value = json.dumps(value)
    elif encoding == "bytes":
        value = json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")
    _import_and_check(seeded, db_counts, value)


@FUZZ
@given(
    field=st.sampled_from(FIELDS),
    value=json_values,
    delete=st.booleans(),
    encoding=st.sampled_from(["object", "text"]),
)
def test_fuzz_one_field_of_a_valid_export(
    seeded: Store, db_counts, field: tuple[Any, ...], value: object, delete: bool, encoding: str
) -> None:
    doc = _replace(valid_doc(), field, value, delete)
    _import_and_check(seeded, db_counts, json.dumps(doc) if encoding == "text" else doc)


@FUZZ
@given(data=st.binary(max_size=200))
def test_fuzz_random_bytes(seeded: Store, db_counts, data: bytes) -> None:
    _import_and_check(seeded, db_counts, data)
