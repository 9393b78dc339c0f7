"""The inspector's "Correct memory" tab: edit and restore the summary, pin and leave out
messages; refusals in plain words with the person's text kept."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest

from chatmem import ChatMemory
from chatmem.store import Store, marks_in_force
from chatmem.ui.corrections import TEXT_KEY
from tests.app.conftest import close, open_app, session
from tests.fakes import FakeServerProcess


def folded_conversation(store: Store) -> str:
    bot = ChatMemory(store=store, max_tokens=300, keep_recent=4, background=False)
    bot.ask("Hi, my name is Sam.")
    for i in range(7):
        bot.ask(f"Topic {i}: gardens, rivers, trains and old maps.")
    assert bot.current_summary is not None
    bot.close()
    assert bot.conversation_id is not None
    return bot.conversation_id


def inspector(cid: str) -> AppTest:
    at = open_app(cid)
    at.switch_page("app_pages/inspector.py").run()
    assert not at.exception, at.exception
    return at


def button(at: AppTest, key: str) -> None:
    at.button(key=key).click().run()
    assert not at.exception, at.exception


def test_summary_edit_over_the_cap_is_refused_and_kept_then_saved(
    app_env: FakeServerProcess, store: Store
) -> None:
    cid = folded_conversation(store)
    at = inspector(cid)
    try:
        editor = at.text_area(key=TEXT_KEY)
        assert editor.value == store.list_summaries(cid)[-1].text
        too_long = "timestamp " * 400
        editor.set_value(too_long).run()
        button(at, "corrections_save")
        assert any("over its cap" in e.value for e in at.error), [e.value for e in at.error]
        assert at.text_area(key=TEXT_KEY).value == too_long  # the text stays in the editor
        assert store.list_summaries(cid)[-1].edited_by is None  # nothing was stored
        at.text_area(key=TEXT_KEY).set_value("Sam likes herons and old maps.").run()
        button(at, "corrections_save")
        newest = store.list_summaries(cid)[-1]
        assert newest.edited_by == "person" and newest.text == "Sam likes herons and old maps."
        assert session(at).bot.summary == newest.text
        assert any("Summary saved" in s.value for s in at.success)
        assert any("edited by a person" in e.label for e in at.main.expander)
        log = at.main.dataframe[-1].value
        assert "summary_edited" in list(log["kind"])
        # restore the fold's version: a new version marked restored from it
        fold_version = len(store.list_summaries(cid)) - 1
        at.selectbox(key="corrections_restore_choice").select_index(0).run()
        button(at, "corrections_restore")
        newest = store.list_summaries(cid)[-1]
        assert newest.restored_from == fold_version
        assert at.text_area(key=TEXT_KEY).value == newest.text  # the editor shows it now
    finally:
        close(at)


def test_pin_and_leave_out_from_the_inspector(app_env: FakeServerProcess, store: Store) -> None:
    cid = folded_conversation(store)
    at = inspector(cid)
    try:
        newest = store.messages(cid)[-1].seq
        newest_first = at.selectbox(key="corrections_message").options
        assert newest_first[0].startswith(f"#{newest} assistant")
        pin, leave_out = 1, newest - 2  # folded long ago; the last question but one
        at.selectbox(key="corrections_message").set_value(pin).run()
        button(at, "corrections_pin")
        assert at.button(key="corrections_pin").label == "Unpin"
        at.selectbox(key="corrections_message").set_value(leave_out).run()
        button(at, "corrections_exclude")
        assert marks_in_force(store.marks(cid)) == {"pin": {pin}, "exclude": {leave_out}}
        marked = at.main.dataframe[-2].value  # the table of marked messages
        assert sorted(zip(marked["seq"], marked["mark"], strict=True)) == [
            (pin, "pinned"),
            (leave_out, "left out"),
        ]
        request = at.main.dataframe[0].value  # the next request shows the pin by kind
        assert list(request[request["kind"] == "pinned"]["seq"]) == [pin]
        assert leave_out not in list(request["seq"].dropna())
        log = list(at.main.dataframe[-1].value["kind"])
        assert "pin" in log and "exclude" in log
        # a pinned message cannot be left out: refused in plain words
        at.selectbox(key="corrections_message").set_value(pin).run()
        button(at, "corrections_exclude")
        assert any("unpin it before leaving it out" in e.value for e in at.error)
    finally:
        close(at)
