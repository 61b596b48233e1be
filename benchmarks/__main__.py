"""``python -m benchmarks [--quick] [--rounds N] [--json PATH] [--check] [NAME ...]``.

See ``benchmarks/harness.py`` for how cases are measured and how to add a module.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmarks.harness import metadata, run_all, write_json


def main(argv: list[str] | None = None) -> int:
    """Run the selected benchmarks, print their tables; 1 with ``--check`` if a goal missed."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("names", nargs="*", help="run only cases whose module:case contains one")
    parser.add_argument("--quick", action="store_true", help="a tenth of the work, 3 rounds")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds per case")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="write results")
    parser.add_argument("--check", action="store_true", help="exit 1 if a goal is missed")
    args = parser.parse_args(argv)
    if args.rounds is not None and args.rounds < 1:
        parser.error("--rounds must be >= 1")
    results = run_all(args.names, quick=args.quick, rounds=args.rounds)
    if not results:
        print("no benchmark matched", file=sys.stderr)
        return 2
    if args.json is not None:
        rounds = len(results[0].samples)
        write_json(args.json, results, metadata(quick=args.quick, rounds=rounds))
        print(f"results written to {args.json}")
    missed = [r.label for r in results if r.ok is False]
    if missed:
        print(f"goals missed: {', '.join(missed)}")
    return 1 if missed and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
