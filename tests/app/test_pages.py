"""Every page renders; the inspector, compare and conversations pages show what they should."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from chatmem.replay import FULL, ROLLING, TRIM, ReplayResult
from chatmem.sample_conversation import FACT_QUESTIONS
from chatmem.ui.compare import RESULT_KEY
from tests.app.conftest import APP, TIMEOUT, send, session
from tests.fakes import FakeServerProcess

PAGES = [
    "app_pages/chat.py",
    "app_pages/inspector.py",
    "app_pages/conversations.py",
    "app_pages/compare.py",
]
HEADINGS = {
    "app_pages/chat.py": "## Chat",
    "app_pages/inspector.py": "## Memory inspector",
    "app_pages/conversations.py": "## Conversations",
    "app_pages/compare.py": "## Compare memory strategies",
}


@pytest.mark.parametrize("page", PAGES)
def test_each_page_renders_with_the_sidebar(app: AppTest, page: str) -> None:
    app.switch_page(page).run()
    assert not app.exception, app.exception
    assert HEADINGS[page] in [m.value for m in app.main.markdown]
    # the inspector sidebar is drawn by app.py on every page
    assert "### Memory" in [m.value for m in app.sidebar.markdown]
    assert app.slider(key="max_tokens")
    assert app.slider(key="keep_recent")


def test_pages_render_after_a_conversation(app: AppTest) -> None:
    for text in ["Hi, my name is Sam.", "My budget is 2400 euros.", "What is my name?"]:
        send(app, text)
    for page in PAGES:
        app.switch_page(page).run()
        assert not app.exception, (page, app.exception)


def test_inspector_shows_the_next_request_stats_and_events(
    app: AppTest, fake: FakeServerProcess
) -> None:
    for text in [
        "Hi, my name is Sam.",
        *[f"Plan day {i} of the trip in Lisbon." for i in range(8)],
    ]:
        send(app, text)
    app.slider(key="max_tokens").set_value(256).run()
    bot = session(app).bot
    bot.wait_for_fold(timeout=10)
    app.switch_page("app_pages/inspector.py").run()
    assert not app.exception
    request, stats, events = app.dataframe[0].value, app.dataframe[1].value, app.dataframe[2].value
    context = bot.context()
    assert list(request["kind"]) == [p.kind for p in context.parts]
    assert list(request["kind"])[:2] == ["system", "summary"]
    assert list(request["tokens"]) == [p.tokens for p in context.parts]
    assert sum(request["tokens"]) + context.budget.priming == context.budget.total
    assert list(stats["kind"]).count("summary") == 1
    assert stats["prompt (estimate)"].iloc[0] == bot.stats[0].prompt_estimate
    assert "fold" in list(events["kind"])
    labels = [e.label for e in app.main.expander]
    assert any(label.startswith("v1 · ") for label in labels), labels
    assert "The user's name is Sam." in "\n".join(m.value for m in app.main.markdown)


def test_conversations_page_before_anything_is_saved(app: AppTest) -> None:
    app.switch_page("app_pages/conversations.py").run()
    assert not app.exception
    assert any("No saved conversations yet" in c.value for c in app.main.caption)
    assert app.text_input(key="conversations_search")
    assert app.file_uploader


def _replay(app: AppTest, replies: str | None = None) -> None:
    app.switch_page("app_pages/compare.py").run()
    assert app.number_input(key="compare_turns").value == 20
    app.number_input(key="compare_turns").set_value(12)
    app.number_input(key="compare_max_tokens").set_value(300)
    app.number_input(key="compare_keep_recent").set_value(2)
    if replies is not None:
        app.radio(key="compare_replies").set_value(replies)
    next(b for b in app.button if b.label == "Run the replay").click().run(timeout=60)
    assert not app.exception, app.exception


def _metrics(app: AppTest, name: str) -> dict[str, str]:
    box = app.get("flex_container")
    found = [c for c in box if getattr(c, "key", None) == f"compare_{name.replace(' ', '_')}"]
    assert len(found) == 1, name
    return {m.label: m.value for m in found[0].get("metric")}


def test_compare_replays_the_sample_against_the_fake(app: AppTest, fake: FakeServerProcess) -> None:
    # a hosted model: the replayed turns get the model's replies by default
    app.switch_page("app_pages/compare.py").run()
    assert app.radio(key="compare_replies").value == "from the model"
    _replay(app)
    result = app.session_state[RESULT_KEY]
    assert isinstance(result, ReplayResult)
    assert result.turns == 12
    assert not result.scripted
    assert all(len(run.prompt_tokens) == 12 for run in result.runs.values())
    assert result.score(FULL) == len(FACT_QUESTIONS)
    assert result.score(TRIM) < result.score(ROLLING)
    # the trimmed strategy never sends more than the budget; the full history grows past it
    assert max(result.runs[TRIM].prompt_tokens) <= 300
    assert max(result.runs[ROLLING].prompt_tokens) <= 300
    assert max(result.runs[FULL].prompt_tokens) > 300
    table = app.dataframe[0].value
    row = table[table["question"] == "What is my name?"].iloc[0]
    assert row[f"{FULL}: model"] == "✓ Your name is Sam."
    assert row[f"{ROLLING}: model"] == "✓ Your name is Sam."
    assert row[f"{TRIM}: model"] == "✗ I don't know your name."
    assert row[f"{FULL}: memory"] == "✓ verbatim"
    assert "summary" in row[f"{ROLLING}: memory"]
    assert row[f"{TRIM}: memory"] == "✗ not sent"
    assert len(fake.control.requests("summary")) >= 1
    # every replayed turn and every question was a chat request: 3 strategies
    assert len(fake.control.requests("chat")) == 3 * (12 + len(FACT_QUESTIONS))
    # the result survives a rerun and a page switch
    app.switch_page("app_pages/chat.py").run()
    app.switch_page("app_pages/compare.py").run()
    assert app.dataframe[0].value.equals(table)


def test_compare_shows_memory_beside_a_model_that_forgets(
    app: AppTest, fake: FakeServerProcess
) -> None:
    """Scripted replies; the fake model answers no fact question, whatever it is sent."""
    fake.control.config(forget=True)
    _replay(app, "scripted")
    result = app.session_state[RESULT_KEY]
    assert isinstance(result, ReplayResult) and result.scripted
    # the model was called only for the questions (and the summaries)
    assert len(fake.control.requests("chat")) == 3 * len(FACT_QUESTIONS)
    questions = len(FACT_QUESTIONS)
    shown = {name: _metrics(app, name) for name in (FULL, TRIM, ROLLING)}
    for name in (FULL, ROLLING):  # the memory kept every fact; the model answered none
        assert shown[name]["Memory kept"] == f"{questions} of {questions}", name
        assert shown[name]["Model answered"] == f"0 of {questions}", name
    trimmed = result.memory_score(TRIM)
    assert trimmed < questions
    assert shown[TRIM]["Memory kept"] == f"{trimmed} of {questions}"
    table = app.dataframe[0].value
    row = table[table["question"] == "What is my name?"].iloc[0]
    assert row[f"{ROLLING}: memory"].startswith("✓ ")
    assert row[f"{ROLLING}: model"] == "✗ I don't know your name."
    assert row[f"{TRIM}: memory"] == "✗ not sent"


def test_compare_server_error_is_plain_words_and_keeps_the_inputs(
    app: AppTest, fake: FakeServerProcess
) -> None:
    fake.control.fail(*[{"kind": "500"}] * 40)
    _replay(app, "scripted")
    errors = [e.value for e in app.error]
    assert len(errors) == 1, errors
    assert errors[0].startswith("The model server failed: "), errors
    assert "internal error (HTTP 500)" in errors[0]
    assert "Traceback" not in errors[0]
    assert app.number_input(key="compare_turns").value == 12
    assert app.number_input(key="compare_max_tokens").value == 300
    assert app.number_input(key="compare_keep_recent").value == 2
    assert app.radio(key="compare_replies").value == "scripted"
    result = app.session_state[RESULT_KEY]
    # no model answer, yet what each memory kept is still measured from the requests built
    assert all(not run.answers for run in result.runs.values())
    assert result.memory_score(FULL) == len(FACT_QUESTIONS)


def test_settings_error_is_one_plain_error(
    app_env: FakeServerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHATMEM_MAX_TOKENS", "lots")
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    assert not at.exception
    errors = [e.value for e in at.error]
    assert errors == ["CHATMEM_MAX_TOKENS must be a whole number, not 'lots'."] * 2  # page, sidebar
    at.switch_page("app_pages/inspector.py").run()
    assert not at.exception
    assert at.error


def test_missing_local_model_is_a_clear_error(
    app_env: FakeServerProcess, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("OPENAI_BASE_URL")
    monkeypatch.delenv("OPENAI_API_KEY")
    missing = tmp_path / "no-such-model.gguf"
    monkeypatch.setenv("CHATMEM_LOCAL_MODEL_PATH", str(missing))
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    assert not at.exception
    assert f"The local model file {missing} does not exist." in [e.value for e in at.error]


def test_dotenv_in_the_working_directory_is_read_not_a_stray_one(
    app_env: FakeServerProcess, tmp_path: Path
) -> None:
    (tmp_path / ".env").write_text("CHATMEM_KEEP_RECENT=9\n")
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    assert session(at).bot.keep_recent == 9
    assert at.slider(key="keep_recent").value == 9
