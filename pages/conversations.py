"""Conversations: saved chats (placeholder until the chat saves to storage)."""

from chatmem.ui import render_conversations_page

render_conversations_page()
