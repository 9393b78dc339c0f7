"""chatmem in the browser: ``streamlit run app.py``.

The entry point is the frame around every page: sign-in (when ``CHATMEM_REQUIRE_LOGIN=1``),
navigation, one conversation per browser session, and the memory inspector in the sidebar.
The pages live in ``app_pages/`` (not ``pages/``: Streamlit would take a folder of that name
for its older multipage mode and, on a server's first request for a page URL, run the page
file alone, without this frame).
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
        st.Page("app_pages/chat.py", title="Chat", icon=":material/chat:", default=True),
        st.Page("app_pages/inspector.py", title="Inspector", icon=":material/manage_search:"),
        st.Page("app_pages/presenter.py", title="Presenter", icon=":material/co_present:"),
        st.Page("app_pages/conversations.py", title="Conversations", icon=":material/forum:"),
        st.Page("app_pages/compare.py", title="Compare", icon=":material/compare_arrows:"),
    ]
)
render_sidebar(ensure_session())
page.run()
