"""Text helpers for the UI: safe markdown and short human formats (no Streamlit import)."""

from __future__ import annotations

import re
import time

# Fenced code blocks and inline code spans are left exactly as written.
_CODE_RE = re.compile(r"(```.*?(?:```|\Z)|~~~.*?(?:~~~|\Z)|`[^`\n]*`)", re.DOTALL)
# Streamlit's markdown extensions that plain text could trigger by accident:
# ``$...$`` (LaTeX) and ``:red[...]`` / ``:material/icon:`` style directives.
_DIRECTIVE_RE = re.compile(r":(?=[a-z\-]+(?:\[|/))", re.IGNORECASE)


def safe_markdown(text: str) -> str:
    """Markdown for untrusted user or model text.

    Streamlit already refuses raw HTML unless ``unsafe_allow_html`` is set (and we never set
    it for this text). This also keeps dollar amounts from turning into LaTeX and colons from
    turning into colour or icon directives, outside code.
    """
    pieces = _CODE_RE.split(text)
    for i in range(0, len(pieces), 2):  # even pieces are outside code
        piece = pieces[i].replace("\\$", "$").replace("$", "\\$")
        pieces[i] = _DIRECTIVE_RE.sub(r"\\:", piece)
    return "".join(pieces)


def stream_safe(chunk: str) -> str:
    """A cheap per-chunk version of :func:`safe_markdown` for text while it streams."""
    return chunk.replace("$", "\\$")


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
