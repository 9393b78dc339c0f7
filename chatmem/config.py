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


class SettingsError(ValueError):
    """A setting has a value chatmem cannot use; the message says which and why."""


DEFAULT_SYSTEM_PROMPT = "You are a friendly assistant. Be concise."
DEFAULT_EMBEDDING_MODEL = "text-embedding-3-small"
EMBEDDINGS_OFF = "off"


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

    def __repr__(self) -> str:  # the key never shows in logs or tracebacks
        shown = ", ".join(
            f"{f.name}={'***' if f.name == 'api_key' and self.api_key else getattr(self, f.name)!r}"
            for f in fields(self)
        )
        return f"Settings({shown})"

    @property
    def uses_local_model(self) -> bool:
        return not self.api_key and not self.base_url

    @property
    def active_embedding_model(self) -> str | None:
        """The embedding model recall uses, or None for BM25 only.

        Embeddings are opt-in: unset or ``off`` means BM25 only. They cost an embeddings
        call before each request (on the path to the first token) and one per message, so
        a user asks for them by name, e.g. ``text-embedding-3-small``. Recall only uses them
        when the chat model is an OpenAI-compatible one, never the local model.
        """
        name = (self.embedding_model or "").strip()
        if not name or name.lower() == EMBEDDINGS_OFF:
            return None
        return name


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

KEEP_RECENT_RANGE = (2, 40)
MIN_MAX_TOKENS = 256


def _int(name: str, raw: str, low: int, high: int | None = None) -> int:
    try:
        value = int(raw.strip().replace("_", "").replace(",", ""))
    except ValueError:
        raise SettingsError(f"{name} must be a whole number, not {raw!r}.") from None
    if value < low or (high is not None and value > high):
        span = f"from {low} to {high}" if high is not None else f"at least {low}"
        raise SettingsError(f"{name} must be {span}; it is {value}.")
    return value


def _float(name: str, raw: str, low: float) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number of seconds, not {raw!r}.") from None
    if value < low:
        raise SettingsError(f"{name} must be at least {low}; it is {value}.")
    return value


def _flag(raw: str) -> bool:
    return raw.strip().lower() in ("1", "true", "yes", "on")


def check_database_url(url: str) -> str:
    """A database URL or path chatmem can open, or a SettingsError naming the problem."""
    url = url.strip()
    if "://" not in url:
        return url  # a plain file path means SQLite
    scheme = urlsplit(url).scheme.lower()
    if scheme.split("+")[0] not in ("sqlite", "postgresql", "postgres"):
        raise SettingsError(
            f"CHATMEM_DATABASE_URL must start with sqlite:/// or postgresql://, not {scheme}://."
        )
    if scheme.startswith("postgres") and not urlsplit(url).hostname and "host=" not in url:
        raise SettingsError("CHATMEM_DATABASE_URL for PostgreSQL needs a host name.")
    return url


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
        parts = urlsplit(raw.strip())
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise SettingsError(f"OPENAI_BASE_URL must be an http(s) URL, not {raw!r}.")
    if (raw := get("max_tokens")) is not None:
        values["max_tokens"] = _int("CHATMEM_MAX_TOKENS", raw, MIN_MAX_TOKENS)
    if (raw := get("keep_recent")) is not None:
        values["keep_recent"] = _int("CHATMEM_KEEP_RECENT", raw, *KEEP_RECENT_RANGE)
    if (raw := get("summary_max_tokens")) is not None:
        values["summary_max_tokens"] = _int("CHATMEM_SUMMARY_MAX_TOKENS", raw, 32)
    if (raw := get("reply_reserve")) is not None:
        values["reply_reserve"] = _int("CHATMEM_REPLY_RESERVE", raw, 16)
    if (raw := get("context_window")) is not None:
        values["context_window"] = _int("CHATMEM_CONTEXT_WINDOW", raw, 512)
    if (raw := get("timeout")) is not None:
        values["timeout"] = _float("CHATMEM_TIMEOUT", raw, 0.1)
    if (raw := get("max_retries")) is not None:
        values["max_retries"] = _int("CHATMEM_MAX_RETRIES", raw, 0, 10)
    if (raw := get("database_url")) is not None:
        values["database_url"] = check_database_url(raw)
    if (raw := get("require_login")) is not None:
        values["require_login"] = _flag(raw)
    return Settings(**values)
