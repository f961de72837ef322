"""The ``dbledger`` command: parse arguments, call the API, format the result. No logic here: each
subcommand is one row of ``COMMANDS``, a function that calls one API function and says what to
show; every exit code comes from the exception the API raised (``DbledgerError.exit_code``).

Human output goes to stdout, progress and messages to stderr; with ``--json`` stdout carries
exactly one JSON document (also on failure: ``{"ok": false, "error": ...}``).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, NamedTuple, NoReturn, cast

from dbledger import api
from dbledger.config import (
    ADOPT_SOURCES,
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_LOCK_TIMEOUT,
    LAYOUTS,
    LOCK_MODES,
    parse_duration,
)
from dbledger.contracts import Progress, Version
from dbledger.errors import (
    CheckFailed,
    ConfigError,
    DbledgerError,
    DriftFound,
    FleetFailed,
    Interrupted,
    LintFailed,
    Terminated,
    UsageError,
)
from dbledger.redaction import redact
from dbledger.terminal import Reporter, is_terminal, silence, wants_color, write_line

if TYPE_CHECKING:
    from dbledger.fleet import Fleet, FleetReport


class _Parser(argparse.ArgumentParser):
    """argparse that redacts its own error messages (they echo arguments, URLs included) and
    keeps the --json promise of one document on stdout for usage errors too."""

    answers_in_json = False  # set by build_parser: a usage error still prints one document
    tentative = False  # a parser of one command only: an error means "parse with them all"

    def error(self, message: str) -> NoReturn:
        if self.tentative:
            raise _Retry
        message = redact(message)
        if self.answers_in_json:
            error = {"type": "UsageError", "message": message, "exit_code": 2}
            print(json.dumps({"ok": False, "error": error}, indent=2))
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


def _common(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    """The options every command takes, before or after its name. On a subcommand they default
    to SUPPRESS, so a value given before the name is not overwritten by the default after it."""

    def given(value: Any) -> Any:
        return argparse.SUPPRESS if suppress else value

    default: Any = given(None)
    parser.add_argument(
        "--database-url",
        metavar="URL",
        default=default,
        help="database URL (default: $DATABASE_URL, pyproject.toml, sqlite:///dbledger.sqlite3)",
    )
    parser.add_argument(
        "--dir",
        metavar="PATH",
        default=default,
        help="migrations directory (default: $DBLEDGER_DIR, pyproject.toml, ./migrations)",
    )
    parser.add_argument(
        "--ledger-table",
        metavar="NAME",
        default=default,
        help="the ledger table, TABLE or SCHEMA.TABLE (default: $DBLEDGER_LEDGER_TABLE, pyproject.toml, "
        "schema_migrations)",
    )
    parser.add_argument(
        "--schema",
        metavar="NAME",
        default=default,
        help="target one schema of a PostgreSQL database (one tenant): search_path is set to it, "
        "'up' creates it when missing, and the ledger, lock, existing-schema check, drift, dump and "
        "backups cover it alone (default: $DBLEDGER_SCHEMA, pyproject.toml, the first schema of a "
        "search_path the URL's options or $PGOPTIONS set, else the whole database)",
    )
    parser.add_argument(
        "--connect-timeout",
        type=float,
        metavar="SECONDS",
        default=default,
        help=f"give up connecting to PostgreSQL after this long (default: connect_timeout in the URL, "
        f"$PGCONNECT_TIMEOUT, {DEFAULT_CONNECT_TIMEOUT})",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        default=given(False),
        help="print one JSON document on stdout",
    )
    parser.add_argument(
        "--color",
        choices=("auto", "always", "never"),
        default=given("auto"),
        help="style the output: auto (on a terminal, unless NO_COLOR is set), always, never",
    )
    loudness = parser.add_mutually_exclusive_group()
    loudness.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=given(False),
        help="print only errors (and what the command was asked to print)",
    )
    loudness.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=given(False),
        help="also print each statement as it runs",
    )


def _duration(what: str) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            return parse_duration(text, what)
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(exc.message) from None

    return parse


def _version(text: str) -> Version:
    """A VERSION argument: digits, or Flyway's dotted parts (1.1)."""
    try:
        return Version.of(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# The duration options of a run's lock waits: option, WaitPolicy field, its name in errors, help.
_WAIT_OPTIONS = (
    (
        "--statement-lock-timeout",
        "lock_timeout",
        "statement lock timeout",
        "how long each migration statement may wait for a table lock before the migration is "
        "rolled back and tried again, e.g. 500ms, 3s (default: 3s; 0: no limit; PostgreSQL)",
    ),
    (
        "--concurrently-lock-timeout",
        "concurrently_lock_timeout",
        "CONCURRENTLY lock timeout",
        "the same for CREATE/DROP INDEX CONCURRENTLY and other CONCURRENTLY statements "
        "(default: 0, no limit: their locks block no reads or writes)",
    ),
    (
        "--statement-timeout",
        "statement_timeout",
        "statement timeout",
        "how long each migration statement may run (default: the role's or the server's own)",
    ),
    (
        "--transaction-timeout",
        "transaction_timeout",
        "transaction timeout",
        "how long each migration's transaction may last, its waits included (PostgreSQL 17 or "
        "newer; default: the role's or the server's own)",
    ),
)


def _lock_timeout(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("locks and waits")
    group.add_argument(
        "--lock-timeout",
        type=float,
        metavar="SECONDS",
        default=DEFAULT_LOCK_TIMEOUT,
        help="how long to wait for dbledger's own migration lock, held by another run (default: 600)",
    )
    group.add_argument(
        "--lock-mode",
        choices=LOCK_MODES,
        default=None,
        help="how runs exclude one another: a session advisory lock, a lease row (for PgBouncer in "
        "transaction mode), or auto: the lease when the connection goes through a pooler (default: auto)",
    )
    group.add_argument(
        "--lease-ttl",
        type=_duration("lease time to live"),
        metavar="DURATION",
        default=None,
        help="with the lease lock: how long a run's lease lasts without its heartbeat, after which "
        "another run may take over from a run that died (default: 30s)",
    )
    for option, _, what, text in _WAIT_OPTIONS:
        group.add_argument(option, type=_duration(what), metavar="DURATION", default=None, help=text)
    group.add_argument(
        "--lock-retries",
        type=int,
        metavar="N",
        default=None,
        help="how many times a migration that gave up on a lock is tried again, after growing "
        "delays (default: 5)",
    )


def _fleet_options(parser: argparse.ArgumentParser) -> None:
    """--all and its options: the command on every target of a fleet (up, status, verify, drift)."""
    group = parser.add_argument_group("many targets (--all)")
    group.add_argument(
        "--all",
        action="store_true",
        help="run on every target: each a database URL, or a schema of the --database-url database; "
        "from --targets-file, --targets-query or targets in [tool.dbledger]; then a summary per "
        "target; exit 1 if any failed. 'up' claims each target through its own migration lock, "
        "without waiting (--lock-timeout does not apply): a target another runner holds is skipped "
        "as claimed, tried once more at the end, and is not a failure",
    )
    source = group.add_mutually_exclusive_group()
    source.add_argument(
        "--targets-file",
        metavar="FILE",
        help="with --all: the targets, one database URL or schema name a line ('#' comments)",
    )
    source.add_argument(
        "--targets-query",
        metavar="SQL",
        help="with --all: a query on the --database-url database returning one column, a database "
        "URL or a schema name a row (run read-only)",
    )
    group.add_argument(
        "--jobs",
        type=int,
        metavar="N",
        help="with --all: how many targets at a time, each on its own connection (default: 4)",
    )
    group.add_argument(
        "--continue-on-error",
        action="store_true",
        help="with --all: go on after a target failed (default: start no new target after the first "
        "failure; the running ones finish, the rest are reported as not started)",
    )


# Two or three examples at the end of each command's --help.
EXAMPLES = {
    "up": [
        "dbledger up --dry-run",
        "DATABASE_URL=postgresql://app@db/app dbledger up --backup backups/",
        "dbledger up --all --targets-file tenants.txt --jobs 8 --continue-on-error",
    ],
    "down": ["dbledger down", "dbledger down --steps 2 --dry-run", "dbledger down --to 3"],
    "redo": ["dbledger redo", "dbledger --dir db/migrations redo"],
    "drift": ["dbledger drift", "dbledger drift --replay", "dbledger drift --json"],
    "dump": ["dbledger dump", "dbledger dump schema.sql"],
    "status": ["dbledger status", "dbledger status --json", "dbledger status --all --json"],
    "verify": ["dbledger verify", "dbledger verify --strict", "dbledger verify --all --strict"],
    "wait": ["dbledger wait", "dbledger wait --timeout 10min  # in a replica; a Job runs 'dbledger up'"],
    "new": ["dbledger new add_users_email", 'dbledger new "Add users email"  # becomes add_users_email'],
    "init": ["dbledger init", "dbledger init --dir db/migrations --layout golang-migrate"],
    "repair": [
        "dbledger repair",
        "dbledger repair --accept 004_fix_audit_trigger  # its statements changed, on purpose",
        "dbledger repair --forget-missing",
    ],
    "baseline": ["dbledger baseline 3", "dbledger baseline 3 --verify"],
    "adopt": [
        "dbledger adopt --from flyway --dry-run",
        "dbledger adopt --from dbmate --ledger-table dbledger_migrations",
        "dbledger adopt --from alembic --revision ae1027a6acf=003_add_orders",
    ],
    "lint": [
        "dbledger lint  # every file; with a PostgreSQL database configured, the pending ones",
        "dbledger lint migrations/004_add_index.sql --json",
        "dbledger lint --no-database  # every file, without connecting",
    ],
    "rehearse": [
        "dbledger rehearse",
        "dbledger rehearse --rows 1000000 --keep  # every table filled to 10^6 rows; the copy kept",
        "dbledger rehearse --schema-only --rows platform_connections=1000000 --rows organizations=1000",
    ],
    "check": [
        "dbledger check --queries queries/  # DATABASE_URL: a server where it may create a database",
        'dbledger check --shadow-url postgresql://ci@db/empty --against "$PRODUCTION_URL" --json',
        "dbledger --database-url sqlite:///check.db check --no-lint --report check.json",
    ],
    "completion": [
        "dbledger completion bash > ~/.local/share/bash-completion/completions/dbledger",
        'eval "$(dbledger completion zsh)"   # in ~/.zshrc',
    ],
}


class _Retry(Exception):
    """The arguments did not parse with one command's parser: parse them with every command's."""


class _Unbuilt:
    """The parser of a command the arguments do not name: each call on it does nothing."""

    def __getattr__(self, name: str) -> Callable[..., _Unbuilt]:
        return lambda *args, **kwargs: self


class _Commands:
    """The subcommands, of which only ``only`` is built when it is given: building all sixteen
    costs ~10 ms of every start, a tenth of a SQLite no-op."""

    def __init__(self, real: Any, only: str | None) -> None:
        self.real, self.only = real, only

    def add_parser(self, name: str, **options: Any) -> argparse.ArgumentParser:
        if self.only not in (None, name):
            return cast(argparse.ArgumentParser, _Unbuilt())
        built: argparse.ArgumentParser = self.real.add_parser(name, **options)
        return built


def _named_command(words: Sequence[str]) -> str | None:
    """The command the arguments name, taken as the first word that is one; None when help or
    the version is asked for first (every command must be listed). A word that was an option's
    value makes the parse fail, and then every command is built (``_Retry``)."""
    for word in words:
        if word in ("-h", "--help", "--version"):
            return None
        if word in COMMANDS:
            return word
    return None


def _command(commands: Any, name: str, text: str, *, lock: bool = False) -> argparse.ArgumentParser:
    epilog = "examples:\n" + "\n".join(f"  {line}" for line in EXAMPLES[name])
    sub: argparse.ArgumentParser = commands.add_parser(
        name,
        help=text,
        description=text,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    _common(sub, suppress=True)
    if lock:
        _lock_timeout(sub)
    return sub


def build_parser(*, json_requested: bool = False, only: str | None = None) -> argparse.ArgumentParser:
    """The command line's parser. ``json_requested``: the arguments hold --json, so even a usage
    error answers with a JSON document (options are never abbreviated, so the word is exact).
    ``only``: build that command alone, and raise _Retry instead of any usage error."""

    class Parser(_Parser):
        answers_in_json = json_requested
        tentative = only is not None

    parser = Parser(
        prog="dbledger",
        description="Apply SQL migrations exactly once, with a ledger, checksums and a lock.",
        allow_abbrev=False,
    )
    _common(parser, suppress=False)
    parser.add_argument("--version", action="version", version=f"dbledger {api_version()}")
    commands = _Commands(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"), only)

    up = _command(commands, "up", "verify, then apply pending migrations in order", lock=True)
    up.add_argument("--to", type=_version, metavar="VERSION", help="stop after this version")
    up.add_argument(
        "--allow-out-of-order",
        action="store_true",
        help="apply pending files that sort before the newest applied one",
    )
    up.add_argument(
        "--allow-missing", action="store_true", help="go on although applied migrations have no file any more"
    )
    up.add_argument(
        "--allow-existing-schema",
        action="store_true",
        help="run on a database that has tables but no ledger yet",
    )
    up.add_argument(
        "--dry-run",
        action="store_true",
        help="print what would run, with locks and estimates; change nothing",
    )
    up.add_argument(
        "--backup",
        metavar="DIR",
        help="back up the database into DIR before the first risky migration (backup:true or destructive)",
    )
    up.add_argument(
        "--atomic",
        action="store_true",
        help="apply all pending migrations in one transaction: a failure undoes the whole deploy",
    )
    up.add_argument(
        "--strict",
        action="store_true",
        help="refuse to apply anything when a pending migration has a lint error (PostgreSQL; "
        "without it, each lint finding is a warning)",
    )
    _fleet_options(up)

    down = _command(commands, "down", "roll back applied migrations with their down sections", lock=True)
    scope = down.add_mutually_exclusive_group()
    scope.add_argument("--steps", type=int, metavar="N", help="how many to roll back (default: 1)")
    scope.add_argument(
        "--to", type=_version, metavar="VERSION", help="the version to end at (0: roll back all)"
    )
    down.add_argument("--dry-run", action="store_true", help="print what would run; change nothing")

    drift = _command(
        commands,
        "drift",
        "compare the live schema with what the applied migrations produce (exit 1 on drift)",
    )
    drift.add_argument(
        "--shadow-url",
        metavar="URL",
        help="replay on this empty database (left empty) instead of a temporary one; implies --replay",
    )
    drift.add_argument(
        "--replay",
        action="store_true",
        help="replay the applied migrations on a scratch database instead of using the recorded schema",
    )
    _fleet_options(drift)

    dump = _command(commands, "dump", "print the live schema as normalised SQL (or write it to FILE)")
    dump.add_argument("file", nargs="?", metavar="FILE", help="write here instead of stdout")

    _command(commands, "redo", "roll back the newest migration and apply it again", lock=True)
    status = _command(commands, "status", "applied / pending / failed / modified / missing migrations")
    _fleet_options(status)
    verify = _command(
        commands, "verify", "check checksums, order, missing files and the history chain; change nothing"
    )
    verify.add_argument("--strict", action="store_true", help="also fail when a migration is pending")
    _fleet_options(verify)

    wait = _command(
        commands,
        "wait",
        "wait until every migration in the folder is applied (by another run); change nothing",
    )
    wait.add_argument(
        "--timeout",
        type=_duration("wait timeout"),
        metavar="DURATION",
        default=300.0,
        help="give up after this long, e.g. 90s, 10min (default: 300s); exit 1",
    )

    new = _command(commands, "new", "create the next migration, in the folder's layout")
    new.add_argument("name", help='what the change does, e.g. add_users_email or "Add users email"')

    init = _command(
        commands, "init", "start a project: the migrations folder and [tool.dbledger] in pyproject.toml"
    )
    init.add_argument("--layout", choices=LAYOUTS, help="the layout its files take (default: dbledger's own)")

    repair = _command(
        commands, "repair", "accept modified checksums and renames, clear failed and dirty records", lock=True
    )
    repair.add_argument(
        "--forget-missing",
        action="store_true",
        help="also drop the records of applied migrations whose files are gone",
    )
    repair.add_argument(
        "--accept",
        action="append",
        default=[],
        metavar="NAME",
        help="accept this applied migration's semantic change (its statements differ from what "
        "ran); a cosmetic change (white space, comments, keyword case) needs no --accept. Repeatable",
    )

    baseline = _command(
        commands, "baseline", "mark migrations up to VERSION as applied without running them", lock=True
    )
    baseline.add_argument("version", type=_version, metavar="VERSION")
    baseline.add_argument(
        "--shadow-url", metavar="URL", help="with --verify: replay on this empty database (left empty)"
    )
    baseline.add_argument(
        "--verify",
        action="store_true",
        help="first check that the database is what the files up to VERSION produce",
    )

    adopt = _command(
        commands,
        "adopt",
        "write dbledger's ledger from another tool's history; nothing else in the database changes",
        lock=True,
    )
    adopt.add_argument(
        "--from", dest="tool", required=True, choices=ADOPT_SOURCES, help="the tool whose history to read"
    )
    adopt.add_argument(
        "--table", metavar="NAME", help="where that tool keeps its history, when not its default"
    )
    adopt.add_argument(
        "--revision",
        action="append",
        default=[],
        metavar="REV=NAME",
        help="alembic: the migration that holds this revision of alembic_version. Repeatable",
    )
    adopt.add_argument(
        "--accept-checksums",
        action="store_true",
        help="adopt files changed since the other tool applied them, as they are now",
    )
    adopt.add_argument("--dry-run", action="store_true", help="print what would be written; write nothing")

    lint = _command(
        commands,
        "lint",
        "report dangerous operations in migrations, one finding a line (exit 1 on an error)",
    )
    lint.add_argument(
        "files",
        nargs="*",
        metavar="FILES",
        help="migration files to lint (default: the folder's; against a PostgreSQL database, its "
        "pending ones)",
    )
    lint.add_argument(
        "--no-database",
        action="store_true",
        help="do not connect even when a PostgreSQL database is configured: every table the files "
        "do not create counts as existing",
    )
    for option, _, what, text in _WAIT_OPTIONS[:2]:
        lint.add_argument(
            option, type=_duration(what), metavar="DURATION", default=None, help=f"as 'up' will run: {text}"
        )

    rehearse = _command(
        commands,
        "rehearse",
        "run the pending migrations on a scratch copy of the database: real time, locks and rewrites "
        "of each, next to the dry run's estimate; the database itself is only read",
        lock=True,
    )
    rehearse.add_argument("--to", type=_version, metavar="VERSION", help="stop after this version")
    rehearse.add_argument(
        "--rows",
        type=_row_count,
        action="append",
        default=[],
        metavar="N|TABLE=N",
        help="fill every table (N) or one table (TABLE=N, repeatable; wins over N) of the copy to N "
        "rows with synthetic rows before the migrations run",
    )
    rehearse.add_argument(
        "--schema-only",
        action="store_true",
        help="copy the schema without the rows (dbledger's ledger keeps its own), with pg_dump; "
        "with --rows, a production-sized table without production data",
    )
    rehearse.add_argument(
        "--copy",
        choices=("auto", "template", "pg_dump"),
        default="auto",
        help="how to copy: CREATE DATABASE ... TEMPLATE (needs no other session on the database), "
        "pg_dump | pg_restore, or auto: the template copy, pg_dump when it is refused (default)",
    )
    rehearse.add_argument(
        "--keep", action="store_true", help="keep the scratch database afterwards and print its URL"
    )

    check = _command(
        commands,
        "check",
        "for CI: apply every migration from empty on a scratch database, round-trip each down section, "
        "lint, check the folder and the application's queries (exit 1 on any error)",
    )
    check.add_argument(
        "--queries",
        action="append",
        default=[],
        metavar="PATH",
        help="the application's queries: a .sql file ('-- params:' lines give sample values), a "
        "pg_stat_statements export (.csv, .json), or a folder of them; each is tried after every "
        "migration. Repeatable",
    )
    check.add_argument(
        "--shadow-url",
        metavar="URL",
        help="check on this empty database (left empty) instead of a temporary one on the server of "
        "--database-url",
    )
    check.add_argument(
        "--against",
        metavar="URL",
        help="also verify this real database's ledger against the files and list what it has pending "
        "(read-only)",
    )
    check.add_argument("--no-lint", action="store_true", help="leave out lint")
    check.add_argument("--report", metavar="FILE", help="also write the JSON report to FILE")

    completion = _command(commands, "completion", "print a shell completion script")
    completion.add_argument("shell", choices=("bash", "zsh"))
    return parser


def api_version() -> str:
    from dbledger import __version__

    return __version__


def _err(text: str) -> None:
    write_line(text, sys.stderr)


class Shown(NamedTuple):
    """What a command has to show: its ``--json`` document, the text for stdout (human mode),
    and lines for people (stdout, or stderr with ``--json``)."""

    document: dict[str, Any]
    text: str | None = None
    lines: Sequence[str] = ()
    render: Callable[[], None] | None = None  # rich output, human mode only


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "database_url": args.database_url,
        "directory": args.dir,
        "ledger_table": args.ledger_table,
        "schema": args.schema,
        "connect_timeout": args.connect_timeout,
    }


def _locking(args: argparse.Namespace) -> dict[str, Any]:
    """The lock and wait options of a command that writes; a wait option left out keeps the
    configuration's value."""
    given = {
        field: value
        for option, field, _, _ in _WAIT_OPTIONS
        if (value := getattr(args, option.removeprefix("--").replace("-", "_"))) is not None
    }
    if args.lock_retries is not None:
        given["retries"] = args.lock_retries
    return {
        "lock_timeout": args.lock_timeout,
        "waits": given or None,
        "lock_mode": args.lock_mode,
        "lease_ttl": args.lease_ttl,
    }


def _up(args: argparse.Namespace, progress: Progress) -> Shown:
    options: dict[str, Any] = {
        "to": args.to,
        "allow_out_of_order": args.allow_out_of_order,
        "allow_missing": args.allow_missing,
        "allow_existing_schema": args.allow_existing_schema,
        "atomic": args.atomic,
    }
    if args.dry_run:
        waits = _locking(args)["waits"]
        return _dry_run(api.plan_migrate(**_settings(args), **options, waits=waits, progress=progress))
    report = api.migrate(
        **_settings(args),
        **options,
        backup_dir=args.backup,
        **_locking(args),
        strict=args.strict,
        progress=progress,
    )
    if report.applied:
        total = sum(a.execution_time_ms for a in report.applied)
        line = f"applied {len(report.applied)} migration(s) in {total} ms"
    else:
        scope = f" up to version {args.to}" if args.to is not None else ""
        line = f"nothing to do{scope}: every migration{scope} is applied"
    return Shown(report.to_dict(), lines=[line])


def _dry_run(run: Any) -> Shown:
    from dbledger.dryrun import render

    return Shown(run.to_dict(), text=render(run))


def _down(args: argparse.Namespace, progress: Progress) -> Shown:
    if args.dry_run:
        waits = _locking(args)["waits"]
        return _dry_run(
            api.plan_down(**_settings(args), steps=args.steps, to=args.to, waits=waits, progress=progress)
        )
    undone = api.down(**_settings(args), steps=args.steps, to=args.to, **_locking(args), progress=progress)
    total = sum(r.execution_time_ms for r in undone)
    line = f"rolled back {len(undone)} migration(s) in {total} ms" if undone else "nothing to roll back"
    return Shown({"rolled_back": [r._asdict() for r in undone]}, lines=[line])


def _redo(args: argparse.Namespace, progress: Progress) -> Shown:
    rolled, reapplied = api.redo(**_settings(args), **_locking(args), progress=progress)
    if rolled is None:
        return Shown({"rolled_back": [], "applied": []}, lines=["nothing to redo: no migration is applied"])
    document = {"rolled_back": [rolled._asdict()], "applied": [a._asdict() for a in reapplied]}
    return Shown(document, lines=[f"redid {rolled.name}"])


def _drift(args: argparse.Namespace, progress: Progress) -> Shown:
    found = api.drift(**_settings(args), replay=args.replay, shadow_url=args.shadow_url, progress=progress)
    return Shown(found.to_dict(), lines=[f"no drift: the live schema is the one {found.expected_from}"])


def _dump(args: argparse.Namespace, progress: Progress) -> Shown:
    text = api.dump(
        args.database_url,
        ledger_table=args.ledger_table,
        schema=args.schema,
        connect_timeout=args.connect_timeout,
        to=args.file,
        progress=progress,
    )
    if not args.file:
        return Shown({"sql": text}, text=text.removesuffix("\n"))
    return Shown({"path": args.file}, lines=[f"wrote {args.file}"])


def _status(args: argparse.Namespace, progress: Progress) -> Shown:
    from dbledger.output import print_status

    result = api.status(**_settings(args), progress=progress)
    terminal = is_terminal(sys.stdout)
    color = wants_color(args.color, sys.stdout)
    return Shown(result.to_dict(), render=lambda: print_status(result, terminal=terminal, color=color))


def _wait(args: argparse.Namespace, progress: Progress) -> Shown:
    found = api.wait_until_migrated(**_settings(args), timeout=args.timeout, progress=progress)
    return Shown(found.to_dict(), lines=[f"ready: every migration is applied (version {found.version})"])


def _verify(args: argparse.Namespace, progress: Progress) -> Shown:
    result = api.verify(**_settings(args), strict=args.strict, progress=progress)
    pending = len(result.plan.pending)
    line = f"ok: {len(result.plan.applied)} applied migration(s) match their files" + (
        f"; {pending} pending" if pending else ""
    )
    if result.history and result.history.get("head"):
        line += f"; history of {result.history['rows']} rows intact, head {result.history['head'][:16]}…"
    return Shown(result.to_dict(), lines=[line])


def _repair(args: argparse.Namespace, progress: Progress) -> Shown:
    repaired = api.repair(
        **_settings(args),
        forget_missing=args.forget_missing,
        accept=args.accept,
        **_locking(args),
        progress=progress,
    )
    lines = [f"{item.name}: {item.action} ({item.detail})" for item in repaired] or ["nothing to repair"]
    return Shown({"repaired": [item._asdict() for item in repaired]}, lines=lines)


def _baseline(args: argparse.Namespace, progress: Progress) -> Shown:
    marked = api.baseline(
        args.version,
        **_settings(args),
        verify=args.verify,
        shadow_url=args.shadow_url,
        **_locking(args),
        progress=progress,
    )
    lines = [f"baseline {name}" for name in marked]
    lines.append(f"marked {len(marked)} migration(s) as applied without running them")
    return Shown({"baselined": marked}, lines=lines)


def _adopt(args: argparse.Namespace, progress: Progress) -> Shown:
    revisions: dict[str, str] = {}
    for given in args.revision:
        revision, sep, name = given.partition("=")
        if not sep or not revision or not name:
            raise UsageError(
                f"--revision {given!r}: give REV=NAME, e.g. --revision ae1027a6acf=003_add_orders"
            )
        revisions[revision] = name
    found = api.adopt(
        args.tool,
        **_settings(args),
        table=args.table,
        revisions=revisions,
        accept_checksums=args.accept_checksums,
        dry_run=args.dry_run,
        lock_timeout=args.lock_timeout,
        lock_mode=args.lock_mode,
        lease_ttl=args.lease_ttl,
        progress=progress,
    )
    verb = "would adopt" if found.dry_run else "adopted"
    lines = [f"{verb} {name}" for name in found.adopted]
    lines.append(
        f"{verb} {len(found.adopted)} migration(s) from {found.tool} ({found.table}); "
        f"{len(found.already)} already in the ledger, {len(found.pending)} pending for 'dbledger up'"
    )
    return Shown(found.to_dict(), lines=lines)


def _init(args: argparse.Namespace, progress: Progress) -> Shown:
    written = api.init(args.dir, layout=args.layout)
    lines = [f"wrote {path}" for path in written]
    lines.append("next: dbledger new create_first_table, then DATABASE_URL=... dbledger up")
    return Shown({"written": [str(path) for path in written]}, lines=lines)


def _new(args: argparse.Namespace, progress: Progress) -> Shown:
    path = api.new(args.name, args.dir)
    return Shown({"path": str(path)}, lines=[f"created {path}"])


def _lint(args: argparse.Namespace, progress: Progress) -> Shown:
    waits = {
        field: value
        for option, field, _, _ in _WAIT_OPTIONS[:2]
        if (value := getattr(args, option.removeprefix("--").replace("-", "_"))) is not None
    }
    found = api.lint(
        args.files, **_settings(args), offline=args.no_database, waits=waits or None, progress=progress
    )
    if os.environ.get("GITHUB_ACTIONS") == "true":
        # Workflow commands on stderr, which the runner reads too: stdout stays the same.
        for finding in found.findings:
            _err(finding.annotation())
    found.check()
    return Shown(found.to_dict(), lines=[*found.lines(), found.summary()])


def _row_count(text: str) -> tuple[str, int]:
    """``--rows N`` -> ("", N); ``--rows TABLE=N`` -> (TABLE, N)."""
    table, _, count = text.rpartition("=")
    if not count.strip().isdigit():
        raise argparse.ArgumentTypeError(
            f"invalid row count {text!r}: give N (every table) or TABLE=N (one table), N a whole number"
        )
    return table.strip(), int(count)


def _rehearse(args: argparse.Namespace, progress: Progress) -> Shown:
    from dbledger.rehearse import render

    every = [count for table, count in args.rows if not table]
    done = api.rehearse(
        **_settings(args),
        to=args.to,
        rows=every[-1] if every else None,
        table_rows={table: count for table, count in args.rows if table},
        schema_only=args.schema_only,
        copy=args.copy,
        keep=args.keep,
        **_locking(args),
        progress=progress,
    )
    return Shown(done.to_dict(), text=render(done))


def _check(args: argparse.Namespace, progress: Progress) -> Shown:
    from dbledger.checks import PARTS

    if args.schema is not None:
        raise UsageError(
            "--schema does not apply to check: it applies the migrations on a scratch database of "
            "its own; leave --schema out"
        )
    report = api.check(
        args.database_url,
        args.dir,
        shadow_url=args.shadow_url,
        queries=args.queries,
        against=args.against,
        parts=PARTS - {"lint"} if args.no_lint else None,
        ledger_table=args.ledger_table,
        connect_timeout=args.connect_timeout,
        progress=progress,
    )
    if args.report:
        report.write(args.report)
    if os.environ.get("GITHUB_ACTIONS") == "true":  # the runner reads workflow commands on stderr too
        for finding in report.findings:
            _err(finding.annotation())
    report.check()
    return Shown(report.to_dict(), lines=[*(f.format() for f in report.findings), report.summary()])


def _completion(args: argparse.Namespace, progress: Progress) -> Shown:
    from dbledger.completion import script

    text = script(args.shell, build_parser())
    return Shown({"shell": args.shell, "script": text}, text=text.removesuffix("\n"))


COMMANDS: dict[str, Callable[[argparse.Namespace, Progress], Shown]] = {
    "up": _up,
    "down": _down,
    "redo": _redo,
    "drift": _drift,
    "dump": _dump,
    "status": _status,
    "verify": _verify,
    "wait": _wait,
    "repair": _repair,
    "baseline": _baseline,
    "adopt": _adopt,
    "init": _init,
    "new": _new,
    "lint": _lint,
    "rehearse": _rehearse,
    "check": _check,
    "completion": _completion,
}


_FLEET_ONLY = {"targets_file": "--targets-file", "targets_query": "--targets-query", "jobs": "--jobs"}


def _handler(args: argparse.Namespace) -> Callable[[argparse.Namespace, Progress], Shown]:
    """The command's function; with --all, the fleet's (its options without --all are refused)."""
    if getattr(args, "all", False):
        return _fleet
    given = [option for name, option in _FLEET_ONLY.items() if getattr(args, name, None) is not None]
    given += ["--continue-on-error"] if getattr(args, "continue_on_error", False) else []
    if given:
        raise UsageError(f"{given[0]} works with --all: run 'dbledger {args.command} --all {given[0]} ...'")
    return COMMANDS[args.command]


def _fleet(args: argparse.Namespace, progress: Progress) -> Shown:
    """--all: the command on every target, then the summary; exit 1 (FleetFailed) if one failed."""
    from dbledger.fleet import DEFAULT_JOBS, Fleet
    from dbledger.output import FleetWatch, print_fleet
    from dbledger.targets import find_targets

    refused = [
        option
        for option, given in (
            ("--dry-run", getattr(args, "dry_run", False)),
            ("--backup", getattr(args, "backup", None)),
            ("--shadow-url", getattr(args, "shadow_url", None)),
            ("--strict", getattr(args, "strict", False) and args.command == "up"),
        )
        if given
    ]
    if refused:
        raise UsageError(f"{refused[0]} works on one database: drop --all, or drop {refused[0]}")
    found = find_targets(
        args.database_url,
        schema=args.schema,
        targets_file=args.targets_file,
        targets_query=args.targets_query,
        connect_timeout=args.connect_timeout,
    )
    watch = FleetWatch(
        len(found.targets),
        live=is_terminal(sys.stderr) and not args.json,
        verbose=args.verbose,
        quiet=args.quiet,
        color=wants_color(args.color, sys.stderr),
    )
    fleet = Fleet(
        found,
        args.dir,
        jobs=DEFAULT_JOBS if args.jobs is None else args.jobs,
        continue_on_error=args.continue_on_error,
        ledger_table=args.ledger_table,
        connect_timeout=args.connect_timeout,
        watch=watch,
        progress=progress,
    )
    try:
        report = _fleet_command(args, fleet)
    finally:
        watch.close()
    terminal, color = is_terminal(sys.stdout), wants_color(args.color, sys.stdout)

    def render() -> None:
        print_fleet(report, terminal=terminal, color=color, quiet=args.quiet)

    if report.failed and not args.json:  # the summary first, then the error says how many failed
        try:
            render()
        except BrokenPipeError:
            silence(sys.stdout)
    report.check()
    return Shown(report.to_dict(), render=render)


def _fleet_command(args: argparse.Namespace, fleet: Fleet) -> FleetReport:
    if args.command == "up":
        options = {
            "to": args.to,
            "allow_out_of_order": args.allow_out_of_order,
            "allow_missing": args.allow_missing,
            "allow_existing_schema": args.allow_existing_schema,
            "atomic": args.atomic,
        }
        locking = _locking(args)
        return fleet.migrate(
            **options, waits=locking["waits"], lock_mode=locking["lock_mode"], lease_ttl=locking["lease_ttl"]
        )
    if args.command == "verify":
        return fleet.verify(strict=args.strict)
    if args.command == "drift":
        return fleet.drift(replay=args.replay)
    return fleet.status()


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    _ensure_streams()
    as_json = "--json" in words
    try:
        with _signals_interrupt():
            return _run(_parse(words, as_json))
    except DbledgerError as exc:  # an interrupt before or after the command's own work
        _show_error(as_json, exc)
        return exc.exit_code


def _parse(words: list[str], as_json: bool) -> argparse.Namespace:
    named = _named_command(words)
    if named is not None:
        try:
            return build_parser(json_requested=as_json, only=named).parse_args(words)
        except _Retry:
            pass
    return build_parser(json_requested=as_json).parse_args(words)


def _run(args: argparse.Namespace) -> int:
    reporter = Reporter(
        quiet=args.quiet,
        verbose=args.verbose,
        live=is_terminal(sys.stderr) and not args.json,
        color=wants_color(args.color, sys.stderr),
    )
    try:
        shown = _handler(args)(args, reporter)
    except DbledgerError as exc:
        reporter.close()
        _show_error(args.json, exc)
        return exc.exit_code
    finally:  # also when a signal ends the command: the live display must stop first
        reporter.close()
    if args.quiet and not args.json:
        shown = shown._replace(lines=())
    try:
        _show(args.json, shown)
    except BrokenPipeError:  # the reader went away (| head): the work is done, stop printing
        silence(sys.stdout)
        return 128 + signal.SIGPIPE
    except OSError as exc:  # a full disk behind stdout (> /dev/full)
        silence(sys.stdout)
        _err(f"dbledger: error: cannot write the output: {exc.strerror}; the command itself succeeded")
        return 1
    return 0


def _ensure_streams() -> None:
    """A stream the shell closed (``>&-``) is None in Python: write to nothing instead."""
    if sys.stdout is None:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 -- for the life of the process
    if sys.stderr is None:
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115 -- for the life of the process


@contextmanager
def _signals_interrupt() -> Iterator[None]:
    """SIGINT and SIGTERM (a container's stop) end the command the same way: the work in
    progress is rolled back, and the JSON document and exit code say which signal it was."""
    received: list[int] = []

    def terminate(number: int, frame: object) -> None:
        received.append(number)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    except KeyboardInterrupt:
        raise (Terminated() if received else Interrupted()) from None
    finally:
        signal.signal(signal.SIGTERM, previous)


def _show(as_json: bool, shown: Shown) -> None:
    if as_json:
        for line in shown.lines:  # with --json, human lines still reach the user, on stderr
            _err(line)
        print(json.dumps({"ok": True, **shown.document}, indent=2, default=str), flush=True)
        return
    if shown.render is not None:
        shown.render()
    if shown.text is not None:
        print(shown.text)
    for line in shown.lines:
        print(line)
    sys.stdout.flush()


def _show_error(as_json: bool, exc: DbledgerError) -> None:
    try:
        if isinstance(exc, DriftFound | LintFailed | CheckFailed) and not as_json:
            for line in exc.lines:
                print(line)
        _err(f"dbledger: error: {exc.message}")
        if as_json:
            documented = (DriftFound, FleetFailed, LintFailed, CheckFailed)
            found = exc.document if isinstance(exc, documented) else {}
            print(
                json.dumps({"ok": False, **found, "error": exc.to_dict()}, indent=2, default=str), flush=True
            )
    except BrokenPipeError:
        silence(sys.stdout)
