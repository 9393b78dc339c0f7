"""What changed: one request against the one before it, one summary version against another.

Pure functions of their inputs, for the inspector and the presenter view.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from enum import StrEnum

from chatmem.memory import Context


@dataclass(frozen=True)
class RequestDiff:
    """The next request against the previous one, by message seq."""

    added: tuple[int, ...]  # sent word for word now, not before
    dropped: tuple[int, ...]  # sent before, now left out (and not in the summary)
    summarised: tuple[int, ...]  # sent before, now only in the summary
    recalled_added: tuple[int, ...]
    recalled_removed: tuple[int, ...]
    summary_changed: bool  # the summary block's text differs (or appeared, or went)
    tokens_before: int
    tokens_after: int

    @property
    def unchanged(self) -> bool:
        return not (
            self.added
            or self.dropped
            or self.summarised
            or self.recalled_added
            or self.recalled_removed
            or self.summary_changed
        )


def _verbatim(context: Context) -> set[int]:
    return {p.seq for p in context.parts if p.kind == "verbatim" and p.seq is not None}


def _summary_text(context: Context) -> str | None:
    for part in context.parts:
        if part.kind == "summary":
            return str(part.message.get("content", ""))
    return None


def request_diff(previous: Context, current: Context, covers_seq: int) -> RequestDiff:
    """``current`` against ``previous``; ``covers_seq``: what the current summary covers
    (a message that left the verbatim part at or below it was summarised, else dropped)."""
    before, after = _verbatim(previous), _verbatim(current)
    gone = sorted(before - after)
    recalled_before = {r.seq for r in previous.recalled if r.seq is not None}
    recalled_after = {r.seq for r in current.recalled if r.seq is not None}
    return RequestDiff(
        added=tuple(sorted(after - before)),
        dropped=tuple(s for s in gone if s > covers_seq),
        summarised=tuple(s for s in gone if s <= covers_seq),
        recalled_added=tuple(sorted(recalled_after - recalled_before)),
        recalled_removed=tuple(sorted(recalled_before - recalled_after)),
        summary_changed=_summary_text(previous) != _summary_text(current),
        tokens_before=previous.budget.total,
        tokens_after=current.budget.total,
    )


def seq_ranges(seqs: tuple[int, ...] | list[int]) -> str:
    """``[1, 2, 3, 7]`` as ``#1–3, #7``."""
    out: list[str] = []
    ordered = sorted(seqs)
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        out.append(f"#{ordered[i]}" if i == j else f"#{ordered[i]}–{ordered[j]}")
        i = j + 1
    return ", ".join(out)


class Change(StrEnum):
    SAME = "same"
    ADDED = "added"
    REMOVED = "removed"


_WORDS = re.compile(r"\S+\s*|\s+")


def text_diff(old: str, new: str) -> list[tuple[Change, str]]:
    """``old`` → ``new`` word by word: runs of kept, removed and added text, in reading
    order (a replaced run gives its removed words, then its added ones). Joining the kept and
    added runs gives ``new``; the kept and removed ones give ``old``."""
    a, b = _WORDS.findall(old), _WORDS.findall(new)
    out: list[tuple[Change, str]] = []
    matcher = difflib.SequenceMatcher(a=a, b=b, autojunk=False)
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal":
            out.append((Change.SAME, "".join(a[i1:i2])))
            continue
        if i2 > i1:
            out.append((Change.REMOVED, "".join(a[i1:i2])))
        if j2 > j1:
            out.append((Change.ADDED, "".join(b[j1:j2])))
    return out
