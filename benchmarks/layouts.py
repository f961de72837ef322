"""What reading another tool's folder costs at every start: ``dbledger up`` with nothing pending,
on the same migrations in dbledger's own layout and in golang-migrate's, Flyway's and Diesel's.

Run: .venv/bin/python benchmarks/layouts.py [--migrations 100 1000] [--repeat 15]

Each folder is applied once on a SQLite file, then ``dbledger up`` is timed as a whole process
(interpreter start, imports, read the folder, read the ledger, exit), the layouts in turn, round
after round, so a machine that slows down slows them all. dbledger's own layout keeps a record
of each file's checksum (docs/benchmarks.md); the other layouts read and hash every file at
every start. Reports the median and the spread (min-max) in milliseconds.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

BIN = Path(sys.executable).parent


def _sql(i: int) -> str:
    return f"CREATE TABLE t{i} (id INTEGER PRIMARY KEY, name text);\nCREATE INDEX t{i}_n ON t{i} (name);\n"


def dbledger_layout(folder: Path, count: int) -> None:
    for i in range(1, count + 1):
        (folder / f"{i:04d}_table_{i}.sql").write_text(
            f"-- migrate:up\n{_sql(i)}-- migrate:down\nDROP TABLE t{i};\n"
        )


def golang(folder: Path, count: int) -> None:
    for i in range(1, count + 1):
        (folder / f"{i:06d}_table_{i}.up.sql").write_text(_sql(i))
        (folder / f"{i:06d}_table_{i}.down.sql").write_text(f"DROP TABLE t{i};\n")


def flyway(folder: Path, count: int) -> None:
    for i in range(1, count + 1):
        (folder / f"V{i}__table_{i}.sql").write_text(_sql(i))


def diesel(folder: Path, count: int) -> None:
    for i in range(1, count + 1):
        migration = folder / f"2024-01-01-{i:06d}_table_{i}"
        migration.mkdir()
        (migration / "up.sql").write_text(_sql(i))
        (migration / "down.sql").write_text(f"DROP TABLE t{i};\n")


LAYOUTS: dict[str, Callable[[Path, int], None]] = {
    "dbledger": dbledger_layout,
    "golang-migrate": golang,
    "flyway": flyway,
    "diesel": diesel,
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--migrations", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        print("| migrations | layout | no-op `dbledger up`, median ms | min-max |")
        print("| --- | --- | --- | --- |")
        for count in args.migrations:
            commands: dict[str, list[str]] = {}
            for name, write in LAYOUTS.items():
                folder = root / f"{name}_{count}"
                folder.mkdir()
                write(folder, count)
                url = f"sqlite:///{root / f'{name}_{count}.db'}"
                command = [str(BIN / "dbledger"), "--dir", str(folder), "--database-url", url, "-q", "up"]
                env = {"DBLEDGER_LAYOUT": name}
                subprocess.run(command, check=True, capture_output=True, env={**_environ(), **env})
                subprocess.run(command, check=True, capture_output=True, env={**_environ(), **env})  # warm
                commands[name] = command
            samples: dict[str, list[float]] = {name: [] for name in LAYOUTS}
            for _ in range(args.repeat):
                for name, command in commands.items():
                    started = time.perf_counter()
                    subprocess.run(
                        command, check=True, capture_output=True, env={**_environ(), "DBLEDGER_LAYOUT": name}
                    )
                    samples[name].append((time.perf_counter() - started) * 1000)
            for name, taken in samples.items():
                spread = f"{min(taken):.0f}-{max(taken):.0f}"
                print(f"| {count} | {name} | {statistics.median(taken):.0f} | {spread} |")


def _environ() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("DBLEDGER_")}


if __name__ == "__main__":
    main()
