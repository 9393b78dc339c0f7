"""Compare: the sample conversation through full history, trimming and rolling summary."""

from chatmem.ui import render_compare_page

render_compare_page()
