"""Token drift: chatmem's count of each request against the server's own, before and after.

The same scripted conversation (40 turns, long turns and Norwegian ones among them) goes
through chatmem twice per server kind, with ``max_tokens`` fixed: *before* counts with plain
tiktoken (o200k, OpenAI's framing), as chatmem did for every server; *after* counts with the
counter the server probe picks (``chatmem.servers``). For every request chatmem builds, the
server's count is set beside chatmem's: drift is (chatmem − server) / server; a request is
over budget when the server counts more than ``max_tokens``.

- **fake OpenAI-compatible server, unknown model**: the fake of ``tests/fakes`` (its usage
  counts word and punctuation pieces); after = tiktoken calibrated by that usage.
- **llama-cpp-python server** (``python -m llama_cpp.server`` with the bundled SmolLM2 GGUF,
  ``--n_ctx 2048``, started here): the server's count of a request is its own chat formatter
  (llama-cpp-python's ``Jinja2ChatFormatter`` with the GGUF's template, the code its chat route
  runs) tokenized by its ``/extras/tokenize`` route, and checked against the ``prompt_tokens``
  of real one-token calls for the largest requests. The assistant replies are scripted (so
  before and after send the same conversation, and this loaded machine is not asked for 80
  generations); only counting is measured.
- **bundled model in-process** (``LocalChat``): the count is the same formatter with the
  model's own tokenizer, which is what ``create_chat_completion`` evaluates.

Run: ``python -m bench.bench_drift [--quick] [--no-chart] [--out DIR]``.
"""

from __future__ import annotations

import argparse
import random
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench._common import (
    Report,
    conversation,
    finish_report,
    machine_line,
    markdown_table,
    pyplot,
    run_main,
    save_chart,
    script_parser,
)
from bench.bench_framing import llama_server
from chatmem import ChatMemory, Settings
from chatmem.models import LocalChat, OpenAIChat, ReplyStream, Usage, local_model_path
from chatmem.servers import ServerProfile
from chatmem.summarize import SUMMARY_SYSTEM_PROMPT
from chatmem.tokens import CalibratedCounter, TokenCounter, counter_for_model

NAME = "bench_drift"
TURNS, QUICK_TURNS = 40, 8
MAX_TOKENS, REPLY_RESERVE, N_CTX = 1500, 256, 2048
CHECKED_CALLS = 2  # real calls that confirm the server-side count, per server run
NORWEGIAN = (
    "Hei! I helga gikk vi tur langs fjorden, og været var nydelig hele dagen. Barna fant "
    "krabber i fjæra, og vi grillet pølser ved båtnaustet før vi ruslet hjem i solnedgangen.",
    "Kan du hjelpe meg å planlegge en reise til Lofoten i juli? Vi er fire voksne, vil gjerne "
    "gå på fjellet, padle kajakk og spise fersk torsk. Hvor bør vi bo, og hva koster det?",
    "Bestemor fyller nitti år neste måned. Jeg vil skrive en tale som er morsom, men også rørende, "
    "om oppveksten hennes på gården i Valdres og alle sommerne vi tilbrakte på setra.",
)


def script(turns: int) -> list[tuple[str, str]]:
    """(user, assistant) pairs: the bench conversation, every fourth user turn in Norwegian,
    every fifth three times as long."""
    base = conversation(turns * 2, seed=2026)
    rng = random.Random(7)
    pairs = []
    for i in range(turns):
        user, reply = base[2 * i][1], base[2 * i + 1][1]
        if i % 4 == 1:
            user = rng.choice(NORWEGIAN)
        if i % 5 == 3:
            user = " ".join([user] * 3)
        if i % 6 == 2:
            reply = rng.choice(NORWEGIAN)
        pairs.append((user, reply))
    return pairs


class Scripted:
    """A chat model that answers from the script and counts like ``counter`` (the counting
    under test); summaries are the first words of what they fold."""

    def __init__(
        self, name: str, counter: TokenCounter, window: int, usage: Callable[..., int | None]
    ):
        self.name, self.label, self.context_window, self.counter = name, name, window, counter
        self.reply = ""
        self._usage = usage

    def stream(self, messages: list[dict[str, Any]], *, max_reply_tokens: int) -> ReplyStream:
        if messages and SUMMARY_SYSTEM_PROMPT[:40] in str(messages[0].get("content")):
            text = " ".join(str(messages[-1]["content"]).split()[:40])
        else:
            text = self.reply

        def events() -> Iterator[str | Usage]:
            yield text
            yield Usage(self._usage(messages), None)

        return ReplyStream(events())


def run_session(
    model: Any, pairs: list[tuple[str, str]], server_count: Callable[[list[dict[str, Any]]], int]
) -> list[dict[str, Any]]:
    """Send the script through a session; the server's count of every request it built."""
    bot = ChatMemory(
        system="You are a helpful assistant. Answer briefly and kindly.",
        model=model,
        settings=Settings(),
        max_tokens=MAX_TOKENS,
        keep_recent=6,
        reply_reserve=REPLY_RESERVE,
        summary_max_tokens=200,
        background=False,
    )
    rows = []
    for user, reply in pairs:
        if isinstance(model, Scripted):
            model.reply = reply
            bot.ask(user)
        else:
            bot.ask(user)
        assert bot.last_context is not None
        messages = bot.last_context.messages
        rows.append(
            {
                "ours": bot.last_context.budget.total,
                "server": server_count(messages),
                "messages": messages,
            }
        )
    bot.close()
    return rows


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    drifts = [(r["ours"] - r["server"]) / r["server"] for r in rows]
    return {
        "requests": len(rows),
        "mean_drift": sum(drifts) / len(drifts),
        "max_abs_drift": max(abs(d) for d in drifts),
        "over_budget": sum(r["server"] > MAX_TOKENS for r in rows),
        "largest_server": max(r["server"] for r in rows),
    }


# ------------------------------------------------------------------------ server kinds
def formatter_of(llm: Any) -> Any:
    """llama-cpp-python's own chat formatter for a loaded GGUF, as its server builds it."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    def text(token: int) -> str:
        return llm.detokenize([token], special=True).decode("utf-8", "replace")

    return Jinja2ChatFormatter(
        template=llm.metadata["tokenizer.chat_template"],
        eos_token=text(llm.token_eos()),
        bos_token=text(llm.token_bos()),
    )


def fake_kind(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    from tests.fakes.replies import estimate_message_tokens
    from tests.fakes.server_process import FakeOpenAIServer

    out: dict[str, Any] = {}
    with FakeOpenAIServer(port=0) as fake:
        for when in ("before", "after"):
            model = OpenAIChat("mystery-7b", base_url=fake.url, max_retries=0, context_window=N_CTX)
            if when == "before":
                model.counter = counter_for_model("gpt-4o")  # plain tiktoken, as before
            rows = run_session(model, [(u, "") for u, _ in pairs], estimate_message_tokens)
            out[when] = summarise(rows)
            out[f"{when}_label"] = model.counter.exactness
    return out


def llama_kind(pairs: list[tuple[str, str]], log: Path) -> dict[str, Any]:
    import llama_cpp

    gguf = local_model_path()
    vocab = llama_cpp.Llama(model_path=str(gguf), vocab_only=True, verbose=False)
    try:
        return _llama_runs(pairs, log, gguf, formatter_of(vocab))
    finally:
        vocab.close()  # before interpreter teardown, where its finalizer fails


def _llama_runs(
    pairs: list[tuple[str, str]], log: Path, gguf: Path, formatter: Any
) -> dict[str, Any]:
    import httpx
    import openai

    out: dict[str, Any] = {}
    with llama_server(gguf, log, n_ctx=N_CTX, interrupt_requests=False) as url:
        root = url[: -len("/v1")]

        def server_count(messages: list[dict[str, Any]]) -> int:
            prompt = formatter(messages=messages).prompt
            got = httpx.post(f"{root}/extras/tokenize", json={"input": prompt}, timeout=60).json()
            return len(got["tokens"])

        probed = OpenAIChat("local", base_url=url, max_retries=0, context_window=N_CTX)
        profile: ServerProfile = probed.profile
        plain = counter_for_model("gpt-4o")
        variants: dict[str, tuple[TokenCounter, Callable[..., int | None]]] = {
            "before": (plain, lambda m: None),
            "after": (profile.counter, profile.count_prompt or (lambda m: None)),
            # as if the server had no tokenize route but reported usage: tiktoken calibrated
            "calibrated": (CalibratedCounter(plain._encode_len), server_count),
        }
        for when, (counter, usage) in variants.items():
            model = Scripted("local", counter, N_CTX, usage)
            rows = run_session(model, pairs, server_count)
            out[when] = summarise(rows)
            out[f"{when}_label"] = counter.exactness
            if when == "calibrated":
                out["calibrated"]["factor"] = counter.factor  # type: ignore[attr-defined]
                continue
            client = openai.OpenAI(base_url=url, api_key="none", timeout=600)
            checks = []
            for row in sorted(rows, key=lambda r: r["server"])[-CHECKED_CALLS:]:
                answer = client.chat.completions.create(
                    model="local", messages=row["messages"], max_tokens=1
                )
                checks.append((row["server"], answer.usage.prompt_tokens if answer.usage else None))
            out[f"{when}_checked"] = checks
    return out


def local_kind(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    chat = LocalChat(context_window=N_CTX)
    llm = chat._llm
    formatter = formatter_of(llm)

    def server_count(messages: list[dict[str, Any]]) -> int:
        prompt = formatter(messages=messages).prompt
        return len(llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True))

    out: dict[str, Any] = {}
    for when in ("before", "after"):
        counter = counter_for_model("gpt-4o") if when == "before" else chat.counter
        model = Scripted("local", counter, N_CTX, lambda m: None)
        out[when] = summarise(run_session(model, pairs, server_count))
        out[f"{when}_label"] = counter.exactness if when == "after" else "tiktoken o200k"
    return out


# ------------------------------------------------------------------------------ report
def chart(results: dict[str, dict[str, Any]], path: Path) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.5))
    names = list(results)
    xs = range(len(names))
    before = [results[n]["before"]["max_abs_drift"] * 100 for n in names]
    after = [results[n]["after"]["max_abs_drift"] * 100 for n in names]
    ax.bar([x - 0.2 for x in xs], before, width=0.4, label="before (plain tiktoken)")
    ax.bar([x + 0.2 for x in xs], after, width=0.4, label="after (probed counter)")
    ax.set_xticks(list(xs), [n.split(" (")[0] for n in names], fontsize=8)
    ax.set_ylabel("largest drift from the server's count (%)")
    ax.legend()
    return save_chart(fig, path)


def agreement(ours: int, reported: int | None) -> str:
    return f"{ours:,} = {reported:,}" if ours == reported else f"{ours:,} ≠ {reported}"


def run_bench(args: argparse.Namespace) -> Report:
    turns = QUICK_TURNS if args.quick else TURNS
    pairs = script(turns)
    print(f"{NAME}: {turns} turns, max_tokens {MAX_TOKENS:,}", flush=True)
    results: dict[str, dict[str, Any]] = {}
    results["fake OpenAI-compatible server, unknown model"] = fake_kind(pairs)
    print("  fake server done", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        server = llama_kind(pairs, Path(tmp) / "server.log")
    results[f"llama-cpp-python server (--n_ctx {N_CTX})"] = server
    calibrated = server["calibrated"]
    results["the same server, counted as an unknown one (calibrated tiktoken)"] = {
        "before": server["before"],
        "after": server["calibrated"],
        "after_label": f"{server['calibrated_label']}, budget ÷ {calibrated['factor']:.2f}",
    }
    print("  llama-cpp-python server done", flush=True)
    results["bundled model, in-process"] = local_kind(pairs)
    print("  bundled model done", flush=True)
    rows = []
    for name, r in results.items():
        b, a = r["before"], r["after"]
        rows.append(
            [
                name,
                f"{b['mean_drift']:+.1%} / {b['max_abs_drift']:.1%}",
                f"{b['over_budget']} of {b['requests']}",
                r["after_label"],
                f"{a['mean_drift']:+.1%} / {a['max_abs_drift']:.1%}",
                f"{a['over_budget']} of {a['requests']}",
                f"{a['largest_server']:,}",
            ]
        )
    table = markdown_table(
        [
            "server",
            "before: mean / max drift",
            "before: over max_tokens",
            "after: counter",
            "after: mean / max drift",
            "after: over max_tokens",
            "after: largest request (server's count)",
        ],
        rows,
    )
    checks = [
        f"{name} ({when}): " + ", ".join(agreement(s, p) for s, p in r[f"{when}_checked"])
        for name, r in results.items()
        for when in ("before", "after")
        if f"{when}_checked" in r
    ]
    markdown = (
        f"# Token drift by server kind\n\n{table}\n\n"
        f"{turns} turns of one scripted conversation, `max_tokens` {MAX_TOKENS:,}, reply "
        f"reserve {REPLY_RESERVE}, `keep_recent` 6. Drift = (chatmem's count − the server's) / "
        "the server's, per request: negative is an undercount. *Before*: plain tiktoken "
        "(o200k, OpenAI's framing); *after*: the counter the server probe picks.\n\n"
        "The server-side count of the largest requests, checked against real one-token calls "
        "(counted = the server's `prompt_tokens`): " + "; ".join(checks) + ".\n\n"
        f"{machine_line()}\n"
    )
    data = {name: {k: v for k, v in r.items()} for name, r in results.items()}
    return finish_report(args, NAME, markdown, data, lambda p: chart(results, p), "token drift")


def main(argv: list[str] | None = None) -> int:
    return run_main(script_parser(NAME, __doc__), run_bench, argv)


if __name__ == "__main__":
    raise SystemExit(main())
