"""Inspector: the exact next request, summary versions, tokens per call, events."""

from chatmem.ui import render_inspector_page

render_inspector_page()
