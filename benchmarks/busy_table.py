"""What readers feel while a migration ALTERs a table that a long transaction holds.

Run: .venv/bin/python benchmarks/busy_table.py [--hold 6] [--rounds 3]

Starts a throwaway PostgreSQL cluster. In each round a "report job" opens a transaction, reads
the table ``accounts`` (100,000 rows) and keeps the transaction open for ``--hold`` seconds; a
reader runs ``SELECT ... WHERE id = $1`` on the table every 20 ms; 0.3 s after the report began,
``dbledger up`` runs ``ALTER TABLE accounts ADD COLUMN ...`` (ACCESS EXCLUSIVE) as a separate
process. Each setting of ``--statement-lock-timeout`` is one row: the worst and the 99th
percentile read latency while the migration ran, the retries dbledger made (its "retry:" lines),
the time ``up`` took, and whether it applied the migration.

"no limit" (``--statement-lock-timeout 0``) is PostgreSQL's default lock_timeout, which is what a
runner that does not manage lock waits sends: the ALTER waits behind the report and every reader
queues behind the ALTER.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psycopg

from dbledger.testing import temporary_postgres

SETTINGS = ["0", "3s", "1s", "500ms", "200ms"]


def reader(url: str, stop: threading.Event, latencies: list[float]) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        while not stop.is_set():
            started = time.perf_counter()
            conn.execute("SELECT name FROM accounts WHERE id = %s", (7,)).fetchone()
            latencies.append(time.perf_counter() - started)
            time.sleep(0.02)


def one_round(url: str, folder: Path, limit: str, hold: float, version: int) -> dict[str, float | int | str]:
    (folder / f"{version:03d}_add_c{version}.sql").write_text(
        f"ALTER TABLE accounts ADD COLUMN c{version} text;\n"
    )
    holder = psycopg.connect(url, autocommit=True, application_name="report-job")
    holder.execute("BEGIN")
    holder.execute("SELECT count(*) FROM accounts")
    ender = threading.Timer(hold, lambda: holder.execute("COMMIT"))
    ender.start()
    stop, latencies = threading.Event(), []  # type: ignore[var-annotated]
    reading = threading.Thread(target=reader, args=(url, stop, latencies))
    reading.start()
    time.sleep(0.3)
    started = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "dbledger",
            "--database-url",
            url,
            "--dir",
            str(folder),
            "up",
            "--statement-lock-timeout",
            limit,
            "--lock-retries",
            "10",
        ],
        capture_output=True,
        text=True,
        check=False,
        env={k: v for k, v in os.environ.items() if k != "DATABASE_URL"},
    )
    took = time.perf_counter() - started
    stop.set()
    reading.join()
    ender.join()
    holder.close()
    return {
        "worst_ms": max(latencies) * 1000,
        "p99_ms": statistics.quantiles(latencies, n=100)[98] * 1000 if len(latencies) > 2 else 0.0,
        "retries": done.stderr.count("retry:"),
        "up_s": took,
        "applied": "yes" if done.returncode == 0 else "no",
    }


def median(rounds: list[dict[str, float | int | str]], key: str) -> float:
    return statistics.median(float(r[key]) for r in rounds)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--hold", type=float, default=8.0, help="seconds the report holds the table")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with temporary_postgres() as cluster, tempfile.TemporaryDirectory() as scratch:
        url = cluster.create_database("busy")
        folder = Path(scratch) / "migrations"
        folder.mkdir()
        (folder / "001_accounts.sql").write_text(
            "CREATE TABLE accounts (id int PRIMARY KEY, name text);\n"
            "INSERT INTO accounts SELECT g, 'account ' || g FROM generate_series(1, 100000) g;\n"
        )
        subprocess.run(
            [sys.executable, "-m", "dbledger", "--database-url", url, "--dir", str(folder), "up", "-q"],
            check=True,
        )
        version = 2
        print(f"report holds accounts for {args.hold:g} s; median of {args.rounds} rounds per row\n")
        print(
            "| --statement-lock-timeout | worst read (ms) | p99 read (ms) | retries | `up` took (s) |", end=""
        )
        print(" applied |")
        print("| --- | ---: | ---: | ---: | ---: | --- |")
        for limit in SETTINGS:
            rounds = []
            for _ in range(args.rounds):
                rounds.append(one_round(url, folder, limit, args.hold, version))
                version += 1

            applied = "all" if all(r["applied"] == "yes" for r in rounds) else "not all"
            name = "0 (no limit)" if limit == "0" else limit
            print(
                f"| {name} | {median(rounds, 'worst_ms'):.0f} | {median(rounds, 'p99_ms'):.0f} | "
                f"{median(rounds, 'retries'):.0f} | "
                f"{median(rounds, 'up_s'):.1f} | {applied} |"
            )


if __name__ == "__main__":
    main()
