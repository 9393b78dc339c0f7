"""Database URLs: what a user typed -> the SQLAlchemy URL the store connects to.

``resolve_database_url`` is the store's parser (``StoreError``); ``check_database_url`` is the
lighter check the settings run on ``CHATMEM_DATABASE_URL`` (``SettingsError``), before any
store is opened.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, make_url

from chatmem.errors import SettingsError, StoreError
from chatmem.redact import mask_url

DEFAULT_URL: Final = "sqlite:///.chatmem/chatmem.db"
"""Used when no URL is given; the path is relative to the current directory at open time."""

_POSTGRES: Final = ("postgresql", "postgres")
_BACKENDS: Final = ("sqlite", *_POSTGRES)
_URL_HELP = (
    "expected a file path, sqlite:///path/to/file.db or postgresql://user:password@host:port/dbname"
)
_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*):")


def _bad_url(url: str, problem: str) -> StoreError:
    return StoreError(f"Invalid database URL {mask_url(url)!r}: {problem}.")


def check_database_url(url: str) -> str:
    """A database URL or path chatmem can open, or a SettingsError naming the problem."""
    url = url.strip()
    if "://" not in url:
        return url  # a plain file path means SQLite
    scheme = urlsplit(url).scheme.lower()
    if scheme.split("+")[0] not in _BACKENDS:
        raise SettingsError(
            f"CHATMEM_DATABASE_URL must start with sqlite:/// or postgresql://, not {scheme}://."
        )
    if scheme.startswith("postgres") and not urlsplit(url).hostname and "host=" not in url:
        raise SettingsError("CHATMEM_DATABASE_URL for PostgreSQL needs a host name.")
    return url


def resolve_database_url(url: str | None = None) -> URL:
    """Turn what a user typed into the SQLAlchemy URL the store connects to.

    ``None`` means ``DEFAULT_URL``; a plain path means a SQLite file; ``postgres://`` and
    ``postgresql://`` mean PostgreSQL through psycopg 3 (``postgresql+psycopg://``). Relative
    SQLite paths are made absolute against the current directory. Raises ``StoreError`` with a
    one-sentence message (password masked) for anything else.
    """
    if url is None:
        url = DEFAULT_URL
    if not isinstance(url, str):
        raise StoreError(f"Invalid database URL: expected a string, got {type(url).__name__}.")
    raw = url.strip()
    if not raw:
        raise StoreError(f"Invalid database URL: it is empty ({_URL_HELP}).")

    if "://" not in raw:
        scheme = _SCHEME_RE.match(raw)
        if scheme and len(scheme.group(1)) > 1:  # "C:\\..." is a Windows path, not a scheme
            raise _bad_url(raw, f"it looks like a URL but lacks '://' ({_URL_HELP})")
        path = Path(raw).expanduser()
        return URL.create("sqlite+pysqlite", database=str(path.resolve()))

    try:
        parsed = make_url(raw)
    except ValueError:  # raised by the port parser ("invalid literal for int()")
        raise _bad_url(raw, "the port is not a number") from None
    except sa_exc.ArgumentError:
        raise _bad_url(raw, f"it could not be parsed ({_URL_HELP})") from None

    backend, _, driver = parsed.drivername.partition("+")
    backend = backend.lower()
    if backend == "sqlite":
        return _sqlite_url(raw, parsed, driver)
    if backend in _POSTGRES:
        if driver not in ("", "psycopg"):
            raise _bad_url(
                raw,
                f"the PostgreSQL driver {driver!r} is not supported "
                "(use postgresql://, which means psycopg 3)",
            )
        if parsed.port is not None and not 0 < parsed.port < 65536:
            raise _bad_url(raw, f"the port {parsed.port} is out of range (1-65535)")
        return parsed.set(drivername="postgresql+psycopg")
    raise _bad_url(raw, f"the database {backend!r} is not supported (use sqlite or postgresql)")


def _sqlite_url(raw: str, parsed: URL, driver: str) -> URL:
    if driver not in ("", "pysqlite"):
        raise _bad_url(raw, f"the SQLite driver {driver!r} is not supported (use sqlite:///)")
    if parsed.host or parsed.port or parsed.username:
        raise _bad_url(
            raw,
            "a SQLite URL takes no host (use sqlite:///relative.db or sqlite:////absolute.db)",
        )
    database = parsed.database
    if database is None or database == ":memory:":
        return URL.create("sqlite+pysqlite", database=":memory:", query=parsed.query)
    if database == "":
        raise _bad_url(raw, "it names no database file (use sqlite:///path/to/file.db)")
    path = Path(database).expanduser()
    return URL.create("sqlite+pysqlite", database=str(path.resolve()), query=parsed.query)
