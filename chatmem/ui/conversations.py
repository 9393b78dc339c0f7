"""The conversations page: a placeholder until the chat saves to durable storage."""

from __future__ import annotations

import importlib.util

import streamlit as st


def store_available() -> bool:
    """True once ``chatmem.store`` is part of the installed package."""
    return importlib.util.find_spec("chatmem.store") is not None


def render_conversations_page() -> None:
    """Draw the conversations page."""
    st.markdown("## Conversations")
    if store_available():
        st.info(
            "Saved conversations are coming: the storage layer (`chatmem.store`, SQLite by "
            "default, PostgreSQL by `CHATMEM_DATABASE_URL`) is in place, and this page will list, "
            "resume, export and delete conversations once the chat saves to it.",
            icon=":material/inventory_2:",
        )
    else:
        st.info(
            "Saved conversations are coming: storage is being built. Until then a conversation "
            "lives as long as this browser tab.",
            icon=":material/inventory_2:",
        )
