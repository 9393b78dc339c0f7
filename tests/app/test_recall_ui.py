"""Recall in the app: the sidebar switch, the gauge's recalled share, and the inspector's
per-turn list of what was recalled and why."""

from __future__ import annotations

import re

from streamlit.testing.v1 import AppTest

from chatmem.events import Event, EventKind
from chatmem.ui.recalled import MessageLookup, matched_terms, recall_turns
from tests.app.conftest import send, session, shown_messages
from tests.fakes import FakeServerProcess


def gauge_legend(at: AppTest) -> dict[str, int]:
    for caption in at.sidebar.caption:
        found = dict(re.findall(r"\] (system|summary|recalled|recent) ([\d,]+)", caption.value))
        if found:
            return {k: int(v.replace(",", "")) for k, v in found.items()}
    raise AssertionError("no gauge legend in the sidebar")


def fold_a_conversation(app: AppTest) -> None:
    for text in [
        "Hi, my name is Sam.",
        *[
            f"Tell me more about day {i} of the trip: museums, food, viewpoints, trams, "
            "markets, churches and parks, and how long each visit takes for two people."
            for i in range(8)
        ],
    ]:
        send(app, text)
    app.slider(key="max_tokens").set_value(500).run()  # the recall share is 100 tokens
    session(app).bot.wait_for_fold(timeout=10)
    app.run()
    assert session(app).bot.summary


def test_recall_is_on_by_default_and_the_switch_turns_it_off(app: AppTest) -> None:
    bot = session(app).bot
    switch = app.toggle(key="recall")
    assert switch.value is True and bot.recall
    switch.set_value(False).run()
    assert not bot.recall
    app.toggle(key="recall").set_value(True).run()
    assert bot.recall


def test_gauge_shows_the_recalled_share_after_a_recall(
    app: AppTest, fake: FakeServerProcess
) -> None:
    fold_a_conversation(app)
    assert gauge_legend(app)["recalled"] == 0
    send(app, "What is my name?")
    bot = session(app).bot
    assert bot.last_context is not None and bot.last_context.recalled
    assert 1 in [r.seq for r in bot.last_context.recalled]  # "Hi, my name is Sam."
    legend = gauge_legend(app)
    assert legend["recalled"] > 0
    assert any("recalled for your last message" in c.value for c in app.sidebar.caption)
    # the request really carried it
    sent = fake.control.requests("chat")[-1]["body"]["messages"]
    assert any("Hi, my name is Sam." in m["content"] for m in sent if m["role"] == "user")
    # switched off, the gauge and the next request hold no recalled part
    app.toggle(key="recall").set_value(False).run()
    assert gauge_legend(app)["recalled"] == 0
    send(app, "What is my name?")
    assert not session(app).bot.last_context.recalled


def test_inspector_lists_recall_per_turn_with_seq_score_and_snippet(app: AppTest) -> None:
    fold_a_conversation(app)
    send(app, "What is my name?")
    send(app, "Which museums on day 2?")
    app.switch_page("app_pages/inspector.py").run()
    assert not app.exception, app.exception
    labels = [e.label for e in app.main.expander if " recalled" in e.label]
    assert len(labels) >= 1
    first_turn = [label for label in labels if "“What is my name?”" in label]
    assert first_turn, labels
    tables = [
        df.value for df in app.main.dataframe if list(df.value.columns)[:2] == ["seq", "score"]
    ]
    assert tables
    assert all(
        list(t.columns) == ["seq", "score", "BM25", "dense", "found by", "matched words", "snippet"]
        for t in tables
    )
    rows = [row for table in tables for _, row in table.iterrows()]
    # the turn for "What is my name?": found by both searches, each with its own score
    sam = [r for r in rows if r["seq"] == 1 and "name" in r["matched words"]]
    assert sam, rows
    assert sam[0]["snippet"] == "user: Hi, my name is Sam."
    assert sam[0]["score"] > 0 and sam[0]["BM25"] > 0 and 0 < sam[0]["dense"] <= 1
    assert sam[0]["found by"] == "keywords + meaning"
    # a message recalled only beside a hit names that hit instead of blank scores
    for row in rows:
        if row["BM25"] != row["BM25"] and row["dense"] != row["dense"]:  # both NaN: no search
            assert row["found by"].startswith("next to #"), row
    # the event log lists the recalls too
    log = app.main.dataframe[-1].value
    assert "recall" in list(log["kind"])
    # and the next request shows its recalled part
    request = app.main.dataframe[0].value
    assert "recalled" in list(request["kind"])
    assert shown_messages(app) == []  # (the inspector shows no chat)


def test_recall_turns_from_events() -> None:
    texts = {1: ("user", "My dog is called Rex."), 5: ("user", "What is my dog called?")}
    lookup = MessageLookup(texts.get)
    events = [
        Event(EventKind.FOLD, "Folded", at=1.0),
        Event(
            EventKind.RECALL,
            "Recalled 1",
            at=2.0,
            data={
                "seqs": [1, 2],
                "scores": [2.5, 1.25],
                "bm25": [3.25, None],
                "dense": [None, None],
                "beside": [None, 1],
                "for_seq": 5,
            },
        ),
    ]
    (turn,) = recall_turns(events, lookup, None)
    assert turn.for_seq == 5 and turn.for_text == "What is my dog called?"
    hit, neighbour = turn.hits
    assert (neighbour.seq, neighbour.beside, neighbour.found_by) == (2, 1, "next to #1")
    assert hit.found_by == "keywords"
    assert (hit.seq, hit.score, hit.snippet) == (1, 2.5, "user: My dog is called Rex.")
    assert (hit.bm25, hit.dense) == (3.25, None)  # keyword search found it, embeddings did not
    assert hit.matched == ("dog", "called")
    assert matched_terms("Which castles?", "user: the Castle of São Jorge") == ("castles",)
