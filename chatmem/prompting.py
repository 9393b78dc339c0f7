"""How the bundled (or any local GGUF) model is prompted, and the guard that ends a looping reply.

The prompt is rendered here, as text, from the model's real chat template:

1. the GGUF's ``tokenizer.chat_template`` when it has one (rendered with Jinja in a sandbox, as
   llama-cpp-python's ``Jinja2ChatFormatter`` does);
2. else its family's format, known by a marker token in its vocabulary (ChatML's
   ``<|im_start|>``, Llama 3's ``<|start_header_id|>``, Gemma's ``<start_of_turn>``);
3. else a plain "Role: text" format with ONE system message holding the system prompt and every
   recap and recalled block (:func:`arrange` merges them), so no template can drop the memory.

The recap's fact notes (``- #3 user, place: I live in Lyon.``) are taken out of it and sent,
told about the user ("The user lives in Lyon."), as a short note just before the newest user
message (:func:`facts_last`): a tiny model uses a fact it reads last, and hardly one it read a
dozen turns earlier.

Pure: no model is loaded here; :mod:`chatmem.local` tokenizes and generates.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from chatmem.facts import FACTS_HEADING, NOTE_RE, about_the_user
from chatmem.framing import MEMORY_ROLE, RECALL_LABEL, SUMMARY_LABEL
from chatmem.servers import CHATML_TEMPLATE, render_template
from chatmem.text import clean_text
from chatmem.tokens import content_text

log = logging.getLogger(__name__)

Messages = Sequence[Mapping[str, Any]]

# Family formats: (marker token, name, template, end-of-turn and new-role stop strings).
LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + "
    "'<|end_header_id|>\n\n' + message['content'] + '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
    "{% endif %}"
)
# Gemma has no system role: a system message is sent as a user turn of its own.
GEMMA_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{{ '<start_of_turn>' + "
    "('model' if message['role'] == 'assistant' else 'user') + '\n' + message['content'] + "
    "'<end_of_turn>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}"
    "{% endif %}"
)
FAMILIES: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    ("<|im_start|>", "ChatML", CHATML_TEMPLATE, ("<|im_end|>", "<|im_start|>")),
    (
        "<|start_header_id|>",
        "Llama 3",
        LLAMA3_TEMPLATE,
        ("<|eot_id|>", "<|start_header_id|>", "<|end_of_text|>"),
    ),
    ("<start_of_turn>", "Gemma", GEMMA_TEMPLATE, ("<end_of_turn>", "<start_of_turn>")),
)
PLAIN_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{{ message['role'] | capitalize }}: "
    "{{ message['content'] }}\n\n{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}"
)
PLAIN_STOPS = ("\nUser:", "\nSystem:", "\nAssistant:")
PLAIN_NAME = "a plain format (no chat template)"
MEMORY_SEPARATOR = "\n\n"


def is_memory(message: Mapping[str, Any]) -> bool:
    """A recap or recalled block (see :mod:`chatmem.framing`), whatever role it is sent with."""
    text = content_text(message.get("content"))
    return text.startswith((SUMMARY_LABEL, RECALL_LABEL))


def arrange(messages: Messages) -> list[dict[str, Any]]:
    """One system message first, holding the system prompt(s) and every recap and recalled
    block in their order; then the conversation. Each block is appended after a blank line,
    so its cost in tokens does not depend on what precedes it."""
    system = ""
    rest: list[dict[str, Any]] = []
    merged = False
    for message in messages:
        text = content_text(message.get("content"))
        if message.get("role") == "system" and not merged:
            system, merged = text, True
        elif message.get("role") == "system" or is_memory(message):
            system += MEMORY_SEPARATOR + text
        else:
            rest.append({"role": str(message.get("role", "user")), "content": text})
    return [{"role": "system", "content": system}, *rest]


# The recap's fact notes, sent last: told about the user ("The user's name is Sam."), under this
# heading, in a user-role message (as every memory block: no more authority than the user's
# words) right before the newest user message. Measured on the bundled model (the end states of
# bench_offline's chat and of a 20-turn chat typed in the app, 10 facts, six seeds each; a name
# counted only when not claimed as the model's own): left in the recap, 18/60 answered; moved
# last in the user's own words, 30/60 (it mostly answered "My name is Sam."); moved last and
# told about the user, 40/60 (41/60 as a system message). Before every message, even one they
# do not concern: placed after the recap for those, they were recited instead of an answer less
# often (1 of 36 chit-chat replies against 5), but whole chats then answered fewer questions
# at the end (a 20-turn chat, seeds 1-3: 6/12 against 8/12; the name 1/3 against 2/3).
FACTS_NOTE_HEADING = "Facts about the user (the person you are talking to):"


def facts_last(messages: Messages) -> list[dict[str, Any]]:
    """``messages`` with the fact notes of every recap moved into one note (a user-role
    message) before the newest user message that is not a memory block; unchanged when there
    is no note or no such message.

    The notes are told about the user (``- The user lives in Lyon.``, :func:`about_the_user`);
    the recap keeps the rest.
    """
    out = [dict(m) for m in messages]
    last_user = max(
        (i for i, m in enumerate(out) if m.get("role") == "user" and not is_memory(m)),
        default=None,
    )
    if last_user is None:
        return out
    said: list[str] = []
    for m in out[:last_user]:
        if not is_memory(m) or not content_text(m.get("content")).startswith(SUMMARY_LABEL):
            continue
        kept = []
        for line in content_text(m.get("content")).splitlines():
            note = NOTE_RE.match(line.strip())
            if note:
                said.append(f"- {about_the_user(note.group(4))}")
            elif line.strip() != FACTS_HEADING:
                kept.append(line)
        m["content"] = re.sub(r"<recap>\n+", "<recap>\n", "\n".join(kept))  # no blank first line
    if not said:
        return [dict(m) for m in messages]
    note = {"role": MEMORY_ROLE, "content": "\n".join([FACTS_NOTE_HEADING, *said])}
    return [*out[:last_user], note, *out[last_user:]]


@dataclass(frozen=True)
class PromptFormat:
    """How one model's prompt is rendered: its template, stop strings, whether recap and
    recalled blocks go into the system message (always so for the plain fallback), and whether
    the recap's fact notes are sent last (:func:`facts_last`)."""

    name: str  # "its chat template" (the GGUF's), "ChatML", "Llama 3", "Gemma" or PLAIN_NAME
    template: str
    stops: tuple[str, ...]
    merge_memory: bool = False
    bos: str = ""
    eos: str = ""
    notes_last: bool = True
    _render: Callable[[Messages, bool], str] | None = field(default=None, compare=False)

    def render(self, messages: Messages, add_generation_prompt: bool = True) -> str:
        """The prompt text for ``messages`` (with the reply's opening when asked)."""
        render = self._render or render_template(self.template, self.bos, self.eos)
        object.__setattr__(self, "_render", render)  # compile once
        add_gen = add_generation_prompt
        plain = [
            {
                "role": str(m.get("role", "user")),
                "content": clean_text(content_text(m.get("content"))),
            }
            for m in messages
        ]
        if self.notes_last:  # a template that refuses or drops the note keeps them in the recap
            moved = facts_last(plain)
            if len(moved) > len(plain):
                try:
                    text = render(arrange(moved) if self.merge_memory else moved, add_gen)
                    if FACTS_NOTE_HEADING in text:
                        return text
                except Exception as exc:
                    log.debug("the fact notes stay in the recap: %s", exc)
        return render(arrange(plain) if self.merge_memory else plain, add_gen)


# A request shaped as chatmem sends them (a memory block as a second user message in a row): a
# GGUF's template must render it, else it is tried with the memory merged into the system
# message, else the family's or the plain format is used.
SHAPE_CHECK: tuple[dict[str, str], ...] = (
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": SUMMARY_LABEL + "\n<recap>\nA recap.\n</recap>"},
    {"role": "user", "content": "Hi there."},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "Bye."},
)


def _renders(fmt: PromptFormat) -> bool:
    try:
        fmt.render(SHAPE_CHECK)
        return True
    except Exception as exc:  # a template that refuses the shape (raise_exception), or breaks
        log.info("the chat template cannot render chatmem's requests (%s)", exc)
        return False


def choose_format(
    metadata: Mapping[str, Any],
    is_special: Callable[[str], bool],
    *,
    bos: str = "",
    eos: str = "",
    memory_in_system: bool = False,
) -> PromptFormat:
    """The format for a GGUF: its own template, else its family's, else the plain one.

    ``is_special(text)``: the text is one special token of the model's vocabulary.
    ``memory_in_system``: merge recap and recalled blocks into the system message with a real
    template too (the plain format always does; so does a template that refuses two user
    messages in a row).
    """
    template = metadata.get("tokenizer.chat_template")
    if isinstance(template, str) and template.strip():
        stops = [eos] if eos else []
        for marker, _, _, family_stops in FAMILIES:
            if marker in template:
                stops += [s for s in family_stops if s in template and s not in stops]
        for merge in dict.fromkeys((memory_in_system, True)):
            own = PromptFormat("its chat template", template, tuple(stops), merge, bos, eos)
            if _renders(own):
                return own
    for marker, name, family_template, family_stops in FAMILIES:
        if is_special(marker):
            return PromptFormat(name, family_template, family_stops, memory_in_system, bos, eos)
    return PromptFormat(PLAIN_NAME, PLAIN_TEMPLATE, PLAIN_STOPS, True, bos, eos)


# --------------------------------------------------------------------------------------
# Ending a reply that repeats itself
# --------------------------------------------------------------------------------------
MAX_UNIT_WORDS = 40  # the longest repeated stretch looked for, in words
_WORD = re.compile(r"\S+")
_PUNCT = re.compile(r"[^\w]+")


def _copies_needed(unit: int) -> int:
    """A one to three word stretch must come three times in a row ("eh, eh, eh"); a longer one
    twice (a sentence said twice over is already a loop)."""
    return 3 if unit < 4 else 2


class LoopGuard:
    """Follows a streamed reply word by word and ends it once a stretch of words repeats
    itself back to back; the reply keeps its text up to the first repeat.

    :meth:`feed` takes the next chunk and returns the text safe to show now: text that may be
    the start of a repeat is held back until it proves not to be. :meth:`finish` returns the
    rest. ``looped`` tells whether the guard cut the reply (then stop generating).
    """

    def __init__(self, max_unit: int = MAX_UNIT_WORDS) -> None:
        self._text = ""
        self._spans: list[tuple[int, int]] = []  # complete words: (start, end) in the text
        self._keys: list[str] = []  # each word, lowercased, without punctuation
        self._shown = 0  # characters of the text already returned
        self._max_unit = max_unit
        self.looped = False
        self.cut_at: int | None = None  # where the reply was cut, in characters

    @property
    def text(self) -> str:
        """The reply as kept so far (cut at the loop, when there was one)."""
        return self._text if self.cut_at is None else self._text[: self.cut_at]

    def feed(self, chunk: str) -> str:
        if self.looped:
            return ""
        self._text += chunk
        start = self._spans[-1][1] if self._spans else 0
        for match in _WORD.finditer(self._text, start):
            if match.end() == len(self._text):
                break  # the last word may go on in the next chunk
            self._spans.append((match.start(), match.end()))
            self._keys.append(_PUNCT.sub("", match.group().lower()) or match.group())
            if self._check_loop():
                return self._release(self.cut_at or 0)
        return self._release(self._hold_from())

    def finish(self) -> str:
        """The text still held back, once the stream has ended."""
        if self.looped:
            return ""
        return self._release(len(self._text))

    def _release(self, upto: int) -> str:
        upto = max(upto, self._shown)
        out = self._text[self._shown : upto]
        self._shown = upto
        return out

    def _run(self, unit: int) -> int:
        """How many words at the end repeat the word ``unit`` places before them."""
        keys, n = self._keys, 0
        while n + unit < len(keys) and keys[-1 - n] == keys[-1 - n - unit]:
            n += 1
        return n

    def _units(self) -> range:
        return range(1, min(self._max_unit, len(self._keys) - 1) + 1)

    def _kept_until(self, word: int) -> int:
        """Where the text before word number ``word`` ends (after the word before it)."""
        return self._spans[word - 1][1] if word > 0 else 0

    def _check_loop(self) -> bool:
        for unit in self._units():
            if self._run(unit) >= unit * (_copies_needed(unit) - 1):
                # the repeated stretch comes ``unit`` words before the repeats: keep it once
                self.cut_at = self._kept_until(len(self._keys) - unit * (_copies_needed(unit) - 1))
                self.looped = True
                return True
        return False

    def _hold_from(self) -> int:
        """Where the text that may be turning into a loop begins (the unfinished last word
        at the latest): before the first repeated word of any repeat run at the end."""
        hold = self._spans[-1][1] if self._spans else 0
        for unit in self._units():
            run = self._run(unit)
            if run:
                hold = min(hold, self._kept_until(len(self._keys) - run))
        return hold


class NoRepeatNgrams:
    """A llama-cpp-python logits processor: the reply may not repeat ``n`` tokens in a row that
    it, or an earlier reply of the conversation, already wrote. A small model otherwise copies
    its previous answer word for word, turn after turn; facts (a name, a number) are shorter
    than ``n`` tokens and stay free to repeat. With ``opening``, the reply's first tokens may
    not follow any earlier reply's first tokens either (1: it may not open with the same token).
    """

    def __init__(
        self, prompt_len: int, earlier: Sequence[Sequence[int]], n: int = 8, opening: int = 0
    ) -> None:
        self._start = prompt_len
        self._n = n
        self._seen: dict[tuple[int, ...], set[int]] = {}
        self._added = 0  # reply tokens whose n-gram is in the table
        # the reply's first ``opening`` tokens may not follow an earlier reply's opening
        self._openings: dict[tuple[int, ...], set[int]] = {}
        for tokens in earlier:
            for i in range(len(tokens) - n + 1):
                self._add(tuple(tokens[i : i + n]))
            for k in range(min(opening, len(tokens))):
                self._openings.setdefault(tuple(tokens[:k]), set()).add(tokens[k])

    def _add(self, gram: tuple[int, ...]) -> None:
        self._seen.setdefault(gram[:-1], set()).add(gram[-1])

    def __call__(self, input_ids: Sequence[int], scores: Any) -> Any:
        reply = [int(t) for t in input_ids[self._start :]]
        n = self._n
        while self._added < len(reply):
            self._added += 1
            if self._added >= n:
                self._add(tuple(reply[self._added - n : self._added]))
        banned = set(self._openings.get(tuple(reply), ()))
        if len(reply) >= n - 1:
            banned |= self._seen.get(tuple(reply[len(reply) - n + 1 :]), set())
        if banned:
            scores[sorted(banned)] = float("-inf")
        return scores
