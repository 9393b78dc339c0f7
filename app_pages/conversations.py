"""Conversations: saved chats to search, open, rename, delete, export and import."""

from chatmem.ui import render_conversations_page

render_conversations_page()
