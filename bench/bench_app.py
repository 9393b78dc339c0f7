"""The Streamlit app: how long one rerun of the chat page takes as the conversation grows.

Runs the real ``app.py`` in Streamlit's AppTest against the in-process fake OpenAI server (no
network, no model). For each size, that many messages are preloaded into the browser
session's transcript and memory, then ``at.run()`` (one full rerun: the sidebar inspector and
the chat page) is timed, best and median of ``--rounds``: as shipped (the newest 50 messages
rendered, older ones behind "Show earlier messages") and with every message rendered.

Start-up is timed too: the first AppTest run in a fresh process (imports and session
creation), a new session in a warm process, ``streamlit run`` until ``/_stcore/health``
answers, and (unless ``--no-browser`` or ``--quick``, and when Chromium is there) until a
browser shows the chat page, for the server's first session and for a later one.

Run: ``python -m bench.bench_app [--quick] [--no-chart] [--out DIR] [--sizes 100 500 2000]
[--rounds 7] [--no-browser]``.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

from bench._common import (
    Report,
    finish_report,
    machine_line,
    markdown_table,
    pyplot,
    run_main,
    save_chart,
    script_parser,
)
from tests.fakes.app_process import APP, CHROMIUM, CHROMIUM_ARGS

NAME = "bench_app"
SIZES = (100, 500, 2000)
QUICK_SIZES = (100, 500)


@dataclass(frozen=True)
class RerunRow:
    messages: int
    shipped_best_ms: float
    shipped_median_ms: float
    all_best_ms: float
    all_median_ms: float


@dataclass(frozen=True)
class StartUp:
    first_run_ms: float  # first AppTest run in this process: imports + session creation
    new_session_ms: float  # a second AppTest session, warm process
    health_ms: float  # `streamlit run` until /_stcore/health answers
    first_page_ms: float | None  # `streamlit run` until Chromium shows the chat page
    later_page_ms: float | None  # a later browser session until it shows the chat page


# --------------------------------------------------------------------------- environment
@contextlib.contextmanager
def app_environment(model_url: str) -> Iterator[None]:
    """Settings for the fake server only and an empty working directory; everything restored
    afterwards."""
    from chatmem.config import ENV_NAMES

    saved_env = {name: os.environ.get(name) for name in ENV_NAMES.values()}
    saved_cwd = os.getcwd()

    with tempfile.TemporaryDirectory() as empty:
        try:
            for name in ENV_NAMES.values():
                os.environ.pop(name, None)
            os.environ.update(OPENAI_BASE_URL=model_url, OPENAI_API_KEY="bench")
            os.chdir(empty)  # no stray .env or secrets
            yield
        finally:
            os.chdir(saved_cwd)
            for name, value in saved_env.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


# --------------------------------------------------------------------------- measurements
def _timed(fn: Callable[[], object], rounds: int) -> tuple[float, float]:
    """(best, median) wall time of ``fn`` in milliseconds."""
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return min(times), statistics.median(times)


def _preload(sess: Any, count: int) -> None:
    """``count`` messages (alternating user/assistant) in the transcript and the memory."""
    bot = sess.bot
    for i in range(count // 2):
        question = f"Question {i}: what should we see on day {i % 7 + 1} in Lisbon, and why?"
        answer = f"Answer {i}: the castle in the morning, then **Alfama** and a *fado* house."
        for role, text in (("user", question), ("assistant", answer)):
            bot.memory.add(role, text)
            sess.add(role, text)


def measure_reruns(sizes: tuple[int, ...], rounds: int) -> list[RerunRow]:
    from streamlit.testing.v1 import AppTest

    from chatmem.ui.state import SESSION_KEY, ChatSession

    rows = []
    for size in sizes:
        at = AppTest.from_file(str(APP), default_timeout=120)
        at.run()
        sess = at.session_state[SESSION_KEY]
        assert isinstance(sess, ChatSession), "the app did not start; check the settings"
        _preload(sess, size)
        at.run()  # warm: token counts cached
        assert not at.exception, at.exception
        assert len(at.chat_message) == min(size, sess.show)
        gc.collect()
        best, median = _timed(at.run, rounds)
        sess.show = size
        at.run()
        assert len(at.chat_message) == size
        gc.collect()
        all_best, all_median = _timed(at.run, max(3, rounds // 2))
        rows.append(RerunRow(size, best, median, all_best, all_median))
        sess.bot.close()
        del at, sess
        gc.collect()  # drop this size's session before timing the next one
    return rows


def _browser_pages(url: str, start: float) -> tuple[float, float] | None:
    """Seconds from ``start`` until Chromium shows the chat page, and seconds a later
    browser session takes to show it."""
    if not CHROMIUM.exists():
        return None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    ready = "[data-testid='stChatInput'] textarea"
    idle = "[data-testid='stApp'][data-test-script-state='notRunning']"
    times = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            for _ in range(2):
                page = browser.new_page()
                page.goto(url)
                page.wait_for_selector(ready, timeout=60_000)
                page.wait_for_selector(idle)
                times.append(time.perf_counter() - start)
                page.close()
                start = time.perf_counter()
        finally:
            browser.close()
    return times[0], times[1]


def measure_server(model_url: str, browser: bool) -> tuple[float, tuple[float, float] | None]:
    """Seconds from ``streamlit run`` until it is healthy, and the browser times."""
    from tests.fakes.app_process import app_workdir, start_app

    settings = {"OPENAI_BASE_URL": model_url, "OPENAI_API_KEY": "bench"}
    with tempfile.TemporaryDirectory() as folder:
        workdir = app_workdir(Path(folder))
        start = time.perf_counter()
        with start_app(settings, workdir, poll=0.02) as app:
            healthy = time.perf_counter() - start
            pages = _browser_pages(app.url, start) if browser else None
    return healthy, pages


# --------------------------------------------------------------------------- report
def build_markdown(rows: list[RerunRow], start: StartUp, rounds: int, quick: bool) -> str:
    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:,.1f} ms"

    table = markdown_table(
        [
            "messages",
            "rerun, newest 50 shown (best)",
            "(median)",
            "rerun, all shown (best)",
            "(median)",
        ],
        [
            [
                f"{r.messages:,}",
                ms(r.shipped_best_ms),
                ms(r.shipped_median_ms),
                ms(r.all_best_ms),
                ms(r.all_median_ms),
            ]
            for r in rows
        ],
    )
    startup = markdown_table(
        ["start-up", "time"],
        [
            ["first AppTest run in a fresh process (imports + session)", ms(start.first_run_ms)],
            ["new session in a warm process (AppTest)", ms(start.new_session_ms)],
            ["`streamlit run` until `/_stcore/health` answers", ms(start.health_ms)],
            ["`streamlit run` until Chromium shows the chat page", ms(start.first_page_ms)],
            ["a later browser session until it shows the chat page", ms(start.later_page_ms)],
        ],
    )
    return f"""# The app: one chat-page rerun as the conversation grows

A rerun is one full script run of `app.py` (navigation, the sidebar inspector with its budget
gauge and summary, the chat page), timed around `AppTest.run()` with the messages preloaded
into the session; best and median of {rounds} runs (half as many with everything shown).
The app renders the newest 50 messages and puts older ones behind "Show earlier messages";
the last column shows what rendering all of them would cost.
{"**Quick run (fewer sizes and rounds): not for publishing.**" if quick else ""}

{table}

{startup}

Browser times include Chromium loading Streamlit's JavaScript (headless, no GPU).

{machine_line()}
"""


def chart(rows: list[RerunRow], path: Path) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=120)
    xs = [r.messages for r in rows]
    ax.plot(xs, [r.shipped_best_ms for r in rows], "o-", label="newest 50 shown (as shipped)")
    ax.plot(xs, [r.all_best_ms for r in rows], "s--", label="all messages shown")
    ax.set_xscale("log")
    ax.set_xlabel("messages in the conversation")
    ax.set_ylabel("rerun time (ms, best)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("One chat-page rerun (AppTest)")
    return save_chart(fig, path)


def run_bench(args: argparse.Namespace, log: Callable[[str], None] = print) -> Report:
    from streamlit.testing.v1 import AppTest

    from tests.fakes import FakeOpenAIServer

    sizes = tuple(args.sizes) if args.sizes else (QUICK_SIZES if args.quick else SIZES)
    rounds = args.rounds or (3 if args.quick else 7)
    browser = not (args.no_browser or args.quick)
    log(f"{NAME}: sizes {', '.join(map(str, sizes))}, {rounds} rounds")
    with FakeOpenAIServer() as server, app_environment(server.url):
        start = time.perf_counter()
        AppTest.from_file(str(APP), default_timeout=120).run()
        first = (time.perf_counter() - start) * 1000
        start = time.perf_counter()
        AppTest.from_file(str(APP), default_timeout=120).run()
        second = (time.perf_counter() - start) * 1000
        rows = measure_reruns(sizes, rounds)
        health, pages = measure_server(server.url, browser)
    startup = StartUp(
        first_run_ms=first,
        new_session_ms=second,
        health_ms=health * 1000,
        first_page_ms=pages[0] * 1000 if pages else None,
        later_page_ms=pages[1] * 1000 if pages else None,
    )
    markdown = build_markdown(rows, startup, rounds, args.quick)
    data = {
        "machine": machine_line(),
        "rounds": rounds,
        "reruns": [asdict(r) for r in rows],
        "startup": asdict(startup),
    }
    return finish_report(
        args, NAME, markdown, data, partial(chart, rows), "rerun time by conversation length"
    )


def main(argv: list[str] | None = None) -> int:
    parser = script_parser(NAME, __doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=None, help="messages to preload")
    parser.add_argument("--rounds", type=int, default=None, help="timed reruns per size")
    parser.add_argument("--no-browser", action="store_true", help="skip the Chromium timings")
    return run_main(parser, run_bench, argv)


if __name__ == "__main__":
    sys.exit(main())
