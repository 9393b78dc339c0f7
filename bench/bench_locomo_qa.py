"""LoCoMo question answering with the bundled model: token F1 on a sample of questions.

A secondary figure beside ``bench_locomo``'s evidence recall: each sampled question is asked
at the end of its conversation, with the request chatmem builds (its default: BM25 and the
offline e5 embeddings), the plain FTS5 fill (its top hits in the recalled block) or recency
only (recall off), and the bundled SmolLM2-135M answers in-process (greedy, at most 32
tokens; asked to answer in a few words). Scored by token F1 against LoCoMo's reference
answer (lowercased, punctuation and articles dropped, as SQuAD does). Only questions with a
reference answer (categories 1-4) are sampled, spread evenly over the conversations with a
fixed seed. A 135M model answers poorly whatever it is given: the figure compares requests,
it does not measure a good assistant.

    python -m bench.bench_locomo_qa [--sample 100] [--budget 2000] [--threads N]
                                    [--quick] [--no-chart] [--out DIR]
"""

from __future__ import annotations

import random
import re
import string
import time
from collections import Counter
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

from bench._common import (
    finish_report,
    machine_line,
    markdown_table,
    pyplot,
    save_chart,
    script_parser,
)
from bench.bench_locomo import (
    CATEGORIES,
    QUICK_TURNS,
    CachedE5,
    Conversation,
    Question,
    Strategy,
    fts_fill,
    load,
    replay,
    shortened,
)
from chatmem.framing import memory_message, recall_block
from chatmem.local import LOCAL_THREADS
from chatmem.recall import candidates

NAME = "bench_locomo_qa"
SEED = 16
STRATEGIES = (
    Strategy("recency only", "recency"),
    Strategy("plain FTS5 BM25, top hits fill the budget", "fts-fill"),
    Strategy("chatmem default (BM25 + offline e5)", "hybrid"),
)
INSTRUCTION = "Answer the last question in a few words, using the conversation above."
ASK = "Answer in a few words."
MAX_ANSWER_TOKENS = 32
QUICK_SAMPLE = 1  # --quick: one question on a conversation's first turns, a small budget
QUICK_BUDGET = 200
ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize(text: str) -> list[str]:
    text = "".join(c for c in text.lower() if c not in string.punctuation)
    return ARTICLES.sub(" ", text).split()


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD's token F1 between an answer and the reference (1.0 when both are empty)."""
    pred, ref = normalize(prediction), normalize(reference)
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if not common:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def sample(convs: Sequence[Conversation], size: int) -> list[tuple[int, Question]]:
    """``size`` questions with a reference answer, (conversation index, question), spread
    evenly over the conversations (the first ones take one more when it does not divide),
    with a fixed seed."""
    rng = random.Random(SEED)
    picked = []
    for i, conv in enumerate(convs):
        share = size // len(convs) + (1 if i < size % len(convs) else 0)
        pool = [q for q in conv.questions if q.category in (1, 2, 3, 4)]
        picked += [(i, q) for q in rng.sample(pool, min(share, len(pool)))]
    return picked


def request(r: Any, strategy: Strategy, question: str, seq: int) -> list[dict[str, Any]]:
    """The messages the strategy sends for the question: the instruction in the system
    message and after the question, the same for every strategy."""
    mem = r.mem
    system = {"role": "system", "content": f"{mem.system} {INSTRUCTION}"}
    asked = {"role": "user", "content": f"{question}\n\n{ASK}"}
    if strategy.kind == "fts-fill":
        found = sorted(fts_fill(r, question, seq) - {seq})
        quoted = [m.content for s in found if (m := mem.message(s)) is not None]
        return [system, memory_message(recall_block(quoted)), asked]
    mem.recall_share = strategy.share if strategy.kind != "recency" else 0.0
    hits = candidates(r.hybrid, question, before_seq=seq) if strategy.kind == "hybrid" else []
    ctx = mem.context(hits)
    return [system, *ctx.messages[1:-1], asked]


Asked = tuple[str, Strategy, Question, list[dict[str, Any]]]  # conversation, ..., request


def requests(
    convs: Sequence[Conversation], picked: Sequence[tuple[int, Question]], budget: int
) -> list[list[Asked]]:
    """Every request to answer, one list per conversation, one strategy after another
    (llama.cpp reuses the KV cache of the previous prompt's common prefix, which consecutive
    requests of one strategy often share)."""
    embedder = CachedE5()
    groups = []
    for index in sorted({i for i, _ in picked}):
        r = replay(convs[index], budget, embedder)
        base = len(r.mem.messages)
        group = []
        for s in STRATEGIES:
            for q in (q for i, q in picked if i == index):
                r.mem.truncate(base)
                seq = r.mem.add("user", q.text).seq
                group.append((r.conv.sample_id, s, q, request(r, s, q.text, seq)))
        groups.append(group)
        r.fts.close()
    embedder.save()
    return groups


def answer_all(groups: list[list[Asked]], budget: int, threads: int) -> list[dict[str, Any]]:
    """The bundled model's answer to every request, scored (one model, ``threads`` llama.cpp
    threads; two models side by side in one process ran far slower than one here)."""
    import llama_cpp

    from chatmem.local import local_model_path

    llm = llama_cpp.Llama(
        model_path=str(local_model_path()),
        n_ctx=max(4096, 2 * budget),
        n_threads=threads,
        n_threads_batch=threads,
        verbose=False,
    )
    out = []
    for conv, s, q, messages in (asked for group in groups for asked in group):
        start = time.perf_counter()
        reply = llm.create_chat_completion(messages, max_tokens=MAX_ANSWER_TOKENS, temperature=0.0)
        seconds = time.perf_counter() - start
        text = (reply["choices"][0]["message"]["content"] or "").strip()
        f1 = token_f1(text, q.answer)
        out.append(
            {
                "conversation": conv,
                "strategy": s.name,
                "category": q.category,
                "question": q.text,
                "reference": q.answer,
                "answer": text,
                "f1": f1,
                "prompt_tokens": reply["usage"]["prompt_tokens"],
                "seconds": seconds,
            }
        )
        print(f"  {conv} {s.kind}: {f1:.2f} {seconds:.1f}s {text[:50]!r}", flush=True)
    llm.close()
    return out


def run(args: Any) -> dict[str, Any]:
    convs = load()
    if args.quick:
        convs = [shortened(c, QUICK_TURNS) for c in convs[:1]]
    budget = QUICK_BUDGET if args.quick else args.budget
    picked = sample(convs, QUICK_SAMPLE if args.quick else args.sample)
    started = time.perf_counter()
    answers = answer_all(requests(convs, picked, budget), budget, args.threads)
    names = [s.name for s in STRATEGIES]
    return {
        "scores": {
            n: [(a["category"], a["f1"]) for a in answers if a["strategy"] == n] for n in names
        },
        "questions": len(picked),
        "conversations": len({i for i, _ in picked}),
        "budget": budget,
        "threads": args.threads,
        "seconds": {n: sum(a["seconds"] for a in answers if a["strategy"] == n) for n in names},
        "prompt_tokens": {
            n: sum(a["prompt_tokens"] for a in answers if a["strategy"] == n) for n in names
        },
        "wall_seconds": time.perf_counter() - started,
        "answers": answers,
    }


def mean_f1(items: Sequence[tuple[int, float]]) -> float:
    return 100 * sum(f for _, f in items) / max(1, len(items))


def build_markdown(results: dict[str, Any]) -> str:
    rows = []
    for name, items in results["scores"].items():
        by_cat = {c: [f for cat, f in items if cat == c] for c in (1, 2, 3, 4)}
        cats = [f"{100 * sum(v) / len(v):.1f} ({len(v)})" if v else "-" for v in by_cat.values()]
        n = max(1, len(items))
        rows.append(
            [
                f"{results['budget']:,}",
                name,
                f"**{mean_f1(items):.1f}**",
                *cats,
                f"{results['prompt_tokens'][name] / n:,.0f}",
                f"{results['seconds'][name] / n:.1f} s",
            ]
        )
    headers = [
        "budget",
        "strategy",
        "token F1",
        *(f"{CATEGORIES[c]} (n)" for c in (1, 2, 3, 4)),
        "prompt tokens / answer",
        "model time / answer",
    ]
    return (
        "# LoCoMo question answering with the bundled model (a sample)\n\n"
        f"A **sample of {results['questions']} question"
        + ("s" if results["questions"] != 1 else "")
        + f"** from {results['conversations']} "
        f"conversation(s) (categories 1-4, spread evenly, seed {SEED}), each asked at the end "
        "of its "
        "conversation with the request each strategy builds, and answered by the bundled "
        f"SmolLM2-135M-Instruct in-process (greedy, at most {MAX_ANSWER_TOKENS} tokens, "
        f"{results['threads']} llama.cpp thread(s)); token F1 against LoCoMo's reference "
        "answer, in percent (SQuAD normalisation: lowercase, no punctuation or articles). "
        "The model is tiny, so the absolute F1 is low: this compares the requests, not "
        "assistants.\n\n"
        + markdown_table(headers, rows)
        + "\n\nPrompt tokens are the model's own count (the budget is counted with "
        "gpt-4o-mini's tokenizer). The answers are in the JSON file.\n\n" + machine_line() + "\n"
    )


def chart(results: dict[str, Any], path: Path) -> Path:
    plt = pyplot()
    names = list(results["scores"])
    fig, ax = plt.subplots(figsize=(7, 2.6))
    ax.barh(names[::-1], [mean_f1(results["scores"][n]) for n in names[::-1]], color="#4c72b0")
    ax.set_xlabel("token F1 (%)")
    ax.set_title(
        f"LoCoMo QA, {results['questions']} questions at {results['budget']:,} tokens, "
        "SmolLM2-135M",
        fontsize=9,
    )
    return save_chart(fig, path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = script_parser(NAME, __doc__)
    parser.add_argument("--sample", type=int, default=100)
    parser.add_argument("--budget", type=int, default=2000)
    parser.add_argument(
        "--threads",
        type=int,
        default=LOCAL_THREADS,
        help="llama.cpp threads (default: half the cores)",
    )
    args = parser.parse_args(argv)
    results = run(args)
    report = finish_report(
        args,
        NAME,
        build_markdown(results),
        results,
        partial(chart, results),
        "LoCoMo QA token F1 by strategy",
    )
    print(report.markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
