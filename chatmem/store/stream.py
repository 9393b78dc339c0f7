"""Reading an import file as a stream (ijson): one entry at a time, refused at the first
limit crossed, checked whole before anything is written.

:func:`import_source` opens what was uploaded (bytes, str, or a binary file object such as
Streamlit's ``UploadedFile``), :func:`check_import` reads and checks it (keeping the checked
rows while they are small) and :func:`import_rows` hands the rows to the writing transaction,
reading the file a second time if they were not kept. The field checks are
:mod:`chatmem.store.validate`'s, shared with the path for an already-parsed document.

ijson's C backend gets two things wrong, so the bytes are checked before it sees them and such
a file is read with ijson's pure-Python backend instead, as the standard library would: a lone
surrogate escape (``"\\ud800"``, which it reads as ``?``), and an integer of more digits than
Python converts (which can crash it).
"""

from __future__ import annotations

import codecs
import contextlib
import io
import json
import re
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from types import ModuleType
from typing import IO, Any, Final, TypeAlias

import ijson

from chatmem.errors import ImportValidationError
from chatmem.store.records import (
    type_name,
)
from chatmem.store.validate import (
    _LISTS,
    _TOP_FIELDS,
    _TOP_OPTIONAL,
    MAX_ENTRY_VALUES,
    MAX_IMPORT_BYTES,
    MAX_IMPORT_DEPTH,
    _join,
    _too_many,
    _Validator,
)

ImportData: TypeAlias = bytes | bytearray | memoryview | str | IO[bytes]
_CHUNK: Final = 64 * 1024
_KEEP_ROWS_BYTES: Final = 32 * 1024 * 1024  # rows kept from the check (estimated) at most
_ROW_BYTES: Final = 400  # an estimate of one row's dict
_VALUE_BYTES: Final = 64  # and per JSON value in the entry (the text's length added)
_SPOOL_IN_MEMORY: Final = 16 * 1024 * 1024  # a non-seekable file is copied; larger goes to disk
_BOM: Final = codecs.BOM_UTF8


@dataclass(frozen=True)
class ImportPlan:
    """What :func:`check_import` learned: the conversation's fields and the entry counts,
    and the rows themselves if they were small enough to keep (``_KEEP_ROWS_BYTES``)."""

    conversation: dict[str, Any]
    messages: int
    summaries: int
    events: int
    backend: str  # the ijson backend that reads the file
    embeddings: int = 0
    rows: list[tuple[str, dict[str, Any]]] | None = None


# --------------------------------------------------------------------------------------------
# The file as a stream
# --------------------------------------------------------------------------------------------

_FAST_BACKEND: Final = ijson.backend  # yajl2_c where its wheel exists
_EXACT_BACKEND: Final = "python"
# One JSON escape: \uXXXX (a code unit) or a backslash and any one character. Scanning escapes
# from an escape boundary pairs each backslash correctly ("\\ud800" is not an escape of d800).
_ESCAPE: Final = re.compile(rb"\\(?:u([0-9A-Fa-f]{4})|.)", re.DOTALL)
_LONGEST_ESCAPES: Final = 12  # a surrogate pair, \uD83D\uDE00
_CONTINUATION: Final = bytes(range(0x80, 0xC0))  # UTF-8 bytes that do not start a character
_SYNTAX_PREFIXES: Final = ("lexical error: ", "parse error: ")
_CONSTANTS: Final = (b"NaN", b"Infinity", b"-Infinity")
_MAX_DIGITS: Final = sys.get_int_max_str_digits()  # 4,300 unless changed; 0: no limit
_DIGIT_MARKS: Final = bytes(1 if 0x30 <= byte <= 0x39 else 0 for byte in range(256))
_LONG_DIGIT_RUN: Final = b"\x01" * _MAX_DIGITS


def is_serialized(data: object) -> bool:
    """Whether ``data`` is a file to read (bytes, str, a file object), not a parsed document."""
    return isinstance(data, bytes | bytearray | memoryview | str) or callable(
        getattr(data, "read", None)
    )


@dataclass
class ImportSource:
    """A seekable binary file holding the import: ``size`` bytes from ``start``, after the
    byte order mark (``bom`` bytes) if the file has one."""

    file: IO[bytes]
    start: int
    size: int
    bom: int

    def rewind(self) -> None:
        self.file.seek(self.start)


def _too_large(size: int | None) -> ImportValidationError:
    got = f"{size:,} bytes" if size is not None else f"more than {MAX_IMPORT_BYTES:,} bytes"
    return ImportValidationError("", f"file too large ({got}; the limit is {MAX_IMPORT_BYTES:,})")


def _not_binary() -> ImportValidationError:
    return ImportValidationError("", "expected a binary file (opened with 'rb'), got a text file")


@contextlib.contextmanager
def import_source(data: ImportData) -> Iterator[ImportSource]:
    """``data`` as an :class:`ImportSource`, checked against ``MAX_IMPORT_BYTES``.

    Bytes and str are read in place, a seekable file from where it stands; any other file is
    first copied to a temporary file (in memory up to 16 MB), counting, and refused as soon as
    it passes the limit.
    """
    with contextlib.ExitStack() as stack:
        if isinstance(data, str):
            data = data.encode("utf-8", "surrogatepass")  # a lone surrogate: not valid UTF-8
        if isinstance(data, bytes | bytearray | memoryview):
            file: IO[bytes] = io.BytesIO(data)
        else:
            file = data
            if not _seekable(file):
                file = stack.enter_context(_spooled(file))
        start = file.tell()
        size = file.seek(0, io.SEEK_END) - start
        if size > MAX_IMPORT_BYTES:
            raise _too_large(size)
        file.seek(start)
        head = file.read(len(_BOM))
        if isinstance(head, str):
            raise _not_binary()
        bom = len(_BOM) if head == _BOM else 0
        source = ImportSource(file, start + bom, size - bom, bom)
        source.rewind()
        yield source


def _seekable(file: IO[bytes]) -> bool:
    try:
        return bool(file.seekable())
    except (AttributeError, OSError, ValueError):
        return False


@contextlib.contextmanager
def _spooled(file: IO[bytes]) -> Iterator[IO[bytes]]:
    with tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY) as spool:
        copied = 0
        while chunk := file.read(_CHUNK):
            if isinstance(chunk, str):
                raise _not_binary()
            copied += len(chunk)
            if copied > MAX_IMPORT_BYTES:
                raise _too_large(None)
            spool.write(chunk)
        spool.seek(0)
        yield spool  # type: ignore[misc]


class _NeedsExactReading(Exception):
    """Something the fast backend gets wrong: a \\u escape of half a surrogate pair (read as
    ``?``), or a run of more digits than Python turns into an int (the C backend then fails
    in a way that can bring the process down)."""


class _Reader:
    """The bytes of the file as the parser reads them, checked on the way.

    UTF-8 is checked as the bytes arrive (an error names the byte and its offset, as the
    all-at-once reading did). With ``scan``, before the parser sees them, every \\u escape is
    checked to be a whole character and no run of digits may pass Python's limit for an int
    (``_NeedsExactReading`` otherwise, strings included: rare, and then only slower). The line
    and column
    of what has been handed out are kept, for syntax errors: with ``slow_from`` the bytes from
    that offset on are handed out one at a time, so a parser error falls on its byte.
    """

    def __init__(self, source: ImportSource, *, scan: bool, slow_from: int | None = None) -> None:
        self._file = source.file
        self._left = source.size
        self._offset = source.bom  # of the next byte read from the file, from its very start
        self._scan = scan
        self._digits = 0  # digits at the end of what was read so far (a run may span reads)
        self._slow_from = slow_from
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self._held = b""  # checked but not handed out: may be the start of an escape
        self._buf = b""
        self._pos = 0
        self._done = False
        self.served = 0  # bytes handed out (the file's offset less ``bom``)
        self.line, self.column = 1, 1  # of the next byte to hand out
        self.chunk = 0  # offset of the last chunk handed out
        self.last = (1, 1)  # line and column of its first byte
        self.ended = False  # the parser has read to the end

    def read(self, size: int = -1) -> bytes:
        if size == 0:
            return b""  # ijson asks for nothing first, to see bytes from str
        while self._pos >= len(self._buf) and not self._done:
            self._fill()
        if self._pos >= len(self._buf):
            self.ended = True
            return b""
        size = _CHUNK if size is None or size < 0 else size
        if self._slow_from is not None and self.served + size > self._slow_from:
            size = max(1, self._slow_from - self.served)
        out = self._buf[self._pos : self._pos + size]
        self._pos += len(out)
        self.chunk = self.served
        self.served += len(out)
        self.last = (self.line, self.column)
        newlines = out.count(b"\n")
        if newlines:
            self.line += newlines
            self.column = 1
            out_tail = out[out.rfind(b"\n") + 1 :]
        else:
            out_tail = out
        self.column += len(out_tail.translate(None, _CONTINUATION))
        return out

    def _fill(self) -> None:
        raw = self._file.read(min(_CHUNK, self._left)) if self._left > 0 else b""
        if isinstance(raw, str):
            raise _not_binary()
        raw = bytes(raw)
        self._left -= len(raw)
        final = not raw or self._left <= 0
        pending = len(self._decoder.getstate()[0])
        try:
            self._decoder.decode(raw, final)
        except UnicodeDecodeError as exc:
            bad = bytes(exc.object[exc.start : exc.start + 1]).hex()
            offset = self._offset - pending + exc.start
            raise ImportValidationError(
                "", f"not valid UTF-8 (byte 0x{bad} at offset {offset})"
            ) from None
        self._offset += len(raw)
        if self._scan and _MAX_DIGITS:
            self._digits = _digit_run(raw, self._digits)
        data = self._held + raw if self._held else raw
        ready = _checked_escapes(data, final) if self._scan else len(data)
        self._held = data[ready:]
        self._buf, self._pos = data[:ready], 0
        self._done = final


def _digit_run(raw: bytes, carried: int) -> int:
    """The run of digits ``raw`` ends with (counting ``carried`` ones before it if it is all
    digits); raises _NeedsExactReading if any run in it reaches Python's int digit limit."""
    if not raw:
        return carried
    marks = raw.translate(_DIGIT_MARKS)  # 1 for a digit, 0 for anything else
    head = len(marks) - len(marks.lstrip(b"\x01"))
    if head == len(marks):
        if carried + head >= _MAX_DIGITS:
            raise _NeedsExactReading
        return carried + head
    if carried + head >= _MAX_DIGITS or _LONG_DIGIT_RUN in marks:
        raise _NeedsExactReading
    return len(marks) - len(marks.rstrip(b"\x01"))


def _checked_escapes(data: bytes, final: bool) -> int:
    """How many bytes of ``data`` can be handed out: up to where an escape could be cut off
    (all of it when ``final``). Raises _NeedsExactReading at an unpaired surrogate escape."""
    limit = len(data) if final else len(data) - _LONGEST_ESCAPES
    if limit <= 0:
        return 0
    end = 0
    pair_end = -1
    for match in _ESCAPE.finditer(data):
        if match.start() < pair_end:
            continue  # the second half of a pair, checked with the first
        if match.start() >= limit:
            break
        end = match.end()
        digits = match.group(1)
        if digits is None:
            continue
        unit = int(digits, 16)
        if 0xD800 <= unit <= 0xDBFF:
            low = _ESCAPE.match(data, match.end())
            if low is None or low.group(1) is None or not 0xDC00 <= int(low.group(1), 16) <= 0xDFFF:
                raise _NeedsExactReading
            pair_end = end = low.end()
        elif 0xDC00 <= unit <= 0xDFFF:
            raise _NeedsExactReading
    return max(end, limit)


class _SyntaxFailure(Exception):
    """The parser refused the bytes: ``reason`` in its words, in the chunk handed out at
    offset ``chunk`` (or at the end of the file, ``ended``)."""

    def __init__(self, reason: str, chunk: int, ended: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.chunk = chunk
        self.ended = ended


# What ijson's backends raise for bytes that are not JSON: their JSONError; the standard
# library's errors (JSONDecodeError, UnicodeDecodeError, the ValueError of an integer with more
# digits than Python converts), which the C backend wraps in a SystemError.
_PARSER_ERRORS: Final = (ijson.JSONError, ValueError, SystemError)


def _reason(exc: BaseException) -> str:
    """A parser's error as a short phrase (without its own position or excerpt)."""
    cause = exc.__cause__ or exc.__context__
    if isinstance(cause, ValueError) and not isinstance(exc, ValueError):
        exc = cause  # the digit limit, under the C backend's SystemError or Python's symbol
    if isinstance(exc, json.JSONDecodeError):
        return exc.msg
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else type(exc).__name__
    for prefix in _SYNTAX_PREFIXES:
        text = text.removeprefix(prefix)
    text = re.sub(r" at \d+$", "", text)  # the pure-Python backend's character offset
    text = text.split("; use sys.", 1)[0]  # Python's advice on its integer digit limit
    text = text if len(text) <= 120 else f"{text[:117]}..."
    return text.rstrip(".") or "unreadable"


def _events(
    source: ImportSource, backend: str, slow_from: int | None = None
) -> tuple[_Reader, Iterator[tuple[str, Any]]]:
    """The file's reader and ijson's events for it, from the start."""
    source.rewind()
    reader = _Reader(source, scan=backend != _EXACT_BACKEND, slow_from=slow_from)
    module: ModuleType = ijson.get_backend(backend)
    # Numbers as the standard library reads them: int, or float (from ijson's Decimal).
    return reader, module.basic_parse(reader, buf_size=_CHUNK)


_SCALARS: Final = frozenset({"string", "number", "boolean", "null"})


class _StreamValidator(_Validator):
    """Validates the events of a streamed file with the checks of :class:`_Validator`.

    :meth:`rows` yields each entry's row as it is checked; afterwards ``conversation_row``
    and ``counts`` hold what the file said. Only the entry being read is in memory, plus the
    message seqs (for duplicates and ``covers_seq``).
    """

    def __init__(self, events: Iterator[tuple[str, Any]]) -> None:
        self._it = events
        self._values = 0
        self._entry = ""
        self.conversation_row: dict[str, Any] = {}
        self.counts = {"messages": 0, "summaries": 0, "events": 0, "embeddings": 0}

    # -- building one value ------------------------------------------------------------------
    @property
    def entry_values(self) -> int:
        """JSON values in the entry read last."""
        return self._values

    def _tally(self, values: int) -> None:
        """Count ``values`` more JSON values in the entry being read (checked as each list or
        object closes: an entry's size is bounded by the file's before that)."""
        self._values += values
        if self._values > MAX_ENTRY_VALUES:
            self.fail(
                self._entry or "top level",
                f"too large (more than {MAX_ENTRY_VALUES:,} values in one entry)",
            )

    def _value(self, event: str, value: Any, where: str, depth: int) -> Any:
        """The whole value that starts with ``event`` (at ``where``, nesting level ``depth``)."""
        if event in _SCALARS:
            self._tally(1)
            return float(value) if type(value) is Decimal else value
        if depth > MAX_IMPORT_DEPTH:
            self.fail(
                where if len(where) <= 80 else f"{where[:77]}...",
                f"nested too deeply (more than {MAX_IMPORT_DEPTH} levels)",
            )
        it = self._it
        if event == "start_array":
            items: list[Any] = []
            for event, value in it:
                if event == "end_array":
                    break
                if event in _SCALARS:
                    items.append(float(value) if type(value) is Decimal else value)
                else:
                    items.append(self._value(event, value, f"{where}[{len(items)}]", depth + 1))
            self._tally(len(items) + 1)
            return items
        obj: dict[str, Any] = {}
        for event, key in it:
            if event == "end_map":
                break
            if key in obj:
                self.fail(where, f"not valid JSON (duplicate key {key!r} in an object)")
            event, value = next(it)
            if event in _SCALARS:
                obj[key] = float(value) if type(value) is Decimal else value
            else:
                obj[key] = self._value(event, value, _join(where, key), depth + 1)
        self._tally(len(obj) + 1)
        return obj

    # -- the document ------------------------------------------------------------------------
    def rows(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """("message" | "summary" | "event" | "embedding", row) for each entry, checked, in
        file order."""
        it = self._it
        event, value = next(it)
        if event != "start_map":
            got = "a list" if event == "start_array" else type_name(value)
            self.fail("", f"expected a JSON object at the top level, got {got}")
        seen: set[str] = set()
        seqs: dict[int, int] = {}
        waiting: list[tuple[str, int]] = []  # summaries read before the messages
        vectors_waiting: list[tuple[str, int]] = []  # embeddings read before the messages
        for event, key in it:
            if event == "end_map":
                break
            if key in seen:
                self.fail("", f"not valid JSON (duplicate key {key!r} in an object)")
            seen.add(key)
            if key not in _TOP_FIELDS and key not in _TOP_OPTIONAL:
                self.fail(_join("", key), "unknown field")
            event, value = next(it)
            if key not in _LISTS:
                self._start(key)
                value = self._value(event, value, key, 2)
                if key == "format":
                    self.format(value)
                elif key == "version":
                    self.version(value)
                elif key == "exported_at":
                    self.time(value, "", "exported_at")
                else:
                    self.conversation_row = self.conversation(value)
                continue
            if event != "start_array":
                self._start(key)
                got = type_name(self._value(event, value, key, 2))
                self.fail(key, f"expected a list, got {got}")
            limit = _LISTS[key]
            known = "messages" in seen
            index = 0
            for event, value in it:
                if event == "end_array":
                    break
                if index >= limit:
                    self.fail(key, _too_many(limit))
                at = f"{key}[{index}]"
                self._start(at)
                raw = self._value(event, value, at, 3)
                if key == "messages":
                    yield "message", self.message(index, at, raw, seqs)
                elif key == "summaries":
                    row = self.summary(at, raw, seqs if known else None)
                    if not known:
                        waiting.append((at, row["covers_seq"]))
                    yield "summary", row
                elif key == "embeddings":
                    row = self.embedding(at, raw, seqs if known else None)
                    if not known:
                        vectors_waiting.append((at, row["seq"]))
                    yield "embedding", row
                else:
                    yield "event", self.event(at, raw)
                index += 1
            self.counts[key] = index
        for _ in it:  # to the end: nothing but whitespace may follow
            pass
        if "format" not in seen:
            self.fail("format", "missing: this is not a chatmem conversation export")
        for key in _TOP_FIELDS:
            if key not in seen:
                self.fail(key, "missing required field")
        for at, covers in waiting:
            self.covers(at, covers, seqs)
        for at, seq in vectors_waiting:
            self.known(at, seq, seqs)

    def _start(self, where: str) -> None:
        """A new entry (or top-level field) begins at ``where``: its values are counted."""
        self._values = 0
        self._entry = where


class _Pass:
    """One reading of the file with ``backend``: its rows, checked; parser errors become
    ``_SyntaxFailure`` (with where the reader was)."""

    def __init__(self, source: ImportSource, backend: str) -> None:
        self.reader, events = _events(source, backend)
        self.validator = _StreamValidator(events)

    def rows(self) -> Iterator[tuple[str, dict[str, Any]]]:
        try:
            yield from self.validator.rows()
        except _PARSER_ERRORS as exc:
            raise _SyntaxFailure(_reason(exc), self.reader.chunk, self.reader.ended) from None


def check_import(source: ImportSource) -> ImportPlan:
    """Read and check the whole file (pass one). Raises ImportValidationError at the first
    problem. The rows are kept while they take less than ``_KEEP_ROWS_BYTES`` (most files:
    then they are not read twice); past that only the conversation's fields and the counts."""
    backend = _FAST_BACKEND
    while True:
        reading = _Pass(source, backend)
        kept: list[tuple[str, dict[str, Any]]] | None = []
        size = 0
        try:
            for kind, row in reading.rows():
                if kept is not None:
                    text = row.get("content") or row.get("text") or ""
                    size += _ROW_BYTES + _VALUE_BYTES * reading.validator.entry_values + len(text)
                    kept.append((kind, row))
                    if size > _KEEP_ROWS_BYTES:
                        kept = None
        except _NeedsExactReading:
            backend = _EXACT_BACKEND  # read it again with the backend that reads it right
            continue
        except _SyntaxFailure as failure:
            raise _located(source, backend, failure) from None
        found = reading.validator
        return ImportPlan(found.conversation_row, backend=backend, rows=kept, **found.counts)


def import_rows(source: ImportSource, plan: ImportPlan) -> Iterator[tuple[str, dict[str, Any]]]:
    """The rows of a file :func:`check_import` accepted, in file order: ``("message" |
    "summary" | "event", row)``; kept from the check, or read again (pass two)."""
    if plan.rows is not None:
        yield from plan.rows
    else:
        yield from _Pass(source, plan.backend).rows()


def _located(source: ImportSource, backend: str, failure: _SyntaxFailure) -> Exception:
    """The syntax error as ImportValidationError, with its line and column: the file is read
    again up to it, the failing stretch one byte at a time."""
    reader, events = _events(source, backend, slow_from=failure.chunk)
    try:
        for _ in events:
            pass
    except _PARSER_ERRORS as exc:
        line, column = (reader.line, reader.column) if reader.ended else reader.last
        offset = reader.served if reader.ended else reader.served - 1
        name = _constant_at(source, offset)
        if name is not None:
            return ImportValidationError(
                "", f"not valid JSON ({name} is not valid JSON, at line {line}, column {column})"
            )
        where = f"at line {line}, column {column}"
        return ImportValidationError("", f"not JSON ({_reason(exc)} {where})")
    except (ImportValidationError, _NeedsExactReading):
        pass
    return ImportValidationError("", f"not JSON ({failure.reason})")


def _constant_at(source: ImportSource, offset: int) -> str | None:
    """``NaN``, ``Infinity`` or ``-Infinity`` if the file has one at ``offset`` (or, for
    ``-Infinity``, one byte before: the parser stops at the ``I``)."""
    first = max(0, offset - 1)
    source.file.seek(source.start + first)
    near = source.file.read(offset - first + len(b"-Infinity"))
    if not isinstance(near, bytes):
        return None
    if near.startswith(b"-Infinity") and offset > first:
        return "-Infinity"
    here = near[offset - first :]
    for name in _CONSTANTS:
        if here.startswith(name):
            return name.decode()
    return None
