"""chatmem in the browser: ``streamlit run app.py``.

The entry point is the frame around every page: sign-in (when ``CHATMEM_REQUIRE_LOGIN=1``),
navigation, one conversation per browser session, and the memory inspector in the sidebar.
The pages live in ``pages/``.
"""

import streamlit as st

from chatmem.ui import APP_ICON, ensure_session, login_blocked, render_login_page, render_sidebar

st.set_page_config(page_title="chatmem", page_icon=APP_ICON, layout="centered")

if login_blocked():
    # The navigation holds the login page only: no other page can be reached signed out.
    st.navigation([st.Page(render_login_page, title="Sign in")], position="hidden").run()
    st.stop()

page = st.navigation(
    [
        st.Page("pages/chat.py", title="Chat", icon=":material/chat:", default=True),
        st.Page("pages/inspector.py", title="Inspector", icon=":material/manage_search:"),
        st.Page("pages/presenter.py", title="Presenter", icon=":material/co_present:"),
        st.Page("pages/conversations.py", title="Conversations", icon=":material/forum:"),
        st.Page("pages/compare.py", title="Compare", icon=":material/compare_arrows:"),
    ]
)
render_sidebar(ensure_session())
page.run()
