"""``streamlit run app.py`` as a child process: start it on a free port, wait until it is
healthy, stop or kill it. Used by the end-to-end tests (``tests/e2e/conftest.py``) and by
``bench/bench_app.py``, which also share the Chromium they drive (:data:`CHROMIUM`).

The child gets the environment of this process without any of chatmem's settings, plus the
ones passed in (e.g. ``OPENAI_BASE_URL`` of the fake server), the repository on
``PYTHONPATH``, unbuffered output and no proxy for 127.0.0.1. Run it in a folder made by
:func:`app_workdir` so no stray ``.env`` or secrets are read.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from tests.fakes.server_process import HOST, free_port, stop_process

__all__ = [
    "APP",
    "CHROMIUM",
    "CHROMIUM_ARGS",
    "ROOT",
    "START_TIMEOUT",
    "AppProcess",
    "AppStartError",
    "app_env",
    "app_workdir",
    "healthy",
    "start_app",
    "streamlit_command",
]

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "app.py"
START_TIMEOUT = 60.0
# Debian's Chromium, driven by Playwright for Python (no browser download).
CHROMIUM = Path(os.environ.get("CHATMEM_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-gpu",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]


class AppStartError(RuntimeError):
    """``streamlit run`` exited or did not become healthy in time (the message has its log)."""


@dataclass
class AppProcess:
    """One ``streamlit run app.py`` process; ``url`` is ``http://127.0.0.1:PORT``."""

    process: subprocess.Popen[bytes]
    url: str
    log: Path | None = None

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind, as in a crash or an OOM kill."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL if it has not exited within ``timeout`` seconds."""
        stop_process(self.process, timeout)

    def __enter__(self) -> AppProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def app_workdir(folder: Path) -> Path:
    """``folder`` holding only a copy of ``.streamlit/config.toml`` (so no stray ``.env`` or
    secrets are read); returned for convenience."""
    (folder / ".streamlit").mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / ".streamlit" / "config.toml", folder / ".streamlit" / "config.toml")
    return folder


def app_env(settings: Mapping[str, str]) -> dict[str, str]:
    """This process's environment without chatmem's settings, plus ``settings``."""
    from chatmem.config import ENV_NAMES  # here: importing chatmem loads all of it

    env = {k: v for k, v in os.environ.items() if k not in ENV_NAMES.values()}
    env.update(
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
        PYTHONUNBUFFERED="1",
        NO_PROXY="127.0.0.1,localhost",
    )
    env.update(settings)
    return env


def streamlit_command(port: int) -> list[str]:
    """``python -m streamlit run app.py`` headless on 127.0.0.1:``port``, no file watcher."""
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(APP),
        "--server.port",
        str(port),
        "--server.address",
        HOST,
        "--server.headless",
        "true",
        "--server.fileWatcherType",
        "none",
        "--browser.gatherUsageStats",
        "false",
    ]


def healthy(url: str) -> bool:
    """True when ``{url}/_stcore/health`` answers 200 ``ok``."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"{url}/_stcore/health", timeout=2) as response:
            return response.status == 200 and response.read().strip() == b"ok"
    except (urllib.error.URLError, OSError):
        return False


def start_app(
    settings: Mapping[str, str],
    workdir: Path,
    *,
    port: int | None = None,
    log_path: Path | None = None,
    timeout: float = START_TIMEOUT,
    poll: float = 0.05,
) -> AppProcess:
    """Start ``streamlit run app.py`` in ``workdir`` and wait until it is healthy.

    ``settings`` are added to the child's environment (see :func:`app_env`); ``port`` defaults
    to a free one; everything the child prints goes to ``log_path`` (or nowhere). Raises
    :class:`AppStartError`, with the log, if it exits or is not healthy within ``timeout``.
    """
    port = free_port() if port is None else port
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path or os.devnull, "wb") as log:
        process = subprocess.Popen(
            streamlit_command(port),
            cwd=workdir,
            env=app_env(settings),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    app = AppProcess(process, f"http://{HOST}:{port}", log_path)
    deadline = time.monotonic() + timeout
    while not healthy(app.url):  # polling a process we started: there is no event
        if process.poll() is not None or time.monotonic() > deadline:
            app.stop()
            output = log_path.read_text(errors="replace") if log_path else "(not kept)"
            raise AppStartError(
                f"streamlit did not start (exit code {process.poll()}); log:\n{output}"
            )
        time.sleep(poll)
    return app
