"""Shared helpers for the benchmarks: arguments, machine facts, tables, output files, texts."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
QUICK_RESULTS_DIR = RESULTS_DIR / "quick"  # ignored by git (bench/results/.gitignore)


# ------------------------------------------------------------------------------ arguments
def base_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """The flags every benchmark script takes."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument(
        "--quick", action="store_true", help="a reduced size for smoke tests (well under 30 s)"
    )
    parser.add_argument("--no-chart", action="store_true", help="do not write the PNG chart")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="folder for <name>.md/.json/.png (default bench/results, or bench/results/quick "
        "with --quick)",
    )
    return parser


def script_parser(name: str, doc: str | None) -> argparse.ArgumentParser:
    """:func:`base_parser` for ``python -m bench.<name>``, described by the first line of
    the script's docstring."""
    return base_parser(f"python -m bench.{name}", (doc or name).splitlines()[0])


def run_main(
    parser: argparse.ArgumentParser,
    run_bench: Callable[[argparse.Namespace], Report],
    argv: Sequence[str] | None,
) -> int:
    """A script's ``main``: parse ``argv``, run the benchmark, print its Markdown; 0."""
    args = parser.parse_args(argv)
    print(run_bench(args).markdown)
    return 0


def out_dir(args: argparse.Namespace) -> Path:
    folder = (
        args.out if args.out is not None else (QUICK_RESULTS_DIR if args.quick else RESULTS_DIR)
    )
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# ------------------------------------------------------------------------------ machine
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def machine_line() -> str:
    """One line naming the machine the numbers come from."""
    cores = os.cpu_count() or 0
    with contextlib.suppress(AttributeError, OSError):
        cores = len(os.sched_getaffinity(0))
    load = ""
    with contextlib.suppress(AttributeError, OSError):
        load = f"; load average {os.getloadavg()[0]:.2f} when the report was written"
    return (
        f"Machine: {cores} cores (nproc), {cpu_model()}, Python {platform.python_version()} "
        f"on {platform.system()} {platform.release()}; "
        f"run {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}{load}."
    )


def database_line() -> str:
    """The database drivers the store numbers come from, with their versions."""
    return f"SQLAlchemy {package_version('sqlalchemy')}, psycopg {package_version('psycopg')}."


def package_version(name: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


# ------------------------------------------------------------------------------ tables
def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub Markdown table; numbers right-aligned."""

    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|")

    body = [[cell(v) for v in row] for row in rows]
    align = ["---"] + ["---:"] * (len(headers) - 1)  # labels left, figures right
    lines = [
        "| " + " | ".join(cell(h) for h in headers) + " |",
        "| " + " | ".join(align) + " |",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines)


def fmt_seconds(seconds: float | None) -> str:
    """A duration with a sensible unit: 12.3 µs, 4.56 ms, 1.23 s."""
    if seconds is None:
        return "-"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def fmt_ratio(ratio: float | None) -> str:
    if ratio is None:
        return "-"
    if ratio >= 100:
        return f"{ratio:,.0f}×"
    if ratio >= 10:
        return f"{ratio:.1f}×"
    return f"{ratio:.2f}×"


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


# ------------------------------------------------------------------------------ output
@dataclass
class Report:
    """What a benchmark produced: a Markdown document, raw data, and where it went."""

    name: str
    markdown: str
    data: dict[str, Any]
    files: list[Path]


def write_report(
    folder: Path, name: str, markdown: str, data: dict[str, Any], chart: Path | None
) -> Report:
    md_path = folder / f"{name}.md"
    md_path.write_text(markdown.rstrip() + "\n", encoding="utf-8")
    json_path = folder / f"{name}.json"
    json_path.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    files = [md_path, json_path]
    if chart is not None:
        files.append(chart)
    return Report(name, markdown, data, files)


def finish_report(
    args: argparse.Namespace,
    name: str,
    markdown: str,
    data: dict[str, Any],
    chart: Callable[[Path], Path],
    caption: str,
) -> Report:
    """Write ``<name>.md`` and ``.json`` to :func:`out_dir`, and unless ``--no-chart`` the
    chart ``chart(folder / "<name>.png")``, linked at the end of the Markdown."""
    folder = out_dir(args)
    png = None
    if not args.no_chart:
        png = chart(folder / f"{name}.png")
        markdown += f"\n![{caption}]({name}.png)\n"
    return write_report(folder, name, markdown, data, png)


def pyplot() -> Any:
    """matplotlib.pyplot with the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_chart(fig: Any, path: Path, dpi: float | None = None) -> Path:
    """Lay out ``fig``, write it to ``path`` (PNG) and close it; returns ``path``."""
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)  # None: matplotlib's savefig.dpi setting
    pyplot().close(fig)
    return path


# ------------------------------------------------------------------------------ texts
_VOCABULARY = (
    "the a an and or but so because if when while after before then also just really "
    "maybe probably still already never always often again very quite rather more less "
    "I you we they it this that these those there here what which who how why where "
    "is are was were be been have has had do does did can could would should will might "
    "need want like think know see mean try use make take give find keep get go come "
    "work plan trip budget report meeting project code test server database query error "
    "question answer idea list week month year day morning evening time price cost "
    "number file page team client user model memory summary context token message reply "
    "train flight hotel ticket museum restaurant recipe garden book film song game "
    "small large quick slow new old good better best simple clear short long late early "
    "Python JavaScript Lisbon Berlin Tokyo Madrid Chicago Monday Friday March October "
    "about with for from into over under between through during without within around"
)
_WORDS = _VOCABULARY.split()
_CODE = [
    "```python\nfor row in rows:\n    total += row.price * row.qty\nprint(total)\n```",
    "```sql\nSELECT id, name FROM users WHERE created_at > '2024-01-01' ORDER BY id;\n```",
    "```bash\npip install -r requirements.txt && pytest -q\n```",
    '```json\n{"status": "ok", "items": [1, 2, 3], "next": null}\n```',
]


_ONSETS = "b c d f g h j k l m n p r s t v w z br cr dr fl gr pl st tr sh ch"
_VOWELS = "a e i o u ai ea io ou"


def _rare_words(count: int = 4000, seed: int = 77) -> list[str]:
    """Made-up content words (names, places, products), so that text has a long tail."""
    rng = random.Random(seed)
    onsets = _ONSETS.split()
    vowels = _VOWELS.split()
    codas = ["", "", "n", "r", "s", "l", "x", "nd", "rt", "sk"]
    words: list[str] = []
    seen: set[str] = set()
    while len(words) < count:
        word = "".join(
            rng.choice(onsets) + rng.choice(vowels) + rng.choice(codas)
            for _ in range(rng.choice((2, 2, 3)))
        )
        if word not in seen:
            seen.add(word)
            words.append(word.capitalize() if rng.random() < 0.3 else word)
    return words


_RARE = _rare_words()


def _word(rng: random.Random) -> str:
    """Mostly common words; about one in eight from a long tail (log-uniform rank)."""
    if rng.random() < 0.88:
        return rng.choice(_WORDS)
    return _RARE[int(len(_RARE) ** rng.random()) - 1]


def _sentence(rng: random.Random, low: int, high: int) -> str:
    n = rng.randint(low, high)
    words = [_word(rng) for _ in range(n)]
    if rng.random() < 0.25:
        words.insert(rng.randrange(len(words)), str(rng.choice([3, 12, 42, 250, 1999, 2024])))
    if rng.random() < 0.15:
        words.insert(rng.randrange(len(words)), f"{rng.randint(1, 99)}.{rng.randint(0, 99):02d}")
    text = " ".join(words)
    if n > 8 and rng.random() < 0.4:
        cut = rng.randrange(3, n - 2)
        parts = text.split(" ")
        parts[cut] += ","
        text = " ".join(parts)
    end = rng.choice(".....?!") if rng.random() < 0.9 else "..."
    return text[0].upper() + text[1:] + end


def user_text(rng: random.Random) -> str:
    """A user message: usually one or two short sentences, sometimes a longer paragraph."""
    roll = rng.random()
    if roll < 0.55:
        count = 1
    elif roll < 0.85:
        count = rng.randint(2, 3)
    else:
        count = rng.randint(4, 8)
    return " ".join(_sentence(rng, 4, 18) for _ in range(count))


def assistant_text(rng: random.Random) -> str:
    """An assistant reply: a few sentences, sometimes a list or a code block."""
    roll = rng.random()
    if roll < 0.3:
        parts = [" ".join(_sentence(rng, 6, 20) for _ in range(rng.randint(1, 3)))]
    elif roll < 0.75:
        parts = [" ".join(_sentence(rng, 6, 22) for _ in range(rng.randint(3, 8)))]
    else:
        parts = [_sentence(rng, 6, 16)]
        parts += [f"- {_sentence(rng, 3, 12)}" for _ in range(rng.randint(2, 5))]
        if rng.random() < 0.5:
            parts.append(rng.choice(_CODE))
        parts.append(_sentence(rng, 5, 14))
    return "\n".join(parts)


def conversation(n: int, seed: int = 1234) -> list[tuple[str, str]]:
    """``n`` messages alternating user/assistant (user first), deterministic for a seed."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        if i % 2 == 0:
            out.append(("user", user_text(rng)))
        else:
            out.append(("assistant", assistant_text(rng)))
    return out
