"""The chat's memory marks and the inspector's request diff in Chromium, past a fold: the
marks agree with the inspector's next request, and the diff names what a budget cut dropped.
Screenshots of the marked chat and the presenter page go to docs/screenshots/."""

from __future__ import annotations

import os
import re
import shutil
import time

import pytest
from playwright.sync_api import Browser, Page, expect

from chatmem.marks import Mark
from tests.e2e.conftest import ARTIFACTS, ROOT, wait_for_app
from tests.e2e.test_app_browser import MESSAGES, chat_messages, send
from tests.fakes import FakeServerProcess

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SHOTS = ROOT / "docs" / "screenshots"
MARK_TEXTS = [m.value for m in (Mark.SENT, Mark.RECALLED, Mark.SUMMARY, Mark.LEFT_OUT)]


CUT_LABELS = """() => [...document.querySelectorAll('[class*="st-key-actions_"] button')]
    .filter(b => [...b.querySelectorAll('p')].some(e => e.scrollWidth > e.clientWidth + 1))
    .map(b => b.innerText)"""


@pytest.fixture(scope="module", autouse=True)
def _warm(browser: Browser, app_url: str) -> None:
    """Load the app once before the tests' pages: a cold first run (imports, tokenizer) can
    take longer than a page's wait on a busy machine."""
    context = browser.new_context()
    try:
        tab = context.new_page()
        tab.goto(app_url)
        tab.wait_for_selector(
            "[data-testid='stApp'][data-test-script-state='notRunning']", timeout=120_000
        )
    finally:
        context.close()


def marks(page: Page) -> list[str]:
    """The mark of each chat message, in order."""
    out = []
    for text in chat_messages(page).all_inner_texts():
        found = [m for m in MARK_TEXTS if m in text]
        assert len(found) == 1, text
        out.append(found[0])
    return out


def seqs(text: str) -> list[int]:
    """``#1–3, #7`` as ``[1, 2, 3, 7]``."""
    out: list[int] = []
    for first, last in re.findall(r"#(\d+)(?:–(\d+))?", text):
        out.extend(range(int(first), int(last or first) + 1))
    return out


def open_page(page: Page, title: str, heading: str) -> None:
    page.get_by_role("link", name=title).click()
    expect(page.locator("h2")).to_contain_text(heading)
    wait_for_app(page)


def shoot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / name
    page.screenshot(path=str(shot), full_page=True)
    target = SHOTS / name
    if not target.exists() or os.environ.get("CHATMEM_UPDATE_SCREENSHOT") == "1":
        SHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, target)


def test_marks_agree_with_the_next_request_and_the_diff_names_a_cut(
    page: Page, fake: FakeServerProcess
) -> None:
    for text in MESSAGES:
        send(page, text)
    assert marks(page) == [Mark.SENT.value] * 2 * len(MESSAGES)  # all of it fits

    # a budget cut whose fold fails: the next request leaves the oldest messages out
    fake.control.fail({"kind": "500", "only": "summary"})
    thumb = page.locator(".st-key-max_tokens input[type='range']")
    thumb.focus()
    thumb.press("Home")
    expect(thumb).to_have_value("256")
    # no summary (the fold failed): what is no longer sent word for word is left out, or
    # quoted in the recalled block when recall finds it worth the room. The rerun the slider
    # starts may not have begun when the page is first read, so read until the marks change.
    deadline = time.monotonic() + 20
    while True:
        wait_for_app(page)
        left_out = [i + 1 for i, m in enumerate(marks(page)) if m != Mark.SENT.value]
        if left_out or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    assert left_out
    assert {m for m in marks(page) if m != Mark.SENT.value} <= {
        Mark.LEFT_OUT.value,
        Mark.RECALLED.value,
    }
    open_page(page, "Inspector", "Memory inspector")
    diff = page.locator(".st-key-request_diff")
    expect(diff).to_contain_text("Dropped to fit the budget")
    dropped = seqs(re.search(r"Dropped to fit the budget: ([#\d–, ]+)", diff.inner_text())[1])
    assert dropped == left_out  # the diff names what the chat no longer marks as sent

    # past the fold (the next turn's): every mark agrees with the inspector's next request
    open_page(page, "Chat", "Chat")
    send(page, "What is my name?")
    expect(page.locator(".st-key-summary")).to_contain_text(
        "The user's name is Sam.", timeout=20_000
    )
    wait_for_app(page)
    shown = marks(page)
    assert Mark.SUMMARY.value in shown and Mark.SENT.value in shown
    covers = int(
        re.search(r"Covers messages 1–(\d+)", page.locator(".st-key-summary").inner_text())[1]
    )
    sent_texts = [
        text.split("\n")[0]
        for text, mark in zip(chat_messages(page).all_inner_texts(), shown, strict=True)
        if mark == Mark.SENT.value
    ]
    for i, mark in enumerate(shown, start=1):
        if i <= covers:
            assert mark in (Mark.SUMMARY.value, Mark.RECALLED.value), (i, mark)
    # the window line sits right above the first message sent word for word
    first_sent = shown.index(Mark.SENT.value)
    line = page.get_by_text("The model sees the messages below word for word")
    expect(line).to_have_count(1)
    line_y = line.bounding_box()["y"]  # type: ignore[index]
    assert chat_messages(page).nth(first_sent).bounding_box()["y"] > line_y  # type: ignore[index]
    if first_sent:
        assert chat_messages(page).nth(first_sent - 1).bounding_box()["y"] < line_y  # type: ignore[index]
    shoot(page, "marked-chat.png")

    open_page(page, "Inspector", "Memory inspector")
    metric = page.locator("[data-testid='stMetric']", has_text="Messages word for word")
    assert int(metric.locator("[data-testid='stMetricValue']").inner_text()) == len(sent_texts)
    # the next request's table (#, kind, role, seq, tokens, content): its verbatim seqs are
    # the messages the chat marks as sent word for word (every message here is stored in order,
    # so a message's place in the chat is its seq)
    cells = page.locator("[data-testid='stDataFrame']").first.locator("[role='gridcell']")
    chat_sent = [i + 1 for i, m in enumerate(shown) if m == Mark.SENT.value]
    deadline = time.monotonic() + 20
    while True:  # the grid draws its cells a moment after the page's run has finished
        texts = cells.all_inner_texts()
        rows = [texts[i : i + 6] for i in range(0, len(texts), 6)]
        table_sent = [int(row[3]) for row in rows if len(row) == 6 and row[1] == "verbatim"]
        if table_sent == chat_sent or time.monotonic() > deadline:
            break
        page.wait_for_timeout(250)
    assert table_sent == chat_sent

    open_page(page, "Presenter", "What the bot remembers")
    expect(page.locator(".st-key-remembers")).to_contain_text(
        f"the newest {len(sent_texts)} message(s) word for word"
    )
    expect(page.locator(".st-key-fold_story")).to_contain_text("The user's name is Sam.")
    shoot(page, "presenter.png")

    # the Conversations page keeps its buttons' labels whole, at 1,400 px and narrower
    open_page(page, "Conversations", "Conversations")
    for width in (1400, 1100):
        page.set_viewport_size({"width": width, "height": 900})
        buttons = page.locator("[class*='st-key-actions_'] button")
        expect(buttons.first).to_be_visible()
        assert buttons.count() >= 3
        assert page.evaluate(CUT_LABELS) == [], width
