"""What drift detection's cheap path costs: introspect the live schema and fingerprint it.

Run: .venv/bin/python benchmarks/introspection_cost.py [--tables 10 100 1000] [--repeat 7]

For each size, a schema of N tables is built, each with four columns (a serial key, a varchar with
a default, a timestamp, a reference to the previous table), a foreign key and an index, on a
throwaway PostgreSQL cluster (``dbledger.testing.temporary_postgres``) and in a SQLite file. Then
``introspect`` + ``fingerprint`` is timed ``--repeat`` times on one open connection (what a
``/health`` check or ``status`` pays after connecting). Prints the median and min-max in ms.
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import psycopg

from dbledger.schema import fingerprint, introspect_sqlite
from dbledger.schema.introspect_postgres import introspect_postgres
from dbledger.testing import temporary_postgres


def schema(count: int, serial: str) -> str:
    parts = []
    for i in range(1, count + 1):
        reference = f", parent_id INTEGER REFERENCES t{i - 1} (id) ON DELETE CASCADE" if i > 1 else ""
        parts.append(
            f"CREATE TABLE t{i} (id {serial} PRIMARY KEY, name VARCHAR(100) NOT NULL DEFAULT 'x',"
            f" created_at TIMESTAMP{reference});\nCREATE INDEX t{i}_name ON t{i} (name);\n"
        )
    return "".join(parts)


def sqlite_cost(conn: sqlite3.Connection) -> str:
    return fingerprint(introspect_sqlite(conn))


def postgres_cost(conn: psycopg.Connection[Any]) -> str:
    return fingerprint(introspect_postgres(conn))


def timed(action: Callable[[], object], repeat: int) -> list[float]:
    action()  # warm caches: the first call also pays imports and catalog cache loading
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        action()
        samples.append((time.perf_counter() - start) * 1000)
    return samples


def row(backend: str, count: int, samples: list[float], tables: int) -> str:
    return (
        f"| {backend:<10} | {count:>6} | {statistics.median(samples):>9.1f} |"
        f" {min(samples):>7.1f}-{max(samples):<7.1f} | {tables:>6} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tables", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    print("| backend    | tables | median ms | min-max ms      | model  |")
    print("| ---------- | -----: | --------: | --------------- | -----: |")
    with tempfile.TemporaryDirectory() as folder, temporary_postgres() as cluster:
        for count in args.tables:
            path = Path(folder) / f"bench_{count}.sqlite3"
            lite = sqlite3.connect(path)
            lite.executescript(schema(count, "INTEGER"))
            samples = timed(partial(sqlite_cost, lite), args.repeat)
            print(row("sqlite", count, samples, len(introspect_sqlite(lite).tables)), flush=True)
            lite.close()

            url = cluster.create_database(f"bench_{count}")
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(schema(count, "SERIAL").encode())
                pg_samples = timed(partial(postgres_cost, conn), args.repeat)
                print(row("postgresql", count, pg_samples, len(introspect_postgres(conn).tables)), flush=True)


if __name__ == "__main__":
    main()
