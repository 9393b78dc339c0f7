"""Correcting memory in the real app (Chromium, ``streamlit run``, the fake server): an edited
summary is what the next request sends, and a pinned message is still sent after a budget cut
and the fold it brings. The requests are read as the fake server received them."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from chatmem import ChatMemory, OpenAIChat, Settings
from chatmem.store import Store
from tests.e2e.conftest import ARTIFACTS, LEAK_KEY, wait_for_app
from tests.e2e.test_app_browser import chat_messages, no_exceptions, send
from tests.fakes import FakeServerProcess
from tests.fakes.app_process import AppStartError, app_workdir
from tests.fakes.app_process import start_app as start_app_process

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

EDITED = "- The user's pet is a heron called Basil."
WAIT = 20_000  # ms for a rerun to show its result
PINNED = "Keep this word for word: my locker code is 4417."


def seeded_conversation(fake: FakeServerProcess, db_url: str) -> tuple[str, int]:
    """A conversation past its first fold, its newest message the one to pin."""
    model = OpenAIChat("gpt-4o-mini", api_key="k", base_url=fake.url, max_retries=0)
    with Store(db_url) as store:
        bot = ChatMemory(
            model=model,
            settings=Settings(),
            store=store,
            max_tokens=400,
            keep_recent=4,
            background=False,
        )
        bot.ask("Hi, my name is Sam.")
        for i in range(8):
            bot.ask(f"Day {i}: museums, harbours, long train rides and the weather.")
        bot.ask(PINNED)
        assert bot.current_summary is not None
        pinned = bot.newest_message().seq - 1  # the question, before its reply
        bot.close()
        assert bot.conversation_id is not None
        return bot.conversation_id, pinned


def last_chat_request(fake: FakeServerProcess) -> str:
    return json.dumps(fake.control.requests("chat")[-1]["body"]["messages"])


def open_tab(page: Page, link: str, tab: str | None = None) -> None:
    page.get_by_role("link", name=link).click()
    wait_for_app(page)
    if tab:
        page.get_by_role("tab", name=tab).click()


def test_edited_summary_is_sent_and_a_pin_survives_a_budget_cut_and_a_fold(
    browser: Browser, fake: FakeServerProcess, tmp_path: Path
) -> None:
    db_url = f"sqlite:///{tmp_path / 'corrections.db'}"
    cid, pinned = seeded_conversation(fake, db_url)
    settings = {
        "OPENAI_BASE_URL": fake.url,
        "OPENAI_API_KEY": LEAK_KEY,
        "CHATMEM_MAX_RETRIES": "0",
        "CHATMEM_DATABASE_URL": db_url,
    }
    try:
        app = start_app_process(
            settings, app_workdir(tmp_path / "app"), log_path=ARTIFACTS / "corrections.log"
        )
    except AppStartError as exc:
        pytest.fail(str(exc), pytrace=False)
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    context.set_default_timeout(20_000)
    page = context.new_page()
    try:
        page.goto(f"{app.url}/?c={cid}")
        page.set_default_timeout(60_000)  # the first run imports the app and reads the store
        wait_for_app(page)
        page.set_default_timeout(20_000)
        open_tab(page, "Inspector", "Correct memory")
        editor = page.locator(".st-key-corrections_summary_text textarea")
        editor.fill(EDITED)
        page.get_by_role("button", name="Save as a new version").click()
        expect(page.get_by_text("Summary saved.")).to_be_visible(timeout=WAIT)
        wait_for_app(page)
        choose = page.locator(".st-key-corrections_message input")
        choose.click()
        choose.fill(f"#{pinned} user")  # the select box filters its options as one types
        page.get_by_role("option", name=re.compile(rf"^#{pinned} user")).click()
        wait_for_app(page)
        expect(choose).to_have_value(re.compile(rf"^#{pinned} user"), timeout=WAIT)
        page.get_by_role("button", name="Pin", exact=True).click()
        expect(page.get_by_text(f"Message {pinned} pinned.")).to_be_visible(timeout=WAIT)

        open_tab(page, "Chat")
        # the click may be read before its rerun starts: wait until the chat has drawn
        expect(chat_messages(page).first).to_be_visible(timeout=WAIT)
        wait_for_app(page)
        send(page, "What is my pet called?")
        assert EDITED in last_chat_request(fake)  # the edited summary, as the person wrote it

        with Store(db_url) as store:
            versions = len(store.list_summaries(cid))
            thumb = page.locator(".st-key-max_tokens input[type='range']")
            thumb.focus()
            thumb.press("Home")  # the budget cut: 256 tokens; the history is folded
            expect(thumb).to_have_value("256", timeout=WAIT)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and len(store.list_summaries(cid)) == versions:
                time.sleep(0.2)
            newest = store.list_summaries(cid)[-1]
            assert newest.covers_seq >= pinned, "the fold did not reach the pinned message"
        wait_for_app(page)
        send(page, "What is my locker code?")
        sent = fake.control.requests("chat")[-1]["body"]["messages"]
        assert {"role": "user", "content": PINNED} in sent  # word for word, after the fold
        kinds = [m["role"] for m in sent]
        assert kinds[0] == "system" and sent[-1]["content"] == "What is my locker code?"
        no_exceptions(page)
        page.screenshot(path=str(ARTIFACTS / "corrections-chat.png"))
    except Exception:
        page.screenshot(path=str(ARTIFACTS / "failed-corrections.png"))
        raise
    finally:
        context.close()
        app.stop()
