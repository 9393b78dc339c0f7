"""Plain-text helpers every layer may use: query terms, snippets, clean text, titles.

Imports nothing from chatmem, so the store and recall can both use it without importing
each other.
"""

from __future__ import annotations

import re

# Words too common to say anything about relevance.
_STOPWORDS_TEXT = """
a about above after again all am an and any are as at be because been before being below
between both but by can could did do does doing down during each few for from further
had has have having he her here hers herself him himself his how i if in into is it its
itself just me more most my myself no nor not now of off on once only or other our ours
ourselves out over own same she should so some such than that the their theirs them
themselves then there these they this those through to too under until up very was we
were what when where which while who whom why will with would you your yours yourself
yourselves tell know like get got also ok okay yes yeah hi hey hello thanks thank
"""
STOPWORDS = frozenset(_STOPWORDS_TEXT.split())

SNIPPET_CHARS = 1200
MAX_TERMS = 8
# Only this much of a query is read for its terms: the work per query stays bounded however
# long the message (its telling words are near the start far more often than not).
MAX_QUERY_CHARS = 50_000
_WORD_RE = re.compile(r"\w+")
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def query_terms(text: str, limit: int = MAX_TERMS) -> list[str]:
    """The distinct content words of ``text``, lower-cased, in order of appearance.

    With more than ``limit`` of them, the longest are kept: long words tend to be the
    rare, telling ones, and each extra term makes the search score more messages.
    Linear in the length of ``text`` (a dict keeps the order and finds repeats), and only
    the first :data:`MAX_QUERY_CHARS` characters are read.
    """
    seen: dict[str, None] = {}
    for word in _WORD_RE.findall(text[:MAX_QUERY_CHARS].lower()):
        if len(word) >= 2 and word not in STOPWORDS:
            seen[word] = None
    words = list(seen)
    if len(words) > limit:
        keep = set(sorted(words, key=len, reverse=True)[:limit])
        words = [w for w in words if w in keep][:limit]
    return words


def snippet(speaker: str, text: str) -> str:
    """``speaker: text`` on one line, cut at a word boundary past :data:`SNIPPET_CHARS`."""
    text = " ".join(text.split())
    if len(text) > SNIPPET_CHARS:
        text = text[:SNIPPET_CHARS].rsplit(" ", 1)[0] + " …"
    return f"{speaker}: {text}"


def clean_text(text: str) -> str:
    """Make any Python string encodable: lone surrogates become U+FFFD."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", text)


def clean_message(text: str) -> str:
    """Text every part of chatmem can count, store and show: no NUL, no lone surrogates."""
    return clean_text(text).replace("\x00", "\ufffd")


_SENTENCES = re.compile(r"(?<=[.!?])\s+|\n+")
_GREETING = re.compile(
    r"^(hi|hello|hey|hiya|howdy|greetings|good (morning|afternoon|evening)|dear \w+)\b"
    r"[\s,!.:-]*((there|all|everyone|folks|bot|assistant)\b)?[\s,!.:-]*",
    re.IGNORECASE,
)
_FILLER = re.compile(
    r"^(so|ok|okay|well|um|uh|right|also|please|pls|quick question)\b[\s,:-]*", re.I
)
_INTRO = re.compile(r"^(my name is|my name's|i am|i'm|this is|call me)\s+\S+[\s.!]*$", re.I)
_ASK = re.compile(
    r"^((can|could|would|will) you (please )?|please )?"
    r"(help me (to |with )?|tell me( about)? |explain |"
    r"i (want|need|would like|'d like) (you )?(to )?|i'm |i am )",
    re.IGNORECASE,
)


def _topic(sentence: str) -> str:
    """A sentence without its greeting, filler and request wording ("" if nothing is left
    or it only says who is writing)."""
    text = sentence.strip()
    for pattern in (_GREETING, _FILLER, _GREETING):
        text = pattern.sub("", text, count=1).strip()
    if not text or _INTRO.match(text):
        return ""
    asked = _ASK.sub("", text, count=1).strip()
    if asked != text and len(asked.split()) >= 2:
        text = asked.rstrip("?").rstrip()
    return text.rstrip(".!,;: ").strip()


def title_from(text: str, limit: int = 60) -> str:
    """A conversation title from its first message, by rule (no model call): the first
    sentence that says what the conversation is about, without greetings ("Hi there"),
    introductions ("My name is Sam") or request wording ("Can you help me"); the first line
    as it is when no sentence says more."""
    line = " ".join(text.split())
    for sentence in _SENTENCES.split(text):
        topic = " ".join(_topic(" ".join(sentence.split())).split())
        if len(topic.split()) >= 2:
            line = topic[0].upper() + topic[1:]
            break
    return line if len(line) <= limit else line[: limit - 1].rsplit(" ", 1)[0] + "…"
