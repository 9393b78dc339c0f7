"""LoCoMo question answering with the bundled model: token F1 on a sample of questions.

A secondary figure beside ``bench_locomo``'s evidence recall: each sampled question is asked
at the end of its conversation, with the request chatmem builds (its default: BM25 and the
offline e5 embeddings) or the plain FTS5 fill (its top hits in the recalled block), and the
bundled SmolLM2-135M answers (greedy, at most 32 tokens). Scored by token F1 against
LoCoMo's reference answer (lowercased, punctuation and articles dropped, as SQuAD does).
Only questions with a reference answer (categories 1-4) are sampled, with a fixed seed.
A 135M model answers poorly whatever it is given: the figure compares requests, it does not
measure a good assistant.

    python -m bench.bench_locomo_qa [--sample 100] [--budget 2000] [--quick] [--out DIR]
"""

from __future__ import annotations

import random
import re
import string
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from bench._common import machine_line, markdown_table, out_dir, script_parser, write_report
from bench.bench_locomo import (
    CATEGORIES,
    CachedE5,
    Conversation,
    Question,
    Strategy,
    fts_fill,
    load,
    replay,
)
from chatmem.framing import memory_message, recall_block
from chatmem.recall import candidates

NAME = "bench_locomo_qa"
SEED = 16
STRATEGIES = (
    Strategy("plain FTS5 BM25, top hits fill the budget", "fts-fill"),
    Strategy("chatmem default (BM25 + offline e5)", "hybrid"),
)
INSTRUCTION = "Answer the last question in a few words, using the conversation above."
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
    """``size`` questions with a reference answer, (conversation index, question), fixed seed."""
    pool = [(i, q) for i, c in enumerate(convs) for q in c.questions if q.category in (1, 2, 3, 4)]
    picked = random.Random(SEED).sample(pool, min(size, len(pool)))
    return sorted(picked, key=lambda item: item[0])


def request(r: Any, strategy: Strategy, question: str, seq: int) -> list[dict[str, Any]]:
    """The messages the strategy sends for the question (the instruction in the system)."""
    mem = r.mem
    system = {"role": "system", "content": f"{mem.system} {INSTRUCTION}"}
    if strategy.kind == "fts-fill":
        found = sorted(fts_fill(r, question, seq) - {seq})
        quoted = [m.content for s in found if (m := mem.message(s)) is not None]
        return [system, memory_message(recall_block(quoted)), {"role": "user", "content": question}]
    mem.recall_share = strategy.share
    ctx = mem.context(candidates(r.hybrid, question, before_seq=seq))
    return [system, *ctx.messages[1:]]


def run(args: Any) -> dict[str, Any]:
    from chatmem.models import _load_llama, local_model_path

    convs = load()
    picked = sample(convs, 10 if args.quick else args.sample)
    embedder = CachedE5()
    llm = _load_llama(local_model_path(), 4096)
    scores: dict[str, list[tuple[int, float]]] = {s.name: [] for s in STRATEGIES}
    seconds = 0.0
    for index in sorted({i for i, _ in picked}):
        r = replay(convs[index], args.budget, embedder)
        base = len(r.mem.messages)
        for _, q in (item for item in picked if item[0] == index):
            r.mem.truncate(base)
            asked = r.mem.add("user", q.text)
            for s in STRATEGIES:
                messages = request(r, s, q.text, asked.seq)
                start = time.perf_counter()
                out = llm.create_chat_completion(messages, max_tokens=32, temperature=0.0)
                seconds += time.perf_counter() - start
                answer = out["choices"][0]["message"]["content"] or ""
                scores[s.name].append((q.category, token_f1(answer, q.answer)))
        r.fts.close()
    embedder.save()
    return {"scores": scores, "questions": len(picked), "budget": args.budget, "seconds": seconds}


def build_markdown(results: dict[str, Any]) -> str:
    rows = []
    for name, items in results["scores"].items():
        by_cat = {c: [f for cat, f in items if cat == c] for c in (1, 2, 3, 4)}
        cats = [f"{100 * sum(v) / len(v):.1f} ({len(v)})" if v else "-" for v in by_cat.values()]
        mean = 100 * sum(f for _, f in items) / max(1, len(items))
        rows.append([f"{results['budget']:,}", name, f"**{mean:.1f}**", *cats])
    headers = ["budget", "strategy", "token F1", *(f"{CATEGORIES[c]} (n)" for c in (1, 2, 3, 4))]
    return (
        "# LoCoMo question answering with the bundled model (a sample)\n\n"
        f"A **sample of {results['questions']} questions** (categories 1-4, seed {SEED}), "
        "each asked at the end of its conversation and answered by the bundled "
        "SmolLM2-135M-Instruct (greedy, at most 32 tokens); token F1 against LoCoMo's "
        "reference answer, in percent. The model is tiny: this compares the requests, not "
        "assistants.\n\n"
        + markdown_table(headers, rows)
        + f"\n\nModel time: {results['seconds']:.0f} s in all.\n\n"
        + machine_line()
        + "\n"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = script_parser(NAME, __doc__)
    parser.add_argument("--sample", type=int, default=100)
    parser.add_argument("--budget", type=int, default=2000)
    args = parser.parse_args(argv)
    results = run(args)
    report = write_report(out_dir(args), NAME, build_markdown(results), results, None)
    print(report.markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
