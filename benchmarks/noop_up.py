"""The cost every replica pays at every start: ``up`` when nothing is pending.

Run: .venv/bin/python benchmarks/noop_up.py [--migrations 10 100] [--repeat 15]

For each backend (SQLite file, PostgreSQL on a throwaway local cluster) and each folder size, the
folder is applied once, then timed as a no-op:
  * ``dbledger up`` as a whole process (interpreter start, imports, connect, read, hash, exit);
  * ``dbledger.migrate()`` in-process (what an application's startup hook pays);
  * peers on the same files and the same database, in the same run, when installed:
    ``yoyo apply --batch`` (yoyo-migrations reads plain .sql files too).
Reports the median and the spread (min-max) in milliseconds, and peak RSS of the process runs.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import dbledger
from dbledger.testing import temporary_postgres

BIN = Path(sys.executable).parent


def make_folder(root: Path, count: int) -> Path:
    folder = root / f"migrations_{count}"
    folder.mkdir()
    for i in range(1, count + 1):
        (folder / f"{i:04d}_table_{i}.sql").write_text(
            f"CREATE TABLE t{i} (id INTEGER PRIMARY KEY, name VARCHAR(100), created_at TIMESTAMP);\n"
            f"CREATE INDEX t{i}_name ON t{i} (name);\n"
        )
    return folder


def timed(action: Callable[[], object], repeat: int) -> list[float]:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        action()
        samples.append((time.perf_counter() - start) * 1000)
    return samples


def run(command: list[str], cwd: Path) -> Callable[[], object]:
    def go() -> object:
        return subprocess.run(command, cwd=cwd, check=True, capture_output=True)

    return go


def peak_rss_mb(command: list[str], cwd: Path) -> float | None:
    """Peak resident memory of one run of ``command``, measured by GNU time in a small process
    of its own (a child forked from this benchmark would count this process's memory too)."""
    if not shutil.which("time") and not Path("/usr/bin/time").exists():
        return None
    done = subprocess.run(
        ["/usr/bin/time", "-f", "%M", *command], cwd=cwd, check=True, capture_output=True, text=True
    )
    return int(done.stderr.strip().splitlines()[-1]) / 1024


def report(label: str, samples: list[float], rss: float | None = None) -> None:
    memory = f"  peak RSS {rss:5.1f} MB" if rss is not None else ""
    print(
        f"  {label:<34} median {statistics.median(samples):7.1f} ms"
        f"  (min {min(samples):6.1f}, max {max(samples):6.1f}){memory}"
    )


def bench(backend: str, url: str, yoyo_url: str, folder: Path, work: Path, repeat: int) -> None:
    print(f"{backend}, {len(list(folder.glob('*.sql')))} migrations, nothing pending:")
    dbledger.migrate(url, folder)
    cli = [str(BIN / "dbledger"), "--database-url", url, "--dir", str(folder), "up"]
    report("dbledger up (process)", timed(run(cli, work), repeat), peak_rss_mb(cli, work))
    report("dbledger.migrate() (in-process)", timed(lambda: dbledger.migrate(url, folder), repeat))
    yoyo = BIN / "yoyo"
    if yoyo.exists():
        command = [str(yoyo), "apply", "--batch", "--no-config-file", "--database", yoyo_url, str(folder)]
        subprocess.run(command, cwd=work, check=True, capture_output=True)  # its own ledger, applied once
        report("yoyo apply --batch (process)", timed(run(command, work), repeat), peak_rss_mb(command, work))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--migrations", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dbledger-bench-"))
    try:
        with temporary_postgres() as cluster:
            for count in args.migrations:
                folder = make_folder(work, count)
                sqlite_db = work / f"dbledger_{count}.sqlite3"
                yoyo_db = work / f"yoyo_{count}.sqlite3"
                bench("SQLite", f"sqlite:///{sqlite_db}", f"sqlite:///{yoyo_db}", folder, work, args.repeat)
                url = cluster.create_database(f"dbledger_{count}")
                peer = cluster.create_database(f"yoyo_{count}").replace(
                    "postgresql://", "postgresql+psycopg://"
                )
                bench("PostgreSQL", url, peer, folder, work, args.repeat)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
