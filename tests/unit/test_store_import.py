"""import_json refuses bad files with a message that says what and where, and writes nothing."""

from __future__ import annotations

import copy
import io
import json
import re
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatmem import ChatMemory, OpenAIChat, Settings
from chatmem import store as store_module
from chatmem.events import Event, EventKind
from chatmem.store import ImportValidationError, Store, queries, stream, transfer, validate
from chatmem.sync import FOLD_READ_LIMIT


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
    (
        "not-json",
        "Dear diary, today I chatted.",
        "not JSON (invalid char in json text at line 1, column 1)",
    ),
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
                messages=[
                    {"seq": i, "role": "user", "content": "x"}
                    for i in range(1, store_module.MAX_IMPORT_MESSAGES + 2)
                ]
            )
        ),
        "messages: too many entries (250,001",  # streamed: "250,001 or more"
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
# Streaming: a file object is read as it is checked, and refused where it crosses a limit
# --------------------------------------------------------------------------------------------


class CountingFile(io.BytesIO):
    """An upload that counts the bytes read from it."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.bytes_read = 0

    def read(self, size: int | None = -1) -> bytes:
        chunk = super().read(size)
        self.bytes_read += len(chunk)
        return chunk


class PipeFile(io.RawIOBase):
    """A file that can only be read forwards (a pipe, a socket)."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def read(self, size: int | None = -1) -> bytes:
        return self._data.read(size)


def as_file(data: object) -> io.BytesIO:
    """A BAD_FILES entry as the bytes of a file."""
    if isinstance(data, bytes):
        return io.BytesIO(data)
    text = data if isinstance(data, str) else json.dumps(data)
    return io.BytesIO(text.encode("utf-8", "surrogatepass"))


def many_messages(n: int, *, first: bytes = b"") -> bytes:
    """An export with ``n`` tiny messages (``first``, if given, is message 1's content)."""
    head = b'{"format":"chatmem.conversation","version":1,"conversation":{"title":"Big"},'
    items = [
        b'{"seq":%d,"role":"%s","content":"%s"}'
        % (i, b"user" if i % 2 else b"assistant", first if i == 1 and first else b"m%d" % i)
        for i in range(1, n + 1)
    ]
    return head + b'"messages":[' + b",".join(items) + b"]}"


@pytest.mark.parametrize(
    ("data", "message"),
    [pytest.param(data, message, id=name) for name, data, message in BAD_FILES],
)
def test_bad_file_streamed_is_refused_the_same_way(
    seeded: Store, db_counts, data: object, message: str
) -> None:
    before = db_counts(seeded)
    with pytest.raises(ImportValidationError) as caught:
        seeded.import_json(as_file(data))  # type: ignore[arg-type]
    assert message in str(caught.value)
    assert db_counts(seeded) == before


def test_a_streamed_file_imports_what_the_parsed_document_does(store: Store) -> None:
    doc = valid_doc()
    for entry in doc["messages"] + doc["summaries"] + doc["events"]:
        entry["created_at"] = "2024-05-01T11:00:00+00:00"  # not "now", which differs
    doc["messages"][2]["created_at"] = "2024-05-01T10:30:00+02:00"
    # json.dumps writes the emoji as surrogate pair escapes, and the backslash as "\\\\"
    doc["messages"][3]["content"] = "Tea 🍵, \\ud800 as text, and 😀."
    streamed = store.import_json(io.BytesIO(json.dumps(doc).encode()))  # type: ignore[arg-type]
    parsed = store.import_json(doc)

    def contents(cid: str) -> dict[str, Any]:
        out = store.export_json(cid)
        for key in ("exported_at", "conversation"):
            out.pop(key)
        return out

    assert contents(streamed.id) == contents(parsed.id)
    assert store.messages(streamed.id)[3].content == "Tea 🍵, \\ud800 as text, and 😀."
    assert store.messages(streamed.id)[2].created_at.isoformat() == "2024-05-01T08:30:00+00:00"


def test_rows_too_large_to_keep_are_read_again_in_the_transaction(
    seeded: Store, db_counts, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = many_messages(12_000)
    with stream.import_source(data) as source:
        assert stream.check_import(source).rows is not None  # small: kept, read once
    monkeypatch.setattr(stream, "_KEEP_ROWS_BYTES", 100_000)
    with stream.import_source(data) as source:
        plan = stream.check_import(source)
        assert plan.rows is None and plan.messages == 12_000
        again = list(stream.import_rows(source, plan))  # the second reading
    assert [row["seq"] for _, row in again] == list(range(1, 12_001))
    before = db_counts(seeded)
    info = seeded.import_json(io.BytesIO(data))  # type: ignore[arg-type]
    assert db_counts(seeded)["messages"] == before["messages"] + 12_000
    assert seeded.messages(info.id)[-1].content == "m12000"


def test_over_the_entry_limit_is_refused_at_the_limit(seeded: Store, db_counts) -> None:
    data = many_messages(4 * store_module.MAX_IMPORT_MESSAGES)  # 1,000,000 messages, ~40 MB
    upload = CountingFile(data)
    before = db_counts(seeded)
    with pytest.raises(ImportValidationError) as caught:
        seeded.import_json(upload)  # type: ignore[arg-type]
    assert str(caught.value) == "messages: too many entries (250,001 or more; the limit is 250,000)"
    assert upload.bytes_read < len(data) * 0.3  # stopped a little after the 250,001st
    assert db_counts(seeded) == before


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{\n  "format": NaN\n}', "not valid JSON (NaN is not valid JSON, at line 2, column 13)"),
        ('{"format": -Infinity}', "not valid JSON (-Infinity is not valid JSON, at line 1"),
        ('{"format": Infinity}', "not valid JSON (Infinity is not valid JSON, at line 1"),
        ('{"format": "chatmem.conversation",\n"version": 1,\n"conv', "premature EOF at line 3"),
        ("{}  {}", "not JSON (trailing garbage at line 1, column 5)"),
        ('{"version": 1' + "0" * 5000 + "}", "not JSON (Exceeds the limit (4300 digits)"),
    ],
)
def test_a_syntax_error_says_where(store: Store, text: str, message: str) -> None:
    with pytest.raises(ImportValidationError, match=re.escape(message)):
        store.import_json(io.BytesIO(text.encode()))  # type: ignore[arg-type]


def test_a_syntax_error_deep_in_a_large_file_is_located(store: Store) -> None:
    data = many_messages(20_000).replace(b'"content":"m15000"', b'"content":m15000"')
    with pytest.raises(ImportValidationError) as caught:
        store.import_json(io.BytesIO(data))  # type: ignore[arg-type]
    column = data.index(b"m15000") + 1
    assert str(caught.value) == f"not JSON (invalid char in json text at line 1, column {column})"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda d: d["messages"][2].update(usage={"a": 1, "b": {"c": 2, "d": 3}}),
            "messages[2].usage.b: not valid JSON (duplicate key 'c' in an object)",
        ),
        (
            lambda d: d["messages"][1].update(usage={"deep": json.loads("[" * 120 + "]" * 120)}),
            "nested too deeply (more than 100 levels)",
        ),
        (
            lambda d: d["events"][0].update(data={"seqs": list(range(100_001))}),
            "events[0]: too large (more than 100,000 values in one entry)",
        ),
        (
            lambda d: d["messages"][3].update(content="a \ud800 b"),
            "messages[3].content: is not valid Unicode",
        ),
    ],
    ids=["duplicate-nested-key", "nesting", "values-in-one-entry", "lone-surrogate"],
)
def test_streamed_problems_inside_an_entry(
    seeded: Store, db_counts, change: Callable[[dict[str, Any]], object], message: str
) -> None:
    text = json.dumps(edit(change))
    if "duplicate" in message:
        text = text.replace('"d": 3', '"c": 3')  # a dict cannot hold it: the text can
    before = db_counts(seeded)
    with pytest.raises(ImportValidationError) as caught:
        seeded.import_json(io.BytesIO(text.encode()))  # type: ignore[arg-type]
    assert message in str(caught.value)
    assert db_counts(seeded) == before


def test_a_lone_surrogate_where_nothing_checks_it_is_kept_as_before(store: Store) -> None:
    """ijson's C backend would read ``\\ud800`` as ``?``: the file is read again exactly."""
    text = json.dumps(edit(lambda d: d["events"][0].update(data={"note": "\ud800"})))
    parsed = store.import_json(text.replace("\\ud800", "x"))  # the same file, plain
    streamed = store.import_json(io.BytesIO(text.encode()))  # type: ignore[arg-type]
    assert store.list_events(parsed.id)[0].data == {"note": "x"}
    assert store.list_events(streamed.id)[0].data == {"note": "\ud800"}


def test_a_run_of_digits_past_pythons_int_limit_is_read_exactly(store: Store) -> None:
    """In a string it is text (imported); as a number, refused as the standard library does.
    (ijson's C backend fails on such an int in a way that can crash the process.)"""
    text = json.dumps(edit(lambda d: d["messages"][1].update(content="7" * 10_000)))
    info = store.import_json(io.BytesIO(text.encode()))  # type: ignore[arg-type]
    assert store.messages(info.id)[1].content == "7" * 10_000
    number = text.replace('"tokens": 7', '"tokens": 7' + "0" * 5_000)
    with pytest.raises(ImportValidationError, match=r"not JSON \(Exceeds the limit \(4300 digits"):
        store.import_json(io.BytesIO(number.encode()))  # type: ignore[arg-type]


def test_a_long_number_across_two_reads_is_caught(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    backends: list[str] = []
    get_backend = stream.ijson.get_backend

    def spy(name: str) -> Any:
        backends.append(name)
        return get_backend(name)

    monkeypatch.setattr(stream.ijson, "get_backend", spy)
    number = '"tokens": 7' + "0" * 5_000
    text = json.dumps(valid_doc()).replace('"tokens": 7', number)
    shift = 64 * 1024 - 2_500 - text.index(number)  # the digits straddle the first 64 KB read
    text = text.replace("Hi, I'm Sam.", "Hi, I'm Sam." + "x" * shift)
    with pytest.raises(ImportValidationError, match=r"Exceeds the limit \(4300 digits"):
        store.import_json(io.BytesIO(text.encode()))  # type: ignore[arg-type]
    assert backends[0] == stream._FAST_BACKEND  # the C backend, here
    assert backends[1:] == ["python"] * (len(backends) - 1)  # read again exactly, and located


def test_file_kinds(store: Store) -> None:
    text = json.dumps(valid_doc())
    bom = store.import_json(io.BytesIO(b"\xef\xbb\xbf" + text.encode()))  # type: ignore[arg-type]
    pipe = store.import_json(PipeFile(text.encode()))  # type: ignore[arg-type]
    assert [len(store.messages(c.id)) for c in (bom, pipe)] == [4, 4]
    with pytest.raises(ImportValidationError, match="expected a binary file"):
        store.import_json(io.StringIO(text))  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", [CountingFile, PipeFile])
def test_file_too_large(store: Store, monkeypatch: pytest.MonkeyPatch, kind: type) -> None:
    data = json.dumps(valid_doc()).encode()
    monkeypatch.setattr(stream, "MAX_IMPORT_BYTES", len(data) - 1)
    with pytest.raises(ImportValidationError, match="file too large"):
        store.import_json(kind(data))  # type: ignore[arg-type]
    assert store.list_conversations() == []


def test_summaries_before_the_messages_are_checked_against_them(store: Store) -> None:
    doc = valid_doc()
    messages = doc.pop("messages")
    doc["messages"] = messages  # after summaries and events now
    info = store.import_json(io.BytesIO(json.dumps(doc).encode()))  # type: ignore[arg-type]
    assert store.list_summaries(info.id)[0].covers_seq == 3
    doc["summaries"][0]["covers_seq"] = 99
    with pytest.raises(ImportValidationError, match=r"summaries\[0\].covers_seq: 99 points at"):
        store.import_json(io.BytesIO(json.dumps(doc).encode()))  # type: ignore[arg-type]


def test_a_write_that_fails_halfway_leaves_nothing(
    seeded: Store, db_counts, monkeypatch: pytest.MonkeyPatch
) -> None:
    written: list[int] = []
    insert = queries.insert_messages

    def fail_on_the_second_batch(conn: Any, rows: list[dict[str, Any]]) -> None:
        if written:
            raise store_module.StoreError("disk full")
        written.append(len(rows))
        insert(conn, rows)

    monkeypatch.setattr(transfer, "insert_messages", fail_on_the_second_batch)
    before = db_counts(seeded)
    with pytest.raises(store_module.StoreError, match="disk full"):
        seeded.import_json(io.BytesIO(many_messages(3 * transfer._WRITE_BATCH)))  # type: ignore[arg-type]
    assert written == [transfer._WRITE_BATCH]  # one batch went in, then the rollback
    assert db_counts(seeded) == before


# --------------------------------------------------------------------------------------------
# Resuming a large imported conversation (no summary): bounded, and the old fact is recalled
# --------------------------------------------------------------------------------------------


def test_a_large_imported_conversation_resumes_bounded_and_recalls(fake, store: Store) -> None:
    n = 20_000
    data = many_messages(n, first=b"Hi, my name is Sam.")
    data = data.replace(b'"title":"Big"', b'"title":"Big","settings":{"max_tokens":600}')
    cid = store.import_json(io.BytesIO(data)).id  # type: ignore[arg-type]
    model = OpenAIChat("gpt-4o-mini", api_key="k", base_url=fake.url, max_retries=0)
    bot = ChatMemory.resume(store, cid, model=model, settings=Settings(), background=False)
    assert bot.max_tokens == 600 and bot.current_summary is None
    assert 0 < bot.message_count <= 2 * 600 // 4 + 1  # two budgets of messages at most
    seqs = [m.seq for m in bot.memory.messages]
    assert seqs == list(range(n - len(seqs) + 1, n + 1))  # the newest, none missing
    assert bot.ask("What is my name?") == "Your name is Sam."
    assert [r.seq for r in bot.last_context.recalled][:1] == [1]
    # the fold after that turn reads the oldest unfolded messages from the store (at most
    # FOLD_READ_LIMIT) and covers exactly those: a summary never claims what it did not read
    summary = bot.current_summary
    assert summary is not None and summary.covers_seq == FOLD_READ_LIMIT
    assert "The user's name is Sam." in summary.text
    stored = store.list_summaries(cid)[-1]
    assert stored.covers_seq == summary.covers_seq
    assert stored.input_seqs == frozenset(range(1, FOLD_READ_LIMIT + 1))
    held = [m.seq for m in bot.memory.messages]
    bot.ask("Tell me about the weather.")  # the next fold goes on from there
    assert bot.current_summary.covers_seq == 2 * FOLD_READ_LIMIT
    assert [m.seq for m in bot.memory.messages][: len(held)] == held  # the tail stays held
    summary = bot.current_summary
    bot.close()
    again = ChatMemory.resume(store, cid, model=model, settings=Settings(), background=False)
    assert again.current_summary is not None
    assert (again.summary, again.current_summary.covers_seq) == (summary.text, summary.covers_seq)
    resumed = [m.seq for m in again.memory.messages]
    assert 0 < len(resumed) <= 2 * 600 // 4 + 1
    assert resumed == list(range(n + 5 - len(resumed), n + 5))  # the newest, none missing
    assert again.ask("What is my name?") == "Your name is Sam."
    again.close()


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


def _outcome(check: Callable[[], tuple[dict[str, Any], list[Any]]]) -> object:
    try:
        return check()
    except ImportValidationError:
        return "refused"


def _parsed(text: str) -> tuple[dict[str, Any], list[Any]]:
    valid = validate.validate_import(validate.parse_import(text))
    return valid.conversation, list(valid.rows())


def _streamed(text: str) -> tuple[dict[str, Any], list[Any]]:
    with stream.import_source(text) as source:
        plan = stream.check_import(source)
        return plan.conversation, list(stream.import_rows(source, plan))


@FUZZ
@given(field=st.sampled_from(FIELDS), value=json_values, delete=st.booleans())
def test_fuzz_streamed_and_parsed_agree(
    field: tuple[Any, ...], value: object, delete: bool
) -> None:
    """The stream accepts what the all-at-once reading accepts, with the same rows."""
    text = json.dumps(_replace(valid_doc(), field, value, delete))
    assert _outcome(lambda: _streamed(text)) == _outcome(lambda: _parsed(text))
