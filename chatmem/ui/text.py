"""Text helpers for the UI: safe markdown and short human formats (no Streamlit import)."""

from __future__ import annotations

import bisect
import re
import string
import textwrap
import time

_PUNCT = frozenset(string.punctuation)  # what a backslash can escape in markdown
# A fence opener at a line start: up to three spaces, then ``` or ~~~ (or longer), then an info
# string (a backtick fence's info string has no backtick).
_FENCE_RE = re.compile(r" {0,3}(`{3,}|~{3,})([^\n]*)")
# What GitHub-flavoured markdown turns into a link by itself (http, https, ftp, www.), also
# with the scheme's punctuation backslash-escaped (which markdown would undo first).
_BARE_URL = r"(?P<scheme>(?:https?|ftp)\\?:\\?/\\?/|www\\?\.)(?P<rest>[^\s<>`|]*)"
# An inline link or image: [text](target "title"); shown as text, the target as code.
_LINK = (
    r"(?<!\\)(?P<image>!?)\[(?P<label>[^\[\]\n`]{0,300})\]\(\s*<?"
    r"(?P<target>[^\s<>()`|]*(?:\([^\s<>()`|]*\)[^\s<>()`|]*)*)>?"
    r"(?:\s+(?:\"[^\"\n]*\"|'[^'\n]*'))?\s*\)"
)
_TARGET_RE = re.compile(rf"{_LINK}|(?P<url>{_BARE_URL})", re.IGNORECASE)
_TRAILING = ".,:;!?*_~'\""  # punctuation that ends a sentence, not a URL
# A task-list box (``- [ ] item``): kept, since it cannot start a link once every other
# bracket is escaped.
_TASK_RE = re.compile(r"^[ \t]*(?:[-+*]|\d{1,9}[.)])[ \t]+(\[)[ xX]\](?=[ \t])", re.MULTILINE)


def safe_markdown(text: str) -> str:
    """Markdown for untrusted user, model, summary or imported text.

    Streamlit already refuses raw HTML unless ``unsafe_allow_html`` is set (and we never set
    it for this text). Outside code this also keeps dollar amounts from turning into LaTeX and
    colons from turning into colour or icon directives, and leaves no live link: a markdown
    link or image ``[text](url)`` shows as ``text (`url`)``, a bare ``https://`` or ``www.``
    address shows as inline code, and ``[``, ``<``, ``&`` and stray backticks are escaped (no
    reference link, autolink, HTML tag or character reference can form). Code is left exactly
    as written; where it is unclear whether text is code, it is treated as text.
    """
    # Read the text the way st.markdown will: Streamlit dedents and strips the body first
    # (which can make an indented first line a fence, and so move every fence after it).
    text = textwrap.dedent(text.replace("\r\n", "\n").replace("\r", "\n")).strip()
    pieces = _split_code(text)
    # A fence on the first line is only a fence at a line start: keep it there even when
    # the caller puts this text after other words ("**Open now:** ...").
    out = ["\n"] if pieces and pieces[0][0] and _FENCE_RE.match(pieces[0][1]) else []
    for is_code, piece in pieces:
        rendered = piece if is_code else _neutral(piece)
        if out and out[-1].endswith("`") and rendered.startswith("`"):
            out.append("\u200b")  # keep two code spans from merging into one backtick run
        out.append(rendered)
    return "".join(out)


def _split_code(text: str) -> list[tuple[bool, str]]:
    """``text`` as (is_code, piece) pairs, code as CommonMark would read it, conservatively.

    Code is a fenced block (opened at a line start) or an inline code span on one line with
    no ``|`` in it (a table cell boundary). Anything else is text, so text never hides
    inside something taken for code.
    """
    pieces: list[tuple[bool, str]] = []
    buffer: list[str] = []
    spans = _Spans(text)

    def code(piece: str) -> None:
        if buffer:
            pieces.append((False, "".join(buffer)))
            buffer.clear()
        pieces.append((True, piece))

    i, n = 0, len(text)
    while i < n:
        if i == 0 or text[i - 1] == "\n":
            fence = _FENCE_RE.match(text, i)
            if fence and not (fence.group(1)[0] == "`" and "`" in fence.group(2)):
                mark = fence.group(1)
                closing = re.compile(rf"^ {{0,3}}{re.escape(mark[0])}{{{len(mark)},}}[ \t]*$", re.M)
                found = closing.search(text, fence.end() + 1) if fence.end() < n else None
                stop = found.end() if found else n
                code(text[i:stop])
                i = stop
                continue
        special = _SPECIAL_RE.search(text, i)
        j = special.start() if special else n
        if j > i:  # plain text up to the next backtick, backslash or line end
            buffer.append(text[i:j])
            i = j
            continue
        char = text[i]
        if char == "\\" and i + 1 < n and text[i + 1] in _PUNCT:
            buffer.append(text[i : i + 2])
            i += 2
        elif char == "`":
            run = len(_RUN_RE.match(text, i).group())  # type: ignore[union-attr]
            close = spans.closing(i + run, run)
            if close is not None:
                code(text[i : close + run])
                i = close + run
            else:
                buffer.append(text[i : i + run])
                i += run
        else:
            buffer.append(char)
            i += 1
    if buffer:
        pieces.append((False, "".join(buffer)))
    return pieces


_SPECIAL_RE = re.compile(r"[`\\\n]")
_RUN_RE = re.compile(r"`+")


class _Spans:
    """Finds where inline code spans close: every backtick run, line end and ``|`` of the text
    is listed once, so each lookup is a binary search (no quadratic scans on long lines)."""

    def __init__(self, text: str) -> None:
        self.ends = [m.start() for m in re.finditer("\n", text)] + [len(text)]
        self.bars = [m.start() for m in re.finditer(r"\|", text)]
        self.runs: dict[int, list[int]] = {}  # run length -> where such runs start
        for m in _RUN_RE.finditer(text):
            self.runs.setdefault(m.end() - m.start(), []).append(m.start())

    def closing(self, start: int, run: int) -> int | None:
        """Where a backtick run of exactly ``run`` closes a span opened before ``start``: on
        the same line, with no ``|`` before it (a table would split the cell there)."""
        limit = self.ends[bisect.bisect_left(self.ends, start)]
        bar = bisect.bisect_left(self.bars, start)
        if bar < len(self.bars):
            limit = min(limit, self.bars[bar])
        starts = self.runs.get(run, [])
        k = bisect.bisect_left(starts, start)
        return starts[k] if k < len(starts) and starts[k] < limit else None


def _neutral(text: str) -> str:
    """Text outside code with no link, autolink, image, HTML or LaTeX left in it."""
    boxes = {m.start(1) for m in _TASK_RE.finditer(text)}
    out: list[str] = []
    pos = 0
    for match in _TARGET_RE.finditer(text):
        start, end = match.span()
        if match.group("url"):
            # sentence punctuation after an address is not part of it (nor is an unbalanced
            # closing parenthesis); the scheme or www. itself always is, so it never links
            rest = match.group("rest")
            kept = rest.rstrip(_TRAILING)
            while kept.endswith(")") and kept.count(")") > kept.count("("):
                kept = kept[:-1].rstrip(_TRAILING)
            kept = match.group("scheme") + kept
            end = start + len(kept)
            out.append(_escape(text, pos, start, boxes))
            out.append(_code(kept))
        else:
            out.append(_escape(text, pos, start, boxes))
            label = match.group("label").strip()
            target = match.group("target")
            shown = _neutral(label) if label else ""
            if match.group("image"):
                where = f" (image: {_code(target)})" if target else " (image)"
                out.append((shown or "image") + where)
            elif not target:
                out.append(shown)
            elif not shown or _unescape(label) == _unescape(target):
                out.append(_code(target))
            else:
                out.append(f"{shown} ({_code(target)})")
        pos = end
    out.append(_escape(text, pos, len(text), boxes))
    return "".join(out)


def _unescape(text: str) -> str:
    return re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", text)


def _code(url: str) -> str:
    """A link target as inline code (never a link): its text, with markdown escapes undone."""
    return f"`{_unescape(url)}`"


def _escape(text: str, start: int, stop: int, boxes: set[int]) -> str:
    """``text[start:stop]`` (outside code) with every character that could start a link,
    autolink, HTML, character reference, code span, LaTeX or directive escaped."""

    def one(match: re.Match[str]) -> str:
        found = match.group()
        if found[0] == "\\":  # an escape (or a hard line break) already, or a lone backslash
            return found if len(found) == 2 else "\\\\"
        if found == "[" and match.start() in boxes:
            return found
        return "\\" + found

    out: list[str] = []
    pos = start
    for match in _ESCAPE_RE.finditer(text, start, stop):
        out.append(text[pos : match.start()])
        out.append(one(match))
        pos = match.end()
    out.append(text[pos:stop])
    return "".join(out)


# Outside code: an escape already there (kept) or a lone backslash (escaped itself); ``[``
# (links, images, references), ``<`` (autolinks, HTML), ``&`` (character references), stray
# backticks and ``$`` (LaTeX); and a colon that would start one of Streamlit's ``:red[...]``
# or ``:material/icon:`` directives.
_ESCAPE_RE = re.compile(r"\\[!-/:-@\[-`{-~\n]?|[\[<&`$]|:(?=[a-z\-]+(?:\[|/))", re.IGNORECASE)


# While a reply streams, each chunk is escaped on its own, so nothing may depend on where chunks
# split: an invisible zero-width space after ``]`` (no ``](`` or ``]:``: no link, image or
# reference), ``<`` (no autolink), ``&`` (no character reference), ``:`` (no ``https://``, no
# directive) and ``w`` (no ``www.``). The finished reply is drawn again with safe_markdown.
_STREAM_TABLE = str.maketrans(
    {"$": "\\$", **{char: char + "\u200b" for char in "]<&:wW"}},
)


def stream_safe(chunk: str) -> str:
    """A cheap per-chunk version of :func:`safe_markdown` for text while it streams: no LaTeX
    and no live link, however the text is cut into chunks."""
    return chunk.translate(_STREAM_TABLE)


def first_upper(sentence: str) -> str:
    """The sentence with its first letter capitalised (error messages may start lowercase)."""
    return sentence[:1].upper() + sentence[1:] if sentence else sentence


def clock(at: float | None) -> str:
    """A local wall-clock time, e.g. ``14:02:11``; ``—`` for none."""
    if not at:
        return "—"
    return time.strftime("%H:%M:%S", time.localtime(at))


def ago(at: float | None, now: float | None = None) -> str:
    """How long ago, in words: ``just now``, ``12 s ago``, ``3 min ago``, ``2 h ago``."""
    if not at:
        return "never"
    seconds = max(0.0, (now if now is not None else time.time()) - at)
    if seconds < 5:
        return "just now"
    if seconds < 60:
        return f"{seconds:.0f} s ago"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.0f} h ago"


def preview(text: str, limit: int = 120) -> str:
    """One line of at most ``limit`` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
