"""The conversations page: saved chats to search, open, rename, delete, export and import.

With sign-in required, a user sees and changes only their own conversations; in local mode
(no sign-in, served on localhost) every conversation in the database is listed.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import partial
from typing import IO

import streamlit as st

from chatmem.store import (
    ConversationInfo,
    ImportValidationError,
    NotFoundError,
    Store,
    StoreError,
)
from chatmem.ui.state import (
    QUERY_KEY,
    ChatSession,
    may_open,
    new_chat,
    open_in_chat,
    require_session,
)
from chatmem.ui.text import preview, safe_markdown

SEARCH_KEY = "conversations_search"
UPLOAD_KEY = "conversations_import"  # + a counter, so a handled file leaves the uploader
UPLOAD_COUNT_KEY = "conversations_import_n"
IMPORT_ERROR_KEY = "conversations_import_error"
OPEN_KEY = "conversations_open"  # a conversation to open on the next run (after an import)
GO_CHAT_KEY = "conversations_go_chat"  # go to the chat page on the next run (after New chat)
DIALOG_DONE_KEY = "conversations_dialog_done"  # the delete dialog has done its job
NOTICE_KEY = "conversations_notice"
ERROR_KEY = "conversations_error"
LIST_LIMIT = 100


# -- helpers without Streamlit (tested directly) -------------------------------------------
def visible_conversations(
    store: Store, owner: str | None, login_required: bool, query: str | None = None
) -> list[ConversationInfo]:
    """The conversations this user may see, newest first, matching ``query`` if given."""
    if login_required and owner is None:
        return []
    found = store.list_conversations(
        query=query or None, owner=owner if login_required else None, limit=LIST_LIMIT
    )
    return [c for c in found if may_open(c, owner, login_required)]


def checked_conversation(
    store: Store, cid: str, owner: str | None, login_required: bool
) -> ConversationInfo:
    """The conversation, if this user may see and change it; NotFoundError otherwise."""
    info = store.get_conversation(cid)
    if info is None or not may_open(info, owner, login_required):
        raise NotFoundError(f"no conversation with id {cid!r}")
    return info


@dataclass(frozen=True)
class ImportResult:
    info: ConversationInfo | None
    error: str | None


def import_conversation(store: Store, data: bytes | IO[bytes], owner: str | None) -> ImportResult:
    """Import an exported JSON file (its bytes, or the file: read as a stream, never parsed
    whole) as a new conversation owned by ``owner``.

    A rejected file writes nothing and says why in one sentence; a file over a limit is
    refused where it crosses it.
    """
    try:
        return ImportResult(store.import_json(data, owner=owner), None)
    except ImportValidationError as exc:
        return ImportResult(None, f"The file was not imported: {exc}")
    except StoreError as exc:
        return ImportResult(None, f"The file could not be imported: {exc}")


def export_json_bytes(store: Store, cid: str) -> bytes:
    return json.dumps(store.export_json(cid), ensure_ascii=False, indent=2).encode("utf-8")


def export_markdown_bytes(store: Store, cid: str) -> bytes:
    return store.export_markdown(cid).encode("utf-8")


# The export buttons: label, bytes of the file, file extension, MIME type, widget key.
EXPORTS = (
    ("Export JSON", export_json_bytes, "json", "application/json", "export_json"),
    ("Export Markdown", export_markdown_bytes, "md", "text/markdown", "export_markdown"),
)


def file_stem(info: ConversationInfo) -> str:
    """A safe file name stem: ``chatmem-<title words>-<id prefix>``."""
    words = re.sub(r"[^A-Za-z0-9]+", "-", info.title).strip("-").lower()[:40].strip("-")
    return f"chatmem-{words or 'conversation'}-{info.id[:8]}"


# -- the page -------------------------------------------------------------------------------
def render_conversations_page() -> None:
    """Draw the conversations page."""
    st.set_page_config(layout="wide")
    sess = require_session()
    st.session_state.pop(DIALOG_DONE_KEY, None)
    opening = st.session_state.pop(OPEN_KEY, None)
    if opening:
        open_in_chat(opening)
    if st.session_state.pop(GO_CHAT_KEY, False):
        st.switch_page("app_pages/chat.py")
    st.markdown("## Conversations")
    if sess.store is None:
        st.info("Conversations are not being saved in this session.", icon=":material/info:")
        return
    notice = st.session_state.pop(NOTICE_KEY, None)
    if notice:
        st.success(notice, icon=":material/check_circle:")
    error = st.session_state.pop(ERROR_KEY, None)
    if error:
        st.error(error, icon=":material/error:")
    top = st.columns([3, 1], vertical_alignment="bottom")
    query = top[0].text_input(
        "Search titles and messages", key=SEARCH_KEY, placeholder="e.g. Lisbon"
    )
    top[1].button(
        "New chat",
        key="conversations_new_chat",
        icon=":material/add_comment:",
        on_click=_new_chat_and_go,
        width="stretch",
    )
    _open_conversation(sess)
    _list(sess, query.strip())
    _import(sess)


def _login_required(sess: ChatSession) -> bool:
    return sess.bot.settings.require_login


def _new_chat_and_go() -> None:
    new_chat()
    st.session_state[GO_CHAT_KEY] = True


def _open_conversation(sess: ChatSession) -> None:
    """Export buttons for the conversation open in this session."""
    cid = sess.conversation_id
    store = sess.store
    if cid is None or store is None:
        return
    try:
        info = checked_conversation(store, cid, sess.owner, _login_required(sess))
    except StoreError:
        return
    with st.container(border=True, key="open_conversation"):
        st.markdown(f"**Open now:** {safe_markdown(info.title)}")
        stem = file_stem(info)
        for col, (label, export, ext, mime, key) in zip(st.columns(2), EXPORTS, strict=True):
            col.download_button(
                label,
                data=partial(export, store, cid),
                file_name=f"{stem}.{ext}",
                mime=mime,
                key=key,
                icon=":material/download:",
                on_click="ignore",
                width="stretch",
            )


def _list(sess: ChatSession, query: str) -> None:
    assert sess.store is not None
    try:
        found = visible_conversations(sess.store, sess.owner, _login_required(sess), query)
    except StoreError as exc:
        st.error(f"The conversations could not be read: {exc}", icon=":material/error:")
        return
    if not found:
        st.caption(
            f"No conversation matches “{safe_markdown(query)}”."
            if query
            else "No saved conversations yet: they appear here from their first message on."
        )
        return
    st.caption(
        f"{len(found)} conversation(s), newest first"
        + (" (the first 100)" if len(found) >= LIST_LIMIT else "")
        + "."
    )
    for info in found:
        _row(sess, info)


def _row(sess: ChatSession, info: ConversationInfo) -> None:
    is_open = info.id == sess.conversation_id
    with st.container(border=True, key=f"conversation_{info.id}"):
        mark = " · *open*" if is_open else ""
        st.markdown(
            f"**{safe_markdown(preview(info.title, 80))}**{mark}  \n"
            f":gray[updated {info.updated_at:%Y-%m-%d %H:%M} UTC]"
        )
        # the buttons in a row of their own, each as wide as its label: never cut to "Op…"
        with st.container(horizontal=True, gap="small", key=f"actions_{info.id}"):
            if st.button("Open", key=f"open_{info.id}", icon=":material/open_in_new:"):
                open_in_chat(info.id)
            rename = st.popover("Rename", icon=":material/edit:", key=f"rename_pop_{info.id}")
            with rename, st.form(f"rename_form_{info.id}", border=False):
                st.text_input("New title", value=info.title, key=f"rename_{info.id}")
                st.form_submit_button(
                    "Save", type="primary", on_click=_rename, args=(sess, info.id)
                )
            if st.button("Delete", key=f"delete_{info.id}", icon=":material/delete:"):
                _confirm_delete(sess, info)


def _rename(sess: ChatSession, cid: str) -> None:
    title = str(st.session_state.get(f"rename_{cid}", "")).strip()
    if not title or sess.store is None:
        return
    try:
        checked_conversation(sess.store, cid, sess.owner, _login_required(sess))
        info = sess.store.rename_conversation(cid, title)
    except StoreError as exc:
        st.session_state[ERROR_KEY] = f"The conversation could not be renamed: {exc}"
        return
    if cid == sess.conversation_id:
        sess.bot.title = info.title
    st.session_state[NOTICE_KEY] = f"Renamed to “{safe_markdown(info.title)}”."


@st.dialog("Delete this conversation?")
def _confirm_delete(sess: ChatSession, info: ConversationInfo) -> None:
    if st.session_state.pop(DIALOG_DONE_KEY, False):
        st.rerun()  # done: close the dialog and redraw the list
    st.markdown(
        f"“{safe_markdown(preview(info.title, 80))}” and all its messages, summaries and "
        "events will be deleted. This cannot be undone."
    )
    cols = st.columns(2)
    cols[0].button(
        "Delete",
        key="confirm_delete",
        type="primary",
        icon=":material/delete:",
        on_click=_delete,
        args=(sess, info.id),
        width="stretch",
    )
    cols[1].button("Cancel", key="cancel_delete", on_click=_close_dialog, width="stretch")


def _close_dialog() -> None:
    st.session_state[DIALOG_DONE_KEY] = True


def _delete(sess: ChatSession, cid: str) -> None:
    st.session_state[DIALOG_DONE_KEY] = True
    if sess.store is None:
        return
    try:
        info = checked_conversation(sess.store, cid, sess.owner, _login_required(sess))
        sess.store.delete_conversation(cid)
    except StoreError as exc:
        st.session_state[ERROR_KEY] = f"The conversation could not be deleted: {exc}"
        return
    if cid == sess.conversation_id:
        new_chat()  # the open chat is gone: start afresh
        st.query_params.pop(QUERY_KEY, None)
    st.session_state[NOTICE_KEY] = f"Deleted “{safe_markdown(preview(info.title, 80))}”."


def _import(sess: ChatSession) -> None:
    st.markdown("#### Import")
    count = st.session_state.setdefault(UPLOAD_COUNT_KEY, 0)
    st.file_uploader(
        "A conversation exported as JSON",
        type=["json"],
        key=f"{UPLOAD_KEY}_{count}",
        on_change=_on_upload,
        args=(sess, f"{UPLOAD_KEY}_{count}"),
        help="It becomes a new conversation of yours; the file is checked first, and a file "
        "with any problem is not imported at all.",
    )
    error = st.session_state.pop(IMPORT_ERROR_KEY, None)
    if error:
        st.error(error, icon=":material/error:")


def _on_upload(sess: ChatSession, key: str) -> None:
    upload = st.session_state.get(key)
    if upload is None or sess.store is None:
        return
    upload.seek(0)
    result = import_conversation(sess.store, upload, sess.owner)  # streamed, not getvalue()
    st.session_state[UPLOAD_COUNT_KEY] = st.session_state.get(UPLOAD_COUNT_KEY, 0) + 1
    if result.error is not None:
        st.session_state[IMPORT_ERROR_KEY] = result.error
        return
    assert result.info is not None
    st.session_state[OPEN_KEY] = result.info.id
