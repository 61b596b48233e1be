"""``python -m benchmarks [--quick] [--rounds N] [--loop L] [--json PATH] [--check] [NAME ...]``
and ``python -m benchmarks --compare OLD.json NEW.json``.

See ``benchmarks/harness.py`` for how cases are measured and how to add a module, and
``docs/performance.md`` for what each case measures.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmarks.harness import (
    LOOPS,
    available_loops,
    compare,
    markdown,
    metadata,
    profile_all,
    run_all,
    write_json,
)


def main(argv: list[str] | None = None) -> int:
    """Run the selected benchmarks, print their tables; 1 with ``--check`` if a goal missed."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Run taskvisor's benchmarks, each case next to its baselines "
        "(docs/performance.md).",
    )
    parser.add_argument("names", nargs="*", help="run only cases whose module:case contains one")
    parser.add_argument("--quick", action="store_true", help="a tenth of the work, 3 rounds")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds per case")
    parser.add_argument(
        "--loop",
        choices=(*LOOPS, "all"),
        default="all",
        help="event loop to run on (default: all, i.e. asyncio and uvloop when installed)",
    )
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="write results")
    parser.add_argument(
        "--compare",
        type=Path,
        nargs=2,
        metavar=("OLD", "NEW"),
        help="print the per-case change between two --json files, run nothing",
    )
    parser.add_argument(
        "--markdown",
        type=Path,
        metavar="JSON",
        help="print the results of a --json file as Markdown tables, run nothing",
    )
    parser.add_argument("--check", action="store_true", help="exit 1 if a goal is missed")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="run each named case once under cProfile and print its top functions "
        "(first loop of --loop only)",
    )
    args = parser.parse_args(argv)
    if args.compare is not None:
        old, new = args.compare
        for path in (old, new):
            if not path.is_file():
                parser.error(f"--compare: no such file: {path}")
        print(compare(old, new))
        return 0
    if args.markdown is not None:
        if not args.markdown.is_file():
            parser.error(f"--markdown: no such file: {args.markdown}")
        print(markdown(args.markdown))
        return 0
    if args.rounds is not None and args.rounds < 1:
        parser.error("--rounds must be >= 1")
    available = available_loops()
    if args.loop == "all":
        loops = available
        if "uvloop" not in loops:
            print("uvloop is not installed: default loop only (pip install -e '.[bench]')\n")
    elif args.loop not in available:
        parser.error(f"--loop {args.loop}: not installed (pip install -e '.[bench]')")
    else:
        loops = [args.loop]
    if args.profile:
        if not profile_all(args.names, quick=args.quick, loop=loops[0]):
            print("no benchmark matched", file=sys.stderr)
            return 2
        return 0
    results = run_all(args.names, quick=args.quick, rounds=args.rounds, loops=loops)
    if not results:
        print("no benchmark matched", file=sys.stderr)
        return 2
    if args.json is not None:
        rounds = max(len(r.samples) for r in results)
        write_json(args.json, results, metadata(quick=args.quick, rounds=rounds, loops=loops))
        print(f"results written to {args.json}")
    missed = [f"{r.label} [{r.loop}]" for r in results if r.ok is False]
    if missed:
        print(f"goals missed: {', '.join(missed)}")
    return 1 if missed and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
