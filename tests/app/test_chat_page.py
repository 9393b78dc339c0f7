"""The chat page and its sidebar, driven by AppTest against the fake server."""

from __future__ import annotations

import re

import pytest
from streamlit.testing.v1 import AppTest

from chatmem.config import KEEP_RECENT_RANGE, MAX_TOKENS_CAP, MAX_TOKENS_MIN
from chatmem.ui.state import PAGE_SIZE
from tests.app.conftest import APP, TIMEOUT, retry, send, session, shown_messages
from tests.fakes import FakeServerProcess


def test_chat_sends_messages_and_renders_replies(app: AppTest, fake: FakeServerProcess) -> None:
    send(app, "Hi, my name is Sam.")
    assert shown_messages(app) == [
        ("user", "Hi, my name is Sam."),
        ("assistant", "You said: Hi, my name is Sam."),
    ]
    send(app, "What is my name?")
    assert shown_messages(app)[-1] == ("assistant", "Your name is Sam.")
    assert len(fake.control.requests("chat")) == 2
    transcript = session(app).transcript
    assert [(e["role"], e["status"]) for e in transcript] == [
        ("user", "ok"),
        ("assistant", "ok"),
    ] * 2
    # the input is enabled again once the reply has streamed
    assert not app.chat_input(key="chat_input").proto.disabled
    assert not app.error


def test_header_names_the_model(app: AppTest, fake: FakeServerProcess) -> None:
    captions = [c.value for c in app.main.caption]
    assert any(f"gpt-4o-mini at {fake.url}" in c for c in captions), captions


def test_input_is_disabled_while_the_reply_streams(app: AppTest) -> None:
    sess = session(app)
    seen: list[bool] = []
    original = sess.bot.reply_stream

    def watched():  # type: ignore[no-untyped-def]
        seen.append(sess.busy)
        yield from original()

    sess.bot.reply_stream = watched  # type: ignore[method-assign]
    send(app, "hello")
    assert seen == [True]  # the flag that draws the chat input disabled
    assert not sess.busy


def test_sliders_change_the_memory(app: AppTest) -> None:
    bot = session(app).bot
    budget = app.slider(key="max_tokens")
    assert (budget.min, budget.max) == (MAX_TOKENS_MIN, MAX_TOKENS_CAP)  # the window, capped
    budget.set_value(1000).run()
    assert bot.max_tokens == 1000
    recent = app.slider(key="keep_recent")
    assert (recent.min, recent.max) == KEEP_RECENT_RANGE
    recent.set_value(12).run()
    assert bot.keep_recent == 12
    assert bot.max_tokens == 1000


def test_lowering_the_budget_folds_and_the_sidebar_shows_it(
    app: AppTest, fake: FakeServerProcess
) -> None:
    fake.control.config(summary_latency_ms=400)
    for text in [
        "Hi, my name is Sam.",
        "My budget is 2400 euros.",
        *[f"Tell me more about day {i} of the trip, with museums and food." for i in range(6)],
    ]:
        send(app, text)
    bot = session(app).bot
    app.slider(key="max_tokens").set_value(256).run()  # folds now, in the background
    assert bot.max_tokens == 256
    assert bot.folding
    assert any("Folding older messages" in i.value for i in app.sidebar.info)
    bot.wait_for_fold(timeout=10)
    app.run()
    assert "The user's name is Sam." in bot.summary
    sidebar_text = "\n".join(m.value for m in app.sidebar.markdown)
    assert "The user's name is Sam." in sidebar_text
    assert any(e.label.startswith("Summary · ") for e in app.sidebar.expander)
    toasts = [t.value for t in app.toast]
    assert any(re.match(r"Folded \d+ messages: [\d,]+ → [\d,]+ tokens", t) for t in toasts)
    used, limit = gauge_numbers(app)
    assert limit == 256
    assert used <= limit
    send(app, "What is my name?")
    assert shown_messages(app)[-1] == ("assistant", "Your name is Sam.")


def gauge_numbers(at: AppTest) -> tuple[int, int]:
    for md in at.sidebar.markdown:
        match = re.search(r"\*\*([\d,]+)\*\* / ([\d,]+) tokens", md.value)
        if match:
            return int(match[1].replace(",", "")), int(match[2].replace(",", ""))
    raise AssertionError("no gauge text in the sidebar")


def test_gauge_warns_near_the_limit(app: AppTest) -> None:
    send(app, "word " * 300)
    used, limit = gauge_numbers(app)
    assert used / limit < 0.9
    assert not any(":red[" in md.value for md in app.sidebar.markdown)
    app.slider(key="max_tokens").set_value(int(used / 0.95)).run()
    used, limit = gauge_numbers(app)
    assert 0.9 <= used / limit <= 1
    assert any(":red[" in md.value for md in app.sidebar.markdown)


def test_server_failure_shows_one_sentence_and_retry(
    app_env: FakeServerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHATMEM_MAX_RETRIES", "2")  # the SDK retries twice: three failures
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    app_env.control.fail({"kind": "500"}, {"kind": "500"}, {"kind": "500"})
    send(at, "Hi, my name is Sam.")
    assert [e.value for e in at.error] == [
        f"The server at {app_env.url} had an internal error (HTTP 500)."
    ]
    assert shown_messages(at) == [("user", "Hi, my name is Sam.")]  # kept
    assert not at.exception
    assert at.button(key="retry").label == "Retry"
    retry(at)
    assert not at.error
    assert shown_messages(at) == [
        ("user", "Hi, my name is Sam."),
        ("assistant", "You said: Hi, my name is Sam."),
    ]
    assert [e.kind for e in session(at).bot.events] == ["error"]
    session(at).bot.close()


def test_cut_reply_is_marked_and_replaced_on_retry(app: AppTest, fake: FakeServerProcess) -> None:
    fake.control.fail({"kind": "cut"})
    send(app, "one two three four five six seven eight nine ten")
    roles = [r for r, _ in shown_messages(app)]
    assert roles[0] == "user"
    assert len(app.error) == 1
    if len(roles) == 2:  # the half reply that arrived is shown, marked as cut off
        assert any("Cut off" in c.value for c in app.main.caption)
    retry(app)
    assert shown_messages(app) == [
        ("user", "one two three four five six seven eight nine ten"),
        ("assistant", "You said: one two three four five six seven eight nine ten"),
    ]


def test_too_long_message_is_kept_and_explained(app: AppTest, fake: FakeServerProcess) -> None:
    app.slider(key="max_tokens").set_value(256).run()
    huge = "lorem ipsum " * 400
    send(app, huge)
    assert [w.value for w in app.warning if "Shorten it or raise max_tokens" in w.value]
    assert shown_messages(app) == [("user", huge.strip())]
    assert any("Not sent" in c.value for c in app.main.caption)
    assert fake.control.requests("chat") == []
    assert [e.kind for e in session(app).bot.events] == ["too_long"]


def test_blank_message_is_refused_plainly(app: AppTest, fake: FakeServerProcess) -> None:
    send(app, "   ")
    assert [w.value for w in app.warning] == ["The message is empty."]
    assert shown_messages(app) == []
    assert fake.control.requests("chat") == []


def test_markdown_from_users_is_text_safe(app: AppTest) -> None:
    text = "<b>bold?</b> costs $5 and $6 :red[not red] `code $x`"
    send(app, text)
    user = app.chat_message[0].markdown[0]
    assert not user.proto.allow_html
    assert user.value == r"\<b>bold?\</b> costs \$5 and \$6 \:red\[not red] `code $x`"
    for message in app.chat_message:
        for md in message.markdown:
            assert not md.proto.allow_html


def test_only_the_latest_messages_are_rendered(app: AppTest) -> None:
    sess = session(app)
    for i in range(60):
        sess.add("user", f"question {i}")
        sess.add("assistant", f"answer {i}")
    app.run()
    assert len(app.chat_message) == PAGE_SIZE
    assert shown_messages(app)[-1] == ("assistant", "answer 59")
    more = app.button(key="show_earlier")
    assert more.label == "Show earlier messages (70 hidden)"
    more.click().run()
    assert len(app.chat_message) == 2 * PAGE_SIZE


def test_new_chat_starts_over_and_keeps_the_sliders(app: AppTest) -> None:
    send(app, "Hi, my name is Sam.")
    app.slider(key="max_tokens").set_value(900).run()
    old = session(app).bot
    app.button(key="new_chat").click().run()
    new = session(app).bot
    assert new is not old
    assert shown_messages(app) == []
    assert new.max_tokens == 900
    assert app.slider(key="max_tokens").value == 900
    send(app, "What is my name?")
    assert shown_messages(app)[-1] == ("assistant", "I don't know your name.")


def test_failed_fold_is_toasted_and_the_chat_goes_on(app: AppTest, fake: FakeServerProcess) -> None:
    for i in range(8):
        send(app, f"Hi, my name is Sam. Tell me more about day {i} of the trip, with museums.")
    fake.control.fail({"kind": "500", "only": "summary"})
    app.slider(key="max_tokens").set_value(256).run()
    # the fold may fail while that run is still going (then it toasts in that run) or after
    toasts = [t.value for t in app.toast]
    bot = session(app).bot
    bot.wait_for_fold(timeout=10)
    app.run()
    assert bot.summary == ""
    toasts += [t.value for t in app.toast]
    assert any("The summary was left as it was" in t for t in toasts), toasts
    assert any("No summary yet" in c.value for c in app.sidebar.caption)
    send(app, "What is my name?")  # trimmed to fit meanwhile; the fold is retried after it
    assert shown_messages(app)[-1][0] == "assistant"
    used, limit = gauge_numbers(app)
    assert used <= limit == 256
