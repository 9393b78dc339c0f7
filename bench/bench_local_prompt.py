"""Does the bundled model use what it was told? Prompt arrangements and sampling, measured.

Two tasks, each run for every variant given:

* ``chat``: a two-turn chat through ``ChatMemory`` (the user says their name in one of six
  phrasings, the model replies, the user asks "What is my name?"): is "Sam" in the answer?
* ``recap``: the facts only in a recap block (framed as chatmem frames it) before one
  exchange of small talk, then a question about one fact (name, city, budget): is it in the
  answer? The block goes as a user message or merged into the system message.

Variants: repeat penalty, system prompt wording, memory placement. Each case runs with
``--seeds`` seeds. Also reports replies the loop guard cut, and time to first token of a
turn that repeats the previous prompt's prefix against a cold one.

Run: ``python -m bench.bench_local_prompt [--seeds 4] [--variants base,rp1.2,...] [--show]``
(about 4 minutes; ``--quick``: one seed, two variants). No chart.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from bench._common import (
    Report,
    machine_line,
    markdown_table,
    out_dir,
    run_main,
    script_parser,
    write_report,
)
from chatmem import ChatMemory, Settings
from chatmem.config import DEFAULT_SYSTEM_PROMPT
from chatmem.framing import memory_message, summary_block
from chatmem.local import SAMPLING, LocalChat

NAME = "bench_local_prompt"

INTRODUCTIONS = (
    "Hi! My name is Sam. I live in Oslo.",
    "Hi! My name is Sam and I am planning a trip.",
    "Hello, I'm Sam.",
    "Hi! My name is Sam. Nice to meet you.",
    "Hey there, my name is Sam and I like hiking.",
    "Hi! My name is Sam, and my budget is 2000 euros.",
)
RECAP = "The user's name is Sam. Sam lives in Oslo. Sam's travel budget is 2000 euros."
RECAP_QUESTIONS = (
    ("What is my name?", "sam"),
    ("Which city do I live in?", "oslo"),
    ("What is my budget?", "2000"),
)
MEMORY_SYSTEM = (
    "You are a friendly assistant. Be concise. Use what the user told you earlier in this "
    "conversation, and the recap, to answer."
)
ABOUT_USER_SYSTEM = (
    "You are a friendly assistant. Be concise. Remember what the user tells you about "
    "themselves (their name, plans, numbers) and use it when they ask."
)
SMOLLM_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face."
VARIANTS: dict[str, dict[str, Any]] = {
    "base": {},
    "rp1.0": {"sampling": {"repeat_penalty": 1.0}},
    "rp1.2": {"sampling": {"repeat_penalty": 1.2}},
    "rp1.1": {"sampling": {"repeat_penalty": 1.1}},
    "rp1.3": {"sampling": {"repeat_penalty": 1.3}},
    "memory-in-system": {"memory_in_system": True},
    "system-wording": {"system": MEMORY_SYSTEM},
    "system-wording+memory-in-system": {"system": MEMORY_SYSTEM, "memory_in_system": True},
    "rp1.0+about-user": {"sampling": {"repeat_penalty": 1.0}, "system": ABOUT_USER_SYSTEM},
    "rp1.0+smollm-system": {"sampling": {"repeat_penalty": 1.0}, "system": SMOLLM_SYSTEM},
    "rp1.0+memory-in-system": {"sampling": {"repeat_penalty": 1.0}, "memory_in_system": True},
    "rp1.0+temp0": {"sampling": {"repeat_penalty": 1.0, "temperature": 0.0}},
    "rp1.0+helpful": {
        "sampling": {"repeat_penalty": 1.0},
        "system": "You are a helpful assistant.",
    },
    "rp1.0+talking-with-user": {
        "sampling": {"repeat_penalty": 1.0},
        "system": "You are a friendly assistant talking with a user. Be concise.",
    },
    "rp1.0+ng0": {"sampling": {"repeat_penalty": 1.0, "no_repeat_ngram": 0}},
    "open0": {"sampling": {"no_repeat_opening": 0}},
    "rp1.2+ng0": {"sampling": {"repeat_penalty": 1.2, "no_repeat_ngram": 0}},
    "rp1.0+top_k20": {"sampling": {"repeat_penalty": 1.0, "top_k": 20}},
}


def chat_case(model: LocalChat, system: str, intro: str) -> tuple[bool, str]:
    bot = ChatMemory(
        system=system,
        max_tokens=1024,
        model=model,
        settings=Settings(),
        reply_reserve=48,
        background=False,
    )
    bot.ask(intro)
    answer = bot.ask("What is my name?")
    return "sam" in answer.lower(), answer


def recap_case(model: LocalChat, system: str, question: str, expect: str) -> tuple[bool, str]:
    messages = [
        {"role": "system", "content": system},
        memory_message(summary_block(RECAP)),
        {"role": "user", "content": "Good morning!"},
        {"role": "assistant", "content": "Good morning! How can I help you today?"},
        {"role": "user", "content": question},
    ]
    answer = model.stream(messages, max_reply_tokens=48).read()
    return expect in answer.lower(), answer


def run_variant(name: str, seeds: int, show: bool) -> tuple[int, int, int, int, int]:
    spec = VARIANTS[name]
    system = spec.get("system", DEFAULT_SYSTEM_PROMPT)
    chat_ok = recap_ok = looped = 0
    chat_n = recap_n = 0
    for seed in range(seeds):
        sampling = {**spec.get("sampling", {}), "seed": seed}
        model = LocalChat(sampling=sampling, memory_in_system=spec.get("memory_in_system", False))
        for intro in INTRODUCTIONS:
            ok, answer = chat_case(model, system, intro)
            looped += model.last_looped
            chat_ok += ok
            chat_n += 1
            if show and not ok:
                print(f"   [{name} seed {seed}] chat miss: {intro!r} -> {answer!r}")
        for question, expect in RECAP_QUESTIONS:
            ok, answer = recap_case(model, system, question, expect)
            looped += model.last_looped
            recap_ok += ok
            recap_n += 1
            if show and not ok:
                print(f"   [{name} seed {seed}] recap miss: {question!r} -> {answer!r}")
    return chat_ok, chat_n, recap_ok, recap_n, looped


def ttft(model: LocalChat, messages: list[dict[str, Any]]) -> float:
    start = time.perf_counter()
    stream = model.stream(messages, max_reply_tokens=24)
    for _ in stream:
        first = time.perf_counter() - start
        break
    else:
        first = time.perf_counter() - start
    for _ in stream:
        pass
    return first


def prefix_reuse(repeats: int = 3) -> tuple[float, float, int]:
    """Time to first token of turn N+1 (its prompt extends turn N's) and of the same prompt
    after an unrelated one (no common prefix beyond the template's first tokens); the median
    of ``repeats`` alternations."""
    model = LocalChat()
    turns = [{"role": "system", "content": DEFAULT_SYSTEM_PROMPT}]
    turns += [memory_message(summary_block(RECAP * 6))]
    for i in range(6):
        turns += [
            {"role": "user", "content": f"Tell me one fact about rivers, number {i}."},
            {"role": "assistant", "content": f"River fact {i}: rivers carry water to the sea."},
        ]
    turns.append({"role": "user", "content": "And one about lakes?"})
    warm, cold = [], []
    for _ in range(repeats):
        ttft(model, [*turns[:-3], turns[-1]])  # turn N
        warm.append(ttft(model, turns))  # turn N+1: shares the prefix up to the new messages
        ttft(model, [{"role": "system", "content": "Unrelated."}, turns[-1]])
        cold.append(ttft(model, turns))  # the same prompt, evaluated from the start
    return statistics.median(warm), statistics.median(cold), model.counter.messages(turns)


def run_bench(args: argparse.Namespace) -> Report:
    seeds = 1 if args.quick else args.seeds
    names = ["base", "rp1.2"] if args.quick else [n for n in args.variants.split(",") if n]
    rows, data = [], {"sampling": SAMPLING, "seeds": seeds, "variants": {}}
    for name in names:
        start = time.perf_counter()
        chat_ok, chat_n, recap_ok, recap_n, looped = run_variant(name, seeds, args.show)
        took = time.perf_counter() - start
        rows.append([name, f"{chat_ok}/{chat_n}", f"{recap_ok}/{recap_n}", looped, f"{took:.0f} s"])
        data["variants"][name] = {"chat": [chat_ok, chat_n], "recap": [recap_ok, recap_n]}
        print("|", " | ".join(map(str, rows[-1])), "|", flush=True)
    headers = ["variant", "chat: name asked back", "recap: fact used", "last replies cut", "time"]
    markdown = f"Sampling now: `{SAMPLING}`; seeds 0-{seeds - 1}.\n\n"
    markdown += markdown_table(headers, rows)
    if not args.no_ttft:
        warm, cold, tokens = prefix_reuse()
        data["ttft"] = {"extends_previous": warm, "from_scratch": cold, "prompt_tokens": tokens}
        markdown += (
            f"\n\nTime to first token (median of 3), {tokens}-token prompt: {warm * 1000:.0f} ms "
            f"when it extends the previous turn's prompt, {cold * 1000:.0f} ms from scratch "
            f"({cold / warm:.1f}x).\n"
        )
    markdown += f"\n{machine_line()}\n"
    return write_report(out_dir(args), NAME, markdown, data, None)


def main(argv: list[str] | None = None) -> int:
    parser = script_parser(NAME, __doc__)
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--show", action="store_true", help="print every miss")
    parser.add_argument("--no-ttft", action="store_true")
    return run_main(parser, run_bench, argv)


if __name__ == "__main__":
    raise SystemExit(main())
