"""Two app replicas on one PostgreSQL: two ``streamlit run`` processes, a Chromium page on
each, one conversation. Each replica answers from what was said on the other, the folds of
both land as one line of summary versions, and every reply is linked to its own question."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect

from chatmem.store import Store
from tests.e2e.conftest import ARTIFACTS, LEAK_KEY, wait_for_app
from tests.e2e.test_app_browser import chat_messages, conversation_id, no_exceptions, send
from tests.fakes import FakeServerProcess
from tests.fakes.app_process import AppStartError, app_workdir
from tests.fakes.app_process import start_app as start_app_process
from tests.unit.conftest import reset_postgres
from tests.unit.shared_checks import invariant_violations, lineage_is_linear

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.postgres]

FILLER = "with museums, harbours, long train rides and the weather"


def replica(fake: FakeServerProcess, url: str, folder: Path, name: str):
    settings = {
        "OPENAI_BASE_URL": fake.url,
        "OPENAI_API_KEY": LEAK_KEY,
        "CHATMEM_MAX_RETRIES": "0",
        "CHATMEM_DATABASE_URL": url,
        "CHATMEM_MAX_TOKENS": "400",
    }
    try:
        return start_app_process(
            settings, app_workdir(folder / name), log_path=ARTIFACTS / f"{name}.log", poll=0.1
        )
    except AppStartError as exc:
        pytest.fail(str(exc), pytrace=False)


def test_two_replicas_share_one_conversation(
    browser: Browser, fake: FakeServerProcess, tmp_path: Path
) -> None:
    url = reset_postgres()
    first = replica(fake, url, tmp_path, "replica-1")
    second = replica(fake, url, tmp_path, "replica-2")
    contexts = []
    try:
        pages = []
        for _ in range(2):
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            context.set_default_timeout(30_000)
            contexts.append(context)
            pages.append(context.new_page())
        one, two = pages
        one.goto(first.url)
        wait_for_app(one)
        send(one, "Hello from the first replica.")
        cid = conversation_id(one)
        two.goto(f"{second.url}/?c={cid}")
        wait_for_app(two)
        expect(chat_messages(two)).to_have_count(2)  # the first replica's turn, from the store
        for i, (word, city) in enumerate([("colour", "teal"), ("pet", "heron"), ("town", "Porto")]):
            send(one, f"Note: my {word} is {city}. Day {i} {FILLER}.")
            send(two, f"Meanwhile: my sport{'s' * i} is rowing{i}. Day {i} {FILLER}.")
        for i in range(4):
            send(one, f"Tell me about day {i + 3} {FILLER}, and the food too.")
            send(two, f"And day {i + 3} from here {FILLER}, with the bakeries.")
        send(two, "What is my colour?")  # said on the other replica, long ago
        expect(chat_messages(two).last).to_contain_text("Your colour is teal.")
        send(one, "What is my sport?")
        expect(chat_messages(one).last).to_contain_text("Your sport is rowing0.")
        two.reload()
        wait_for_app(two)
        expect(two.get_by_text("What is my sport?")).to_be_visible()  # asked on the other one
        for page, name in ((one, "replica-1"), (two, "replica-2")):
            no_exceptions(page)
            page.screenshot(path=str(ARTIFACTS / f"two-replicas-{name}.png"))
    finally:
        for context in contexts:
            context.close()
        first.stop()
        second.stop()

    with Store(url) as store:
        assert store.list_summaries(cid), "the conversation folded"
        assert invariant_violations(store, cid) == []
        assert lineage_is_linear(store, cid)
        rows = {m.seq: m for m in store.messages(cid)}
        for reply in (m for m in rows.values() if m.role == "assistant"):
            question = rows[reply.reply_to]
            assert question.role == "user"
            if reply.content.startswith("You said: "):
                assert question.content.startswith(reply.content.removeprefix("You said: "))
    for log in (first.log, second.log):
        assert log is not None and LEAK_KEY not in log.read_text(errors="replace")
