"""chatmem benchmarks: each ``bench/bench_*.py`` prints a Markdown table and writes a chart.

Run them all with ``python -m bench`` (``--quick`` for the reduced sizes the smoke test uses),
or one with ``python -m bench.bench_context``. Every script has ``main(argv) -> int`` and takes
``--quick``, ``--no-chart`` and ``--out DIR``; results go to ``bench/results/<name>.md`` (and
``.png``; the ``.json`` raw data is not kept in git).
"""

from __future__ import annotations

import pkgutil
from pathlib import Path

# The core three first, in this order; any other bench_*.py after them, by name.
FIRST = ("bench_context", "bench_tokens", "bench_latency")


def scripts() -> list[str]:
    """Module names of the benchmark scripts in this folder, in run order."""
    found = sorted(
        info.name
        for info in pkgutil.iter_modules([str(Path(__file__).resolve().parent)])
        if info.name.startswith("bench_")
    )
    return [name for name in FIRST if name in found] + [n for n in found if n not in FIRST]
