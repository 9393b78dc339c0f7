"""Folds with the real bundled model: written by rules, they keep the facts and never take
the model from a reply."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from bench.offline_script import FACTS, SYSTEM, TURNS
from chatmem import ChatMemory, LocalChat, Settings
from chatmem.events import EventKind
from chatmem.facts import parse_notes

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def local() -> LocalChat:
    model = LocalChat()
    assert model.summarizes_by_rules  # the bundled model folds by rules, with no model call
    return model


class _Calls:
    """Records the thread of every call to the model's ``stream``."""

    def __init__(self, model: LocalChat) -> None:
        self.threads: list[str] = []
        self._stream = model.stream

    def __call__(self, messages: list[dict[str, Any]], *, max_reply_tokens: int) -> Any:
        self.threads.append(threading.current_thread().name)
        return self._stream(messages, max_reply_tokens=max_reply_tokens)


def _bot(local: LocalChat, background: bool) -> ChatMemory:
    return ChatMemory(
        system=SYSTEM,
        max_tokens=400,
        model=local,
        reply_reserve=16,  # short replies: the folds are what is tested
        background=background,
        settings=Settings(embedding_model="off"),
    )


def test_a_20_turn_chat_keeps_the_facts_in_its_summary(
    local: LocalChat, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _Calls(local)
    monkeypatch.setattr(local, "stream", calls)
    bot = _bot(local, background=False)
    for text in TURNS[:20]:
        bot.ask(text)
    folds = [e for e in bot.events if e.kind == EventKind.FOLD]
    assert len(folds) >= 2
    assert not [e for e in bot.events if e.kind == EventKind.FOLD_FAILED]
    assert all(e.data["calls"] == 0 for e in folds)
    assert len(calls.threads) == 20  # one call per reply, none for a summary
    assert [s.kind for s in bot.stats] == ["chat"] * 20
    summary = bot.summary
    kept = [f.label for f in FACTS if f.expected.lower() in summary.lower()]
    assert len(kept) >= 5, (kept, summary)
    assert len(parse_notes(summary)) >= 5
    assert bot.memory.summary is not None
    assert bot.memory.summary.model == "rules (no model call)"
    bot.close()


def test_a_fold_finishes_while_a_reply_holds_the_model(local: LocalChat) -> None:
    """Each fold runs on the worker while the next reply is streaming, and so while that
    reply holds the model (llama.cpp answers one call at a time). A fold that needed the
    model would wait for the reply to end; these all finish with the reply still open."""
    bot = _bot(local, background=True)
    folds_seen = 0
    for text in TURNS[:14]:
        reply = bot.ask_stream(text)
        next(reply)  # the reply has started: the model is busy with it
        bot.wait_for_fold(timeout=30)  # a TimeoutError here: the fold waited for the model
        folds_seen = len([e for e in bot.events if e.kind == EventKind.FOLD])
        for _ in reply:
            pass
    assert folds_seen >= 2
    assert not [e for e in bot.events if e.kind == EventKind.FOLD_FAILED]
    bot.close()
