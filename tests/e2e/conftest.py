"""End-to-end fixtures: ``streamlit run app.py`` against the fake server, driven by Chromium.

Uses Debian's ``/usr/bin/chromium`` through Playwright for Python (no browser download).
Waits the way Streamlit's own e2e tests do: for the app's script state to be ``notRunning``
and for the elements a step should produce, never for fixed times.

The server gets a recognisable fake API key (:data:`LEAK_KEY`) so tests can check that it
never reaches a page, an export or the server log, and its own SQLite database.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.fakes import FakeServerProcess
from tests.fakes.app_process import (
    CHROMIUM,
    CHROMIUM_ARGS,
    ROOT,
    AppProcess,
    AppStartError,
    app_workdir,
)
from tests.fakes.app_process import start_app as start_app_process

ARTIFACTS = ROOT / "test-artifacts"
LEAK_KEY = f"sk-test-LEAKCHECK-{secrets.token_hex(12)}"
SERVER_LOG = ARTIFACTS / "streamlit-server.log"


def start_app(model_url: str, workdir: Path, database_url: str, log_path: Path) -> AppProcess:
    """Start ``streamlit run app.py`` on a free port and wait until it is healthy.

    The fake server's URL and :data:`LEAK_KEY` are its only model settings; its database is
    ``database_url``; everything it prints goes (unbuffered) to ``log_path``.
    """
    settings = {
        "OPENAI_BASE_URL": model_url,
        "OPENAI_API_KEY": LEAK_KEY,
        "CHATMEM_MAX_RETRIES": "0",
        "CHATMEM_DATABASE_URL": database_url,
    }
    try:
        return start_app_process(settings, workdir, log_path=log_path, poll=0.1)
    except AppStartError as exc:
        pytest.fail(str(exc), pytrace=False)


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
