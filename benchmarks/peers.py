"""Whole processes side by side: dbledger against peer migration tools and against floors.

Run: .venv/bin/python benchmarks/peers.py [--sizes 1 100 1000 10000] [--runs 5]
     [--backends postgres sqlite] [--tools dbledger yoyo alembic dbmate node-pg-migrate]
     [--database-url URL] [--write docs/benchmarks.md]

For each backend (PostgreSQL, SQLite) and each size N, every tool gets N trivial migrations, each
``CREATE TABLE t_<i> (id bigint primary key, name text);``, in its own format and folder, and is
timed as a whole process (runtime start, imports, connection, work, exit; output to /dev/null):
  * apply: its ``up`` on a fresh, empty database (created before the clock starts), after which
    the t_<i> tables are counted (a wrong count is an error, printed as one);
  * no-op: the same ``up`` again with everything applied;
  * status: its listing command (``status``, ``yoyo list``, ``alembic current``, ``dbmate
    status``; node-pg-migrate has none); dbledger also ``verify``;
  * dbledger only: ``dbledger.migrate()`` in-process with nothing to do, connection included,
    median of --calls calls in one ``python -c``.
Each figure is the median (and min-max) of --runs runs after --warmups warm-up runs; applying
takes --apply-runs runs after a warm-up up to --large migrations and --large-apply-runs runs
without a warm-up above (meant to keep a run of the default sizes to about 25 minutes on 2 cores;
--budget caps the repeated runs of a slow scenario, --timeout any one process). Peak memory is the
process's maximum resident set size.

The peers: yoyo-migrations over psycopg2 and over psycopg 3, alembic (psycopg2), dbmate's Go
binary, node-pg-migrate (PostgreSQL only), installed on the first run into .cache/bench/ and
reused after; one that cannot be installed is skipped with the reason. The floors: psql (and the
sqlite3 shell) running the same SQL as one script with one transaction per migration, and
``python -c`` connecting and running SELECT 1 with psycopg, psycopg2 and sqlite3.

PostgreSQL is the server at --database-url (default: DBLEDGER_TEST_POSTGRES_URL), on which
databases named bench_<tool>_<n>_<k> are created and dropped, or else a throwaway local cluster
(dbledger.testing.temporary_postgres). SQLite is a file per tool, size and run in a temporary
folder. With --write FILE the report replaces the lines between ``<!-- peers:begin -->`` and
``<!-- peers:end -->`` in FILE (appended with both markers when they are absent).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import re
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit, urlunsplit

import peer_tools
import psycopg
from peer_tools import Build, Command, Environment, Target, Tool, prepare, tools, versions
from psycopg import sql

from dbledger.redaction import redact
from dbledger.testing import temporary_postgres

BEGIN, END = "<!-- peers:begin -->", "<!-- peers:end -->"
BACKENDS = {"postgres": "PostgreSQL", "sqlite": "SQLite"}
TOOL_KEYS = ("dbledger", "yoyo", "yoyo-psycopg2", "yoyo-psycopg3", "alembic", "dbmate", "node-pg-migrate")
TABLES_PG = "SELECT count(*) FROM pg_catalog.pg_tables WHERE tablename ~ '^t_[0-9]+$'"
TABLES_SQLITE = "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name GLOB 't_[0-9]*'"
HEADERS = ("tool", "apply (s)", "no-op (ms)", "status (ms)", "verify (ms)", "peak MB apply / no-op")
RATIO_HEADERS = ("dbledger ÷", "apply", "no-op", "status", "peak MB")
REPEATED = ("noop", "status", "verify")
RATIOS = ("apply", "noop", "status")

INPROCESS = """
import statistics, sys, time
import dbledger
import DRIVER

url, folder, calls = sys.argv[1], sys.argv[2], int(sys.argv[3])
dbledger.migrate(url, folder)
samples = []
for _ in range(calls):
    start = time.perf_counter()
    dbledger.migrate(url, folder)
    samples.append((time.perf_counter() - start) * 1000)
print(statistics.median(samples), min(samples), max(samples))
"""


def log(text: str) -> None:
    print(redact(text), flush=True)  # a peer's error may echo its database URL


def _gnu_time() -> str | None:
    """GNU time, which reports the peak RSS of the command it starts, or None."""
    path = "/usr/bin/time"
    try:
        done = subprocess.run([path, "-f", "%M", "true"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return path if done.stderr.strip().isdigit() else None


GNU_TIME = _gnu_time()


# --- one process, timed ----------------------------------------------------------------------


class Failed(Exception):
    """A command that did not do its job; the message says how."""


class TimedOut(Failed):
    pass


@dataclass
class Sample:
    seconds: float
    rss_kib: int | None


def _kill(pids: list[int], killed: threading.Event) -> None:
    killed.set()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)  # the session this benchmark started for the command


def _peak_kib(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[-1])
    except (OSError, ValueError, IndexError):
        return None


def run_process(command: Command, cwd: Path, timeout: float) -> Sample:
    """Start ``command``, wait for it with os.wait4, and return its wall time and peak RSS.

    On Linux a child's ru_maxrss starts from its parent's high-water mark (fork copies it, exec
    keeps it), so a command started from this process would never report less than this
    process's own peak. When GNU time is there, it starts the command instead, from its own
    2 MB, and reports the command's peak; its start adds about a millisecond to the wall time
    (measured and reported as the launcher's cost)."""
    argv, rss_file = command.argv, cwd / ".peak-rss"
    rss_file.unlink(missing_ok=True)
    if GNU_TIME:
        argv = [GNU_TIME, "-f", "%M", "-o", str(rss_file), *argv]
    env = {**os.environ, **command.env} if command.env else None
    pids: list[int] = []
    killed = threading.Event()
    timer = threading.Timer(timeout, _kill, (pids, killed))
    timer.start()
    try:
        start = time.perf_counter()
        try:
            child = subprocess.Popen(
                argv,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError as exc:
            raise Failed(f"could not start {argv[0]}: {exc}") from None
        pids.append(child.pid)
        try:
            _, status, usage = os.wait4(child.pid, 0)
        except BaseException:
            _kill(pids, threading.Event())
            os.wait4(child.pid, 0)
            raise
        seconds = time.perf_counter() - start
    finally:
        timer.cancel()
    child.returncode = os.waitstatus_to_exitcode(status)
    if killed.is_set():
        raise TimedOut(f"timed out after {timeout:.0f} s")
    if child.returncode != 0:
        raise Failed(f"exit status {child.returncode}")
    return Sample(seconds, _peak_kib(rss_file) if GNU_TIME else usage.ru_maxrss)


def diagnose(command: Command, cwd: Path) -> str:
    """What a failed command says when run again with its output captured."""
    env = {**os.environ, **command.env} if command.env else None
    try:
        done = subprocess.run(
            command.argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
            timeout=120, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return "run again to see its output, it timed out"
    lines = (done.stderr.strip() + "\n" + done.stdout.strip()).strip().splitlines()
    return " | ".join(line.strip() for line in lines[-6:]) or f"exit {done.returncode}, no output"


def launcher_ms() -> float | None:
    """What starting a command through GNU time adds, in ms: /bin/true both ways."""
    if not GNU_TIME:
        return None
    direct, wrapped = [], []
    for _ in range(15):
        start = time.perf_counter()
        subprocess.run(["true"], check=True)
        direct.append(time.perf_counter() - start)
        with tempfile.TemporaryDirectory() as folder:
            wrapped.append(run_process(Command(["true"]), Path(folder), 60).seconds)
    return (statistics.median(wrapped) - statistics.median(direct)) * 1000


# --- measurements ----------------------------------------------------------------------------


@dataclass
class Cell:
    seconds: list[float] = field(default_factory=list)
    rss_kib: list[int] = field(default_factory=list)
    reduced: bool = False  # fewer runs than asked for: --budget

    def add(self, sample: Sample) -> None:
        self.seconds.append(sample.seconds)
        if sample.rss_kib is not None:
            self.rss_kib.append(sample.rss_kib)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    def peak_mb(self) -> float | None:
        return max(self.rss_kib) / 1024 if self.rss_kib else None


@dataclass
class Row:
    tool: Tool
    cells: dict[str, Cell] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    inprocess: tuple[float, float, float] | None = None  # ms: median, min, max


@dataclass
class Result:
    backend: str
    count: int
    rows: list[Row]


@dataclass(frozen=True)
class Plan:
    work: Path
    runs: int
    warmups: int
    apply_runs: int
    large_apply_runs: int
    large: int
    timeout: float
    budget: float
    calls: int

    def apply_counts(self, count: int) -> tuple[int, int]:
        """(warm-up runs, measured runs) for applying ``count`` migrations."""
        if count <= self.large:
            return self.warmups, self.apply_runs
        return 0, self.large_apply_runs

    def run(self, command: Command) -> Sample:
        try:
            return run_process(command, self.work, self.timeout)
        except TimedOut:
            raise
        except Failed as exc:
            raise Failed(f"{exc}; run again, it said: {diagnose(command, self.work)}") from None


class Databases(Protocol):
    backend: str

    def fresh(self, name: str) -> Target: ...
    def count(self, target: Target) -> int: ...
    def drop(self, target: Target) -> None: ...
    def close(self) -> None: ...


def db_name(tool: Tool, count: int, run: int) -> str:
    return f"bench_{tool.key}_{count}_{run}"


class PostgresDatabases:
    """Databases named bench_* on one server, created and dropped over an admin connection."""

    backend = "postgres"

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.admin = psycopg.connect(admin_url, autocommit=True)
        self.created: set[str] = set()

    def url(self, name: str) -> str:
        return urlunsplit(urlsplit(self.admin_url)._replace(path="/" + name))

    def settings(self) -> dict[str, str]:
        found = {}
        for name in ("server_version", "fsync", "synchronous_commit", "full_page_writes"):
            row = self.admin.execute(sql.SQL("SHOW {}").format(sql.Identifier(name))).fetchone()
            found[name] = str(row[0]) if row else "?"
        return found

    def fresh(self, name: str) -> Target:
        self._drop(name)
        self.admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        self.created.add(name)
        return Target("postgres", self.url(name))

    def count(self, target: Target) -> int:
        with psycopg.connect(target.url) as conn:
            row = conn.execute(TABLES_PG).fetchone()
        return int(row[0]) if row else 0

    def drop(self, target: Target) -> None:
        self._drop(urlsplit(target.url).path.lstrip("/"))

    def _drop(self, name: str) -> None:
        self.admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        self.created.discard(name)

    def close(self) -> None:
        try:
            for name in sorted(self.created):
                self._drop(name)
        finally:
            self.admin.close()


class SqliteDatabases:
    backend = "sqlite"

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def fresh(self, name: str) -> Target:
        path = self.folder / f"{name}.sqlite3"
        self._remove(path)
        return Target("sqlite", f"sqlite:///{path}", path)

    def count(self, target: Target) -> int:
        with closing(sqlite3.connect(target.file())) as conn:
            return int(conn.execute(TABLES_SQLITE).fetchone()[0])

    def drop(self, target: Target) -> None:
        if target.path is not None:
            self._remove(target.path)

    def _remove(self, path: Path) -> None:
        for suffix in ("", "-journal", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def where(backend: str, count: int, tool: Tool) -> str:
    return f"{BACKENDS[backend]}, {count} migration(s), {tool.name}"


def measure_apply(plan: Plan, dbs: Databases, tool: Tool, folder: Path, count: int, row: Row) -> Target:
    """Apply on a fresh database per run; the last one stays, applied, for the other scenarios."""
    assert tool.apply is not None
    warmups, runs = plan.apply_counts(count)
    cell = Cell()
    target: Target | None = None
    for run in range(warmups + runs):
        target = dbs.fresh(db_name(tool, count, run))
        try:
            sample = plan.run(tool.apply(target, folder))
            found = dbs.count(target)
            if found != count:
                raise Failed(f"WRONG COUNT: {found} tables t_<i> after applying {count} migrations")
        except BaseException:
            dbs.drop(target)
            raise
        if run >= warmups:
            cell.add(sample)
        if run < warmups + runs - 1:
            dbs.drop(target)
    assert target is not None
    row.cells["apply"] = cell
    log(f"  {where(dbs.backend, count, tool)}: apply {cell.median:.3f} s (median of {len(cell.seconds)})")
    return target


def measure_repeated(plan: Plan, command: Command) -> Cell:
    """Warm-up runs, then --runs runs, fewer when they would take longer than --budget."""
    warm = [plan.run(command) for _ in range(plan.warmups)]
    runs = plan.runs
    if warm and plan.budget > 0:
        longest = max(sample.seconds for sample in warm)
        runs = max(1, min(runs, int(plan.budget // longest) if longest > 0 else runs))
    cell = Cell(reduced=runs < plan.runs)
    for _ in range(runs):
        cell.add(plan.run(command))
    return cell


def in_process(plan: Plan, target: Target, folder: Path) -> tuple[float, float, float] | None:
    driver = "psycopg" if target.backend == "postgres" else "sqlite3"
    code = INPROCESS.replace("DRIVER", driver)
    argv = [str(peer_tools.BIN / "python"), "-c", code, target.url, str(folder), str(plan.calls)]
    try:
        done = subprocess.run(argv, cwd=plan.work, capture_output=True, text=True, timeout=plan.timeout)
    except subprocess.TimeoutExpired:
        log(f"ERROR: dbledger.migrate() in-process: timed out after {plan.timeout:.0f} s")
        return None
    try:
        median, low, high = (float(value) for value in done.stdout.split())
    except ValueError:
        log(f"ERROR: dbledger.migrate() in-process failed: {done.stderr.strip()[-500:]}")
        return None
    return median, low, high


def fail(row: Row, label: str, scenario: str, message: str) -> None:
    row.errors[scenario] = message
    log(f"ERROR: {label}: {scenario}: {message}")


def bench_tool(plan: Plan, dbs: Databases, tool: Tool, count: int) -> Row:
    folder = plan.work / dbs.backend / f"{tool.key}_{count}"
    folder.mkdir(parents=True)
    row, label = Row(tool), where(dbs.backend, count, tool)
    try:
        tool.write(folder, count)
    except (OSError, subprocess.CalledProcessError) as exc:
        fail(row, label, "apply", f"could not write its migrations: {exc}")
        return row
    try:
        if tool.apply is not None:
            target = measure_apply(plan, dbs, tool, folder, count, row)
        else:  # a floor that only connects: an empty database
            target = dbs.fresh(db_name(tool, count, 0))
    except Failed as exc:
        fail(row, label, "apply", str(exc))
        shutil.rmtree(folder, ignore_errors=True)
        return row
    try:
        for scenario in REPEATED:
            build: Build | None = getattr(tool, scenario)
            if build is None:
                continue
            try:
                row.cells[scenario] = cell = measure_repeated(plan, build(target, folder))
            except Failed as exc:
                fail(row, label, scenario, str(exc))
                continue
            log(f"  {label}: {scenario} {cell.median * 1000:.1f} ms (median of {len(cell.seconds)})")
        if tool.key == "dbledger":
            row.inprocess = in_process(plan, target, folder)
    finally:
        dbs.drop(target)
        shutil.rmtree(folder, ignore_errors=True)
    return row


def bench_backend(plan: Plan, dbs: Databases, chosen: Sequence[Tool], sizes: Sequence[int]) -> list[Result]:
    results = []
    for count in sizes:
        rows = [bench_tool(plan, dbs, tool, count) for tool in chosen if dbs.backend in tool.backends]
        result = Result(dbs.backend, count, rows)
        log("")
        log(console(result, plan.calls))
        log("")
        results.append(result)
    return results


# --- tables ----------------------------------------------------------------------------------


def number(value: float, unit: str) -> str:
    if unit == "s":
        return f"{value:.2f}" if value >= 10 else f"{value:.3f}"
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}"


def show(cell: Cell, unit: str) -> str:
    scale = 1 if unit == "s" else 1000
    values = [value * scale for value in cell.seconds]
    text = number(statistics.median(values), unit)
    if len(values) > 1:
        text += f" ({number(min(values), unit)}–{number(max(values), unit)})"
    return text + (f" n={len(values)}" if cell.reduced else "")


def scenario_text(row: Row, scenario: str) -> str:
    if scenario in row.cells:
        return show(row.cells[scenario], "s" if scenario == "apply" else "ms")
    if scenario in row.errors:
        return "error"
    if getattr(row.tool, scenario) is None:
        return "–"
    return "not run"


def peak_text(row: Row) -> str:
    peaks = [row.cells[name].peak_mb() if name in row.cells else None for name in ("apply", "noop")]
    return " / ".join("–" if peak is None else f"{peak:.1f}" for peak in peaks)


def table_rows(result: Result) -> list[list[str]]:
    return [
        [row.tool.name, *(scenario_text(row, name) for name in ("apply", *REPEATED)), peak_text(row)]
        for row in result.rows
    ]


def ratio(ours: Cell | None, theirs: Cell | None) -> str:
    if ours is None or theirs is None or theirs.median <= 0:
        return "–"
    return f"{ours.median / theirs.median:.2f}×"


def overall_peak(row: Row) -> float | None:
    peaks = [peak for cell in row.cells.values() if (peak := cell.peak_mb()) is not None]
    return max(peaks) if peaks else None


def ratio_rows(result: Result) -> list[list[str]]:
    ours = next((row for row in result.rows if row.tool.key == "dbledger"), None)
    if ours is None:
        return []
    lines = []
    for row in result.rows:
        if row is ours:
            continue
        line = [row.tool.name, *(ratio(ours.cells.get(name), row.cells.get(name)) for name in RATIOS)]
        mine, theirs = overall_peak(ours), overall_peak(row)
        line.append(f"{mine / theirs:.2f}×" if mine and theirs else "–")
        if any(value != "–" for value in line[1:]):
            lines.append(line)
    return lines


def aligned(headers: Sequence[str], rows: list[list[str]]) -> str:
    widths = [max(len(line[i]) for line in [list(headers), *rows]) for i in range(len(headers))]

    def render(line: Sequence[str]) -> str:
        first = line[0].ljust(widths[0])
        return "  ".join(
            [first, *(value.rjust(width) for value, width in zip(line[1:], widths[1:], strict=True))]
        )

    return "\n".join([render(headers), *(render(line) for line in rows)])


def markdown(headers: Sequence[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "| --- |" + " ---: |" * (len(headers) - 1)]
    lines += ["| " + " | ".join(line) + " |" for line in rows]
    return "\n".join(lines)


def inprocess_text(result: Result, calls: int) -> str | None:
    ours = next((row for row in result.rows if row.tool.key == "dbledger"), None)
    if ours is None or ours.inprocess is None:
        return None
    median, low, high = ours.inprocess
    return (
        f"dbledger.migrate() in-process, nothing pending, connection included: {median:.2f} ms "
        f"(median of {calls} calls, {low:.2f}–{high:.2f})"
    )


def title(result: Result) -> str:
    return f"{BACKENDS[result.backend]}, {result.count} migration{'s' if result.count != 1 else ''}"


def errors_of(result: Result) -> list[str]:
    return [
        redact(f"{row.tool.name}, {name}: {text}") for row in result.rows for name, text in row.errors.items()
    ]


def console(result: Result, calls: int) -> str:
    parts = [f"== {title(result)} ==", aligned(HEADERS, table_rows(result))]
    ratios = ratio_rows(result)
    if ratios:
        parts += ["", aligned(RATIO_HEADERS, ratios)]
    parts += [text for text in [inprocess_text(result, calls)] if text]
    parts += [f"ERROR: {text}" for text in errors_of(result)]
    return "\n".join(parts)


# --- the report ------------------------------------------------------------------------------


@dataclass
class Meta:
    started: datetime.datetime
    versions: dict[str, str]
    server: dict[str, str]
    skipped: list[str]
    launcher: float | None
    command: str
    elapsed: float = 0.0


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def machine_text(meta: Meta) -> str:
    server = meta.server
    pg = (
        f"PostgreSQL {server['server_version']} ({server['where']}; fsync={server['fsync']}, "
        f"synchronous_commit={server['synchronous_commit']}, full_page_writes={server['full_page_writes']})"
        if server
        else "PostgreSQL not measured"
    )
    tools = ", ".join(f"{name} {version}" for name, version in meta.versions.items())
    return (
        f"Measured {meta.started:%Y-%m-%d %H:%M} UTC in {meta.elapsed / 60:.1f} minutes on {os.cpu_count()} "
        f"cores ({cpu_model()}), Linux {os.uname().release}; {pg}. Versions: {tools}."
    )


def plural(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")


def wrap(text: str, indent: str = "") -> str:
    return textwrap.fill(
        text, width=100, subsequent_indent=indent, break_long_words=False, break_on_hyphens=False
    )


def method_text(plan: Plan, meta: Meta) -> list[str]:
    memory = (
        "GNU time, which starts each command from a small process of its own (a child of the "
        "benchmark would report the benchmark's own peak as its floor); starting it adds "
        f"{meta.launcher:.1f} ms to every figure"
        if meta.launcher is not None
        else "os.wait4 on the child (GNU time was missing: small tools show the benchmark's own peak)"
    )
    return [
        "- Every figure is a whole process started by the benchmark (runtime start, imports, "
        "connection, work, exit), its output sent to /dev/null, wall time around it; the tools run "
        "one after another, not interleaved, so other work on the machine shows in the spread.",
        f"- No-op, status and verify: median (min–max) of {plural(plan.runs, 'run')} after "
        f"{plural(plan.warmups, 'warm-up run')}, on the database the last apply left. No-op is the "
        "same `up` again with everything applied; status is `dbledger status`, `yoyo list`, "
        "`alembic current`, `dbmate status` (node-pg-migrate has none).",
        "- Apply: a fresh, empty database for every run, created before the clock starts, then "
        f"the tables counted; up to {plural(plan.large, 'migration')} the median of "
        f"{plural(plan.apply_runs, 'run')} after {plural(plan.warmups, 'warm-up run')}, above it "
        f"{plural(plan.large_apply_runs, 'run')} without a warm-up.",
        "- One transaction per migration in every tool: alembic's env.py sets "
        "`transaction_per_migration` and node-pg-migrate runs with `--no-single-transaction` (both "
        "otherwise put a whole run in one transaction). Durability as the server is configured "
        "(above). alembic's revision files are byte-compiled when written.",
        "- dbmate is its Go binary, not the npm package's Node wrapper around it; psql is the "
        "server's own binary, not a wrapper script.",
        "- Floors: the same SQL as one script of `BEGIN; CREATE TABLE ...; COMMIT;` blocks (psql, "
        "the sqlite3 shell, Python's sqlite3), and `python -c` connecting and running `SELECT 1` "
        "(psycopg with dbledger's Python, psycopg2 with the peers'). The in-process figure is "
        f"`dbledger.migrate()` with nothing pending, {plan.calls} calls in one process after one "
        "more, each with its own connection.",
        f"- Peak MB: the process's maximum resident set size (ru_maxrss), measured by {memory}.",
    ]


def section_text(plan: Plan, meta: Meta, results: list[Result]) -> str:
    parts = [
        "## Whole processes against peer tools",
        "",
        wrap(f"Written by `benchmarks/peers.py`, one run. {machine_text(meta)}"),
        "",
        *(wrap(item, "  ") for item in method_text(plan, meta)),
    ]
    for result in results:
        parts += ["", f"### {title(result)}", "", markdown(HEADERS, table_rows(result))]
        ratios = ratio_rows(result)
        if ratios:
            parts += ["", markdown(RATIO_HEADERS, ratios)]
        text = inprocess_text(result, plan.calls)
        if text:
            parts += ["", wrap(text.replace("dbledger.migrate()", "`dbledger.migrate()`", 1) + ".")]
        parts += ["", *(wrap(f"Error: {text}") for text in errors_of(result))] if errors_of(result) else []
    if meta.skipped:
        parts += ["", wrap("Skipped: " + "; ".join(meta.skipped) + ".")]
    parts += ["", "Reproduce:", "", "```bash", meta.command, "```", ""]
    return "\n".join(parts)


def write_section(path: Path, section: str) -> None:
    text = path.read_text() if path.exists() else ""
    lines = text.splitlines(keepends=True)
    begins = [i for i, line in enumerate(lines) if line.strip() == BEGIN]
    ends = [i for i, line in enumerate(lines) if line.strip() == END]
    if not begins and not ends:
        head = text.rstrip("\n") + "\n\n" if text.strip() else ""
        path.write_text(f"{head}{BEGIN}\n{section}{END}\n")
    elif len(begins) == 1 and len(ends) == 1 and begins[0] < ends[0]:
        path.write_text("".join(lines[: begins[0] + 1]) + section + "".join(lines[ends[0] :]))
    else:
        raise SystemExit(f"{path}: expected one line {BEGIN} before one line {END}; not written")


# --- the run ---------------------------------------------------------------------------------


def masked(url: str) -> str:
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


def reproduce(args: argparse.Namespace) -> str:
    words = [".venv/bin/python benchmarks/peers.py", "--sizes", *map(str, args.sizes)]
    words += ["--runs", str(args.runs), "--backends", *args.backends]
    if args.tools:
        words += ["--tools", *args.tools]
    for name, default in (("warmups", 1), ("apply_runs", 3), ("large_apply_runs", 1), ("large", 1000)):
        if getattr(args, name) != default:
            words += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    if args.database_url and "postgres" in args.backends:
        words += ["--database-url", masked(args.database_url)]
    if args.write:
        words += ["--write", str(args.write)]
    return " ".join(words)


def choose(
    entries: list[tuple[Tool, str | None]], wanted: list[str] | None, backends: list[str]
) -> tuple[list[Tool], list[str]]:
    """The tools to run (floors always), and a line for each one skipped, with why."""
    chosen, skipped = [], []
    keys = [name.replace("-", "_") for name in wanted or []]
    for tool, reason in entries:
        if keys and not tool.floor and not any(tool.key.startswith(key) for key in keys):
            continue
        on = [BACKENDS[backend] for backend in tool.backends if backend in backends]
        if not on:
            continue
        if reason:
            skipped.append(f"{tool.name} on {' and '.join(on)}: {reason}")
        else:
            chosen.append(tool)
    return chosen, skipped


@contextmanager
def postgres_server(url: str | None) -> Iterator[tuple[str, str]]:
    """(an admin URL, a description) of the server the databases go on."""
    if url:
        parts = urlsplit(url)
        yield url, f"the server at {parts.hostname}:{parts.port or 5432}"
        return
    log("starting a throwaway PostgreSQL cluster (dbledger.testing.temporary_postgres)")
    with temporary_postgres() as cluster:
        yield cluster.url(), "a throwaway local cluster started by dbledger.testing"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    add = parser.add_argument
    add("--sizes", type=int, nargs="+", default=[1, 100, 1000, 10000], help="migrations per folder")
    add("--runs", type=int, default=5, help="measured runs of no-op, status and verify")
    add("--warmups", type=int, default=1, help="warm-up runs before measuring (default 1)")
    add("--apply-runs", type=int, default=3, help="measured applies up to --large migrations")
    add("--large-apply-runs", type=int, default=1, help="measured applies above --large, no warm-up")
    add("--large", type=int, default=1000, help="above this size: --large-apply-runs applies, no warm-up")
    add("--backends", nargs="+", choices=list(BACKENDS), default=list(BACKENDS))
    add("--tools", nargs="+", choices=TOOL_KEYS, help="peers to run (prefixes; floors always run)")
    add("--database-url", default=os.environ.get("DBLEDGER_TEST_POSTGRES_URL"), help="a PostgreSQL server")
    add("--write", type=Path, help="replace the peers section of this Markdown file")
    add("--timeout", type=float, default=900, help="seconds one process may take (default 900)")
    add("--budget", type=float, default=120, help="seconds for the runs of one no-op/status scenario")
    add("--calls", type=int, default=30, help="dbledger.migrate() calls in-process")
    args = parser.parse_args(argv)
    if min(args.runs, args.apply_runs, args.large_apply_runs, args.calls, *args.sizes) < 1:
        parser.error("--sizes, --runs, --apply-runs, --large-apply-runs and --calls must be at least 1")
    return args


def setup() -> tuple[Environment, list[tuple[Tool, str | None]], dict[str, str]]:
    env = prepare(log)
    found = versions(env)
    log("versions: " + ", ".join(f"{name} {version}" for name, version in found.items()))
    for problem in env.problems:
        log(f"setup: {problem}")
    return env, tools(env), found


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = datetime.datetime.now(datetime.UTC)
    _, entries, found = setup()
    chosen, skipped = choose(entries, args.tools, args.backends)
    for line in skipped:
        log(f"skipped: {line}")
    work = Path(tempfile.mkdtemp(prefix="dbledger-peers-"))
    plan = Plan(
        work, args.runs, args.warmups, args.apply_runs, args.large_apply_runs, args.large,
        args.timeout, args.budget, args.calls,
    )  # fmt: skip
    meta = Meta(started, found, {}, skipped, launcher_ms(), reproduce(args))
    results: list[Result] = []
    try:
        for backend in args.backends:
            results += run_backend(backend, plan, chosen, args, meta)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    meta.elapsed = (datetime.datetime.now(datetime.UTC) - started).total_seconds()
    log(f"done in {meta.elapsed / 60:.1f} minutes")
    if args.write:
        write_section(args.write, section_text(plan, meta, results))
        log(f"wrote the section between {BEGIN} and {END} in {args.write}")
    return 1 if any(errors_of(result) for result in results) else 0


def run_backend(
    backend: str, plan: Plan, chosen: list[Tool], args: argparse.Namespace, meta: Meta
) -> list[Result]:
    if backend == "sqlite":
        dbs = SqliteDatabases(plan.work / "sqlite-databases")
        try:
            return bench_backend(plan, dbs, chosen, args.sizes)
        finally:
            dbs.close()
    with postgres_server(args.database_url) as (url, description):
        pg = PostgresDatabases(url)
        try:
            meta.server = {**pg.settings(), "where": description}
            log(f"PostgreSQL {meta.server['server_version']}, {description}, fsync={meta.server['fsync']}")
            return bench_backend(plan, pg, chosen, args.sizes)
        finally:
            pg.close()


if __name__ == "__main__":
    sys.exit(main())
