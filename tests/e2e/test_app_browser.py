"""The real app in headless Chromium: chat, fold under a lower budget, remember the name;
reload and go on; survive a killed server; escape hostile text; never show the API key."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, Locator, Page, expect

from chatmem.ui.state import NO_REPLY
from tests.e2e.conftest import (
    ARTIFACTS,
    LEAK_KEY,
    ROOT,
    SERVER_LOG,
    app_workdir,
    start_app,
    wait_for_app,
)
from tests.fakes import FakeServerProcess

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MESSAGES = [
    "Hi, my name is Sam.",
    "My budget is 2400 euros for the week, flights excluded, for two people.",
    "We are going to Lisbon in March with my sister, and we would like to see the old town, "
    "museums and viewpoints.",
    "Any good places for dinner near Alfama that are not too touristy and have vegetarian options?",
    "How do we get to Sintra by train, and which palace should we visit if we only have one "
    "afternoon?",
    "What about Belém? Is the tower worth the queue, and where do we get the famous custard tarts?",
]
SCREENSHOT = ROOT / "docs" / "screenshot.png"
REPLY_WAIT = 20_000  # ms: a reply ends a poll (and a rerun) after its last word
ID_IN_URL = re.compile(r"[?&]c=([0-9a-f]{32})")
XSS = [
    """<img src=x onerror="document.title='pwned'">""",
    "<script>document.title='pwned'</script>",
]


def chat_messages(page: Page) -> Locator:
    return page.locator("[data-testid='stChatMessage']")


def chat_box(page: Page) -> Locator:
    return page.locator("[data-testid='stChatInput'] textarea")


def send(page: Page, text: str) -> None:
    """Type a message, press Enter, and wait for the reply and the run to finish."""
    before = chat_messages(page).count()
    box = chat_box(page)
    expect(box).to_be_enabled()
    box.fill(text)
    box.press("Enter")
    expect(chat_messages(page)).to_have_count(before + 2)
    expect(box).to_be_enabled(timeout=REPLY_WAIT)  # the reply streams on after a run ends
    wait_for_app(page)


def gauge(page: Page) -> tuple[int, int]:
    text = page.locator(".st-key-gauge").inner_text()
    match = re.search(r"([\d,]+) / ([\d,]+) tokens", text)
    assert match, text
    return int(match[1].replace(",", "")), int(match[2].replace(",", ""))


def no_exceptions(page: Page) -> None:
    expect(page.locator("[data-testid='stException']")).to_have_count(0)


def conversation_id(page: Page) -> str:
    expect(page).to_have_url(ID_IN_URL)
    found = ID_IN_URL.search(page.url)
    assert found, page.url
    return found[1]


def watch_title(page: Page) -> None:
    """Record every change of ``document.title`` in ``window.__titles``."""
    page.evaluate(
        """() => {
            window.__titles = [];
            const record = () => window.__titles.push(document.title);
            new MutationObserver(record).observe(document.head, {
                subtree: true, childList: true, characterData: true,
            });
        }"""
    )


def titles_seen(page: Page) -> list[str]:
    return [*page.evaluate("() => window.__titles || []"), page.title()]


def test_chat_folds_under_a_lower_budget_and_remembers(page: Page, fake: FakeServerProcess) -> None:
    expect(page.get_by_text("Answering:")).to_contain_text("gpt-4o-mini")
    for text in MESSAGES:
        send(page, text)
    expect(chat_messages(page).nth(1)).to_contain_text("You said: Hi, my name is Sam.")
    expect(page.locator(".st-key-summary")).to_contain_text("No summary yet")
    used, limit = gauge(page)
    assert (limit, used <= limit) == (3000, True)

    # move the budget slider to its minimum with the keyboard: the history no longer fits,
    # so older messages are folded into the summary in the background (slowly, here), and
    # the sidebar polls until the fold lands
    fake.control.config(summary_latency_ms=1500)
    thumb = page.locator(".st-key-max_tokens input[type='range']")
    thumb.focus()
    thumb.press("Home")
    expect(thumb).to_have_value("256")
    expect(page.get_by_text("Folding older messages into the summary")).to_be_visible()
    expect(page.locator(".st-key-summary")).to_contain_text(
        "The user's name is Sam.", timeout=15_000
    )
    expect(page.get_by_text("Folding older messages into the summary")).to_have_count(0)
    expect(
        page.get_by_text(re.compile(r"Folded \d+ messages: [\d,]+ → [\d,]+ tokens"))
    ).to_be_visible()
    wait_for_app(page)
    used, limit = gauge(page)
    assert limit == 256
    assert used <= limit
    expect(page.locator(".st-key-summary")).to_contain_text(re.compile(r"Summary · \d+ tokens"))
    assert fake.control.requests("summary")

    send(page, "What is my name?")
    last = chat_messages(page).last
    expect(last).to_contain_text("Your name is Sam.")
    used, limit = gauge(page)
    assert used <= limit == 256
    no_exceptions(page)

    last.scroll_into_view_if_needed()
    expect(last).to_be_in_viewport()
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "chat-after-fold.png"
    page.screenshot(path=str(shot))
    if not SCREENSHOT.exists() or os.environ.get("CHATMEM_UPDATE_SCREENSHOT") == "1":
        SCREENSHOT.parent.mkdir(exist_ok=True)
        shutil.copy(shot, SCREENSHOT)

    # reload: the same conversation comes back from the store, summary and all
    cid = conversation_id(page)
    shown = chat_messages(page).count()
    page.reload()
    wait_for_app(page)
    assert conversation_id(page) == cid
    expect(chat_messages(page)).to_have_count(shown)
    expect(chat_messages(page).first).to_contain_text("Hi, my name is Sam.")
    expect(page.locator(".st-key-summary")).to_contain_text("The user's name is Sam.")
    expect(page.locator(".st-key-max_tokens input[type='range']")).to_have_value("256")
    send(page, "What is my name?")
    expect(chat_messages(page).last).to_contain_text("Your name is Sam.")
    assert conversation_id(page) == cid
    no_exceptions(page)


def test_input_is_disabled_while_a_reply_streams(page: Page, fake: FakeServerProcess) -> None:
    fake.control.config(chunk_delay_ms=60, reply_words=40)
    box = chat_box(page)
    box.fill("Tell me a long story about Lisbon.")
    box.press("Enter")
    expect(box).to_be_disabled()
    expect(chat_messages(page)).to_have_count(2)
    expect(box).to_be_enabled(timeout=REPLY_WAIT)
    expect(chat_messages(page).last).to_contain_text("You said: Tell me a long story")


def test_server_error_is_one_sentence_with_retry(page: Page, fake: FakeServerProcess) -> None:
    fake.control.fail({"kind": "500"})
    box = chat_box(page)
    box.fill("Hi, my name is Sam.")
    box.press("Enter")
    alert = page.locator("[data-testid='stAlertContentError']")
    expect(alert).to_contain_text("had an internal error (HTTP 500).", timeout=REPLY_WAIT)
    expect(chat_messages(page)).to_have_count(1)
    expect(chat_messages(page).first).to_contain_text("Hi, my name is Sam.")
    wait_for_app(page)
    page.locator(".st-key-retry button").click()
    expect(chat_messages(page).last).to_contain_text("You said: Hi, my name is Sam.")
    expect(chat_box(page)).to_be_enabled(timeout=REPLY_WAIT)
    expect(chat_messages(page)).to_have_count(2)
    expect(alert).to_have_count(0)
    no_exceptions(page)


@pytest.mark.parametrize("title", ["Inspector", "Conversations", "Compare"])
def test_every_page_opens_with_the_sidebar_inspector(page: Page, title: str) -> None:
    send(page, "Hi, my name is Sam.")
    page.get_by_role("link", name=title).click()
    expect(page.locator("h2")).to_contain_text(
        {"Inspector": "Memory inspector", "Conversations": "Conversations", "Compare": "Compare"}[
            title
        ]
    )
    wait_for_app(page)
    expect(page.locator(".st-key-gauge")).to_contain_text("tokens")
    expect(page.locator(".st-key-max_tokens")).to_be_visible()
    no_exceptions(page)


def test_hostile_text_is_shown_as_text(page: Page) -> None:
    watch_title(page)
    for text in XSS:
        send(page, text)
    for i, text in enumerate(XSS):
        expect(chat_messages(page).nth(2 * i)).to_contain_text(text)  # literally
    cid = conversation_id(page)
    page.reload()  # and again when rendered from the store
    wait_for_app(page)
    watch_title(page)
    expect(chat_messages(page)).to_have_count(2 * len(XSS))
    expect(chat_messages(page).first).to_contain_text(XSS[0])
    assert conversation_id(page) == cid
    expect(page.locator("img[src='x']")).to_have_count(0)
    expect(page.locator("[data-testid='stChatMessage'] script")).to_have_count(0)
    assert "pwned" not in titles_seen(page)
    page.get_by_role("link", name="Inspector").click()
    wait_for_app(page)
    expect(page.locator("h2")).to_contain_text("Memory inspector")
    expect(page.locator("img[src='x']")).to_have_count(0)
    assert "pwned" not in titles_seen(page)


LINKS = (
    "See [the docs](https://evil.example/a), <https://evil.example/b>, www.evil.example/c, "
    "![pixel](https://evil.example/d.png) and [data](data:text/html;base64,PHNjcmlwdD4=)."
)


def test_links_in_messages_are_shown_not_clickable(page: Page) -> None:
    send(page, LINKS)
    live = "[data-testid='stChatMessage'] :is(a[href^='http'], a[href^='data:'], img)"
    for _ in range(2):  # as sent, then rendered from the store after a reload
        expect(chat_messages(page)).to_have_count(2)
        expect(page.locator(live)).to_have_count(0)
        for message in (chat_messages(page).nth(0), chat_messages(page).nth(1)):
            expect(message).to_contain_text("the docs (https://evil.example/a)")
            expect(message.locator("code", has_text="www.evil.example/c")).to_have_count(1)
        page.reload()
        wait_for_app(page)
    no_exceptions(page)


def test_tricky_links_are_not_clickable_either(page: Page) -> None:
    """Escaped schemes, character references, unclosed or escaped backticks, table cells and
    dedented fences (``tests/app/test_markup.py``), each sent as a message and echoed."""
    from tests.app.test_markup import TRICKS

    for text in TRICKS:
        send(page, text)
    live = "[data-testid='stChatMessage'] :is(a[href^='http'], a[href^='data:'], img)"
    expect(page.locator(live)).to_have_count(0)
    page.reload()
    wait_for_app(page)
    expect(chat_messages(page)).to_have_count(2 * len(TRICKS))
    expect(page.locator(live)).to_have_count(0)
    no_exceptions(page)


def test_the_api_key_never_shows(page: Page, tmp_path: Path) -> None:
    send(page, "Hi, my name is Sam.")
    assert LEAK_KEY not in page.content()
    for title, heading in [
        ("Inspector", "Memory inspector"),
        ("Compare", "Compare"),
        ("Conversations", "Conversations"),
    ]:
        page.get_by_role("link", name=title).click()
        expect(page.locator("h2")).to_contain_text(heading)
        wait_for_app(page)
        for tab in page.locator("[data-baseweb='tab']").all():  # every inspector tab
            tab.click()
        assert LEAK_KEY not in page.content(), title
    exports = []
    for key in ("export_json", "export_markdown"):
        with page.expect_download() as download:
            page.locator(f".st-key-{key} button").click()
        path = tmp_path / download.value.suggested_filename
        download.value.save_as(path)
        exports.append(path.read_text())
    assert "Hi, my name is Sam." in exports[0] and "Hi, my name is Sam." in exports[1]
    assert '"format": "chatmem.conversation"' in exports[0]
    for text in exports:
        assert LEAK_KEY not in text
    log = SERVER_LOG.read_text(errors="replace")
    assert log.strip()  # the log is there (unbuffered), and
    assert LEAK_KEY not in log
    no_exceptions(page)


def test_a_killed_server_loses_no_message(
    browser: Browser, fake: FakeServerProcess, tmp_path: Path
) -> None:
    """Crash test: SIGKILL the app while a reply streams, start it again on the same
    database, open the conversation's link: the user's message is there, and Retry answers."""
    workdir = app_workdir(tmp_path / "app")
    database = f"sqlite:///{tmp_path / 'crash.db'}"
    fake.control.config(chunk_delay_ms=300, reply_words=60)
    first = start_app(fake.url, workdir, database, ARTIFACTS / "streamlit-crash-1.log")
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    context.set_default_timeout(20_000)
    try:
        page = context.new_page()
        page.goto(first.url)
        wait_for_app(page)
        text = "Remember the blue heron by the lake."
        box = chat_box(page)
        box.fill(text)
        box.press("Enter")
        expect(chat_messages(page).last).to_contain_text("You said:")  # the reply streams
        cid = conversation_id(page)
        expect(box).to_be_disabled()  # still streaming (18 s in all)
        first.kill()
        fake.control.config(chunk_delay_ms=0, reply_words=None)

        second = start_app(fake.url, workdir, database, ARTIFACTS / "streamlit-crash-2.log")
        try:
            page.goto(f"{second.url}/?c={cid}")
            wait_for_app(page)
            expect(chat_messages(page)).to_have_count(1)
            expect(chat_messages(page).first).to_contain_text(text)
            expect(page.get_by_text(NO_REPLY)).to_be_visible()
            page.locator(".st-key-retry button").click()
            expect(chat_messages(page)).to_have_count(2)
            expect(chat_messages(page).last).to_contain_text(f"You said: {text}")
            wait_for_app(page)
            no_exceptions(page)
        finally:
            second.stop()
        for log in (first.log, second.log):
            assert LEAK_KEY not in log.read_text(errors="replace")
    finally:
        context.close()
        first.stop()


def test_no_page_makes_a_request_off_the_machine(browser: Browser, app_url: str) -> None:
    """Offline users see no failed fetches: every request of every page stays on this host
    (the page icon included, which Streamlit would fetch from a font CDN for an icon name)."""
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    context.set_default_timeout(20_000)
    requested: list[str] = []
    context.on("request", lambda request: requested.append(request.url))
    tab = context.new_page()
    try:
        tab.goto(app_url)
        wait_for_app(tab)
        send(tab, "Hi, my name is Sam.")
        for title in ("Inspector", "Conversations", "Compare"):
            tab.get_by_role("link", name=title).click()
            wait_for_app(tab)
        tab.wait_for_load_state("networkidle")
    finally:
        context.close()
    hosts = {urlsplit(url).hostname for url in requested if urlsplit(url).scheme != "data"}
    assert len(requested) > 10  # the pages really loaded (scripts, styles, the websocket)
    assert hosts <= {"localhost", "127.0.0.1"}, sorted(
        url for url in requested if urlsplit(url).hostname not in {"localhost", "127.0.0.1"}
    )
