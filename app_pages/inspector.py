"""Inspector: the next request, what recall brought back and why, summary versions, tokens
per call, events."""

from chatmem.ui import render_inspector_page

render_inspector_page()
