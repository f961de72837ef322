"""The peers and floors of benchmarks/peers.py: installing them, their versions, their command lines.

The peers live in an environment of their own under ``.cache/bench/`` (a virtualenv for the
Python tools, an npm prefix for the Node ones), installed on the first run and reused after.
Each tool gets its N migrations written in its own format in its own folder; a ``Tool`` turns a
database (``Target``) and that folder into the command line of each scenario.
"""

from __future__ import annotations

import glob
import importlib.metadata
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple
from urllib.parse import parse_qsl, urlsplit

from dbledger.testing import find_postgres_bin

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / ".cache" / "bench"
VENV = BENCH / "venv"
NODE = BENCH / "node"
# Every Python tool and floor runs from this one virtualenv, dbledger installed there as a user
# installs it (not editable), so none pays for another's environment.
BIN = VENV / "bin"

# distribution -> (what pip installs, the module that must import); SQLAlchemy comes with alembic
PIP = {
    "yoyo-migrations": ("yoyo-migrations", "yoyo"),
    "alembic": ("alembic", "alembic"),
    "SQLAlchemy": ("", "sqlalchemy"),
    "psycopg2-binary": ("psycopg2-binary", "psycopg2"),
    "psycopg": ("psycopg[binary]", "psycopg"),
}
NPM = ("dbmate", "node-pg-migrate", "pg")

PROBE = """
import importlib, importlib.metadata, json, sys
found = {}
for dist, module in json.loads(sys.argv[1]).items():
    try:
        importlib.import_module(module)
        found[dist] = importlib.metadata.version(dist)
    except Exception:
        pass
print(json.dumps(found))
"""


def create_table(i: int) -> str:
    return f"CREATE TABLE t_{i} (id bigint primary key, name text);"


class Target(NamedTuple):
    """One database: ``url`` is postgresql://... (libpq) or sqlite:///ABSOLUTE-PATH."""

    backend: str  # "postgres" or "sqlite"
    url: str
    path: Path | None = None  # the SQLite file

    def file(self) -> str:
        assert self.path is not None
        return str(self.path)


class Command(NamedTuple):
    argv: list[str]
    env: dict[str, str] | None = None  # added to this process's environment


Build = Callable[[Target, Path], Command]


@dataclass(frozen=True)
class Tool:
    key: str  # matched by --tools, part of each database's name
    name: str
    backends: tuple[str, ...]
    write: Callable[[Path, int], None]
    apply: Build | None = None
    noop: Build | None = None
    status: Build | None = None
    verify: Build | None = None
    floor: bool = False


@dataclass
class Environment:
    python: Path | None = None  # the peers' virtualenv
    pip: dict[str, str] = field(default_factory=dict)  # importable there: distribution -> version
    npm: dict[str, str] = field(default_factory=dict)
    node: str | None = None
    dbmate: Path | None = None
    psql: Path | None = None
    sqlite3: str | None = None
    problems: list[str] = field(default_factory=list)


def _run(argv: list[str], timeout: float = 900) -> str | None:
    """Run a setup command; None when it worked, else the last lines it printed."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    if done.returncode == 0:
        return None
    lines = (done.stderr.strip() or done.stdout.strip() or f"exit {done.returncode}").splitlines()
    return " | ".join(lines[-3:])


def _output(argv: list[str]) -> str | None:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None


def prepare(log: Callable[[str], None] = print) -> Environment:
    """Install what is missing under .cache/bench/ and find the clients; never raises for a peer."""
    BENCH.mkdir(parents=True, exist_ok=True)
    ignore = BENCH / ".gitignore"
    if not ignore.exists():
        ignore.write_text("# written by benchmarks/peers.py: nothing here belongs in git\n*\n")
    env = Environment()
    _prepare_python(env, log)
    _prepare_node(env, log)
    bindir = _postgres_bin()
    env.psql = bindir / "psql" if bindir and (bindir / "psql").exists() else None
    env.sqlite3 = shutil.which("sqlite3")
    return env


def _postgres_bin() -> Path | None:
    # The server's own bin folder: /usr/bin/psql may be a Perl wrapper that costs ~30 ms per start.
    try:
        return find_postgres_bin()
    except RuntimeError:
        found = shutil.which("psql")
        return Path(found).parent if found else None


def _probe(python: Path) -> dict[str, str]:
    modules = {dist: module for dist, (_, module) in PIP.items()}
    text = _output([str(python), "-c", PROBE, json.dumps(modules)])
    found: dict[str, str] = json.loads(text) if text else {}
    return found


def _prepare_python(env: Environment, log: Callable[[str], None]) -> None:
    python = VENV / "bin" / "python"
    if not python.exists():
        log(f"creating {VENV.relative_to(ROOT)}")
        failed = _run([sys.executable, "-m", "venv", str(VENV)])
        if failed:
            env.problems.append(f"no virtualenv for the Python peers: {failed}")
            return
    found = _probe(python)
    missing = [req for dist, (req, _) in PIP.items() if req and dist not in found]
    for requirement in missing:
        log(f"pip install {requirement} into {VENV.relative_to(ROOT)}")
        pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", requirement]
        failed = _run(pip)
        if failed:
            env.problems.append(f"pip install {requirement} failed: {failed}")
    # This checkout's dbledger, as a user installs it: with its dependencies once, then the
    # current code at every run.
    for install in (["-q", str(ROOT)], ["-q", "--no-deps", "--force-reinstall", str(ROOT)]):
        failed = _run([str(python), "-m", "pip", "install", "--disable-pip-version-check", *install])
        if failed:
            env.problems.append(f"pip install of this checkout failed: {failed}")
            break
    env.python = python
    env.pip = _probe(python) if missing else found


def _prepare_node(env: Environment, log: Callable[[str], None]) -> None:
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        env.problems.append("node or npm is not on PATH: no dbmate, no node-pg-migrate")
        return
    env.node = _output([node, "--version"])
    modules = NODE / "node_modules"
    if any(not (modules / name / "package.json").exists() for name in NPM):
        log(f"npm install --prefix {NODE.relative_to(ROOT)} {' '.join(NPM)}")
        failed = _run([npm, "install", "--prefix", str(NODE), "--no-audit", "--no-fund", *NPM])
        if failed:
            env.problems.append(f"npm install failed: {failed}")
    for name in NPM:
        manifest = modules / name / "package.json"
        if manifest.exists():
            env.npm[name] = str(json.loads(manifest.read_text())["version"])
    # The Go binary itself: the npm package's bin is a Node script that spawns it (+ a Node start).
    for candidate in sorted(glob.glob(str(modules / "@dbmate" / "*" / "bin" / "dbmate"))):
        if _output([candidate, "--version"]):
            env.dbmate = Path(candidate)
            break


def versions(env: Environment) -> dict[str, str]:
    """What ran, by name, for the report."""
    found = {"Python": sys.version.split()[0]}
    dbledger = _output([str(BIN / "dbledger"), "--version"])
    found["dbledger"] = (dbledger or "?").split()[-1] + _checkout()
    found["psycopg (dbledger's)"] = importlib.metadata.version("psycopg")
    found.update({f"{dist} (peers' venv)": version for dist, version in sorted(env.pip.items())})
    if env.dbmate:
        found["dbmate"] = (_output([str(env.dbmate), "--version"]) or "?").split()[-1]
    found.update({f"{name} (npm)": version for name, version in env.npm.items() if name != "dbmate"})
    if env.node:
        found["Node.js"] = env.node.lstrip("v")
    if env.psql:
        found["psql"] = (_output([str(env.psql), "--version"]) or "?").split()[2]
    if env.sqlite3:
        found["sqlite3 CLI"] = (_output([env.sqlite3, "--version"]) or "?").split()[0]
    found["SQLite (Python's sqlite3)"] = sqlite3.sqlite_version
    return found


def _checkout() -> str:
    commit = _output(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    if not commit:
        return ""
    changed = _output(["git", "-C", str(ROOT), "status", "--porcelain", "--", "src"])
    return f" (commit {commit}{', with uncommitted changes in src/' if changed else ''})"


# --- migration folders, one format per tool --------------------------------------------------


def write_plain(folder: Path, count: int) -> None:
    """dbledger's and yoyo's format: one plain .sql file per migration, ``00001_t1.sql``."""
    width = max(5, len(str(count)))
    for i in range(1, count + 1):
        (folder / f"{i:0{width}d}_t{i}.sql").write_text(create_table(i) + "\n")


def write_dbmate(folder: Path, count: int) -> None:
    # dbmate 2 refuses a file without a down section, even an empty one.
    for i in range(1, count + 1):
        text = f"-- migrate:up\n{create_table(i)}\n\n-- migrate:down\n"
        (folder / f"{i:014d}_t{i}.sql").write_text(text)


def write_node_pg_migrate(folder: Path, count: int) -> None:
    for i in range(1, count + 1):
        text = f"-- Up Migration\n{create_table(i)}\n\n-- Down Migration\n"
        (folder / f"{i:014d}_t{i}.sql").write_text(text)


def write_floor(folder: Path, count: int) -> None:
    """One script, one transaction per migration, for psql and sqlite3."""
    body = "".join(f"BEGIN;\n{create_table(i)}\nCOMMIT;\n" for i in range(1, count + 1))
    (folder / "floor.sql").write_text(body)


ALEMBIC_INI = "[alembic]\nscript_location = %(here)s\n"

# As `alembic init` writes it, minus logging and offline mode, plus transaction_per_migration:
# alembic otherwise applies a whole upgrade in one transaction, and every other tool here commits
# each migration on its own.
ALEMBIC_ENV = """from alembic import context
from sqlalchemy import create_engine, pool

url = context.get_x_argument(as_dictionary=True)["url"]
engine = create_engine(url, poolclass=pool.NullPool)
with engine.connect() as connection:
    context.configure(connection=connection, transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()
"""

ALEMBIC_REVISION = '''"""t_{i}"""

from alembic import op

revision = "{revision}"
down_revision = {down}
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("{statement}")


def downgrade() -> None:
    op.execute("DROP TABLE t_{i}")
'''


def write_alembic(folder: Path, count: int, python: Path) -> None:
    """An alembic environment with ``count`` revisions chained by down_revision, byte-compiled as
    pip compiles an installed package (each later run imports every revision module)."""
    width = max(5, len(str(count)))
    (folder / "alembic.ini").write_text(ALEMBIC_INI)
    (folder / "env.py").write_text(ALEMBIC_ENV)
    versions = folder / "versions"
    versions.mkdir()
    for i in range(1, count + 1):
        down = f'"r{i - 1:0{width}d}"' if i > 1 else "None"
        text = ALEMBIC_REVISION.format(
            i=i, revision=f"r{i:0{width}d}", down=down, statement=create_table(i).rstrip(";")
        )
        (versions / f"r{i:0{width}d}_t{i}.py").write_text(text)
    subprocess.run([str(python), "-m", "compileall", "-q", str(folder)], check=True)


# --- URLs as each tool spells them -----------------------------------------------------------


def _scheme(url: str, scheme: str) -> str:
    return scheme + "://" + url.split("://", 1)[1]


def _dbmate_url(target: Target) -> str:
    if target.backend == "sqlite":
        return "sqlite:" + target.file()
    # dbmate's driver (lib/pq) defaults to sslmode=require, which a server without TLS refuses.
    if any(key == "sslmode" for key, _ in parse_qsl(urlsplit(target.url).query)):
        return target.url
    return target.url + ("&" if "?" in target.url else "?") + "sslmode=disable"


# --- the tools -------------------------------------------------------------------------------


def _dbledger(command: str) -> Build:
    def build(target: Target, folder: Path) -> Command:
        return Command([str(BIN / "dbledger"), "--database-url", target.url, "--dir", str(folder), command])

    return build


def _yoyo(command: str, scheme: str) -> Build:
    def build(target: Target, folder: Path) -> Command:
        url = _scheme(target.url, scheme) if target.backend == "postgres" else target.url
        batch = ["--batch"] if command == "apply" else []
        return Command(
            [str(VENV / "bin" / "yoyo"), command, *batch, "--no-config-file", "--database", url, str(folder)]
        )

    return build


def _alembic(*command: str) -> Build:
    def build(target: Target, folder: Path) -> Command:
        url = _scheme(target.url, "postgresql+psycopg2") if target.backend == "postgres" else target.url
        ini = str(folder / "alembic.ini")
        return Command([str(VENV / "bin" / "alembic"), "-c", ini, "-x", f"url={url}", *command])

    return build


def _dbmate(dbmate: Path, command: str) -> Build:
    def build(target: Target, folder: Path) -> Command:
        url = _dbmate_url(target)
        argv = [str(dbmate), "--url", url, "--migrations-dir", str(folder), "--no-dump-schema"]
        return Command([*argv, command])

    return build


def _node_pg_migrate() -> Build:
    # --no-single-transaction: one transaction per migration, as the other tools; its default is
    # one transaction for the whole run.
    def build(target: Target, folder: Path) -> Command:
        argv = [str(NODE / "node_modules" / ".bin" / "node-pg-migrate"), "up", "-m", str(folder)]
        return Command([*argv, "--no-single-transaction"], {"DATABASE_URL": target.url})

    return build


def _python(python: Path | str, code: str, *args: str) -> Command:
    return Command([str(python), "-c", code, *args])


PSYCOPG_FLOOR = "import sys, psycopg; psycopg.connect(sys.argv[1]).execute('SELECT 1')"
PSYCOPG2_FLOOR = "import sys, psycopg2; psycopg2.connect(sys.argv[1]).cursor().execute('SELECT 1')"
SQLITE_FLOOR = "import sqlite3, sys; sqlite3.connect(sys.argv[1]).execute('select 1')"
SQLITE_SCRIPT = (
    "import sqlite3, sys; "
    "sqlite3.connect(sys.argv[1], isolation_level=None).executescript(open(sys.argv[2]).read())"
)


def _floors(env: Environment) -> list[tuple[Tool, str | None]]:
    psql, bench_python, cli = env.psql, env.python, env.sqlite3
    here = str(BIN / "python")
    return [
        (
            Tool(
                "psql",
                "psql (floor)",
                ("postgres",),
                write_floor,
                apply=lambda t, f: Command(
                    [str(psql), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", str(f / "floor.sql"), t.url]
                ),
                noop=lambda t, f: Command([str(psql), "-X", "-q", "-c", "SELECT 1", t.url]),
                floor=True,
            ),
            None if psql else "no psql client found",
        ),
        (
            Tool(
                "psycopg",
                "python + psycopg (floor)",
                ("postgres",),
                lambda f, n: None,
                noop=lambda t, f: _python(here, PSYCOPG_FLOOR, t.url),
                floor=True,
            ),
            None,
        ),
        (
            Tool(
                "psycopg2",
                "python + psycopg2 (floor)",
                ("postgres",),
                lambda f, n: None,
                noop=lambda t, f: _python(str(bench_python), PSYCOPG2_FLOOR, t.url),
                floor=True,
            ),
            None if bench_python and "psycopg2-binary" in env.pip else "psycopg2 is not installed",
        ),
        (
            Tool(
                "sqlite3_cli",
                "sqlite3 CLI (floor)",
                ("sqlite",),
                write_floor,
                apply=lambda t, f: Command([str(cli), "-bail", t.file(), f".read {f / 'floor.sql'}"]),
                noop=lambda t, f: Command([str(cli), t.file(), "select 1"]),
                floor=True,
            ),
            None if cli else "no sqlite3 command-line shell on PATH",
        ),
        (
            Tool(
                "sqlite3_python",
                "python + sqlite3 (floor)",
                ("sqlite",),
                write_floor,
                apply=lambda t, f: _python(here, SQLITE_SCRIPT, t.file(), str(f / "floor.sql")),
                noop=lambda t, f: _python(here, SQLITE_FLOOR, t.file()),
                floor=True,
            ),
            None,
        ),
    ]


def _yoyo_tools(env: Environment) -> list[tuple[Tool, str | None]]:
    has = env.pip
    yoyo = None if "yoyo-migrations" in has else "yoyo-migrations is not installed"
    tools = []
    for key, name, scheme, driver in (
        ("yoyo_psycopg2", "yoyo (psycopg2)", "postgresql", "psycopg2-binary"),
        ("yoyo_psycopg3", "yoyo (psycopg 3)", "postgresql+psycopg", "psycopg"),
    ):
        tool = Tool(
            key,
            name,
            ("postgres",),
            write_plain,
            apply=_yoyo("apply", scheme),
            noop=_yoyo("apply", scheme),
            status=_yoyo("list", scheme),
        )
        tools.append((tool, yoyo or (None if driver in has else f"{driver} is not installed")))
    sqlite = Tool(
        "yoyo",
        "yoyo",
        ("sqlite",),
        write_plain,
        apply=_yoyo("apply", "sqlite"),
        noop=_yoyo("apply", "sqlite"),
        status=_yoyo("list", "sqlite"),
    )
    return [*tools, (sqlite, yoyo)]


def _alembic_tools(env: Environment) -> list[tuple[Tool, str | None]]:
    python = env.python
    missing = None if python is not None and "alembic" in env.pip else "alembic is not installed"

    def write(folder: Path, count: int) -> None:
        assert python is not None
        write_alembic(folder, count, python)

    def alembic(backend: str) -> Tool:
        up = _alembic("upgrade", "head")
        return Tool("alembic", "alembic", (backend,), write, apply=up, noop=up, status=_alembic("current"))

    driver = None if "psycopg2-binary" in env.pip else "psycopg2 is not installed"
    return [(alembic("postgres"), missing or driver), (alembic("sqlite"), missing)]


def _node_tools(env: Environment) -> list[tuple[Tool, str | None]]:
    found: list[tuple[Tool, str | None]] = []
    dbmate = env.dbmate
    if dbmate:
        tool = Tool(
            "dbmate",
            "dbmate",
            ("postgres", "sqlite"),
            write_dbmate,
            apply=_dbmate(dbmate, "up"),
            noop=_dbmate(dbmate, "up"),
            status=_dbmate(dbmate, "status"),
        )
        found.append((tool, None))
    else:
        placeholder = Tool("dbmate", "dbmate", ("postgres", "sqlite"), write_dbmate)
        found.append((placeholder, "dbmate's binary is not installed"))
    ready = "node-pg-migrate" in env.npm and "pg" in env.npm and env.node
    up = _node_pg_migrate()
    tool = Tool("node_pg_migrate", "node-pg-migrate", ("postgres",), write_node_pg_migrate, apply=up, noop=up)
    found.append((tool, None if ready else "node-pg-migrate or pg is not installed"))
    return found


def tools(env: Environment) -> list[tuple[Tool, str | None]]:
    """Every tool and floor, with the reason it cannot run (None: it can)."""
    dbledger = Tool(
        "dbledger",
        "dbledger",
        ("postgres", "sqlite"),
        write_plain,
        apply=_dbledger("up"),
        noop=_dbledger("up"),
        status=_dbledger("status"),
        verify=_dbledger("verify"),
    )
    missing = None if os.access(BIN / "dbledger", os.X_OK) else f"no {BIN / 'dbledger'}"
    return [
        (dbledger, missing),
        *_yoyo_tools(env),
        *_alembic_tools(env),
        *_node_tools(env),
        *_floors(env),
    ]
