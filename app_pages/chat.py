"""Chat: talk to the model; the sidebar shows the memory live."""

from chatmem.ui import render_chat_page

render_chat_page()
