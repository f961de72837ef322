"""The documented rehearsal: the service's 003 and 004 at 10^6 rows, real numbers next to the dry
run's estimates (docs/ci.md, "Rehearsal at production size").

Run: .venv/bin/python benchmarks/rehearse.py [--rows 1000000] [--server URL]

On a throwaway cluster (dbledger.testing.temporary_postgres; or on ``--server``, an admin URL),
database ``app`` gets the service's migrations 001 and 002 (``dbledger up --to 2``), then
``platform_connections`` is filled with N rows, ``audit_logs`` with one row per connection (as
the audit trigger writes them) and ``organizations`` with N/100. Then, each as a user would run it:

1. ``dbledger rehearse``: a template copy, 003 and 004 applied on it;
2. ``dbledger rehearse --copy pg_dump --to 3``: the same copy made with pg_dump | pg_restore;
3. ``dbledger rehearse --schema-only --rows platform_connections=N --rows organizations=N/100``:
   the schema alone, the rows made by the rehearsal's own fill (its trigger fills audit_logs).

Each prints the copy's way and time, the fill, and per migration the real time, the estimate,
the tables held ACCESS EXCLUSIVE and the tables rewritten. The live database is compared before
and after: a rehearsal only reads it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from seed_data import FILL  # benchmarks/: the script's own folder is on sys.path

from dbledger.testing import temporary_postgres

MIGRATIONS = Path(__file__).resolve().parents[1] / "service" / "connections_service" / "migrations"


@contextmanager
def server(given: str | None) -> Iterator[str]:
    if given:
        yield given
        return
    with temporary_postgres() as cluster:
        yield cluster.url()


def on(url: str, dbname: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{dbname}"))


def dbledger(url: str, *args: str) -> dict[str, Any]:
    command = [sys.executable, "-m", "dbledger", "--database-url", url, "--dir", str(MIGRATIONS), *args]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"{' '.join(args)} failed (exit {done.returncode}):\n{done.stderr}")
    found: dict[str, Any] = json.loads(done.stdout)
    return found


def state(url: str) -> list[Any]:
    with psycopg.connect(url, autocommit=True) as conn:
        return [
            conn.execute("SELECT count(*), max(id::text) FROM platform_connections").fetchone(),
            conn.execute("SELECT count(*) FROM audit_logs").fetchone(),
            conn.execute("SELECT migration_name, checksum FROM schema_migrations ORDER BY id").fetchall(),
            conn.execute("SELECT count(*) FROM schema_migrations_history").fetchone(),
        ]


def show(title: str, seconds: float, report: dict[str, Any]) -> None:
    copy = report["copy"]
    print(f"\n{title}  (whole command {seconds:.1f} s)")
    only = " (schema only)" if copy["schema_only"] else ""
    print(f"  copy: {copy['method']}{only} in {copy['seconds']:.1f} s")
    for filled in report["filled"]:
        print(f"  fill: {filled['table']} +{filled['rows_added']:,} rows in {filled['seconds']:.1f} s")
    for m in report["migrations"]:
        held = sorted(
            lock["relation"].removeprefix("public.")
            for lock in m["locks"]
            if lock["mode"] == "ACCESS EXCLUSIVE" and lock["kind"] == "table"
        )
        estimate = "-" if m["estimate_ms"] is None else f"{m['estimate_ms'] / 1000:.2f} s"
        print(f"  {m['name']}: {m['execution_time_ms'] / 1000:.2f} s real, {estimate} estimated")
        print(f"    ACCESS EXCLUSIVE held on: {', '.join(held) or 'none'}")
        print(f"    rewritten: {', '.join(t.removeprefix('public.') for t in m['rewritten']) or 'none'}")
        print(f"    estimated rewrites: {', '.join(m['estimated_rewrites']) or 'none'}")
        print(f"    indexes rebuilt: {len(m['rebuilt_indexes'])}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--server", help="an admin URL instead of a throwaway cluster")
    args = parser.parse_args()
    print(
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{args.rows:,} connections"
    )
    with server(args.server) as admin:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("DROP DATABASE IF EXISTS app")
            conn.execute("CREATE DATABASE app")
            version = conn.execute("SHOW server_version").fetchone()
        print(f"PostgreSQL {version[0] if version else '?'} on {urlsplit(admin).hostname}")
        live = on(admin, "app")
        dbledger(live, "up", "--to", "2", "--json")
        started = time.perf_counter()
        with psycopg.connect(live, autocommit=True) as conn:
            psycopg.ClientCursor(conn).execute(FILL, {"rows": args.rows, "orgs": max(10, args.rows // 100)})
            conn.execute("VACUUM ANALYZE")
        print(f"filled the live database in {time.perf_counter() - started:.1f} s")
        before = state(live)
        runs = [
            ("dbledger rehearse", ["rehearse"]),
            ("dbledger rehearse --copy pg_dump --to 3", ["rehearse", "--copy", "pg_dump", "--to", "3"]),
            (
                f"dbledger rehearse --schema-only --rows platform_connections={args.rows} "
                f"--rows organizations={max(10, args.rows // 100)}",
                [
                    "rehearse",
                    "--schema-only",
                    "--rows",
                    f"platform_connections={args.rows}",
                    "--rows",
                    f"organizations={max(10, args.rows // 100)}",
                ],
            ),
        ]
        for title, words in runs:
            started = time.perf_counter()
            report = dbledger(live, *words, "--json")
            show(title, time.perf_counter() - started, report)
        print(f"\nthe live database unchanged after the rehearsals: {state(live) == before}")
        if not args.server:
            return
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("DROP DATABASE app WITH (FORCE)")


if __name__ == "__main__":
    main()
