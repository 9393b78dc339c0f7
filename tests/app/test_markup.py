"""Untrusted text (messages, model replies, summaries, imported titles) renders with no live
link: ``safe_markdown`` shows every link target as text, and the app uses it everywhere.

The markdown checks here read the source Streamlit is given; ``tests/e2e`` counts the links a
real browser draws.
"""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st
from streamlit.testing.v1 import AppTest

from chatmem.store import Store
from chatmem.ui.text import safe_markdown, stream_safe
from tests.app.conftest import close, open_app, send, session, shown_messages
from tests.fakes import FakeServerProcess

EVIL = "https://evil.example"
HOSTILE = (
    f"Docs: [click here]({EVIL}/a), <{EVIL}/b>, www.evil.example/c, ![pixel]({EVIL}/d.png), "
    f"[x][ref] and [data](data:text/html;base64,PHNjcmlwdD4=).\n\n[ref]: {EVIL}/e"
)
# Ways to make a link that a plain "is there a [...](...)" check would miss.
TRICKS = [
    f"[x]({EVIL}/title 'a title')",
    f"[x](<{EVIL}/angle>)",
    f"[{EVIL.replace('evil', 'bank')}]({EVIL}/phish)",
    f"[x][1]\n\n[1]: {EVIL}/reference",
    f"footnote[^1]\n\n[^1]: {EVIL}/footnote",
    "https\\://evil.example/escaped-colon and www\\.evil.example",
    "https&#58;//evil.example/entity and www&#46;evil.example",
    f"\\`[x]({EVIL}/escaped-backtick)`",
    f"a ```[x]({EVIL}/unclosed) and more",
    f'<a title="`">[x]({EVIL}/html-first)`',
    f"| `a | [x]({EVIL}/table-cell) | b` |\n|---|---|---|\n| 1 | 2 | 3 |",
    f"\\{EVIL}/lone-backslash",
    f"{EVIL}/a`b` {EVIL}/adjacent`c`",
    f"*{EVIL}/emphasis* and _www.evil.example_ and HTTPS://EVIL.EXAMPLE/CAPS",
    f"  ```\n     ```\n  [x]({EVIL}/dedented-fence)\n  ```",
    f"<{EVIL}/`x`>",
    f"\t~~~\n\n```\n~~~\n> [x]({EVIL}/stripped-first-line-fence)",
]
CODE_SPAN_RE = re.compile(r"`[^`\n]+`")
# an address markdown would link: a scheme or www. and a domain (escapes do not stop it)
URL_RE = re.compile(r"(?:(?:https?|ftp)\\?:\\?/\\?/|www\\?\.)[-.\w\\]*[a-z0-9]", re.IGNORECASE)


def live_link_syntax(markdown: str) -> list[str]:
    """What in ``markdown`` (with no code of its own) could still become a link or image.

    Outside inline code: an unescaped ``[`` (link, image, reference, footnote; a task box
    ``- [ ]`` excepted), ``<`` (autolink, HTML) or ``&`` (a character reference that spells a
    URL), or an ``https://`` or ``www.`` address (markdown links bare ones)."""
    text = re.sub(r"^(\s*[-*+] )\[[ xX]\](?= )", r"\1", markdown, flags=re.MULTILINE)
    outside = CODE_SPAN_RE.sub(" ", text)
    found = re.findall(r"(?<!\\)(?:\\\\)*[\[<&]", outside)
    found += URL_RE.findall(outside)
    return found


def test_links_show_their_target_as_code() -> None:
    assert safe_markdown(f"see [docs]({EVIL}/x) now") == f"see docs (`{EVIL}/x`) now"
    assert safe_markdown(f"<{EVIL}/b>") == f"\\<`{EVIL}/b`>"
    assert safe_markdown(f"go to {EVIL}/a_(b). Then") == f"go to `{EVIL}/a_(b)`. Then"
    assert safe_markdown(f"![pixel]({EVIL}/p.png)") == f"pixel (image: `{EVIL}/p.png`)"
    phish = safe_markdown(f"[https://bank.example]({EVIL}/login)")
    assert phish == f"`https://bank.example` (`{EVIL}/login`)"  # both hosts visible
    assert safe_markdown("price $5, :red[alert], Q&A") == "price \\$5, \\:red\\[alert], Q\\&A"


def test_code_and_ordinary_markdown_are_left_alone() -> None:
    code = f"```python\nurl = '{EVIL}/x'  # [a](b) <c> $d\n```"
    assert safe_markdown(f"Try:\n\n{code}\n\nand `[x]({EVIL})` inline.") == (
        f"Try:\n\n{code}\n\nand `[x]({EVIL})` inline."
    )
    plain = (
        "## Plan\n\n- [ ] book **flights**\n- [x] pick *dates*\n\n| a | b |\n|---|---|\n| 1 | 2 |"
    )
    assert safe_markdown(plain) == plain


def test_hostile_and_tricky_text_has_no_live_link() -> None:
    for text in [HOSTILE, *TRICKS]:
        if "`" in text or "~~~" in text:
            continue  # has code of its own: the browser test counts those
        assert live_link_syntax(safe_markdown(text)) == [], text


PIECES = st.sampled_from(
    [
        "[",
        "]",
        "](",
        ")",
        "(",
        "!",
        "<",
        ">",
        "&#58;",
        "\\",
        "|",
        ":",
        "$",
        "*",
        " ",
        "\n",
        "\n\n",
        "- [ ] ",
        "https://",
        "HTTP://",
        "www.",
        "data:",
        "evil.example/",
        "x",
        "[ref]: ",
        "    ",
    ]
)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(PIECES, st.text(max_size=4)), max_size=30).map("".join))
def test_text_without_code_never_keeps_link_syntax(text: str) -> None:
    text = text.replace("`", "'").replace("~", "-")  # no code of its own
    assert live_link_syntax(safe_markdown(text)) == []


STREAM_LINK_RE = re.compile(r"\][(\[:]|<[a-z]|:/|www|&[#a-z]", re.IGNORECASE)


@settings(max_examples=300, deadline=None)
@given(text=st.sampled_from([HOSTILE, *TRICKS]), cuts=st.lists(st.integers(0, 400), max_size=8))
def test_streamed_chunks_never_form_a_link(text: str, cuts: list[int]) -> None:
    """While a reply streams each chunk is escaped alone: wherever the chunks split, the
    markdown drawn so far holds no link syntax."""
    points = sorted({c % (len(text) + 1) for c in cuts})
    chunks = [text[a:b] for a, b in zip([0, *points], [*points, len(text)], strict=True)]
    drawn = "".join(stream_safe(chunk) for chunk in chunks)
    assert not STREAM_LINK_RE.search(drawn), drawn
    assert drawn.replace("\u200b", "").replace("\\$", "$") == text  # nothing visible changes


# -- the app ---------------------------------------------------------------------------
def rendered(at: AppTest) -> list[str]:
    """The markdown source of every chat message on the page."""
    return [text for _, text in shown_messages(at)]


def test_chat_page_shows_links_in_messages_and_replies_as_text(
    app: AppTest, fake: FakeServerProcess
) -> None:
    send(app, HOSTILE)
    shown = rendered(app)
    assert len(shown) == 2 and shown[1].startswith("You said:")  # the fake echoes it
    for markdown in shown:
        assert live_link_syntax(markdown) == [], markdown
        assert f"click here (`{EVIL}/a`)" in markdown
        assert f"`{EVIL}/b`" in markdown and "`www.evil.example/c`" in markdown
        assert f"pixel (image: `{EVIL}/d.png`)" in markdown
        assert "data (`data:text/html;base64,PHNjcmlwdD4=`)" in markdown
    assert session(app).transcript[0]["content"] == HOSTILE  # stored exactly as typed


def test_imported_title_summary_and_messages_show_links_as_text(
    app_env: FakeServerProcess, store: Store
) -> None:
    title = f"Trip [click]({EVIL}/title) {EVIL}/bare"
    conv = store.create_conversation(title)
    store.append_message(conv.id, "user", f"My homepage is [home]({EVIL}/home).")
    store.append_message(conv.id, "assistant", f"Noted: <{EVIL}/noted>")
    summary = f"- The user's homepage is {EVIL}/home.\n- See [this]({EVIL}/recap)."
    store.add_summary(conv.id, summary, tokens=40, covers_seq=2)
    cid = store.import_json(store.export_json(conv.id)).id  # as an imported file arrives

    at = open_app(cid)
    markdown = [*rendered(at), *(m.value for m in at.sidebar.markdown)]
    assert any(f"`{EVIL}/home`" in m for m in markdown)  # the summary, in the sidebar
    assert any(f"home (`{EVIL}/home`)" in m for m in rendered(at))  # the imported message
    for text in markdown:
        assert EVIL not in CODE_SPAN_RE.sub(" ", text), text
        assert not re.search(r"(?<!\\)\[[^\]]*\]\(", text), text

    at.switch_page("app_pages/conversations.py").run()
    assert not at.exception, at.exception
    opened = [m.value for m in at.markdown if m.value.startswith("**Open now:**")]
    assert opened == [f"**Open now:** Trip click (`{EVIL}/title`) `{EVIL}/bare`"]

    at.switch_page("app_pages/inspector.py").run()
    assert not at.exception, at.exception
    versions = [m.value for m in at.main.markdown if "homepage" in m.value]
    assert versions and all(live_link_syntax(v) == [] for v in versions), versions
    close(at)
