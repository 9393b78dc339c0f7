"""chatmem in the browser: ``streamlit run app.py``.

The entry point is the frame around every page: navigation, one conversation per browser
session, and the memory inspector in the sidebar. The pages live in ``pages/``.
"""

import streamlit as st

from chatmem.ui import ensure_session, render_sidebar

st.set_page_config(page_title="chatmem", page_icon=":material/memory:", layout="centered")

page = st.navigation(
    [
        st.Page("pages/chat.py", title="Chat", icon=":material/chat:", default=True),
        st.Page("pages/inspector.py", title="Inspector", icon=":material/manage_search:"),
        st.Page("pages/conversations.py", title="Conversations", icon=":material/forum:"),
        st.Page("pages/compare.py", title="Compare", icon=":material/compare_arrows:"),
    ]
)
render_sidebar(ensure_session())
page.run()
