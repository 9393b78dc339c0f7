"""A page's own URL as the first request a fresh server gets (a bookmark, a shared link).

Streamlit takes a folder named ``pages/`` beside the entry point for its older multipage mode:
until ``st.navigation`` has run once in the server, a page URL ran the page file alone, with
file names for navigation and no memory sidebar. The pages live in ``app_pages/`` for that.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect

from tests.e2e.conftest import ARTIFACTS, start_app, wait_for_app
from tests.fakes import FakeServerProcess
from tests.fakes.app_process import app_workdir


@pytest.mark.parametrize("path", ["compare", "inspector"])
def test_a_page_url_first_opens_inside_the_app(
    browser: Browser, fake: FakeServerProcess, tmp_path: Path, path: str
) -> None:
    workdir = app_workdir(tmp_path / "app")
    server = start_app(
        fake.url, workdir, f"sqlite:///{workdir / 'chatmem.db'}", ARTIFACTS / f"fresh-{path}.log"
    )
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        page = context.new_page()
        page.goto(f"{server.url}/{path}")  # the server's very first page request
        wait_for_app(page)
        nav = page.locator("[data-testid='stSidebarNav']")
        expect(nav).to_contain_text("Conversations")  # the app's page titles
        assert "app_pages" not in nav.inner_text() and "\napp\n" not in nav.inner_text()
        expect(page.locator(".st-key-gauge")).to_be_visible()  # the memory sidebar ran
    finally:
        context.close()
        server.stop()
