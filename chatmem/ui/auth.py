"""Sign-in: with ``CHATMEM_REQUIRE_LOGIN=1`` the app shows nothing but a login prompt until
Streamlit's OIDC sign-in (``st.login``, configured in ``.streamlit/secrets.toml [auth]``)
says who the user is. Each user then sees only their own conversations.
"""

from __future__ import annotations

import streamlit as st
from streamlit.errors import StreamlitAPIException

from chatmem.errors import SettingsError
from chatmem.ui.state import app_settings, signed_in

LOGIN_ERROR_KEY = "chatmem_login_error"


def login_blocked() -> bool:
    """True when sign-in is required and nobody is signed in: show only the login page.

    When the settings themselves cannot be read, no session starts and every page shows that
    error instead, so nothing is shown either way.
    """
    try:
        settings = app_settings()
    except SettingsError:
        return False
    return settings.require_login and not signed_in()


def _login() -> None:
    try:
        st.login()
    except StreamlitAPIException as exc:  # no [auth] section, or Authlib missing
        st.session_state[LOGIN_ERROR_KEY] = "Sign-in is not set up on this server: " + " ".join(
            str(exc).split()
        )


def render_login_page() -> None:
    """The only page a signed-out visitor sees when sign-in is required."""
    st.markdown("## Sign in")
    st.markdown(
        "This chatmem server requires sign-in: conversations are kept per account, and each "
        "account sees only its own."
    )
    st.button("Log in", key="login", icon=":material/login:", type="primary", on_click=_login)
    error = st.session_state.pop(LOGIN_ERROR_KEY, None)
    if error:
        st.error(error, icon=":material/error:")
