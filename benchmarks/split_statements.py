"""What cutting a large data file into statements costs, against yoyo-migrations' splitter.

Run: .venv/bin/python benchmarks/split_statements.py [--sizes 10000 40000 100000 500000]
     [--peer-max 100000] [--repeat 3]

A section of N ``INSERT`` statements (one per line, a string in each) is split by dbledger's
PostgreSQL dialect (pglast's parser), by its SQLite dialect (SQLite's own tokenizer rules), by the
PostgreSQL dialect when one statement has a syntax error in the middle (the parser's rejection
makes it cut around that statement with the scanner), by the PostgreSQL dialect when every
statement is rejected (a misspelt verb throughout), and by ``sqlparse.split``, which
yoyo-migrations uses. Each case runs in a fresh process; the median wall time of ``--repeat`` runs
and the process's peak memory (max RSS) are printed. The peer stops at ``--peer-max`` statements.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

CASES = (
    "postgresql",
    "postgresql-syntax-error",
    "postgresql-every-one-rejected",
    "sqlite",
    "sqlparse (yoyo)",
)


def section(count: int, *, broken: bool = False, rejected: bool = False) -> str:
    verb = "INSRT" if rejected else "INSERT"
    lines = [f"{verb} INTO items (id, name) VALUES ({i}, 'item {i}; of many');\n" for i in range(count)]
    if broken:
        lines.insert(count // 2, "INSERT INTO items (id, name) VALUS (0, 'typo');\n")
    return "".join(lines)


def split_once(case: str, count: int) -> tuple[float, int, int]:
    """(seconds, statements found, peak RSS in KiB) of one split, in this process."""
    sql = section(count, broken=case == "postgresql-syntax-error", rejected=case.endswith("rejected"))
    started = time.perf_counter()
    if case == "sqlparse (yoyo)":
        import sqlparse

        found = len([s for s in sqlparse.split(sql) if s.strip()])
    else:
        from dbledger.dialects import for_name

        dialect = for_name(case.split("-")[0])
        found = len(dialect.split(sql, 1, Path("data.sql")))
    seconds = time.perf_counter() - started
    return seconds, found, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def measure(case: str, count: int, repeat: int) -> tuple[float, int, int]:
    runs = []
    for _ in range(repeat):
        child = subprocess.run(
            [sys.executable, __file__, "--one", case, str(count)], capture_output=True, text=True, check=True
        )
        runs.append(json.loads(child.stdout))
    return statistics.median(r[0] for r in runs), runs[0][1], max(r[2] for r in runs)


def main() -> None:
    options = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    options.add_argument("--sizes", type=int, nargs="+", default=[10_000, 40_000, 100_000, 500_000])
    options.add_argument("--peer-max", type=int, default=100_000)
    options.add_argument("--repeat", type=int, default=3)
    options.add_argument("--one", nargs=2, metavar=("CASE", "N"), help=argparse.SUPPRESS)
    args = options.parse_args()
    if args.one:
        print(json.dumps(split_once(args.one[0], int(args.one[1]))))
        return
    print(f"{'statements':>10}  {'splitter':<30} {'median s':>9} {'found':>8} {'max RSS MiB':>12}")
    for count in args.sizes:
        for case in CASES:
            if case.startswith("sqlparse") and count > args.peer_max:
                continue
            seconds, found, rss = measure(case, count, args.repeat)
            print(f"{count:>10}  {case:<30} {seconds:>9.2f} {found:>8} {rss / 1024:>12.0f}")


if __name__ == "__main__":
    main()
