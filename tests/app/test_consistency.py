"""Figures that must agree: the gauge before and after a reload, the sidebar and the
inspector, the gauge and the request really sent, a reopened conversation's inspector."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest

from tests.app.conftest import close, open_app, session
from tests.app.test_chat_page import gauge_numbers
from tests.app.test_marks_diffs_app import talk
from tests.fakes import FakeServerProcess


def legend(at: AppTest) -> str:
    return next(c.value for c in at.sidebar.caption if "system" in c.value and "■" in c.value)


def test_a_reload_shows_the_same_gauge_and_inspector(app: AppTest) -> None:
    app.slider(key="max_tokens").set_value(400).run()
    talk(app, "Hi, my name is Sam and I love museums in Lisbon.")
    for i in range(8):
        talk(app, f"Tell me about day {i} of the trip to Lisbon with museums.")
    talk(app, "Which museums in Lisbon did Sam love?")  # recalls, past a fold
    app.run()
    bot = session(app).bot
    assert bot.next_request().recalled and bot.current_summary is not None
    before = gauge_numbers(app), legend(app)
    # the sidebar's system figure is the inspector's system row (the priming named apart)
    app.switch_page("app_pages/inspector.py").run()
    table = app.dataframe[0].value
    system = int(table[table["kind"] == "system"]["tokens"].iloc[0])
    assert f"system {system:,} + {bot.next_request().budget.priming} priming" in legend(app)
    assert str(table["seq"].dtype) == "Int64"  # a blank seq, never a literal "None"
    assert table["seq"].isna().sum() == (table["kind"] != "verbatim").sum()
    stats = next(d.value for d in app.dataframe if "prompt (estimate)" in d.value.columns)
    assert (stats["kind"] == "summary").any()
    assert str(stats["seq"].dtype) == "Int64"
    assert stats["seq"].isna().sum() == (stats["kind"] == "summary").sum()

    again = open_app(bot.conversation_id)  # a reload
    try:
        assert (gauge_numbers(again), legend(again)) == before  # recalled ones still counted
        again.switch_page("app_pages/inspector.py").run()
        assert not again.exception
        info = " ".join(i.value for i in again.main.info)
        assert "No model calls yet." not in info
        assert "opened from the store" in info
        stored = bot.stored_message_count()
        held = session(again).bot.message_count
        assert held < stored
        caption = again.main.caption[0].value
        assert f"{stored:,} messages in the conversation, {held:,} held in memory" in caption
    finally:
        close(again)


def test_the_gauge_is_the_request_really_sent(app: AppTest, fake: FakeServerProcess) -> None:
    app.toggle(key="recall").set_value(False).run()  # the new message recalls nothing
    app.slider(key="max_tokens").set_value(1000).run()
    fake.control.config(reply_words=400)
    for i in range(3):
        talk(app, f"Tell me about day {i} of the trip to Lisbon.")
    fake.control.config(reply_words=None)
    app.slider(key="max_tokens").set_value(400).run()  # the last exchange no longer fits
    bot = session(app).bot
    bot.wait_for_fold(timeout=10)
    app.run()
    context = bot.next_request()
    assert context.budget.recent == 0
    used, limit = gauge_numbers(app)
    assert (used, limit) == (context.budget.total, 400)
    notes = " ".join(c.value for c in app.sidebar.caption)
    assert "Recent 0: the last exchange is longer than this budget" in notes
    talk(app, "Thanks, and the last day?")
    sent = fake.control.requests("chat")[-1]["body"]["messages"]
    assert sent[:-1] == context.messages  # what the gauge showed, then the new message
