"""End-to-end fixtures: ``streamlit run app.py`` against the fake server, driven by Chromium.

Uses Debian's ``/usr/bin/chromium`` through Playwright for Python (no browser download).
Waits the way Streamlit's own e2e tests do: for the app's script state to be ``notRunning``
and for the elements a step should produce, never for fixed times.

The server gets a recognisable fake API key (:data:`LEAK_KEY`) so tests can check that it
never reaches a page, an export or the server log, and its own SQLite database.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from chatmem.config import ENV_NAMES
from tests.fakes import FakeServerProcess, free_port

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "app.py"
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = Path(os.environ.get("CHATMEM_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-gpu",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
START_TIMEOUT = 60.0
LEAK_KEY = f"sk-test-LEAKCHECK-{secrets.token_hex(12)}"
SERVER_LOG = ARTIFACTS / "streamlit-server.log"


def _healthy(url: str) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"{url}/_stcore/health", timeout=2) as response:
            return response.status == 200 and response.read().strip() == b"ok"
    except (urllib.error.URLError, OSError):
        return False


@dataclass
class AppServer:
    """One ``streamlit run app.py`` process."""

    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind, as in a crash or an OOM kill."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


def app_workdir(folder: Path) -> Path:
    """An empty folder holding only a copy of ``.streamlit/config.toml`` (so no stray ``.env``
    or secrets are read)."""
    (folder / ".streamlit").mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / ".streamlit" / "config.toml", folder / ".streamlit" / "config.toml")
    return folder


def start_app(model_url: str, workdir: Path, database_url: str, log_path: Path) -> AppServer:
    """Start ``streamlit run app.py`` on a free port and wait until it is healthy.

    The fake server's URL and :data:`LEAK_KEY` are its only model settings; its database is
    ``database_url``; everything it prints goes (unbuffered) to ``log_path``.
    """
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ENV_NAMES.values()}
    env.update(
        OPENAI_BASE_URL=model_url,
        OPENAI_API_KEY=LEAK_KEY,
        CHATMEM_MAX_RETRIES="0",
        CHATMEM_DATABASE_URL=database_url,
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
        PYTHONUNBUFFERED="1",
        NO_PROXY="127.0.0.1,localhost",
    )
    log_path.parent.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(APP),
        "--server.port",
        str(port),
        "--server.address",
        "127.0.0.1",
        "--server.headless",
        "true",
        "--server.fileWatcherType",
        "none",
        "--browser.gatherUsageStats",
        "false",
    ]
    with log_path.open("w") as log:
        process = subprocess.Popen(
            command, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    server = AppServer(process, f"http://127.0.0.1:{port}", log_path)
    deadline = time.monotonic() + START_TIMEOUT
    while not _healthy(server.url):  # polling a process we started: there is no event
        if process.poll() is not None or time.monotonic() > deadline:
            server.stop()
            pytest.fail(
                f"streamlit did not start (exit code {process.poll()}); log:\n"
                + log_path.read_text(errors="replace"),
                pytrace=False,
            )
        time.sleep(0.1)
    return server


@pytest.fixture(scope="session")
def app_url(
    fake_server: FakeServerProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The app served by ``streamlit run`` on a free port, talking to the fake server."""
    workdir = app_workdir(tmp_path_factory.mktemp("app"))
    server = start_app(
        fake_server.url, workdir, f"sqlite:///{workdir / 'chatmem-e2e.db'}", SERVER_LOG
    )
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.skip(f"Chromium not found at {CHROMIUM} (set CHATMEM_CHROMIUM)")
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Browser, app_url: str, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A fresh browser session (its own conversation) on the app's chat page."""
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    context.set_default_timeout(20_000)
    tab = context.new_page()
    tab.goto(app_url)
    wait_for_app(tab)
    try:
        yield tab
    finally:
        failed = getattr(request.node, "rep_call", None)
        if failed is not None and failed.failed:
            with contextlib.suppress(Exception):
                tab.screenshot(path=str(ARTIFACTS / f"failed-{request.node.name}.png"))
        context.close()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> object:
    report = yield
    if report.when == "call":
        item.rep_call = report  # type: ignore[attr-defined]
    return report


def wait_for_app(page: Page) -> None:
    """Wait until the app is connected and no script run is in progress."""
    page.wait_for_selector("[data-testid='stApp'][data-test-connection-state='CONNECTED']")
    page.wait_for_selector("[data-testid='stApp'][data-test-script-state='notRunning']")
