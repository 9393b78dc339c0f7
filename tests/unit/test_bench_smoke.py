"""Smoke test of the benchmarks: each script's ``main(["--quick", ...])`` runs and reports.

Runs the reduced sizes into a temporary folder (the committed results are not touched) and
checks that each table has the rows it should. A peer library may be missing only if it is
not installed; that part is then skipped with the reason.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

from bench import bench_context, bench_latency, bench_tokens, scripts

TIME = r"\d[\d,.]* (?:µs|ms|s)"


def table_rows(markdown: str) -> dict[str, list[str]]:
    """The first Markdown table's body rows, keyed by their first cell."""
    rows: dict[str, list[str]] = {}
    seen_table = False
    for line in markdown.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if set("".join(cells)) <= set("-: "):
                seen_table = True
                continue
            if seen_table:
                rows[cells[0]] = cells[1:]
        elif seen_table and rows:
            break
    return rows


def run_script(module: object, out: Path, *extra: str) -> tuple[str, dict]:
    code = module.main(["--quick", "--out", str(out), *extra])  # type: ignore[attr-defined]
    assert code == 0
    name = module.NAME  # type: ignore[attr-defined]
    markdown = (out / f"{name}.md").read_text(encoding="utf-8")
    data = json.loads((out / f"{name}.json").read_text(encoding="utf-8"))
    assert "Machine:" in markdown and "cores (nproc)" in markdown
    return markdown, data


@pytest.fixture(scope="module")
def context_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict, Path]:
    out = tmp_path_factory.mktemp("bench_context")
    markdown, data = run_script(bench_context, out)
    return markdown, data, out


def test_runner_lists_the_scripts() -> None:
    names = scripts()
    assert names[:3] == ["bench_context", "bench_tokens", "bench_latency"]


def test_context_table_has_a_row_per_size(context_run: tuple[str, dict, Path]) -> None:
    markdown, data, out = context_run
    rows = table_rows(markdown)
    assert list(rows) == [f"{n:,}" for n in bench_context.QUICK_SIZES]
    for cells in rows.values():
        # the three chatmem columns and the seed recipe are always measured at these sizes
        for cell in cells[:4]:
            assert re.match(TIME, cell), cells
        assert re.search(r"\d×", cells[3])  # the seed recipe's ratio to chatmem
    assert (out / "bench_context.png").exists()
    assert data["results"]["chatmem"][str(bench_context.QUICK_SIZES[-1])]["kept"] > 1


@pytest.mark.parametrize(
    ("column", "module", "key"),
    [(4, "langchain_core", "langchain"), (5, "llama_index.core", "llamaindex")],
)
def test_context_peer_measured(
    context_run: tuple[str, dict, Path], column: int, module: str, key: str
) -> None:
    markdown, data, _ = context_run
    cells = [cells[column] for cells in table_rows(markdown).values()]
    if importlib.util.find_spec(module.split(".")[0]) is None:
        assert all("not installed" in c for c in cells)
        pytest.skip(f"{module} is not installed (pip install -r requirements-bench.txt)")
    for cell in cells:
        assert re.match(TIME, cell) and "×" in cell, cell
    assert data["results"][key][str(bench_context.QUICK_SIZES[0])]["median"] > 0


def test_seed_trim_pops_oldest_until_it_fits() -> None:
    enc = bench_context.encoding()
    messages = [{"role": "system", "content": "Be brief."}] + [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"message {i} " * 30}
        for i in range(40)
    ]
    last = messages[-1]
    bench_context.seed_trim(messages, 500, enc)
    assert bench_context.seed_count_tokens(messages, enc) <= 500
    assert messages[0]["role"] == "system" and messages[-1] is last
    assert len(messages) > 2


def test_tokens_table_has_every_strategy(tmp_path: Path) -> None:
    markdown, data = run_script(bench_tokens, tmp_path, "--no-chart")
    labels = list(table_rows(markdown))
    assert len(labels) == 4
    assert labels[0].startswith("full history")
    assert labels[1].startswith("trimming only")
    assert labels[2].startswith("rolling summary, recall off")
    assert labels[3].startswith("rolling summary (chatmem ChatMemory")
    strategies = data["strategies"]
    assert len(strategies["rolling"]["turns"]) == bench_tokens.QUICK_TURNS
    assert strategies["rolling"]["summary_calls"] >= 1
    for key in ("trim", "rolling", "rolling_norecall"):
        assert max(t["prompt_estimate"] for t in strategies[key]["turns"]) <= 3000
    assert strategies["rolling"]["total_billed"] < strategies["full"]["total_billed"]
    assert not (tmp_path / "bench_tokens.png").exists()


def test_latency_table_has_the_three_setups(tmp_path: Path) -> None:
    markdown, data = run_script(bench_latency, tmp_path)
    rows = table_rows(markdown)
    assert [label.split(" (")[0] for label in rows] == [
        "chatmem",
        "blocking fold",
        "seed-style loop",
    ]
    for cells in rows.values():
        assert re.match(r"\d[\d,]* ms", cells[0]), cells
    stats = data["stats"]
    assert stats["chatmem"]["folding_n"] >= 1
    assert stats["blocking"]["folding_n"] >= 1
    assert (tmp_path / "bench_latency.png").exists()


def test_locomo_quick_scores_every_strategy(tmp_path: Path) -> None:
    from bench import bench_locomo

    markdown, data = run_script(bench_locomo, tmp_path, "--no-chart")
    rows = [
        line
        for line in markdown.splitlines()
        if line.startswith("| 2,000") or line.startswith("| 4,000")
    ]
    # two budgets x (recency, plain FTS5 fill, chatmem BM25, chatmem hybrid), in both tables
    assert len(rows) == 16
    for budget in (2000, 4000):
        recency = data[f"recency only @ {budget}"]
        hybrid = data[f"chatmem default (BM25 + offline e5) @ {budget}"]
        bm25 = data[f"chatmem, BM25 only (embeddings off) @ {budget}"]
        assert 0 < recency <= bm25 <= 1 and 0 < hybrid <= 1
    assert "questions scored" in markdown and "held-out half" in markdown


def test_import_measures_before_and_after(tmp_path: Path) -> None:
    from bench import bench_import

    markdown, data = run_script(bench_import, tmp_path, "--no-chart")
    rows = table_rows(markdown)
    assert [label.split(" ")[0] for label in rows] == ["refuse", "import", "import", "resume"]
    for cells in rows.values():
        assert re.match(TIME, cells[0]) and re.match(TIME, cells[2]), cells
        assert cells[1].endswith(" MB") and cells[3].endswith(" MB"), cells
        assert "×" in cells[4] and "×" in cells[5], cells
    results = data["results"]
    assert results["refuse"]["before"]["outcome"].startswith("refused: messages: too many")
    assert results["refuse"]["after"]["outcome"] == (
        "refused: messages: too many entries (250,001 or more; the limit is 250,000)"
    )
    for key, count in (
        ("import", bench_import.QUICK_MESSAGES),
        ("import_small", bench_import.QUICK_SMALL),
    ):
        outcomes = [results[key][mode]["outcome"] for mode in ("before", "after")]
        assert outcomes == [f"imported {count:,} messages"] * 2
    assert results["resume"]["before"]["held"] == bench_import.QUICK_MESSAGES
    assert 0 < results["resume"]["after"]["held"] < bench_import.QUICK_MESSAGES
    assert not (tmp_path / "bench_import.png").exists()


def test_terms_compares_both_ways_on_every_size(tmp_path: Path) -> None:
    from bench import bench_terms

    markdown, data = run_script(bench_terms, tmp_path, "--no-chart")
    rows = table_rows(markdown)
    assert list(rows) == [f"{n:,}" for n in bench_terms.QUICK_SIZES]
    for cells in rows.values():
        assert re.match(TIME, cells[1]) and re.match(TIME, cells[2]), cells
        assert cells[4] == "yes", cells  # the same terms as the list version
    assert all(r["same_terms"] for r in data["rows"])


def test_shared_measures_catch_up_and_commits_on_every_size(tmp_path: Path) -> None:
    from bench import bench_shared

    markdown, data = run_script(bench_shared, tmp_path, "--no-chart", "--postgres-url", "")
    rows = [r for r in markdown.splitlines() if r.startswith("| sqlite |")]
    assert [r.split("|")[2].strip() for r in rows] == [f"{n:,}" for n in bench_shared.QUICK_SIZES]
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert re.match(TIME, cells[2]) and re.match(TIME, cells[4]), cells
        assert cells[3].endswith("×") and cells[5].endswith("×"), cells
    for result in data["results"]:
        assert len(result["catch_up"]) == 5
        assert len(result["commit"]) == bench_shared.FOLDERS * bench_shared.COMMITS


def test_drift_has_a_row_per_server_kind_before_and_after(tmp_path: Path) -> None:
    from bench import bench_drift

    markdown, data = run_script(bench_drift, tmp_path, "--no-chart")
    rows = table_rows(markdown)
    assert len(rows) == 4 and any(name.startswith("llama-cpp-python server") for name in rows)
    for cells in rows.values():
        assert re.fullmatch(r"[+-]\d+\.\d% / \d+\.\d%", cells[0]), cells
        assert re.fullmatch(r"\d+ of \d+", cells[1]) and re.fullmatch(r"\d+ of \d+", cells[4])
    server = next(v for k, v in data.items() if k.startswith("llama-cpp-python"))
    assert server["after"]["max_abs_drift"] == 0.0 and server["after"]["over_budget"] == 0
    assert all(ours == reported for ours, reported in server["after_checked"])
    assert server["calibrated"]["over_budget"] == 0  # calibrated by the server's counts


def test_recall_cost_compares_bounded_and_unbounded(tmp_path: Path) -> None:
    from bench import bench_recall_cost

    markdown, data = run_script(bench_recall_cost, tmp_path, "--no-chart")
    rows = table_rows(markdown)
    assert list(rows) == ["100", "200"]
    for cells in rows.values():
        assert len(cells) == 5 and all(re.match(TIME, c) for c in cells[:4])
    for n in (100, 200):
        for key, _ in bench_recall_cost.METHODS:
            assert data["cells"][f"{key}@{n}"]["median"] > 0
    assert "under 10 ms median at 200 messages" in markdown


def test_locomo_qa_token_f1_is_squads() -> None:
    from bench.bench_locomo_qa import token_f1

    # articles and punctuation dropped, case ignored: 2 common of 2 predicted, 4 reference
    assert token_f1("The Cat, sat.", "a cat sat on mats") == pytest.approx(2 / 3)
    assert token_f1("7 May 2023", "7 May 2023") == 1.0
    assert token_f1("Paris", "Oslo") == 0.0
    assert token_f1("", "") == 1.0 and token_f1("an", "Oslo") == 0.0


def test_locomo_qa_sample_is_fixed_and_spread() -> None:
    from bench.bench_locomo import load
    from bench.bench_locomo_qa import sample

    convs = load()
    picked = sample(convs, 23)
    assert [i for i, _ in picked].count(0) == 3 and [i for i, _ in picked].count(9) == 2
    assert all(q.category in (1, 2, 3, 4) and q.answer for _, q in picked)
    assert [q.text for _, q in picked] == [q.text for _, q in sample(convs, 23)]


@pytest.mark.slow
def test_locomo_qa_quick_answers_with_each_strategy(tmp_path: Path) -> None:
    from bench import bench_locomo_qa

    markdown, data = run_script(bench_locomo_qa, tmp_path, "--no-chart")
    budget = f"| {bench_locomo_qa.QUICK_BUDGET} |"
    rows = [line.strip("|").split("|") for line in markdown.splitlines() if line.startswith(budget)]
    assert [cells[1].strip() for cells in rows] == [s.name for s in bench_locomo_qa.STRATEGIES]
    for cells in (list(map(str.strip, row)) for row in rows):
        assert re.fullmatch(r"\*\*\d+\.\d\*\*", cells[2]), cells
        assert int(cells[-2].replace(",", "")) > 0 and re.match(TIME, cells[-1]), cells
    answers = data["answers"]
    assert len(answers) == bench_locomo_qa.QUICK_SAMPLE * len(bench_locomo_qa.STRATEGIES)
    assert all(0 <= a["f1"] <= 1 and a["reference"] for a in answers)
    assert "sample of 1 question** from 1 conversation" in markdown
