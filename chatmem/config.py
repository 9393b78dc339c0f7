"""Settings, from the environment, a ``.env`` file and ``.streamlit/secrets.toml``.

Precedence, highest first: real environment variables, ``.env``, ``secrets.toml``,
defaults. Every setting is listed with a comment in ``.env.example``.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from dotenv import dotenv_values

from chatmem.errors import SettingsError
from chatmem.redact import mask_url, register, url_credentials, url_secrets
from chatmem.store.urls import check_database_url

DEFAULT_SYSTEM_PROMPT = "You are a friendly assistant. Be concise."
DEFAULT_EMBEDDING_MODEL = "text-embedding-3-small"
EMBEDDINGS_OFF = "off"
LOCAL_EMBEDDINGS = "local"


@dataclass(frozen=True)
class Settings:
    api_key: str | None = None
    base_url: str | None = None
    model: str | None = None
    summary_model: str | None = None
    embedding_model: str | None = None  # a model name, "off", or None (default: see below)
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    max_tokens: int = 3000
    keep_recent: int = 6
    summary_max_tokens: int = 300
    reply_reserve: int = 512
    context_window: int | None = None
    timeout: float = 60.0
    max_retries: int = 2
    database_url: str | None = None
    local_model_path: str | None = None
    require_login: bool = False

    def __repr__(self) -> str:  # no key or URL password in logs or tracebacks
        def show(name: str) -> str:
            value = getattr(self, name)
            if name == "api_key" and value:
                return "'***'"
            if name in ("base_url", "database_url") and value:
                return repr(mask_url(value))
            return repr(value)

        return f"Settings({', '.join(f'{f.name}={show(f.name)}' for f in fields(self))})"

    def secrets(self) -> tuple[str, ...]:
        """Every credential these settings hold, for :func:`chatmem.redact.redact`."""
        found = [self.api_key] if self.api_key else []
        for url in (self.base_url, self.database_url):
            found.extend(url_secrets(url))
        return tuple(found)

    @property
    def uses_local_model(self) -> bool:
        return not self.api_key and not self.base_url

    @property
    def active_embedding_model(self) -> str | None:
        """The embedding model recall uses, or None for BM25 only.

        Unset means the offline model that ships with chatmem (``local``: multilingual-e5-small
        in this process, nothing downloaded, nothing sent); ``off`` means BM25 only; any other
        name is an OpenAI-compatible embeddings model, used when the chat model is one (with
        the local chat model, the offline embeddings stay).
        """
        name = (self.embedding_model or "").strip()
        if name.lower() == EMBEDDINGS_OFF:
            return None
        return name or LOCAL_EMBEDDINGS


# setting name -> environment variable
ENV_NAMES = {
    "api_key": "OPENAI_API_KEY",
    "base_url": "OPENAI_BASE_URL",
    "model": "CHATMEM_MODEL",
    "summary_model": "CHATMEM_SUMMARY_MODEL",
    "embedding_model": "CHATMEM_EMBEDDING_MODEL",
    "system_prompt": "CHATMEM_SYSTEM_PROMPT",
    "max_tokens": "CHATMEM_MAX_TOKENS",
    "keep_recent": "CHATMEM_KEEP_RECENT",
    "summary_max_tokens": "CHATMEM_SUMMARY_MAX_TOKENS",
    "reply_reserve": "CHATMEM_REPLY_RESERVE",
    "context_window": "CHATMEM_CONTEXT_WINDOW",
    "timeout": "CHATMEM_TIMEOUT",
    "max_retries": "CHATMEM_MAX_RETRIES",
    "database_url": "CHATMEM_DATABASE_URL",
    "local_model_path": "CHATMEM_LOCAL_MODEL_PATH",
    "require_login": "CHATMEM_REQUIRE_LOGIN",
}

# The bounds of every numeric setting, (lowest, highest or None), defined here only: the
# environment, the library, the CLI and the app's sliders all check against these.
BOUNDS: dict[str, tuple[float, float | None]] = {
    "max_tokens": (256, None),
    "keep_recent": (2, 50),
    "summary_max_tokens": (32, None),
    "reply_reserve": (16, None),
    "context_window": (512, None),
    "timeout": (0.1, None),
    "max_retries": (0, 10),
}
MAX_TOKENS_MIN = int(BOUNDS["max_tokens"][0])
KEEP_RECENT_RANGE = (int(BOUNDS["keep_recent"][0]), int(BOUNDS["keep_recent"][1] or 0))
MAX_TOKENS_CAP = 32_000  # the highest budget the app's slider offers, whatever the window
FLOAT_SETTINGS = frozenset({"timeout"})


def check_bound(field: str, value: object, name: str | None = None) -> Any:
    """``value`` if it is a valid ``field`` setting, else a SettingsError naming ``name``
    (the environment variable, or the keyword argument when None)."""
    low, high = BOUNDS[field]
    name = name or field
    is_float = field in FLOAT_SETTINGS
    kinds = (int, float) if is_float else (int,)
    if isinstance(value, bool) or not isinstance(value, kinds):
        what = "a number of seconds" if is_float else "a whole number"
        raise SettingsError(f"{name} must be {what}, not {value!r}.")
    if value < low or (high is not None and value > high):
        span = f"from {low:g} to {high:g}" if high is not None else f"at least {low:g}"
        raise SettingsError(f"{name} must be {span}; it is {value:g}.")
    return value


def _parse(field: str, raw: str) -> Any:
    name = ENV_NAMES[field]
    try:
        if field in FLOAT_SETTINGS:
            value: float = float(raw)
        else:
            value = int(raw.strip().replace("_", "").replace(",", ""))
    except ValueError:
        what = "a number of seconds" if field in FLOAT_SETTINGS else "a whole number"
        raise SettingsError(f"{name} must be {what}, not {raw!r}.") from None
    return check_bound(field, value, name)


def _flag(raw: str) -> bool:
    return raw.strip().lower() in ("1", "true", "yes", "on")


def check_base_url(raw: str) -> str:
    """``raw`` if it is an http(s) URL with a host and a valid port, else a SettingsError."""
    shown = mask_url(raw.strip())
    try:
        parts = urlsplit(raw.strip())
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError as exc:
        raise SettingsError(f"OPENAI_BASE_URL {shown!r} is not a valid URL: {exc}.") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SettingsError(f"OPENAI_BASE_URL must be an http(s) URL, not {shown!r}.")
    return raw


def check_credentials(api_key: str | None, base_url: str | None) -> None:
    """A SettingsError if ``base_url`` has user info (``user:password@``) and there is an API
    key too: the openai SDK (httpx) sends the URL's user info as HTTP Basic auth in the one
    Authorization header, which silently replaces the key's Bearer token, and no server can
    be given both in that header."""
    if api_key and url_credentials(base_url) is not None:
        raise SettingsError(
            "OPENAI_BASE_URL has a user name or password in it and OPENAI_API_KEY is set too, "
            "but a request carries one Authorization header (Basic auth for the URL's user, or "
            "the key as a Bearer token), so remove one of the two."
        )


def _read_secrets(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SettingsError(f"{path} is not valid TOML: {exc}") from None
    return {k: str(v) for k, v in data.items() if isinstance(v, str | int | float | bool)}


def load_settings(
    env: Mapping[str, str] | None = None,
    *,
    root: str | Path | None = None,
    use_files: bool = True,
) -> Settings:
    """Read and validate settings. Raises SettingsError with a one-sentence reason."""
    root = Path(root) if root is not None else Path.cwd()
    merged: dict[str, str] = {}
    if use_files:
        merged.update(_read_secrets(root / ".streamlit" / "secrets.toml"))
        dotenv = root / ".env"
        if dotenv.exists():
            merged.update({k: v for k, v in dotenv_values(dotenv).items() if v is not None})
    merged.update(os.environ if env is None else env)

    def get(field: str) -> str | None:
        raw = merged.get(ENV_NAMES[field])
        return raw if raw not in (None, "") else None

    values: dict[str, Any] = {}
    for field in (
        "api_key",
        "base_url",
        "model",
        "summary_model",
        "embedding_model",
        "system_prompt",
        "local_model_path",
    ):
        raw = get(field)
        if raw is not None:
            values[field] = raw.strip() if field != "system_prompt" else raw
    if (raw := get("base_url")) is not None:
        check_base_url(raw)
    for field in BOUNDS:
        if (raw := get(field)) is not None:
            values[field] = _parse(field, raw)
    if (raw := get("database_url")) is not None:
        values["database_url"] = check_database_url(raw)
    if (raw := get("require_login")) is not None:
        values["require_login"] = _flag(raw)
    check_credentials(values.get("api_key"), values.get("base_url"))
    settings = Settings(**values)
    register(*settings.secrets())  # scrubbed from every text and log line from now on
    return settings
