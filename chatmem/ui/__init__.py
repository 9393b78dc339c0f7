"""Streamlit components shared by ``app.py`` and ``app_pages/``.

Only this package imports Streamlit; the rest of chatmem runs without it.
"""

from pathlib import Path

from chatmem.ui.auth import login_blocked, render_login_page
from chatmem.ui.chat import render_chat_page
from chatmem.ui.compare import render_compare_page
from chatmem.ui.conversations import render_conversations_page
from chatmem.ui.inspector import render_inspector_page
from chatmem.ui.presenter import render_presenter_page
from chatmem.ui.sidebar import render_sidebar
from chatmem.ui.state import (
    ChatSession,
    create_session,
    ensure_session,
    open_session,
    require_session,
)

# Shipped with the package: an icon *name* would make the browser fetch it from a font CDN.
APP_ICON = str(Path(__file__).with_name("icon.png"))

__all__ = [
    "APP_ICON",
    "ChatSession",
    "create_session",
    "ensure_session",
    "login_blocked",
    "open_session",
    "render_chat_page",
    "render_compare_page",
    "render_conversations_page",
    "render_inspector_page",
    "render_login_page",
    "render_presenter_page",
    "render_sidebar",
    "require_session",
]
