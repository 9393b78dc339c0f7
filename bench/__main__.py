"""``python -m bench``: run every benchmark script's ``main()`` in turn.

    python -m bench [--quick] [--no-chart] [--out DIR] [--only NAME ...] [--list]

A script that fails is reported and the others still run; the exit code is 1 if any failed.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
import traceback

from bench import scripts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="reduced sizes (smoke test)")
    parser.add_argument("--no-chart", action="store_true", help="do not write PNG charts")
    parser.add_argument("--out", default=None, help="folder for the results of every script")
    parser.add_argument(
        "--only", nargs="+", default=None, metavar="NAME", help="run only these scripts"
    )
    parser.add_argument("--list", action="store_true", help="list the scripts and exit")
    args = parser.parse_args(argv)

    names = scripts()
    if args.list:
        print("\n".join(names))
        return 0
    if args.only:
        wanted = {n if n.startswith("bench_") else f"bench_{n}" for n in args.only}
        unknown = wanted - set(names)
        if unknown:
            parser.error(f"unknown script(s): {', '.join(sorted(unknown))}; have {names}")
        names = [n for n in names if n in wanted]

    forwarded = []
    if args.quick:
        forwarded.append("--quick")
    if args.no_chart:
        forwarded.append("--no-chart")
    if args.out:
        forwarded += ["--out", args.out]

    failed: list[str] = []
    timings: list[tuple[str, float]] = []
    for name in names:
        print(f"\n===== {name} {' '.join(forwarded)} =====", flush=True)
        start = time.perf_counter()
        try:
            module = importlib.import_module(f"bench.{name}")
            code = module.main(list(forwarded))
            ok = code in (None, 0) or isinstance(code, str)
        except SystemExit as exc:  # argparse errors and sys.exit inside a script
            ok = exc.code in (None, 0)
        except Exception:
            traceback.print_exc()
            ok = False
        timings.append((name, time.perf_counter() - start))
        if not ok:
            failed.append(name)
    print("\n===== summary =====")
    for name, seconds in timings:
        status = "FAILED" if name in failed else "ok"
        print(f"{name:<20} {status:<7} {seconds:7.1f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
