"""The README's shell commands, run as a new user would run them, so the README cannot go stale.

Every ```bash block of README.md is parsed (nothing here lists its lines) and each command runs in
README order, in one session: a scratch copy of the checkout's ``examples/`` as the working
directory, the virtualenv the suite runs in activated (its ``bin`` first on ``PATH``, so
``dbledger`` and ``python`` are its executables; ``.venv/bin/`` is rewritten to it), ``HOME`` a
scratch folder. A command must exit as expected (0, or what the README's own comment says with
``exit N``, or what ``EXPECTED_EXIT`` says) and no output may contain a traceback.

The session runs twice: once with dbledger's default database (the embedded SQLite file), once with
``DATABASE_URL`` exported to a fresh PostgreSQL database. In the second, only the blocks that use
the default database run again. The README's PostgreSQL URLs become fresh databases of the test
server (one per URL and block, with its password), so ``DATABASE_URL=postgresql://app:secret@...``
works as written.

``pip install`` commands are not run (they would change the suite's own virtualenv): what they
install is recorded instead, and every later command runs with only those distributions and what
they require importable. A package the README's commands need but never install fails the command
as it would in a fresh virtualenv (``No module named 'httpx'``).

The history actions the README lists are checked against the ones dbledger writes.
"""

from __future__ import annotations

import itertools
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from urllib.parse import quote, urlsplit

import psycopg
import pytest
from packaging.requirements import Requirement

from dbledger.backup import find_pg_dumps
from dbledger.contracts import Action
from dbledger.testing import Cluster, free_port
from tests.conftest import ExternalServer
from tests.helpers import server_version

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
VENV_BIN = Path(sys.prefix) / "bin"  # the suite's virtualenv (sys.prefix, not the resolved interpreter)
COMMAND_TIMEOUT = 300.0  # the incident replay starts a PostgreSQL cluster and the service
SERVER_START_TIMEOUT = 60.0
CURL_HTTP_ERROR = 22  # curl --fail-with-body: the server answered 400 or more

# Segments of a command (the parts of an ``a && b`` chain) that cannot run in a test, and why.
SKIPPED: list[tuple[re.Pattern[str], str]] = [
    (
        re.compile(r"python3? -m venv\b"),
        "creates the virtualenv: the test runs in the one the suite itself runs in",
    ),
    (
        re.compile(r"(\S*/)?pip install\b"),
        "would change the suite's own virtualenv: what it installs is recorded instead, and the "
        "commands after it may import only that",
    ),
    (
        re.compile(r"scripts/test\b"),
        "runs the whole test suite, this test included (its pip installs are recorded)",
    ),
    (
        re.compile(r"\$EDITOR\b"),
        "interactive: the test writes the migration into the file instead, as the user would",
    ),
    (
        re.compile(r"(\.|source)\s+\S*activate\b"),
        "the test puts the virtualenv's bin first on PATH for every command, which is what it does",
    ),
]

# Commands whose exit in this session is not 0 and that the README's comment does not mark with
# "exit N": (the command as the README writes it, without its comment) -> (exit code, why).
EXPECTED_EXIT: dict[str, tuple[int, str]] = {
    "dbledger baseline 2 --verify": (
        1,
        "its comment's case: by then down has rolled everything back and baseline 2 marked 001 and "
        "002 without running them, so the database lacks their tables and the baseline is refused",
    ),
}

# Commands that check the checkout itself run there, not in the scratch copy.
CHECKOUT_TOOLS = frozenset({"ruff", "mypy"})

# Distributions a fresh ``python3 -m venv`` holds before anything is installed.
VENV_SEED = frozenset({"pip", "setuptools"})

_scratch = itertools.count()  # names of scratch files and folders
# A version a command names: up --to 3, baseline 2.
_VERSION = re.compile(r"\s(?:--to[ =]|baseline\s+)(\d+)\b")
# Hosts meant not to answer (documentation addresses, reserved names): their URLs are kept.
_UNREACHABLE_HOST = re.compile(r"^(192\.0\.2|198\.51\.100|203\.0\.113)\.|\.(invalid|example|test)$")
# The HTTP status a curl -i command's comment promises ("# 204", "# 200, or 503 with reasons").
_STATUS_IN_COMMENT = re.compile(r"\b[1-5]\d\d\b")
_STATUS_LINE = re.compile(r"^HTTP/\S+ (\d{3})", re.MULTILINE)
_EXIT_IN_COMMENT = re.compile(r"\bexit (\d+)\b")
_POSTGRES_URL = re.compile(r"postgres(?:ql)?://[^\s'\"]+")
_ASSIGNMENTS = re.compile(r"^(?:[A-Za-z_]\w*=\S*\s+)*")  # VAR=value before a command
_PORT = re.compile(r"^(?:[A-Za-z_]\w*=\S*\s+)*?PORT=(\d+)\s")
# Commands that run pg_dump or pg_restore (backups, restores, schema-only rehearsals).
_NEEDS_PG_DUMP = re.compile(r"--backup\b|\bpg_restore\b|--copy pg_dump|--schema-only")
# A file a restore command reads, named as dbledger names its backups: database, UTC time, migration.
_BACKUP_FILE = re.compile(r"backups/(?P<database>\w+)-\d{8}T\d{6}Z-\w+\.(?P<kind>dump|sqlite3)\b")


# -- the README, parsed ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    """One command of a ```bash block: its text (continuation lines included), the README line it
    starts on, the code without its trailing comment, and that code split at top-level ``&&``."""

    block: int
    line: int
    text: str
    code: str
    comment: str
    segments: tuple[str, ...]

    @property
    def where(self) -> str:
        return f"README.md:{self.line}"


@dataclass
class _Scan:
    code: str
    comment: str
    segments: list[str]
    complete: bool


def scan_shell(text: str) -> _Scan:
    """Split shell text the way bash reads it, as far as the README needs: quotes, backslash
    escapes and continuations, ``#`` comments, and ``&&`` between commands."""
    code: list[str] = []
    comment: list[str] = []
    segments: list[str] = []
    current: list[str] = []
    quote_char: str | None = None
    in_comment = False
    i = 0
    while i < len(text):
        ch = text[i]
        if in_comment:
            if ch == "\n":
                in_comment = False
                code.append(ch)
                current.append(ch)
            else:
                comment.append(ch)
            i += 1
            continue
        if ch == "\\" and quote_char != "'":
            if i + 1 == len(text):  # a continuation: the command goes on on the next line
                return _Scan("".join(code), "".join(comment), [], complete=False)
            if text[i + 1] == "\n":  # bash drops a backslash-newline: the line goes on
                i += 2
                continue
            code.append(text[i : i + 2])
            current.append(text[i : i + 2])
            i += 2
            continue
        if quote_char is not None:
            if ch == quote_char:
                quote_char = None
        elif ch in "'\"":
            quote_char = ch
        elif ch == "#" and (i == 0 or text[i - 1] in " \t\n;|&("):
            in_comment = True
            i += 1
            continue
        elif text.startswith("&&", i):
            segments.append("".join(current).strip())
            current = []
            code.append("&&")
            i += 2
            continue
        code.append(ch)
        current.append(ch)
        i += 1
    segments.append("".join(current).strip())
    return _Scan("".join(code).strip(), "".join(comment).strip(), segments, complete=quote_char is None)


def bash_blocks(readme: str) -> list[list[tuple[int, str]]]:
    """The ```bash blocks, each as (README line number, line) pairs."""
    blocks: list[list[tuple[int, str]]] = []
    current: list[tuple[int, str]] | None = None
    for number, line in enumerate(readme.splitlines(), start=1):
        fence = line.strip()
        if current is None:
            if fence.startswith("```") and fence[3:].strip() in ("bash", "sh", "shell"):
                current = []
        elif fence.startswith("```"):
            blocks.append(current)
            current = None
        else:
            current.append((number, line))
    assert current is None, "README.md: a ```bash block is never closed"
    return blocks


def readme_commands(readme: str) -> list[list[Command]]:
    """Each block's commands; comment-only and blank lines dropped."""
    parsed: list[list[Command]] = []
    for index, block in enumerate(bash_blocks(readme)):
        commands: list[Command] = []
        pending: list[str] = []
        start = 0
        for number, line in block:
            if not pending:
                start = number
            pending.append(line)
            text = "\n".join(pending)
            scanned = scan_shell(text)
            if not scanned.complete:
                continue
            pending = []
            if scanned.code:
                segments = tuple(s for s in scanned.segments if s)
                commands.append(Command(index, start, text, scanned.code, scanned.comment, segments))
        assert not pending, f"README.md:{start}: a command is never finished (open quote or trailing \\)"
        parsed.append(commands)
    return parsed


# -- what the README's pip commands install -------------------------------------------------------


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


_PIP_OPTIONS_WITH_VALUE = frozenset(
    {
        "-r",
        "--requirement",
        "-c",
        "--constraint",
        "-i",
        "--index-url",
        "--extra-index-url",
        "-f",
        "--find-links",
    }
)


def pip_targets(segment: str) -> list[Requirement]:
    """The requirements a ``pip install`` segment names, local paths read from their pyproject."""
    words = shlex.split(segment)
    targets: list[Requirement] = []
    rest = iter(words[words.index("install") + 1 :])
    for word in rest:
        if word in _PIP_OPTIONS_WITH_VALUE:
            next(rest, None)
        if word.startswith("-"):
            continue
        path_part, _, extras = word.partition("[")
        if path_part.startswith((".", "/")):
            project = tomllib.loads((ROOT / path_part / "pyproject.toml").read_text(encoding="utf-8"))
            targets.append(
                Requirement(
                    f"{project['project']['name']}[{extras}" if extras else project["project"]["name"]
                )
            )
        else:
            targets.append(Requirement(word))
    return targets


def _local_projects() -> dict[str, dict[str, typing.Any]]:
    """The checkout's own projects by distribution name: their declared requirements are read
    from pyproject.toml, not from installed (possibly stale) metadata."""
    projects = {}
    for pyproject in (ROOT / "pyproject.toml", ROOT / "service" / "pyproject.toml"):
        project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
        projects[_normalise(project["name"])] = project
    return projects


def requirements_of(name: str, extras: set[str]) -> list[Requirement]:
    local = _local_projects().get(_normalise(name))
    if local is not None:
        declared = list(local.get("dependencies", []))
        for extra in extras:
            declared += local.get("optional-dependencies", {}).get(extra, [])
        return [Requirement(text) for text in declared]
    try:
        texts = metadata.requires(name) or []
    except metadata.PackageNotFoundError:
        return []
    found = []
    for text in texts:
        requirement = Requirement(text)
        marker = requirement.marker
        if marker is None or any(marker.evaluate({"extra": extra}) for extra in extras | {""}):
            found.append(requirement)
    return found


def closure(requirements: list[Requirement]) -> set[str]:
    """Every distribution that installing ``requirements`` brings in, normalised."""
    seen: set[str] = set()
    queue = [(r.name, set(r.extras)) for r in requirements]
    extras_seen: dict[str, set[str]] = {}
    while queue:
        name, extras = queue.pop()
        key = _normalise(name)
        if key in seen and extras <= extras_seen[key]:
            continue
        seen.add(key)
        extras_seen[key] = extras_seen.get(key, set()) | extras
        queue += [(r.name, set(r.extras)) for r in requirements_of(name, extras)]
    return seen


def blocked_modules(declared: set[str]) -> set[str]:
    """Top-level modules installed here that belong only to distributions not declared."""
    return {
        module
        for module, distributions in metadata.packages_distributions().items()
        if not {_normalise(d) for d in distributions} & declared
    }


SITECUSTOMIZE = '''\
"""Written by tests/test_readme.py: only what the README's pip commands install is importable."""
import sys

_BLOCKED = frozenset({blocked!r})


class _NotInstalledByTheReadme:
    @staticmethod
    def find_spec(name, path=None, target=None):
        if path is None and name in _BLOCKED:
            raise ModuleNotFoundError(
                f"No module named {{name!r}} (installed in the test's virtualenv, but none of the "
                "README's pip commands installs it)",
                name=name,
            )
        return None


sys.meta_path.insert(0, _NotInstalledByTheReadme)
'''


# -- the session ----------------------------------------------------------------------------------


def as_url(conninfo: str) -> str:
    """A PostgreSQL URL with its password, for a URL or key/value connection string."""
    if conninfo.startswith(("postgresql://", "postgres://")):
        return conninfo
    parts = psycopg.conninfo.conninfo_to_dict(conninfo)
    user = quote(str(parts.get("user", "postgres")), safe="")
    password = parts.get("password")
    auth = f"{user}:{quote(str(password), safe='')}" if password else user
    return f"postgresql://{auth}@{parts.get('host', '127.0.0.1')}:{parts.get('port', 5432)}/{parts['dbname']}"


@dataclass
class Outcome:
    command: Command
    segment: str
    ran: str = ""
    returncode: int | None = None
    output: str = ""
    skipped: str = ""


@dataclass
class Server:
    command: Command
    process: subprocess.Popen[bytes]
    log: Path


@dataclass
class Session:
    default_database: str  # "sqlite" or "postgresql"
    folder: Path
    new_database: Callable[[], str]
    env: dict[str, str] = field(default_factory=dict)
    declared: set[str] = field(default_factory=lambda: set(VENV_SEED))
    outcomes: list[Outcome] = field(default_factory=list)
    _pg_dump_missing: str | None = None
    failures: list[str] = field(default_factory=list)
    used_expectations: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.project = self.folder / "project"
        shutil.copytree(
            ROOT / "examples", self.project / "examples", ignore=shutil.ignore_patterns("*.sqlite3*")
        )
        (self.folder / "home").mkdir()
        self.site = self.folder / "site"
        self.site.mkdir()
        self._write_sitecustomize()
        dropped = ("DATABASE_URL", "DBLEDGER_DIR", "DBLEDGER_LEDGER_TABLE", "PORT", "HOST", "PYTHONPATH")
        self.env = {k: v for k, v in os.environ.items() if k not in dropped and not k.startswith("PG")}
        self.env.update(
            PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            VIRTUAL_ENV=str(VENV_BIN.parent),
            HOME=str(self.folder / "home"),
            PYTHONPATH=str(self.site),
        )
        if self.default_database == "postgresql":
            self.env["DATABASE_URL"] = as_url(self.new_database())

    def _write_sitecustomize(self) -> None:
        text = SITECUSTOMIZE.format(blocked=sorted(blocked_modules(self.declared)))
        (self.site / "sitecustomize.py").write_text(text, encoding="utf-8")

    def declare(self, segment: str) -> None:
        self.declared |= closure(pip_targets(segment))
        self._write_sitecustomize()

    def record_install(self, segment: str) -> None:
        """What a ``pip install`` segment, or a script of the checkout it runs, installs."""
        if re.match(r"(\S*/)?pip install\b", segment):
            self.declare(segment)
        elif segment.startswith("scripts/"):
            for line in (ROOT / shlex.split(segment)[0]).read_text(encoding="utf-8").splitlines():
                if re.search(r"pip install\b", line):
                    self.declare(line.strip())

    # -- one block -------------------------------------------------------------------------------

    def run_block(self, commands: list[Command]) -> None:
        urls: dict[tuple[str, str], str] = {}
        ports: dict[str, str] = {}
        servers: list[Server] = []
        try:
            for command in commands:
                for segment in command.segments:
                    if not self.run_segment(command, segment, urls, ports, servers):
                        break
        finally:
            for server in servers:
                self.stop(server)

    def run_segment(
        self,
        command: Command,
        segment: str,
        urls: dict[tuple[str, str], str],
        ports: dict[str, str],
        servers: list[Server],
    ) -> bool:
        """Run one segment; False when the rest of its ``&&`` chain must not run."""
        outcome = Outcome(command, segment)
        self.outcomes.append(outcome)
        reason = self.skip_reason(segment) or (_NEEDS_PG_DUMP.search(segment) and self.without_pg_dump())
        if reason:
            outcome.skipped = reason
            self.record_install(segment)
            if segment.startswith("$EDITOR"):
                self.write_migration(self.project / shlex.split(segment)[-1])
            return True
        ran = self.rewrite(segment, urls, ports)
        outcome.ran = ran
        self.prepare_versions(segment)
        self.prepare_backups(ran)
        port = _PORT.match(segment)
        if port:
            servers.append(self.start_server(command, ran, ports[port.group(1)]))
            return True
        before = set(self.project.rglob("*.sql"))
        done = subprocess.run(
            ["bash", "-o", "pipefail", "-c", ran],
            cwd=self.cwd_for(segment),
            env=self.env,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )
        outcome.returncode, outcome.output = done.returncode, done.stdout + done.stderr
        if re.search(r"(^|\s)dbledger\s.*\bnew\b", segment):
            for created in set(self.project.rglob("*.sql")) - before:
                self.write_migration(created)
        return self.check(outcome)

    def without_pg_dump(self) -> str:
        """Why the commands that need a pg_dump of the server's version cannot run here, or "":
        npm's server binaries of other versions come without one (docs/postgres-versions.md)."""
        if self._pg_dump_missing is None:
            major = server_version(self.new_database()) // 10000
            found = major in find_pg_dumps()
            self._pg_dump_missing = "" if found else f"no pg_dump of PostgreSQL {major} on this machine"
        return self._pg_dump_missing

    @staticmethod
    def skip_reason(segment: str) -> str:
        for pattern, reason in SKIPPED:
            if pattern.match(segment):
                return reason
        return ""

    def cwd_for(self, segment: str) -> Path:
        words = _ASSIGNMENTS.sub("", segment, count=1).split()
        program = Path(words[0]).name if words else ""
        return ROOT if program in CHECKOUT_TOOLS else self.project

    def rewrite(self, segment: str, urls: dict[tuple[str, str], str], ports: dict[str, str]) -> str:
        """The segment as the test runs it: the virtualenv's path for ``.venv/bin/``, the test's
        databases for the README's PostgreSQL URLs, free ports for the README's, and ``curl``
        failing on an HTTP error (it exits 0 on a 500 otherwise)."""
        ran = re.sub(r"(?<![\w/.])\.venv/bin/", f"{VENV_BIN}/", segment)

        def database(match: re.Match[str]) -> str:
            parts = urlsplit(match.group(0))
            if _UNREACHABLE_HOST.search(parts.hostname or ""):
                return match.group(0)  # an example of a server that does not answer: kept
            name = parts.path.lstrip("/")
            if name.endswith("_shadow") and self.kind_of(segment) == "sqlite":
                # A scratch database of the kind being compared: a SQLite file here.
                return f"sqlite:///{self.folder / f'shadow-{next(_scratch)}.sqlite3'}"
            key = (f"{parts.hostname}:{parts.port}", name)
            if key not in urls:
                urls[key] = as_url(self.new_database())
            return shlex.quote(urls[key])

        ran = _POSTGRES_URL.sub(database, ran)
        for readme_port in re.findall(r"(?:^|\s)PORT=(\d+)", segment):
            ports.setdefault(readme_port, str(free_port()))
        for readme_port, port in ports.items():
            ran = re.sub(rf"\bPORT={readme_port}\b", f"PORT={port}", ran)
            ran = re.sub(rf"\b(localhost|127\.0\.0\.1):{readme_port}\b", rf"\1:{port}", ran)
        return re.sub(r"(^|\s)curl\s", r"\1curl -sS --fail-with-body ", ran)

    def kind_of(self, segment: str) -> str:
        """The kind of database a segment works on: the one it names, else the default."""
        named = re.search(r"(?:--database-url[ =]|DATABASE_URL=)['\"]?(\w+):", segment)
        if named:
            return "sqlite" if named.group(1) == "sqlite" else "postgresql"
        return self.default_database

    # -- stand-ins for what a user does by hand --------------------------------------------------

    @staticmethod
    def write_migration(path: Path) -> None:
        """What the user writes in the editor: a table, and the down section that drops it."""
        name = path.stem.split("_", 1)[-1]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            f"-- migrate:up\nCREATE TABLE {name} (id INTEGER PRIMARY KEY, note TEXT);\n\n"
            f"-- migrate:down\nDROP TABLE {name};\n",
            encoding="utf-8",
        )

    def prepare_versions(self, segment: str) -> None:
        """A command naming a version (``up --to 3``, ``baseline 2``) is written for a project that
        has migrations up to it: write the ones missing (each a table and its down section)."""
        named = _VERSION.search(segment)
        if not named or not re.match(r"(\S*/)?dbledger\b", _ASSIGNMENTS.sub("", segment, count=1)):
            return
        directory = re.search(r"--dir[ =](\S+)", segment)
        folder = self.project / (directory.group(1) if directory else "migrations")
        folder.mkdir(parents=True, exist_ok=True)
        have = {int(m.group(1)) for path in folder.glob("*.sql") if (m := re.match(r"(\d+)_", path.name))}
        for version in range(1, int(named.group(1)) + 1):
            if version not in have:
                self.write_migration(folder / f"{version:03d}_example_{version}.sql")

    def prepare_backups(self, ran: str) -> None:
        """A restore command reads a backup file dbledger would have written, under a name that
        carries the time it was taken: take such a backup for real and give it that name."""
        for match in _BACKUP_FILE.finditer(ran):
            target = self.project / match.group(0)
            if target.exists():
                continue
            if match.group("kind") == "dump":
                urls = [u for u in shlex.split(ran) if u.startswith("postgresql://")]
                assert urls, f"a restore of {match.group(0)} that names no PostgreSQL database: {ran}"
                url = urls[0]
            else:
                url = f"sqlite:///{self.project / (match.group('database') + '.sqlite3')}"
            target.parent.mkdir(parents=True, exist_ok=True)
            take_backup(url, self.folder / f"backup-source-{next(_scratch)}", target)

    # -- servers ---------------------------------------------------------------------------------

    def start_server(self, command: Command, ran: str, port: str) -> Server:
        log = self.folder / f"server-{port}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                ["bash", "-c", ran],
                cwd=self.project,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        server = Server(command, process, log)
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while time.monotonic() < deadline and process.poll() is None:
            with socket.socket() as sock:
                sock.settimeout(0.2)
                if sock.connect_ex(("127.0.0.1", int(port))) == 0:
                    return server
            time.sleep(0.1)
        self.failures.append(
            f"{command.where}: {ran}\n  the server did not listen on port {port} "
            f"(exit {process.poll()}):\n{_tail(log.read_text(errors='replace'))}"
        )
        return server

    def stop(self, server: Server) -> None:
        exited_early = server.process.poll()
        if exited_early is None:
            os.killpg(server.process.pid, signal.SIGTERM)
            try:
                server.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(server.process.pid, signal.SIGKILL)
                server.process.wait()
        output = server.log.read_text(errors="replace")
        problems = []
        if exited_early is not None:
            problems.append(f"exited with {exited_early} before the block ended")
        if "Traceback" in output or "Exception in ASGI application" in output:
            problems.append("logged a traceback")
        if problems:
            self.failures.append(
                f"{server.command.where}: the server {', '.join(problems)}:\n{_tail(output)}"
            )

    # -- checks ----------------------------------------------------------------------------------

    def expected_exit(self, command: Command) -> int:
        found = _EXIT_IN_COMMENT.search(command.comment)
        if found:
            return int(found.group(1))
        if command.code in EXPECTED_EXIT:
            self.used_expectations.add(command.code)
            return EXPECTED_EXIT[command.code][0]
        return 0

    def check(self, outcome: Outcome) -> bool:
        expected = self.expected_exit(outcome.command)
        returncode = outcome.returncode
        problems = []
        statuses = _STATUS_LINE.findall(outcome.output)
        promised = set(_STATUS_IN_COMMENT.findall(outcome.command.comment))
        if statuses and promised:
            if statuses[-1] not in promised:
                problems.append(
                    f"HTTP {statuses[-1]}, the README's comment says {' or '.join(sorted(promised))}"
                )
            elif returncode == CURL_HTTP_ERROR:
                returncode = 0  # an error status the README promises (/health: "or 503")
        if returncode != expected:
            problems.append(f"exit {outcome.returncode}, expected {expected}")
        if "Traceback" in outcome.output:
            problems.append("a traceback in its output")
        if problems:
            self.failures.append(
                f"{outcome.command.where} ({self.default_database}): {outcome.segment}\n"
                f"  ran: {outcome.ran}\n  {'; '.join(problems)}:\n{_tail(outcome.output)}"
            )
        return returncode == 0


def _tail(text: str, size: int = 3000) -> str:
    return text if len(text) <= size else "..." + text[-size:]


def take_backup(url: str, folder: Path, target: Path) -> None:
    """A real ``dbledger up --backup`` of ``url`` (a table with a row, then a migration marked
    backup:true), renamed to ``target``."""
    migrations = folder / "migrations"
    migrations.mkdir(parents=True)
    (migrations / "001_restore_check.sql").write_text(
        "-- migrate:up\nCREATE TABLE restore_check (id INTEGER PRIMARY KEY);\n"
        "INSERT INTO restore_check VALUES (1);\n",
        encoding="utf-8",
    )
    (migrations / "002_drop_restore_check.sql").write_text(
        "-- migrate:up backup:true\nDROP TABLE restore_check;\n", encoding="utf-8"
    )
    backups = folder / "backups"
    done = subprocess.run(
        [
            str(VENV_BIN / "dbledger"),
            "--database-url",
            url,
            "--dir",
            str(migrations),
            "up",
            "--backup",
            str(backups),
        ],
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (made,) = backups.iterdir()
    shutil.move(made, target)


# -- the tests ------------------------------------------------------------------------------------


@pytest.fixture
def new_database(pg_server: Cluster | ExternalServer) -> Iterator[Callable[[], str]]:
    """Fresh, empty PostgreSQL databases on the test server, dropped at the end."""
    names: list[str] = []

    def create() -> str:
        name = f"readme{os.getpid()}_{len(names)}"
        names.append(name)
        return pg_server.create_database(name)

    yield create
    for name in names:
        pg_server.drop_database(name)


def uses_default_database(commands: list[Command]) -> bool:
    """Whether a block runs dbledger without naming a database (so the default one matters)."""
    for command in commands:
        for segment in command.segments:
            words = _ASSIGNMENTS.sub("", segment, count=1).split()
            names_one = "DATABASE_URL=" in segment or "--database-url" in segment
            if words and Path(words[0]).name == "dbledger" and not names_one:
                return True
    return False


@pytest.mark.slow
@pytest.mark.parametrize("default_database", ["sqlite", "postgresql"])
def test_every_readme_command_runs_as_written(
    default_database: str, new_database: Callable[[], str], tmp_path: Path
) -> None:
    blocks = readme_commands(README.read_text(encoding="utf-8"))
    assert sum(len(b) for b in blocks) > 10, "the README's ```bash blocks were not found"
    session = Session(default_database, tmp_path, new_database)
    for commands in blocks:
        if default_database == "postgresql" and not uses_default_database(commands):
            # It names its databases itself: the sqlite session ran it. What it installs counts.
            for command in commands:
                for segment in command.segments:
                    session.record_install(segment)
            continue
        session.run_block(commands)

    for o in session.outcomes:  # shown with -s, or -rA
        print(
            f"{o.command.where}: {o.segment!r} -> "
            + (f"skipped: {o.skipped}" if o.skipped else f"exit {o.returncode}")
        )
    assert not session.failures, "\n\n".join(session.failures)
    if default_database == "sqlite":
        stale = set(EXPECTED_EXIT) - session.used_expectations
        assert not stale, f"EXPECTED_EXIT names commands the README no longer has: {sorted(stale)}"


def test_the_readme_lists_every_history_action() -> None:
    readme = README.read_text(encoding="utf-8")
    listed = re.search(r"one row per action \(([^)]*)\)", readme)
    assert listed, "README.md no longer lists the history actions as 'one row per action (...)'"
    documented = set(re.findall(r"`(\w+)`", listed.group(1)))

    # The actions the history table can hold (LedgerEvent.action is typed with them), and the ones
    # the code writes, found as it writes them, in case one ever bypasses the type.
    typed = set(typing.get_args(Action))
    grepped: set[str] = set()
    for path in (ROOT / "src" / "dbledger").rglob("*.py"):
        source = path.read_text(encoding="utf-8")
        grepped |= set(re.findall(r"(?:LedgerEvent|\._event|\._row_state)\(\s*(?:\w+,\s*)?\"(\w+)\"", source))
    assert {"apply", "rollback", "create"} <= grepped, "the search no longer finds where actions are written"
    written = typed | grepped
    assert sorted(written - documented) == [], "history actions dbledger writes that README.md does not name"
    assert sorted(documented - written) == [], "history actions README.md names that dbledger never writes"


def test_the_shell_scanner_reads_the_readme_s_shapes() -> None:
    scanned = scan_shell('a \'x # y\' && b "q\\"#" # note # more')
    assert scanned.segments == ["a 'x # y'", 'b "q\\"#"']
    assert scanned.comment == "note # more"
    assert not scan_shell('curl -d \'{"a": 1,').complete
    assert not scan_shell("rm -f x && \\").complete
    (block,) = readme_commands(
        '```bash\n# heading\ncurl -X POST \\\n  -d \'{"a": 1,\n  "b": 2}\'  # 201\n```\n'
    )
    (command,) = block
    assert command.line == 3
    assert command.comment == "201"
    assert command.segments == ('curl -X POST   -d \'{"a": 1,\n  "b": 2}\'',)
    assert scan_shell("rm -f x && \\\n    cp y z").segments == ["rm -f x", "cp y z"]
