"""The session with a real store: nothing the user typed is lost, and conversations resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from chatmem import ChatMemory, ContextOverflow, ModelError, OpenAIChat, Settings
from chatmem.store import Store

ROOT = Path(__file__).parents[2]


def model_for(fake, retries: int = 0) -> OpenAIChat:
    return OpenAIChat("gpt-4o-mini", api_key="k", base_url=fake.url, max_retries=retries)


def bot_for(fake, store: Store, **kw) -> ChatMemory:
    kw.setdefault("max_tokens", 300)
    kw.setdefault("keep_recent", 4)
    kw.setdefault("background", False)
    return ChatMemory(model=model_for(fake), settings=Settings(), store=store, **kw)


def test_turns_summaries_and_events_are_stored(fake, store: Store) -> None:
    bot = bot_for(fake, store)
    bot.ask("Hi, my name is Sam.")
    for i in range(15):
        bot.ask(f"Topic {i}: gardens, rivers, trains and old maps.")
    cid = bot.conversation_id
    rows = store.messages(cid)
    assert len(rows) == 32
    assert [r.seq for r in rows] == list(range(1, 33))
    assert rows[0].content == "Hi, my name is Sam." and rows[0].role == "user"
    assert rows[1].usage and rows[1].usage["prompt_tokens"] > 0
    assert all(r.tokens for r in rows)
    summaries = store.list_summaries(cid)
    assert summaries and "Sam" in summaries[-1].text
    assert summaries[-1].covers_seq == bot.memory.summary.covers_seq
    kinds = {e.kind for e in store.list_events(cid)}
    assert "fold" in kinds
    assert store.get_conversation(cid).title == "Hi, my name is Sam."
    assert store.get_conversation(cid).settings["max_tokens"] == 300


def test_resume_reads_summary_and_tail_and_remembers(fake, store: Store) -> None:
    bot = bot_for(fake, store, keep_recent=2)
    bot.ask("Hi, my name is Sam.")
    for i in range(15):
        bot.ask(f"Topic {i}: gardens, rivers, trains and old maps.")
    cid, summary, recent = bot.conversation_id, bot.summary, bot.recent
    bot.close()

    again = ChatMemory.resume(store, cid, model=model_for(fake), settings=Settings())
    assert again.max_tokens == 300 and again.keep_recent == 2
    assert again.summary == summary
    assert again.recent == recent
    assert again.ask("What is my name?") == "Your name is Sam."
    assert store.messages(cid)[-1].content == "Your name is Sam."


def test_user_message_is_stored_before_the_call_and_kept_on_failure(fake, store: Store) -> None:
    bot = bot_for(fake, store)
    fake.control.fail("500")
    with pytest.raises(ModelError):
        bot.ask("Please keep this.")
    rows = store.messages(bot.conversation_id)
    assert [(r.role, r.content, r.status) for r in rows] == [("user", "Please keep this.", "ok")]
    assert any(e.kind == "error" for e in store.list_events(bot.conversation_id))


def test_cut_stream_is_stored_incomplete(fake, store: Store) -> None:
    bot = bot_for(fake, store)
    fake.control.fail({"kind": "cut"})
    with pytest.raises(ModelError) as info:
        bot.ask("one two three four five six seven eight nine ten")
    assert info.value.kind in ("incomplete", "connection")
    rows = store.messages(bot.conversation_id)
    assert rows[0].status == "ok"
    assert rows[-1].role == "assistant" and rows[-1].status == "incomplete"
    assert rows[-1].content and "ten" not in rows[-1].content
    # the incomplete reply is not part of the next request
    assert bot.ask("again") == "You said: again"
    sent = fake.control.requests("chat")[-1]["body"]["messages"]
    assert all(m["content"] != rows[-1].content for m in sent)


def test_too_long_message_is_kept_as_failed(fake, store: Store) -> None:
    bot = bot_for(fake, store)
    with pytest.raises(ContextOverflow):
        bot.ask("word " * 500)
    rows = store.messages(bot.conversation_id)
    assert rows[0].status == "failed" and rows[0].content.startswith("word word")


def test_control_characters_and_bad_unicode_are_stored(fake, store: Store) -> None:
    bot = bot_for(fake, store)
    bot.ask("nul \x00 bell \x07 surrogate \ud800 end")
    stored = store.messages(bot.conversation_id)[0].content
    assert stored == "nul \ufffd bell \x07 surrogate \ufffd end"


def run_cli(args: list[str], env: dict, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "chatmem", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
    )


def cli_env(fake, tmp_path) -> dict:
    return {
        **os.environ,
        "OPENAI_BASE_URL": fake.url,
        "OPENAI_API_KEY": "test-key",
        "CHATMEM_MAX_RETRIES": "0",
        "CHATMEM_DATABASE_URL": f"sqlite:///{tmp_path}/cli.db",
    }


def test_cli_list_and_resume(fake, tmp_path) -> None:
    env = cli_env(fake, tmp_path)
    first = run_cli([], env, "Hi, my name is Sam.\nquit\n")
    assert first.returncode == 0, first.stderr
    cid = first.stdout.split("conversation ", 1)[1].split()[0]
    listed = run_cli(["--list"], env)
    assert cid in listed.stdout and "Hi, my name is Sam." in listed.stdout
    again = run_cli(["--resume", cid], env, "What is my name?\nexit\n")
    assert "Your name is Sam." in again.stdout
    missing = run_cli(["--resume", "nope"], env)
    assert missing.returncode == 2 and "No conversation with id 'nope'" in missing.stderr


def test_killed_mid_stream_keeps_the_message(fake, tmp_path) -> None:
    """Crash test: kill the chat process while a reply streams, restart, nothing lost."""
    fake.control.config(chunk_delay_ms=400, reply_words=40)
    env = cli_env(fake, tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "chatmem"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )
    assert proc.stdin and proc.stdout
    proc.stdin.write("Remember the blue heron by the lake.\n")
    proc.stdin.flush()
    header = proc.stdout.readline()
    cid = header.split("conversation ", 1)[1].split()[0]
    deadline = time.monotonic() + 30
    while not any(r["status"] == 200 for r in fake.control.requests("chat")):
        assert time.monotonic() < deadline, "the reply never started"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)

    fake.control.config(chunk_delay_ms=0)
    with Store(env["CHATMEM_DATABASE_URL"]) as store:
        rows = store.messages(cid)
        assert rows[0].content == "Remember the blue heron by the lake."
    again = run_cli(["--resume", cid], env, "Still there?\nquit\n")
    assert again.returncode == 0, again.stderr
    with Store(env["CHATMEM_DATABASE_URL"]) as store:
        contents = [r.content for r in store.messages(cid)]
    assert contents[0] == "Remember the blue heron by the lake."
    assert contents[-2] == "Still there?"
    assert contents[-1].startswith("You said: Still there?")


def test_resumed_conversation_recalls_from_the_store(fake, store: Store) -> None:
    bot = bot_for(fake, store, max_tokens=500, keep_recent=2)
    fact = "My sailing boat Saltwater Gypsy is moored at Pier 39."
    bot.ask(fact)
    for i in range(40):
        bot.ask(f"Topic {i}: gardens, rivers, trains and old maps.")
    cid = bot.conversation_id
    bot.close()
    again = ChatMemory.resume(store, cid, model=model_for(fake), settings=Settings())
    assert all(m.content != fact for m in again.memory.messages), "fact was loaded, not recalled"
    again.ask("Where is Saltwater Gypsy moored?")
    assert [r.seq for r in again.last_context.recalled][:1] == [1]
    sent = fake.control.requests("chat")[-1]["body"]["messages"]
    assert any(fact in m["content"] for m in sent if m["role"] == "user")


def test_owner_and_deferred_creation(fake, store: Store) -> None:
    bot = bot_for(fake, store, owner="sam@example.org", defer_create=True)
    assert bot.conversation_id is None
    assert store.list_conversations() == []  # nothing stored until there is something to keep
    bot.ask("Hello there")
    info = store.get_conversation(bot.conversation_id)
    assert info.owner == "sam@example.org"
    assert [c.id for c in store.list_conversations(owner="sam@example.org")] == [info.id]
    assert store.list_conversations(owner="someone@else.org") == []


def test_a_consumer_that_stops_early_still_finishes_the_turn(fake, store: Store) -> None:
    """The finish step runs when the reply generator is closed: what arrived is stored as
    incomplete, a ``stopped`` event says so, and the fold the history needs is scheduled."""
    bot = bot_for(fake, store, keep_recent=2)
    for i in range(8):
        bot.ask(f"Topic {i}: gardens, rivers, trains and old maps, at some length.")
    scheduled: list[bool] = []
    bot.schedule_fold = lambda: scheduled.append(True) or False  # type: ignore[method-assign]
    bot.add_user_message("Tell me about the rivers again, please.")
    chunks = bot.reply_stream()
    first = next(chunks)
    chunks.close()  # the reader went away (a closed tab, a rerun, a broken pipe)
    rows = store.messages(bot.conversation_id)
    assert rows[-1].role == "assistant" and rows[-1].status == "incomplete"
    assert rows[-1].content.startswith(first.strip()[:5])
    assert [e.kind for e in store.list_events(bot.conversation_id)][-1] == "stopped"
    assert bot.events[-1].kind == "stopped"
    assert scheduled == [True]
