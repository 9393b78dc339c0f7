"""The conversations page: list, search, open, rename, delete (with a confirm dialog),
export and import."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from chatmem.store import MAX_IMPORT_MESSAGES, Store
from chatmem.ui.conversations import (
    export_json_bytes,
    export_markdown_bytes,
    import_conversation,
)
from chatmem.ui.state import PAGE_SIZE
from tests.app.conftest import close, open_app, send, session, shown_messages

PAGE = "app_pages/conversations.py"


def titles(at: AppTest) -> list[str]:
    return [
        m.value.split("**")[1]
        for m in at.main.markdown
        if m.value.startswith("**") and "updated" in m.value
    ]


@pytest.fixture
def three(app: AppTest, store: Store) -> list[str]:
    """Three saved conversations, made in the app, oldest first; the last one is open."""
    ids = []
    for first in ["Trip to Lisbon", "Budget for March", "Recipes with lentils"]:
        app.button(key="new_chat").click().run()
        send(app, first)
        ids.append(session(app).conversation_id)
    return ids


def test_lists_newest_first_and_searches_titles_and_text(
    app: AppTest, three: list[str], store: Store
) -> None:
    app.switch_page(PAGE).run()
    assert not app.exception, app.exception
    assert titles(app) == ["Recipes with lentils", "Budget for March", "Trip to Lisbon"]
    app.text_input(key="conversations_search").set_value("budget").run()
    assert titles(app) == ["Budget for March"]
    app.text_input(key="conversations_search").set_value("You said: Trip").run()  # reply text
    assert titles(app) == ["Trip to Lisbon"]
    app.text_input(key="conversations_search").set_value("nothing like this").run()
    assert titles(app) == []
    assert any("No conversation matches" in c.value for c in app.main.caption)


def test_open_goes_to_the_chat_with_the_conversation(app: AppTest, three: list[str]) -> None:
    app.switch_page(PAGE).run()
    app.button(key=f"open_{three[0]}").click().run()
    assert not app.exception, app.exception
    assert app.query_params["c"] == three[0]
    assert session(app).conversation_id == three[0]
    assert shown_messages(app) == [
        ("user", "Trip to Lisbon"),
        ("assistant", "You said: Trip to Lisbon"),
    ]
    assert "## Chat" in [m.value for m in app.main.markdown]


def test_rename(app: AppTest, three: list[str], store: Store) -> None:
    app.switch_page(PAGE).run()
    app.text_input(key=f"rename_{three[1]}").set_value("March money")
    save = [b for b in app.button if b.label == "Save" and three[1] in b.form_id]
    assert len(save) == 1
    save[0].click().run()
    assert not app.exception, app.exception
    assert store.get_conversation(three[1]).title == "March money"
    assert "March money" in titles(app)


def test_delete_asks_first_then_deletes_everything(
    app: AppTest, three: list[str], store: Store
) -> None:
    app.switch_page(PAGE).run()
    app.button(key=f"delete_{three[0]}").click().run()
    dialog_text = "\n".join(m.value for m in app.markdown)
    assert "cannot be undone" in dialog_text
    assert store.get_conversation(three[0]) is not None  # nothing happens before the confirm
    app.button(key="cancel_delete").click().run()
    assert store.get_conversation(three[0]) is not None
    app.button(key=f"delete_{three[0]}").click().run()
    app.button(key="confirm_delete").click().run()
    assert not app.exception, app.exception
    assert store.get_conversation(three[0]) is None
    assert store.messages(three[0]) == []
    assert titles(app) == ["Recipes with lentils", "Budget for March"]
    assert any("Deleted" in s.value for s in app.success)


def test_deleting_the_open_conversation_starts_a_new_chat(
    app: AppTest, three: list[str], store: Store
) -> None:
    app.switch_page(PAGE).run()
    app.button(key=f"delete_{three[2]}").click().run()
    app.button(key="confirm_delete").click().run()
    assert store.get_conversation(three[2]) is None
    assert session(app).conversation_id is None
    assert "c" not in app.query_params


def test_export_json_and_markdown(app: AppTest, three: list[str], store: Store) -> None:
    app.switch_page(PAGE).run()
    labels = [b.label for b in app.get("download_button")]
    assert labels == ["Export JSON", "Export Markdown"]
    doc = json.loads(export_json_bytes(store, three[2]))
    assert doc["conversation"]["title"] == "Recipes with lentils"
    assert [m["content"] for m in doc["messages"]] == [
        "Recipes with lentils",
        "You said: Recipes with lentils",
    ]
    markdown = export_markdown_bytes(store, three[2]).decode()
    assert markdown.startswith("# Recipes with lentils")
    assert "test-key" not in json.dumps(doc) + markdown  # the settings record keeps no key


def test_import_opens_the_new_conversation(app: AppTest, three: list[str], store: Store) -> None:
    data = export_json_bytes(store, three[0])
    app.switch_page(PAGE).run()
    app.file_uploader[0].set_value(("lisbon.json", data, "application/json")).run()
    assert not app.exception, app.exception
    cid = session(app).conversation_id
    assert cid not in three
    assert app.query_params["c"] == cid
    assert shown_messages(app) == [
        ("user", "Trip to Lisbon"),
        ("assistant", "You said: Trip to Lisbon"),
    ]
    assert len(store.list_conversations()) == 4
    # AppTest reruns the page it was last told to switch to, not the one the app switched to
    app.switch_page("app_pages/chat.py")
    send(app, "What is my name?")  # the imported conversation goes on
    assert shown_messages(app)[-1] == ("assistant", "I don't know your name.")


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"{not json", "The file was not imported: "),
        (b'{"format": "something else"}', "The file was not imported: "),
        (b"[1, 2, 3]", "The file was not imported: "),
    ],
)
def test_bad_import_says_why_and_writes_nothing(
    app: AppTest, three: list[str], store: Store, content: bytes, expected: str
) -> None:
    app.switch_page(PAGE).run()
    app.file_uploader[0].set_value(("bad.json", content, "application/json")).run()
    assert not app.exception, app.exception
    errors = [e.value for e in app.error]
    assert len(errors) == 1 and errors[0].startswith(expected), errors
    assert len(store.list_conversations()) == 3
    assert session(app).conversation_id == three[2]  # still where it was


def test_import_helper_rejects_a_broken_message(store: Store) -> None:
    conv = store.create_conversation("Trip")
    store.append_message(conv.id, "user", "Hi")
    doc = store.export_json(conv.id)
    doc["messages"][0]["role"] = "wizard"
    result = import_conversation(store, json.dumps(doc).encode(), owner=None)
    assert result.info is None
    assert result.error is not None and "messages[0].role" in result.error
    assert len(store.list_conversations()) == 1


def test_new_chat_button_goes_to_an_empty_chat(app: AppTest, three: list[str]) -> None:
    app.switch_page(PAGE).run()
    app.button(key="conversations_new_chat").click().run()
    assert not app.exception, app.exception
    assert "## Chat" in [m.value for m in app.main.markdown]
    assert shown_messages(app) == []
    assert "c" not in app.query_params
    close(app)


def many_messages(n: int, first: str) -> bytes:
    """An export of ``n`` messages, no summary; message 1 is ``first``."""
    doc = {
        "format": "chatmem.conversation",
        "version": 1,
        "conversation": {"title": "Long", "settings": {"max_tokens": 600}},
        "messages": [
            {
                "seq": i,
                "role": "user" if i % 2 else "assistant",
                "content": first if i == 1 else f"Note {i}: gardens, rivers and trains.",
            }
            for i in range(1, n + 1)
        ],
    }
    return json.dumps(doc).encode()


def test_the_upload_is_read_as_a_stream(
    app: AppTest, three: list[str], store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[Any] = []
    original = Store.import_json

    def spy(self: Store, data: Any, owner: str | None = None) -> Any:
        seen.append(data)
        return original(self, data, owner=owner)

    monkeypatch.setattr(Store, "import_json", spy)
    app.switch_page(PAGE).run()
    data = export_json_bytes(store, three[0])
    app.file_uploader[0].set_value(("lisbon.json", data, "application/json")).run()
    assert not app.exception, app.exception
    assert len(seen) == 1
    assert isinstance(seen[0], io.IOBase) and not isinstance(seen[0], bytes)  # the file itself
    assert len(store.list_conversations()) == 4


def test_an_upload_over_the_entry_limit_is_refused_and_writes_nothing(
    app: AppTest, three: list[str], store: Store
) -> None:
    data = many_messages(MAX_IMPORT_MESSAGES + 5_000, "Hi")
    app.switch_page(PAGE).run()
    app.file_uploader[0].set_value(("huge.json", data, "application/json")).run()
    assert not app.exception, app.exception
    assert [e.value for e in app.error] == [
        "The file was not imported: messages: too many entries (250,001 or more; "
        "the limit is 250,000)"
    ]
    assert len(store.list_conversations()) == 3
    assert session(app).conversation_id == three[2]


def test_a_long_imported_conversation_opens_with_a_bounded_memory(
    app_env: Any, store: Store
) -> None:
    n = 20_000
    cid = store.import_json(many_messages(n, "Hi, my name is Sam.")).id
    at = open_app(cid)
    sess = session(at)
    assert sess.conversation_id == cid
    assert len(sess.transcript) == PAGE_SIZE  # the newest page, not the 20,000
    assert shown_messages(at)[-1] == ("assistant", f"Note {n}: gardens, rivers and trains.")
    assert (
        at.button(key="show_earlier").label == f"Show earlier messages ({n - PAGE_SIZE:,} hidden)"
    )
    assert 0 < sess.bot.message_count <= 2 * 600 // 4 + 1  # two budgets' worth at most
    send(at, "What is my name?")
    assert shown_messages(at)[-1] == ("assistant", "Your name is Sam.")  # recalled from seq 1
    close(at)


def test_the_newest_page_includes_the_highest_possible_seq(app_env: Any, store: Store) -> None:
    doc = json.loads(many_messages(2, "Hi"))
    doc["messages"][1]["seq"] = 2**31 - 1  # the column's highest value
    cid = store.import_json(json.dumps(doc)).id
    at = open_app(cid)
    assert [e["seq"] for e in session(at).transcript] == [1, 2**31 - 1]
    close(at)
