"""Presenter: what the bot remembers and has forgotten, in sentences, and the last fold."""

from chatmem.ui import render_presenter_page

render_presenter_page()
