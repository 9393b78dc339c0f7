"""The one scrubber: text fit to show, store, export or log, with no credential in it.

Every text chatmem shows or writes that may carry a secret passes through :func:`redact`:
URL user info (``user:password@``) is dropped and each known secret (the API key, a URL
password, the Basic-auth token made of one) becomes ``***``. :func:`mask_url` is the same rule
for a URL shown on its own, keeping the user name so people can tell which account is meant.

Known secrets are the ones passed in plus every one :func:`register` has been told about
(``load_settings``, each session's journal and each model client register theirs), so a text
is scrubbed of every credential this process holds even where the caller does not know them.
Registering also installs :class:`SecretFilter` on every log record from chatmem and the HTTP
stack it uses (once, as a log record factory: a filter on the ``chatmem`` logger alone would
never see the records of its child loggers such as ``chatmem.session``).
"""

from __future__ import annotations

import base64
import logging
import re
import threading
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote, urlsplit

# "scheme://user[:password]@" anywhere in a text.
_USERINFO_RE = re.compile(r"\b([a-z][a-z0-9+.\-]*://)[^/@\s'\"]+@", re.IGNORECASE)
# At the start of a URL: optional "scheme://", then the user info up to the LAST "@" (greedy:
# masks too much rather than too little when an "@" in the password was not escaped).
_URL_USERINFO_RE = re.compile(r"^(\s*[A-Za-z][\w+.\-]*:/+)?(.*)@")
_MIN_SECRET = 4  # shorter strings would blank out ordinary words
# In conversation text (what people wrote, the model's replies, summaries) only secrets at
# least this long are masked: an API key or a strong password, never a word such as a weak
# database password ("postgres") that people also write for its own sake.
CONTENT_SECRET_MIN = 12


MASK = "***"
# Loggers whose records are scrubbed: chatmem's and the HTTP stack that carries its credentials.
LOGGERS = ("chatmem", "openai", "httpx", "httpx2", "httpcore")

_lock = threading.Lock()
_registered: frozenset[str] = frozenset()
_factory_installed = False


def _usable(secrets: Iterable[str | None]) -> set[str]:
    return {s for s in secrets if s and len(s) >= _MIN_SECRET}


def register(*secrets: str | None) -> None:
    """Remember credentials for every later :func:`redact` and every log record (see the
    module docstring); installs the log scrubbing on first use. Idempotent and cheap."""
    global _registered
    new = _usable(secrets) - _registered
    if new:
        with _lock:
            _registered = _registered | new
    install_log_filter()


def registered() -> frozenset[str]:
    """The credentials :func:`register` has been told about."""
    return _registered


def redact(text: str, *secrets: str | None, urls: bool = True, shortest: int = _MIN_SECRET) -> str:
    """``text`` with none of ``secrets`` (nor any registered secret) anywhere and, unless
    ``urls`` is False, no ``user:password@`` in URLs.

    ``urls=False`` is for conversation text (a user's message, a summary, a title): only the
    known secrets go, so a URL the user wrote keeps its user name. Secrets shorter than
    ``shortest`` are left (see :data:`CONTENT_SECRET_MIN`).
    """
    if urls:
        text = _USERINFO_RE.sub(r"\1", text)
    # longest first, so a secret inside another (a password inside a key) leaves no tail
    for secret in sorted(_usable(secrets) | _registered, key=len, reverse=True):
        if len(secret) >= shortest:
            text = text.replace(secret, MASK)
    return text


def redact_data(value: Any, *secrets: str | None, urls: bool = True) -> Any:
    """``value`` (JSON-like: dicts, lists, tuples, strings) with every string in it, keys
    included, passed through :func:`redact`; anything else is returned as it is."""
    if isinstance(value, str):
        return redact(value, *secrets, urls=urls)
    if isinstance(value, dict):
        return {
            redact_data(k, *secrets, urls=urls): redact_data(v, *secrets, urls=urls)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return type(value)(redact_data(v, *secrets, urls=urls) for v in value)
    return value


class SecretFilter(logging.Filter):
    """Scrubs a log record in place (message and arguments, traceback, stack) with
    :func:`redact`; never drops a record. A record with nothing to scrub is left as it is."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed format: logging reports it later, as it would anyway
            return True
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, ()
        if record.exc_info and not record.exc_text:
            text = logging.Formatter().formatException(record.exc_info)
            if redact(text) != text:
                record.exc_text = redact(text)  # formatters use exc_text when it is set
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


SECRET_FILTER = SecretFilter()


def _scrubbed(name: str) -> bool:
    return any(name == root or name.startswith(root + ".") for root in LOGGERS)


def install_log_filter() -> None:
    """Pass every record of the :data:`LOGGERS` through :data:`SECRET_FILTER` as it is made
    (once per process; the previous record factory is kept and called first)."""
    global _factory_installed
    with _lock:
        if _factory_installed:
            return
        previous = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            if _scrubbed(record.name):
                SECRET_FILTER.filter(record)
            return record

        logging.setLogRecordFactory(factory)
        _factory_installed = True


def mask_url(url: object) -> str:
    """A URL as text with its password replaced by ``***`` (the user name is kept).

    Accepts a string or anything whose ``render_as_string(hide_password=True)`` does the same
    (a SQLAlchemy URL).
    """
    render = getattr(url, "render_as_string", None)
    if render is not None:
        return str(render(hide_password=True))
    text = str(url)
    found = _URL_USERINFO_RE.match(text)
    if found is None or ":" not in found.group(2):
        return text
    userinfo = found.group(2)
    masked = userinfo[: userinfo.index(":") + 1] + "***"
    return (found.group(1) or "") + masked + text[found.end(2) :]


def url_credentials(url: str | None) -> tuple[str, str] | None:
    """The user name and password in ``url``, decoded (``%40`` is ``@``), or None without
    user info. A URL with a user name and no password gives an empty password."""
    if not url:
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.username is None and parts.password is None:
        return None
    return unquote(parts.username or ""), unquote(parts.password or "")


def basic_token(user: str, password: str) -> str:
    """The token HTTP Basic auth sends for ``user:password`` (as httpx builds it)."""
    return base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


def url_secrets(url: str | None) -> tuple[str, ...]:
    """The password in ``url`` (as written and decoded) and the Basic-auth token made of it,
    to pass to :func:`redact`."""
    try:
        password = urlsplit(url).password if url else None
    except ValueError:
        return ()
    credentials = url_credentials(url)
    if not password or credentials is None:
        return ()
    return tuple({password, unquote(password), basic_token(*credentials)})
