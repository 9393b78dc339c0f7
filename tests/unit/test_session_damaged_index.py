"""A session on a store whose full-text index is damaged: the chat goes on.

Recall searches the store's index. When the index is found damaged the store rebuilds it; if
that fails too, recall finds nothing, one ``recall_unavailable`` event says why and what to
do, messages are still stored and replies still come. After ``--reindex`` recall is back.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from chatmem import ChatMemory, OpenAIChat, Settings, cli
from chatmem.events import EventKind
from chatmem.recall import RECALL_UNAVAILABLE, recall_unavailable
from chatmem.store import Store
from tests.unit.test_store_damage import DAMAGE, damage, failing_rebuild  # noqa: F401

KEYWORDS_ONLY = Settings(embedding_model="off")  # the keyword index is what is damaged here
FIRST = "My boat is called Seagull and she is moored at Pier Nine."


def model_for(fake) -> OpenAIChat:
    return OpenAIChat("gpt-4o-mini", api_key="k", base_url=fake.url, max_retries=0)


def _conversation(fake, path: Path) -> str:
    """A conversation long enough that its first message is folded away (recall's job)."""
    with Store(str(path)) as store:
        bot = ChatMemory(
            model=model_for(fake),
            settings=KEYWORDS_ONLY,
            store=store,
            max_tokens=600,
            keep_recent=4,
            background=False,
        )
        bot.ask(FIRST)
        for i in range(16):
            bot.ask(f"Topic {i}: gardens, rivers, trains and old maps.")
        assert bot.memory.summary is not None
        cid = bot.conversation_id
        bot.close()
    assert cid is not None
    return cid


def _resume(fake, store: Store, cid: str) -> ChatMemory:
    return ChatMemory.resume(
        store, cid, model=model_for(fake), settings=KEYWORDS_ONLY, background=False
    )


def _recalled_seqs(bot: ChatMemory) -> list[int]:
    recalls = [e for e in bot.events if e.kind == EventKind.RECALL]
    return list(recalls[-1].data["seqs"]) if recalls else []


def _unavailable_events(bot: ChatMemory) -> list:
    return [e for e in bot.history_events() if e.kind == EventKind.RECALL_UNAVAILABLE]


def test_a_damaged_index_is_rebuilt_and_recall_keeps_working(fake, tmp_path: Path) -> None:
    path = tmp_path / "chatmem.db"
    cid = _conversation(fake, path)
    damage(path, DAMAGE["blocks overwritten"][0])
    with Store(str(path)) as store:
        bot = _resume(fake, store, cid)
        assert bot.ask("Where is the boat Seagull moored?").startswith("You said:")
        assert 1 in _recalled_seqs(bot)
        assert _unavailable_events(bot) == []
        assert recall_unavailable(bot.recall_index) is None
        bot.close()


def test_when_the_index_cannot_be_rebuilt_recall_is_off_and_the_chat_goes_on(
    fake,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    failing_rebuild: list[int],  # noqa: F811
) -> None:
    path = tmp_path / "chatmem.db"
    cid = _conversation(fake, path)
    damage(path, DAMAGE["blocks overwritten"][0])
    with Store(str(path)) as store:
        before = store.count_messages(cid)
        bot = _resume(fake, store, cid)
        assert bot.ask("Where is the boat Seagull moored?").startswith("You said:")
        for _ in range(3):  # the sidebar asks on every rerun
            bot.next_request()
        assert bot.ask("Is the boat Seagull still at the pier?").startswith("You said:")
        assert _recalled_seqs(bot) == []
        assert store.count_messages(cid) == before + 4  # two questions, two replies
        events = _unavailable_events(bot)
        assert [e.message for e in events] == [RECALL_UNAVAILABLE]  # once per session
        assert "python -m chatmem --reindex" in RECALL_UNAVAILABLE
        assert recall_unavailable(bot.recall_index) == RECALL_UNAVAILABLE
        assert len(failing_rebuild) == 1

        monkeypatch.undo()  # whatever stopped the rebuild is fixed; the operator reindexes
        monkeypatch.setenv("CHATMEM_DATABASE_URL", f"sqlite:///{path}")
        monkeypatch.chdir(tmp_path)
        assert cli.main(["--reindex"]) == 0
        assert bot.ask("Tell me about the boat Seagull again.").startswith("You said:")
        assert 1 in _recalled_seqs(bot)
        assert recall_unavailable(bot.recall_index) is None
        assert len(_unavailable_events(bot)) == 1
        bot.close()
