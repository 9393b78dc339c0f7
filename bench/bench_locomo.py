"""Evidence recall on LoCoMo: how much of what answers a question is still in the context.

Each LoCoMo conversation is replayed through chatmem's memory; then every question is
asked at the end of its conversation, and we check which of the question's annotated
evidence turns appear verbatim in the request chatmem would send (in the recent messages
or in the recalled block). No LLM is needed: this measures the memory, not a model.

Strategies: recency only (trimming), and recency + BM25 recall (the offline default,
SQLite FTS5). No summary is made here (that needs a model), so the whole budget goes to
recent and recalled messages.

    python -m bench.bench_locomo [--budgets 2000 4000] [--share 0.2] [--quick] [--out DIR]
"""

from __future__ import annotations

import json
import re
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from bench._common import (
    finish_report,
    machine_line,
    markdown_table,
    pyplot,
    save_chart,
    script_parser,
)
from chatmem.memory import Memory
from chatmem.recall import FtsIndex
from chatmem.tokens import counter_for_model

NAME = "bench_locomo"
DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "locomo" / "locomo10.json"
CATEGORIES = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop", 5: "adversarial"}
SYSTEM = "You are a helpful assistant answering questions about a long conversation."
EVIDENCE_RE = re.compile(r"D(\d+):(\d+)")


@dataclass
class Turn:
    dia_id: str
    speaker: str
    text: str


@dataclass
class Question:
    text: str
    category: int
    evidence: list[str]


@dataclass
class Conversation:
    sample_id: str
    speaker_a: str
    turns: list[Turn]
    questions: list[Question]
    skipped: int = 0


def turn_text(turn: dict) -> str:
    text = str(turn.get("text", ""))
    caption = turn.get("blip_caption")
    if caption:
        text += f" [shares a photo: {caption}]"
    return text


def load(path: Path = DATA) -> list[Conversation]:
    """Parse LoCoMo defensively: malformed or dangling evidence ids are dropped, and a
    question left with no evidence is skipped (and counted)."""
    raw = json.loads(path.read_text())
    out = []
    for sample in raw:
        conv = sample["conversation"]
        sessions = sorted(
            (int(k.split("_")[1]), k)
            for k in conv
            if re.fullmatch(r"session_\d+", k) and isinstance(conv[k], list)
        )
        turns = []
        for number, key in sessions:
            date = conv.get(f"session_{number}_date_time", "")
            for i, t in enumerate(conv[key]):
                text = turn_text(t)
                if i == 0 and date:
                    text = f"({date}) {text}"
                turns.append(Turn(t["dia_id"], t["speaker"], text))
        known = {t.dia_id for t in turns}
        questions, skipped = [], 0
        for qa in sample["qa"]:
            ids = []
            for item in qa.get("evidence") or []:
                for d, n in EVIDENCE_RE.findall(str(item)):
                    dia = f"D{int(d)}:{int(n)}"
                    if dia in known and dia not in ids:
                        ids.append(dia)
            if not ids or "question" not in qa:
                skipped += 1
                continue
            questions.append(Question(qa["question"], int(qa.get("category", 0)), ids))
        out.append(Conversation(sample["sample_id"], conv["speaker_a"], turns, questions, skipped))
    return out


@dataclass
class Score:
    found: float = 0.0
    questions: int = 0
    by_cat: dict[int, list[float]] = field(default_factory=lambda: defaultdict(lambda: [0.0, 0]))

    def add(self, category: int, share: float) -> None:
        self.found += share
        self.questions += 1
        self.by_cat[category][0] += share
        self.by_cat[category][1] += 1

    @property
    def mean(self) -> float:
        return self.found / self.questions if self.questions else 0.0


def evaluate(
    convs: Sequence[Conversation], budget: int, share: float, use_recall: bool
) -> tuple[Score, float]:
    """Mean share of evidence turns present verbatim, and seconds per question."""
    counter = counter_for_model("gpt-4o-mini")
    score = Score()
    elapsed = 0.0
    for conv in convs:
        mem = Memory(system=SYSTEM, counter=counter, max_tokens=budget)
        mem.recall_share = share if use_recall else 0.0
        index = FtsIndex()
        seq_of: dict[str, int] = {}
        for turn in conv.turns:
            role = "user" if turn.speaker == conv.speaker_a else "assistant"
            msg = mem.add(role, f"{turn.speaker}: {turn.text}")
            seq_of[turn.dia_id] = msg.seq
            index.add(msg.seq, turn.speaker, turn.text)
        base = len(mem.messages)
        for q in conv.questions:
            mem.truncate(base)  # each question is asked on its own, at the end
            question = mem.add("user", q.text)
            t0 = time.perf_counter()
            hits = index.search(q.text, before_seq=question.seq) if use_recall else []
            ctx = mem.context(hits)
            elapsed += time.perf_counter() - t0
            present = {p.seq for p in ctx.parts if p.kind == "verbatim"}
            present |= {r.seq for r in ctx.recalled}
            found = sum(1 for d in q.evidence if seq_of[d] in present)
            score.add(q.category, found / len(q.evidence))
        index.close()
    return score, elapsed / max(1, score.questions)


def main(argv: Sequence[str] | None = None) -> int:
    parser = script_parser(NAME, __doc__)
    parser.add_argument("--budgets", type=int, nargs="+", default=[2000, 4000])
    parser.add_argument("--share", type=float, default=0.2, help="recall share of the budget")
    parser.add_argument("--data", type=Path, default=DATA)
    args = parser.parse_args(argv)

    convs = load(args.data)
    if args.quick:
        convs = convs[:2]  # two conversations only
    n_q = sum(len(c.questions) for c in convs)
    skipped = sum(c.skipped for c in convs)
    rows = []
    results: dict[tuple[str, int], Score] = {}
    shares = [args.share] if args.quick else sorted({args.share, 0.5})
    strategies = [("recency only", 0.0, False)] + [
        (f"recency + BM25 recall ({int(s * 100)}% share)", s, True) for s in shares
    ]
    for budget in args.budgets:
        for name, share, use_recall in strategies:
            score, per_q = evaluate(convs, budget, share, use_recall)
            results[(name, budget)] = score
            cats = [
                f"{100 * score.by_cat[c][0] / score.by_cat[c][1]:.1f}%"
                if score.by_cat[c][1]
                else "-"
                for c in CATEGORIES
            ]
            rows.append(
                [
                    f"{budget:,}",
                    name,
                    f"**{100 * score.mean:.1f}%**",
                    *cats,
                    f"{per_q * 1e3:.2f} ms",
                ]
            )
    table = markdown_table(
        ["budget", "strategy", "evidence recall", *CATEGORIES.values(), "context build / question"],
        rows,
    )
    markdown = (
        "# LoCoMo: evidence recall at a budget\n\n"
        "Share of each question's annotated evidence turns present verbatim in the request "
        "chatmem would send (recent messages or the recalled block), the question asked at the "
        "end of its conversation; no summary (that needs a model), no LLM.\n\n"
        f"{table}\n\n{len(convs)} conversations, {n_q:,} questions scored, {skipped} skipped "
        "(no usable evidence id). Embeddings: not run (no API key).\n\n"
        f"{machine_line()}\n"
    )
    data = {f"{n} @ {b}": r.mean for (n, b), r in results.items()}
    plot = partial(chart, results, args.budgets, strategies)
    print(finish_report(args, NAME, markdown, data, plot, "evidence recall").markdown)
    return 0


def chart(
    results: dict[tuple[str, int], Score],
    budgets: list[int],
    strategies: list[tuple[str, float, bool]],
    path: Path,
) -> Path:
    plt = pyplot()
    names = [s[0] for s in strategies]
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        xs = [b + (i - (len(names) - 1) / 2) * width for b in range(len(budgets))]
        ys = [100 * results[(name, b)].mean for b in budgets]
        bars = ax.bar(xs, ys, width, label=name)
        ax.bar_label(bars, fmt="%.0f%%", fontsize=8)
    ax.set_xticks(range(len(budgets)), [f"{b:,} tokens" for b in budgets])
    ax.set_ylabel("evidence turns in context (%)")
    ax.set_title("LoCoMo: evidence recall at a budget")
    ax.axhline(60, color="grey", linestyle=":", linewidth=1)
    ax.legend(fontsize=8)
    return save_chart(fig, path, dpi=120)


if __name__ == "__main__":
    raise SystemExit(main())
