"""How the dry run and drift detection grow with the folder and the schema.

Run: .venv/bin/python benchmarks/plan_and_drift.py [--sizes 100 1000 3000] [--runs 3]
     [--database-url URL]

For each size N, on PostgreSQL (a throwaway cluster, or the server of --database-url, where it
creates and drops its own databases):
  * ``dbledger up --dry-run`` with N pending migrations (``CREATE TABLE t_i (id bigint primary
    key, name text)`` each): every statement parsed, analysed against the live catalog, its
    locks and time estimated;
  * ``dbledger drift`` after the N are applied: the live schema of N tables introspected and
    compared with the one the last run recorded.
Whole processes, the median of --runs after one warm-up, and the time per 1000 migrations or
tables, so the growth with N reads off the last column.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

import dbledger
from dbledger.testing import temporary_postgres

BIN = Path(sys.executable).parent


def folder(root: Path, count: int) -> Path:
    where = root / f"m{count}"
    where.mkdir()
    for i in range(1, count + 1):
        (where / f"{i:05d}_t{i}.sql").write_text(f"CREATE TABLE t_{i} (id bigint primary key, name text);\n")
    return where


def timed(argv: list[str], runs: int) -> float:
    """Median seconds of ``runs`` runs of ``argv`` after one warm-up; each must succeed."""
    samples = []
    for attempt in range(runs + 1):
        start = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True)
        if attempt:
            samples.append(time.perf_counter() - start)
    return statistics.median(samples)


class Server:
    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url

    def database(self, name: str) -> str:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"'.encode())
            conn.execute(f'CREATE DATABASE "{name}"'.encode())
        base, _, _ = self.admin_url.rpartition("/")
        return f"{base}/{name}"

    def drop(self, name: str) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())


def measure(server: Server, root: Path, count: int, runs: int) -> tuple[float, float]:
    migrations = folder(root, count)
    name = f"bench_plan_drift_{count}"
    url = server.database(name)
    try:
        cli = [str(BIN / "dbledger"), "--database-url", url, "--dir", str(migrations)]
        dry_run = timed([*cli, "up", "--dry-run"], runs)
        dbledger.migrate(url, migrations)
        drift = timed([*cli, "drift"], runs)
    finally:
        server.drop(name)
    return dry_run, drift


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 3000])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--database-url", help="a PostgreSQL server's admin URL (default: a throwaway one)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="dbledger-plan-drift-"))
    try:
        if args.database_url is not None:
            report(Server(args.database_url), root, args.sizes, args.runs)
        else:
            with temporary_postgres() as cluster:
                report(Server(cluster.url()), root, args.sizes, args.runs)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def report(server: Server, root: Path, sizes: list[int], runs: int) -> None:
    print(f"{'N':>6}  {'up --dry-run':>14}  {'per 1000':>9}  {'drift':>9}  {'per 1000':>9}")
    for count in sizes:
        dry_run, drift = measure(server, root, count, runs)
        print(
            f"{count:>6}  {dry_run:>12.2f} s  {dry_run * 1000 / count:>7.2f} s"
            f"  {drift:>7.2f} s  {drift * 1000 / count:>7.2f} s"
        )


if __name__ == "__main__":
    main()
