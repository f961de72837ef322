"""A fleet on the local server: 100 tenant schemas of one database and 20 databases of their own.

Run: .venv/bin/python benchmarks/fleet.py [--schemas 100] [--databases 20] [--repeat 1]

Not part of the test suite (pytest collects only tests/; this file takes minutes). It uses the
server of DBLEDGER_TEST_POSTGRES_URL when set, else a throwaway cluster (dbledger.testing).

Every run starts from a fresh fleet (schemas and databases dropped and created again) and applies
the same three small migrations to every target, each run as a whole ``dbledger`` process:
  * one target, ``dbledger up`` (a schema target and a database target, a few times each), times
    the fleet's size: what a shell loop over the targets would take;
  * ``dbledger up --all`` with --jobs 1 and --jobs 4;
  * 1, 2 and 4 runner processes on the same fleet at once (``--jobs 4`` each, and 4 runners with
    ``--jobs 1``), no coordinator: each target is claimed through its own lock;
  * ``up --all`` again once the fleet is up to date (the cost of a deploy with nothing to do);
  * then, on a smaller fleet (40 schemas), migrations that each wait a second on the server: the
    run is bound by each runner's --jobs, as when the runners are on machines of their own, and
    1, 2 and 4 runners (--jobs 4 each) are compared with one runner at --jobs 16.
After every run each target's history is checked: each migration applied exactly once.
Prints a Markdown table (docs/operations.md, "Fleets", holds the numbers measured).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg

from dbledger.testing import temporary_postgres

MIGRATIONS = {
    "001_accounts.sql": "CREATE TABLE accounts (id bigint PRIMARY KEY, email text NOT NULL);\n",
    "002_accounts_name.sql": "ALTER TABLE accounts ADD COLUMN name text;\n",
    "003_accounts_email.sql": "CREATE UNIQUE INDEX accounts_email ON accounts (email);\n",
}
MAIN = "fleet_bench_main"


@contextmanager
def server() -> Iterator[str]:
    """The admin URL of the server to use."""
    given = os.environ.get("DBLEDGER_TEST_POSTGRES_URL")
    if given:
        yield given
        return
    with temporary_postgres() as cluster:
        yield cluster.url()


def with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


class Fleet:
    def __init__(self, admin: str, schemas: int, databases: int, work: Path) -> None:
        work.mkdir()
        self.admin = admin
        self.schemas = [f"tenant_{n:03d}" for n in range(1, schemas + 1)]
        self.databases = [f"fleet_bench_db_{n:02d}" for n in range(1, databases + 1)]
        self.main = with_database(admin, MAIN)
        self.targets = work / "targets.txt"
        self.targets.write_text(
            "".join(f"{name}\n" for name in self.schemas)
            + "".join(f"{with_database(admin, name)}\n" for name in self.databases),
            encoding="utf-8",
        )
        self.size = schemas + databases

    def reset(self) -> None:
        """Every target fresh and empty (the main database and each tenant database recreated)."""
        with psycopg.connect(self.admin, autocommit=True) as conn:
            for name in [MAIN, *self.databases]:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())
                conn.execute(f'CREATE DATABASE "{name}"'.encode())
        with psycopg.connect(self.main, autocommit=True) as conn:
            for name in self.schemas:
                conn.execute(f"CREATE SCHEMA {name}".encode())

    def drop(self) -> None:
        with psycopg.connect(self.admin, autocommit=True) as conn:
            for name in [MAIN, *self.databases]:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())

    def check_exactly_once(self) -> None:
        """Each migration applied once on every target, as the history says."""
        expected = sorted(name.removesuffix(".sql") for name in MIGRATIONS)
        places = [(self.main, schema) for schema in self.schemas]
        places += [(with_database(self.admin, name), "public") for name in self.databases]
        for url, schema in places:
            with psycopg.connect(url, autocommit=True) as conn:
                rows = conn.execute(
                    f"SELECT migration_name FROM {schema}.schema_migrations_history "
                    "WHERE action = 'apply' ORDER BY migration_name".encode()
                ).fetchall()
            found = [row[0] for row in rows]
            if found != expected:
                raise SystemExit(f"{url} {schema}: applied {found}, expected each of {expected} once")


def dbledger(*args: str, cwd: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "dbledger", *args], cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def wait_all(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        _, err = process.communicate()
        if process.returncode != 0:
            raise SystemExit(f"{process.args!r} failed: {err.decode(errors='replace')}")


def timed_runners(fleet: Fleet, folder: Path, runners: int, jobs: int, *, reset: bool = True) -> float:
    """Seconds for ``runners`` processes of ``up --all --jobs JOBS`` started together."""
    if reset:
        fleet.reset()
    args = ["--database-url", fleet.main, "--dir", str(folder), "-q", "up", "--all"]
    args += ["--targets-file", str(fleet.targets), "--jobs", str(jobs)]
    start = time.perf_counter()
    wait_all([dbledger(*args, cwd=folder.parent) for _ in range(runners)])
    seconds = time.perf_counter() - start
    fleet.check_exactly_once()
    return seconds


def one_target(fleet: Fleet, folder: Path, samples: int) -> tuple[float, float]:
    """Median seconds of one ``dbledger up`` on a fresh schema target and on a fresh database."""
    fleet.reset()
    schema_runs, database_runs = [], []
    base = ["--dir", str(folder), "-q"]
    for schema in fleet.schemas[:samples]:
        start = time.perf_counter()
        wait_all([dbledger("--database-url", fleet.main, "--schema", schema, *base, "up", cwd=folder.parent)])
        schema_runs.append(time.perf_counter() - start)
    for name in fleet.databases[:samples]:
        start = time.perf_counter()
        wait_all(
            [dbledger("--database-url", with_database(fleet.admin, name), *base, "up", cwd=folder.parent)]
        )
        database_runs.append(time.perf_counter() - start)
    return statistics.median(schema_runs), statistics.median(database_runs)


def write_folder(folder: Path, wait_ms: int) -> Path:
    """The three migrations; with ``wait_ms``, each also waits that long on the server."""
    folder.mkdir()
    # Spelt so that no other suite's "terminate every session running pg_sleep" can find it.
    wait = f"DO $$ BEGIN EXECUTE 'SELECT pg_' || 'sleep({wait_ms / 1000})'; END $$;\n" if wait_ms else ""
    for name, text in MIGRATIONS.items():
        (folder / name).write_text(text + wait, encoding="utf-8")
    return folder


def label(runners: int, jobs: int) -> str:
    return f"`up --all --jobs {jobs}`" + (f", {runners} runner processes" if runners > 1 else "")


def table(title: str, size: int, rows: list[tuple[str, float]], base: float) -> None:
    print(f"\n{title}")
    print("| run | total | per target | vs. the first row |")
    print("| --- | ---: | ---: | ---: |")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.1f} s | {seconds / size * 1000:.0f} ms | {base / seconds:.2f}x |")


def trivial_series(fleet: Fleet, folder: Path, samples: int, repeat: int) -> list[tuple[str, float]]:
    schema_s, database_s = one_target(fleet, folder, samples)
    loop = schema_s * len(fleet.schemas) + database_s * len(fleet.databases)
    first = f"one target, `dbledger up` (schema {schema_s:.2f} s, database {database_s:.2f} s) x N"
    rows = [(first, loop), *runs(fleet, folder, ((1, 1), (1, 4), (2, 4), (4, 4), (4, 1)), repeat)]
    noop = statistics.median(timed_runners(fleet, folder, 1, 4, reset=False) for _ in range(repeat))
    rows.append(("`up --all --jobs 4`, every target up to date", noop))
    return rows


def runs(
    fleet: Fleet, folder: Path, combos: tuple[tuple[int, int], ...], repeat: int
) -> list[tuple[str, float]]:
    found = []
    for runners, jobs in combos:
        samples = [timed_runners(fleet, folder, runners, jobs) for _ in range(repeat)]
        found.append((label(runners, jobs), statistics.median(samples)))
        print(f"  {found[-1][0]}: {found[-1][1]:.1f} s", file=sys.stderr, flush=True)
    return found


def speed_up(rows: list[tuple[str, float]]) -> None:
    found = dict(rows)
    ratio = found[label(1, 4)] / found[label(4, 4)]
    print(f"speed-up from 1 to 4 runner processes (--jobs 4 each): {ratio:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schemas", type=int, default=100)
    parser.add_argument("--databases", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=1, help="runs of each fleet measurement (median)")
    parser.add_argument("--samples", type=int, default=5, help="single-target runs of each kind (median)")
    parser.add_argument("--series", choices=("both", "trivial", "waiting"), default="both")
    parser.add_argument("--wait-ms", type=int, default=1000, help="waiting series: each migration's wait")
    parser.add_argument("--waiting-schemas", type=int, default=40, help="waiting series: the fleet's size")
    options = parser.parse_args()
    print(f"{os.cpu_count()} cores; {len(MIGRATIONS)} migrations on each target")

    with server() as admin, tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        if options.series in ("both", "trivial"):
            fleet = Fleet(admin, options.schemas, options.databases, work / "trivial")
            try:
                rows = trivial_series(fleet, write_folder(work / "quick", 0), options.samples, options.repeat)
            finally:
                fleet.drop()
            table(
                f"{fleet.size} targets ({len(fleet.schemas)} schemas, {len(fleet.databases)} databases), "
                "trivial migrations: the work is this machine's CPU (dbledger and the server)",
                fleet.size,
                rows,
                rows[0][1],
            )
            speed_up(rows)
        if options.series in ("both", "waiting"):
            fleet = Fleet(admin, options.waiting_schemas, 0, work / "waiting")
            combos = ((1, 4), (2, 4), (4, 4), (1, 16))
            try:
                waits = runs(fleet, write_folder(work / "slow", options.wait_ms), combos, options.repeat)
            finally:
                fleet.drop()
            table(
                f"{fleet.size} schema targets, migrations that wait {options.wait_ms} ms each on the server: "
                "the bound is each runner's --jobs, not this machine",
                fleet.size,
                waits,
                waits[0][1],
            )
            speed_up(waits)


if __name__ == "__main__":
    main()
