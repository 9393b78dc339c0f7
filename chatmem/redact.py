"""The one scrubber: text fit to show, store, export or log, with no credential in it.

Every text chatmem shows or writes that may carry a secret passes through :func:`redact`:
URL user info (``user:password@``) is dropped and each known secret (the API key, a URL
password) becomes ``***``. :func:`mask_url` is the same rule for a URL shown on its own,
keeping the user name so people can tell which account is meant.
"""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit

# "scheme://user[:password]@" anywhere in a text.
_USERINFO_RE = re.compile(r"\b([a-z][a-z0-9+.\-]*://)[^/@\s'\"]+@", re.IGNORECASE)
# At the start of a URL: optional "scheme://", then the user info up to the LAST "@" (greedy:
# masks too much rather than too little when an "@" in the password was not escaped).
_URL_USERINFO_RE = re.compile(r"^(\s*[A-Za-z][\w+.\-]*:/+)?(.*)@")
_MIN_SECRET = 4  # shorter strings would blank out ordinary words


def redact(text: str, *secrets: str | None) -> str:
    """``text`` with no ``user:password@`` in URLs and none of ``secrets`` anywhere."""
    text = _USERINFO_RE.sub(r"\1", text)
    for secret in secrets:
        if secret and len(secret) >= _MIN_SECRET:
            text = text.replace(secret, "***")
    return text


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


def url_secrets(url: str | None) -> tuple[str, ...]:
    """The password in ``url`` (as written and decoded), to pass to :func:`redact`."""
    if not url:
        return ()
    try:
        password = urlsplit(url).password
    except ValueError:
        return ()
    if not password:
        return ()
    return tuple({password, unquote(password)})
