"""Facts found by rules (no model): names, amounts, dates, places, decisions, addresses.

A fold keeps what the user said about themselves as short verbatim notes, one a line::

    - #3 user, name: my name is Sam

so a summary that a small model garbled (or that rules alone built) still carries them. Only
the user's messages are read: an assistant's reply may invent facts ("I'm Emily Thompson"),
and a fact a reply confirms was the user's first.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from chatmem.memory import Message

_MONTHS = (
    "January|February|March|April|June|July|August|September|October|November|December|"
    "Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec"
)
_WEEKDAYS = "Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday"
_DAY = r"\d{1,2}(?:st|nd|rd|th)?"
_NUM = r"\d[\d,.' ]*\d|\d"
_UNITS = (
    r"kids?|children|child|sons?|daughters?|years?|months?|weeks?|days?|hours?|minutes?|"
    r"km|kilometers?|kilometres?|miles?|kg|kilos?|lbs?|pounds?|people|persons?|guests?|rooms?|"
    r"bedrooms?|cats?|dogs?|pets?|nights?|percent|%|m2|sq ?m|square meters?|square feet|"
    r"euros?|eur|dollars?|usd|gbp|chf|yen|k"
)
_CAP = r"[A-Z][\w'’-]+"
_NOT_NAMES = {
    "a", "an", "the", "not", "so", "just", "very", "really", "here", "back", "fine", "good",
    "glad", "happy", "sorry", "sure", "ok", "okay", "thinking", "going", "looking", "trying",
    "also", "still", "from", "in", "at", "on", "new", "done", "ready", "tired", "excited",
}  # fmt: skip

# (kind, pattern, the group holding the fact's value or 0 for the whole match)
_RULES: list[tuple[str, re.Pattern[str], int]] = [
    ("name", re.compile(r"\bmy name(?:'s| is)\s+(" + _CAP + r"(?:\s" + _CAP + r")?)", re.I), 1),
    ("name", re.compile(r"\b(?:call me|I am|I'm|I’m|this is)\s+(" + _CAP + r")\b"), 1),
    ("email", re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+"), 0),
    ("link", re.compile(r"\bhttps?://\S+"), 0),
    ("phone", re.compile(r"(?<!\w)\+?\d[\d ()-]{7,}\d"), 0),
    ("amount", re.compile(r"[$€£]\s?(?:" + _NUM + r")(?:\s?(?:k|million|thousand|bn))?"), 0),
    ("amount", re.compile(r"\b(?:" + _NUM + r")\s?(?:" + _UNITS + r")\b", re.I), 0),
    (
        "date",
        re.compile(
            rf"\b(?:{_DAY}\s+(?:of\s+)?)?(?:{_MONTHS}|May(?=\s+\d))\b\.?(?:\s+{_DAY})?"
            r"(?:,?\s+\d{4})?"
            rf"|\b(?:in|on|by|until|since|from|of|next|this|early|late|mid)\s+May\b"
        ),
        0,
    ),
    ("date", re.compile(rf"\b(?:{_WEEKDAYS})s?\b"), 0),
    ("date", re.compile(r"\b\d{4}-\d{2}-\d{2}\b|\b\d{1,2}/\d{1,2}(?:/\d{2,4})?\b"), 0),
    (
        "place",
        re.compile(
            r"\b(?:live in|living in|lives in|moving to|move to|moved to|based in|born in|"
            r"relocating to|trip to|travel(?:l)?ing to|flying to|going to|visiting|from)\s+"
            r"(" + _CAP + r"(?:\s" + _CAP + r"){0,2})"
        ),
        1,
    ),
    (
        "decision",
        re.compile(
            r"\b(?:we|I)(?:'ve| have)? decided\b[^.!?\n]*"
            r"|\b(?:I|we)(?:'ll| will) go with\b[^.!?\n]*"
            r"|\blet's\b[^.!?\n]*|\b(?:I|we)(?:'m| am|'re| are) going with\b[^.!?\n]*"
            r"|\b(?:I|we) (?:chose|picked|settled on)\b[^.!?\n]*",
            re.I,
        ),
        0,
    ),
    (
        "about",
        re.compile(
            r"\b(?:I work (?:as|at|for|in)|my job is|I'm an? (?=\w+(?:er|or|ist|ian|ant|ent)\b)"
            r"|I am an? (?=\w+(?:er|or|ist|ian|ant|ent)\b))[^.,!?\n]*",
            re.I,
        ),
        0,
    ),
    (
        "about",
        re.compile(
            r"\b(?:my|our) (?:dog|cat|pet|puppy|kitten|parrot|horse|hamster|rabbit|bird|fish|"
            r"wife|husband|partner|son|daughter|kids?|children|boss|sister|brother)\b[^.,!?\n]*"
            r"|\bI have (?:an? |\d+ |two |three )?(?:dog|cat|pet|parrot|horse|kids?|children)"
            r"[^.,!?\n]*",
            re.I,
        ),
        0,
    ),
]
_NOT_PLACES = re.compile(rf"^(?:{_MONTHS}|May|{_WEEKDAYS}|I|The|A|My)\b")
_SPEAKER_RE = re.compile(r"[^\w.-]+")
_CLAUSE_RE = re.compile(r"(?:[^.!?;\n]|[.!?](?=\S))+[.!?]*")  # "sam@example.com" is one
NOTE_WORDS = 16  # a note is at most this many words of the message, around the fact
NOTE_RE = re.compile(r"^- #(\d+) ([\w.-]+), ([a-z/]+): (.+)$")


@dataclass(frozen=True)
class Fact:
    """A fact a message states: its value (``Sam``, ``2000 euros``) and the words around it."""

    seq: int
    speaker: str
    kind: str
    value: str
    text: str  # verbatim words of the message holding the value

    @property
    def note(self) -> str:
        return f"- #{self.seq} {self.speaker}, {self.kind}: {self.text}"

    def kept_by(self, summary: str) -> bool:
        """True if ``summary`` still says this fact (its value, case and spacing aside)."""
        said = squash(summary)
        return all(squash(v) in said for v in self.value.split("; "))


def speaker(m: Message) -> str:
    """The message's speaker label: its name or role, as one word (no spaces, brackets, colons
    or line breaks)."""
    return _SPEAKER_RE.sub("_", (m.name or m.role).strip())[:64] or m.role


def squash(text: str) -> str:
    """Lower case, one space between words, no quotes: for finding text inside text."""
    return " ".join(text.lower().replace("’", "'").replace('"', " ").split())


def _clause_words(content: str, start: int, end: int) -> str:
    """The clause holding ``content[start:end]``, verbatim; when longer than NOTE_WORDS words,
    the NOTE_WORDS words around the value."""
    c0, c1 = start, end
    for clause in _CLAUSE_RE.finditer(content):
        if clause.start() <= start < clause.end():
            c0, c1 = clause.start(), max(clause.end(), end)
            break
    words = [w for w in re.finditer(r"\S+", content) if w.end() > c0 and w.start() < c1]
    if not words:
        return content[start:end]
    first = next(i for i, w in enumerate(words) if w.end() > start)
    last = max(i for i, w in enumerate(words) if w.start() < end)
    while last - first + 1 < NOTE_WORDS and (first > 0 or last < len(words) - 1):
        if last < len(words) - 1:
            last += 1
        if first > 0 and last - first + 1 < NOTE_WORDS:
            first -= 1
    a, b = max(words[first].start(), c0), min(words[last].end(), c1)
    return content[a:b].strip(" ,;:-")


def extract_facts(messages: Iterable[Message]) -> list[Fact]:
    """The facts the user's messages state, in order, one per clause (kinds merged)."""
    out: list[Fact] = []
    for m in messages:
        if m.role != "user":
            continue
        found: dict[str, tuple[list[str], list[str], int]] = {}
        for kind, pattern, group in _RULES:
            for match in pattern.finditer(m.content):
                value = match.group(group).strip(" ,.;:")
                if not value or not _plausible(kind, value) or _asked(m.content, match.end()):
                    continue
                text = _clause_words(m.content, match.start(group), match.end(group))
                kinds, values, _ = found.setdefault(text, ([], [], match.start()))
                if kind not in kinds:
                    kinds.append(kind)
                if value not in values:
                    values.append(value)
        for text, (kinds, values, _) in sorted(found.items(), key=lambda kv: kv[1][2]):
            out.append(Fact(m.seq, speaker(m), "/".join(kinds), "; ".join(values), text))
    return _merge(out)


def _asked(content: str, pos: int) -> bool:
    """Whether the sentence going on at ``pos`` is a question ("How long is a train ride from
    Oslo?" states no place)."""
    end = re.search(r"[.!?\n]", content[pos:])
    return end is not None and end.group() == "?"


def _plausible(kind: str, value: str) -> bool:
    if kind == "name":
        return value.split()[0].lower() not in _NOT_NAMES
    if kind == "place":
        return not _NOT_PLACES.match(value)
    return True


def _merge(facts: Sequence[Fact]) -> list[Fact]:
    """Drop a fact whose note is inside another one of the same message (same clause seen by
    two rules with different windows)."""
    kept: list[Fact] = []
    for f in facts:
        if any(g.seq == f.seq and squash(f.text) in squash(g.text) for g in kept if g is not f):
            continue
        kept = [g for g in kept if not (g.seq == f.seq and squash(g.text) in squash(f.text))]
        kept.append(f)
    return kept


def parse_notes(text: str | None) -> list[Fact]:
    """The fact notes a recap carries (lines written by :attr:`Fact.note`)."""
    facts = []
    for line in (text or "").splitlines():
        match = NOTE_RE.match(line.strip())
        if match:
            seq, speaker, kind, words = match.groups()
            facts.append(Fact(int(seq), speaker, kind, words, words))
    return facts


# -- a recap written by rules -----------------------------------------------------------------
FACTS_HEADING = "Facts the user stated (verbatim, by message number):"
OUTLINE_HEADING = "Earlier topics (the first sentence of the user's messages):"
OUTLINE_WORDS = 14
OUTLINE_RE = re.compile(r"^- #(\d+) ([\w.-]+): (.+)$")


def outline(messages: Iterable[Message], roles: tuple[str, ...] = ("user",)) -> list[str]:
    """One line per message of ``roles``: its first sentence, cut at OUTLINE_WORDS words."""
    lines = []
    for m in messages:
        if m.role not in roles:
            continue
        words: list[str] = []
        for clause in _CLAUSE_RE.finditer(m.content):  # "Hi!" alone says little: go on
            words += clause.group().split()
            if len(words) >= 4:
                break
        if not words:
            continue
        cut = " ".join(words[:OUTLINE_WORDS]) + (" …" if len(words) > OUTLINE_WORDS else "")
        lines.append(f"- #{m.seq} {speaker(m)}: {cut}")
    return lines


def recap_by_rules(
    previous: str | None, messages: Sequence[Message], cap: int, count: Callable[[str], int]
) -> str:
    """The recap of ``previous`` plus ``messages`` with no model: the previous recap's fact
    notes and the new ones, then an outline (the previous one's lines, then the first sentence
    of each new user message). Over ``cap`` tokens (by ``count``), the oldest outline line goes
    first, and only with no outline left the oldest fact note."""
    facts: list[str] = []
    lines: list[str] = []
    for line in (previous or "").splitlines():
        line = line.strip()
        if not line or line in (FACTS_HEADING, OUTLINE_HEADING):
            continue
        (facts if NOTE_RE.match(line) else lines).append(line)
    for f in extract_facts(messages):
        facts.append(f.note)
    lines += outline(messages) or outline(messages, ("user", "assistant"))
    facts = _unique(facts)
    noted = [squash(line.split(": ", 1)[-1]) for line in facts]
    lines = [ln for ln in _unique(lines) if not any(_said(ln) in n for n in noted)]

    def render() -> str:
        parts = []
        if facts:
            parts += [FACTS_HEADING, *facts]
        if lines:  # a blank line first, so Markdown does not run it into the last note
            parts += ["", OUTLINE_HEADING, *lines] if parts else [OUTLINE_HEADING, *lines]
        return "\n".join(parts)

    text = render()
    while (facts or lines) and count(text) > cap:
        (lines or facts).pop(0)
        text = render()
    return text


def _said(line: str) -> str:
    """What a note or outline line quotes (the whole line for any other)."""
    return squash(line.split(": ", 1)[-1] if line.startswith("- #") else line).rstrip(" .…")


def _unique(lines: list[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for line in lines:
        key = _said(line)
        if key not in seen:
            seen.add(key)
            out.append(line)
    return out


# -- a user's sentence told about them ---------------------------------------------------------
_MODALS = {"can", "could", "will", "would", "shall", "should", "may", "might", "must"}
_ADVERB = r"(?:(?:also|really|usually|often|never|always|still|just|only|already)\s+)?"
_I_FORMS = (  # "I" with an irregular verb, before any other "I <verb>"
    (r"\bI(?:'m|’m| am)\b", "the user is"),
    (r"\bI was\b", "the user was"),
    (r"\bI(?:'ve|’ve)\b", "the user has"),
    (r"\bI(?:'ll|’ll)\b", "the user will"),
    (r"\bI(?:'d|’d)\b", "the user would"),
)
_PERSON = (  # the other first-person words
    (r"\b[Mm]y\b", "the user's"),
    (r"\bmine\b", "the user's"),
    (r"\bmyself\b", "themselves"),
    (r"\bme\b", "them"),
    (r"\b[Ww]e(?:'re|’re| are)\b", "they are"),
    (r"\b[Ww]e\b", "they"),
    (r"\b[Oo]urs\b", "theirs"),
    (r"\b[Oo]ur\b", "their"),
    (r"\bus\b", "them"),
)
_I_VERB = re.compile(rf"\bI\s+({_ADVERB})([a-z]+(?:'t|’t)?)(?![\w'’])")


def _third_person_verb(verb: str) -> str:
    if verb in _MODALS or verb.endswith(("ed", "n't", "n’t")):
        return {"don't": "doesn't", "don’t": "doesn’t"}.get(verb, verb)
    if verb in ("have", "do"):
        return {"have": "has", "do": "does"}[verb]
    if re.search(r"(?:s|sh|ch|x|z|o)$", verb):
        return verb + "es"
    if re.search(r"[^aeiou]y$", verb):
        return verb[:-1] + "ies"
    return verb + "s"


def about_the_user(sentence: str) -> str:
    """A user's first-person sentence told about them, by rules (English): "My name is Sam."
    becomes "The user's name is Sam.", "I live in Lyon." "The user lives in Lyon.".

    For a small model, which reads a note's "my" as its own and answers "My name is Sam" when
    asked the user's name (``bench/bench_offline.py``)."""
    text = sentence
    for pattern, replacement in _I_FORMS:
        text = re.sub(pattern, replacement, text)
    text = _I_VERB.sub(lambda m: f"the user {m[1]}{_third_person_verb(m[2])}", text)
    for pattern, replacement in _PERSON:
        text = re.sub(pattern, replacement, text)
    text = re.sub(r"\bI\b", "the user", text)
    return re.sub(r"(^|[.!?]\s+)([a-z])", lambda m: m[1] + m[2].upper(), text)
