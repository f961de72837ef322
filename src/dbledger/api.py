"""The Python API: one plain function per command. The command line and the integrations call
these and nothing below them.

Each function takes the database URL and the migrations directory (``None`` means: resolve them
from the environment, ``pyproject.toml`` and the defaults, as the command line does).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from dbledger import rollback, runner
from dbledger.backends import open_backend
from dbledger.config import DEFAULT_LOCK_TIMEOUT, Database, check_lock_timeout, parse_database_url, resolve
from dbledger.errors import ConfigError, DbledgerError, LedgerStateError, UsageError
from dbledger.migrations import FILE_NAME, discover
from dbledger.plan import Allowances, LedgerRow, Plan, make_plan
from dbledger.rollback import RolledBack
from dbledger.runner import Applied, Progress, Repaired

_F = TypeVar("_F", bound=Callable[..., Any])


def _driver_errors_translated(function: _F) -> _F:
    """The API promises DbledgerError on any failure: a driver error that escaped a backend
    (a connection lost mid-run, say) becomes one here, redacted, with the original chained."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except DbledgerError:
            raise
        except Exception as exc:
            if type(exc).__module__.split(".")[0] not in ("psycopg", "sqlite3"):
                raise
            raise DbledgerError(f"database error: {exc}") from exc

    return wrapper  # type: ignore[return-value]


if TYPE_CHECKING:
    from dbledger.drift import Drift
    from dbledger.dryrun import DryRun

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class Report:
    """What ``migrate`` did."""

    database: str  # redacted
    directory: str
    applied: list[Applied]
    backup: dict[str, str] | None = None  # path, sha256, restore_command when --backup took one

    def to_dict(self) -> dict[str, Any]:
        return {
            "database": self.database,
            "directory": self.directory,
            "backup": self.backup,
            "applied": [
                {
                    "name": a.name,
                    "version": a.version,
                    "execution_time_ms": a.execution_time_ms,
                    "checksum": a.checksum,
                }
                for a in self.applied
            ],
        }


def _row_dict(row: LedgerRow) -> dict[str, Any]:
    return {
        "name": row.name,
        "version": row.version,
        "state": row.state,
        "checksum": row.checksum,
        "applied_at": row.applied_at,
        "execution_time_ms": row.execution_time_ms,
        "error_message": row.error_message,
    }


@dataclass(frozen=True)
class Status:
    """The files and the ledger side by side (``plan``), for ``status`` and ``verify``."""

    database: str
    directory: str
    plan: Plan
    ledger_exists: bool
    problems: list[str] = field(default_factory=list)
    # With check_schema: the recorded and the live fingerprint ({"expected", "found", "drifted"}).
    schema: dict[str, Any] | None = None

    @property
    def version(self) -> int | None:
        return self.plan.current_version

    @property
    def clean(self) -> bool:
        """No problem, no failed migration: what a health check wants."""
        return not self.problems and not self.plan.failed

    def to_dict(self) -> dict[str, Any]:
        plan = self.plan
        return {
            "database": self.database,
            "directory": self.directory,
            "ledger_exists": self.ledger_exists,
            "version": self.version,
            "applied": [_row_dict(r) for r in plan.applied],
            "pending": [
                {
                    "name": m.name,
                    "version": m.version,
                    "checksum": m.checksum,
                    "transaction": m.up.transaction,
                }
                for m in plan.pending
            ],
            "failed": [_row_dict(r) for r in plan.failed],
            "modified": [{**_row_dict(row), "checksum_on_disk": m.checksum} for m, row in plan.modified],
            "missing": [_row_dict(r) for r in plan.missing],
            "out_of_order": [{"name": m.name, "version": m.version} for m in plan.out_of_order],
            "dirty": [_row_dict(r) for r in plan.dirty],
            "problems": self.problems,
            "schema": self.schema,
        }


@_driver_errors_translated
def migrate(
    database_url: str | None = None,
    directory: PathLike | None = None,
    *,
    to: int | None = None,
    allow_out_of_order: bool = False,
    allow_missing: bool = False,
    allow_existing_schema: bool = False,
    atomic: bool = False,
    backup_dir: PathLike | None = None,
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
    progress: Progress | None = None,
) -> Report:
    """Apply every pending migration (up to version ``to``), or raise a DbledgerError.

    Safe to call from every replica of an application at the same moment: one applies, the
    others wait for the lock and find nothing left to do.
    """
    check_lock_timeout(lock_timeout)
    settings = resolve(database_url, directory)
    migrations = discover(settings.directory)  # malformed files fail before any connection
    taken: list[dict[str, str]] = []
    with open_backend(settings.database, lock_timeout=lock_timeout) as backend:
        applied = runner.up(
            backend,
            migrations,
            target=to,
            allow=Allowances(out_of_order=allow_out_of_order, missing=allow_missing),
            allow_existing_schema=allow_existing_schema,
            atomic=atomic,
            backup=None if backup_dir is None else _backup_hook(settings.database, Path(backup_dir), taken),
            lock_timeout=lock_timeout,
            progress=progress or runner.no_progress,
        )
    return Report(settings.database.display, str(settings.directory), applied, taken[0] if taken else None)


def _backup_hook(database: Database, directory: Path, taken: list[dict[str, str]]) -> runner.BackupHook:
    def take(label: str) -> tuple[str, str, str]:
        from dbledger.backup import BackupFailed, take_backup  # only when a backup is really taken

        try:
            done = take_backup(database, directory, label=label)
        except BackupFailed as exc:
            raise BackupFailed(
                f"{exc.message}\nnothing was applied: fix the backup directory (or pg_dump), or run "
                "without --backup"
            ) from exc
        taken.append({"path": str(done.path), "sha256": done.sha256, "restore_command": done.restore_command})
        return str(done.path), done.sha256, done.restore_command

    return take


@_driver_errors_translated
def status(
    database_url: str | None = None, directory: PathLike | None = None, *, check_schema: bool = False
) -> Status:
    """Read the ledger and the files; change nothing (not even create the ledger table). With
    ``check_schema``, also compare the live schema's fingerprint with the one the last run
    recorded (an introspection: ~10 ms for 10 tables, ~250 ms for 1000, see docs/drift.md)."""
    settings = resolve(database_url, directory)
    migrations = discover(settings.directory)
    schema: dict[str, Any] | None = None
    with open_backend(settings.database) as backend:
        rows = backend.read_ledger()
        if check_schema and (recorded := backend.latest_schema()) is not None:
            from dbledger.schema import fingerprint

            found = fingerprint(backend.introspect())
            schema = {"expected": recorded[0], "found": found, "drifted": found != recorded[0]}
    plan = make_plan(migrations, rows or [])
    problems = plan.problems()
    for row in plan.failed:
        problems.append(
            f"migration '{row.name}' failed at {row.applied_at}: "
            f"{(row.error_message or 'no error recorded').splitlines()[0]}; fix the file and run "
            "'dbledger up' again, or 'dbledger repair' to clear the record"
        )
    if schema is not None and schema["drifted"]:
        problems.append(
            f"the live schema differs from the one recorded after the last migration run "
            f"(fingerprint {schema['expected'][:12]}… recorded, {schema['found'][:12]}… now): "
            "run 'dbledger drift' to see how"
        )
    return Status(
        settings.database.display, str(settings.directory), plan, rows is not None, problems, schema
    )


@_driver_errors_translated
def verify(
    database_url: str | None = None, directory: PathLike | None = None, *, strict: bool = False
) -> Status:
    """Like ``status``, but raise LedgerStateError when a check fails (and, with ``strict``,
    when anything is pending: the incident's "written but never applied")."""
    result = status(database_url, directory)
    problems = list(result.problems)
    if strict:
        problems += [
            f"migration '{m.name}' is pending: it exists on disk but was never applied; run 'dbledger up'"
            for m in result.plan.pending
            if m not in result.plan.out_of_order
        ]
    if problems:
        raise LedgerStateError(problems)
    return result


@_driver_errors_translated
def repair(
    database_url: str | None = None,
    directory: PathLike | None = None,
    *,
    forget_missing: bool = False,
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
) -> list[Repaired]:
    """Accept modified checksums and clear failed and dirty records (and, with
    ``forget_missing``, records whose files are gone); every change is recorded."""
    check_lock_timeout(lock_timeout)
    settings = resolve(database_url, directory)
    migrations = discover(settings.directory)
    with open_backend(settings.database, lock_timeout=lock_timeout) as backend:
        return runner.repair(backend, migrations, forget_missing=forget_missing, lock_timeout=lock_timeout)


@_driver_errors_translated
def baseline(
    version: int,
    database_url: str | None = None,
    directory: PathLike | None = None,
    *,
    verify: bool = False,
    shadow_url: str | None = None,
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
) -> list[str]:
    """Mark migrations up to ``version`` as applied without running them."""
    check_lock_timeout(lock_timeout)
    settings = resolve(database_url, directory)
    migrations = discover(settings.directory)
    with open_backend(settings.database, lock_timeout=lock_timeout) as backend:
        shadow = None if shadow_url is None else parse_database_url(shadow_url)
        return runner.baseline(
            backend, migrations, version, verify=verify, shadow=shadow, lock_timeout=lock_timeout
        )


@_driver_errors_translated
def down(
    database_url: str | None = None,
    directory: PathLike | None = None,
    *,
    steps: int | None = None,
    to: int | None = None,
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
    progress: Progress | None = None,
) -> list[RolledBack]:
    """Roll back the newest ``steps`` migrations (default 1), or every one above version ``to``
    (``to=0``: all), with their down sections; refuses before running anything when one cannot."""
    check_lock_timeout(lock_timeout)
    settings = resolve(database_url, directory)
    migrations = discover(settings.directory)
    with open_backend(settings.database, lock_timeout=lock_timeout) as backend:
        return rollback.down(
            backend,
            migrations,
            steps=steps,
            target=to,
            lock_timeout=lock_timeout,
            progress=progress or runner.no_progress,
        )


@_driver_errors_translated
def redo(
    database_url: str | None = None,
    directory: PathLike | None = None,
    *,
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
    progress: Progress | None = None,
) -> tuple[RolledBack | None, list[Applied]]:
    """Roll back the newest migration and apply it again; (None, []) when nothing is applied."""
    check_lock_timeout(lock_timeout)
    settings = resolve(database_url, directory)
    migrations = discover(settings.directory)
    with open_backend(settings.database, lock_timeout=lock_timeout) as backend:
        return rollback.redo(
            backend, migrations, lock_timeout=lock_timeout, progress=progress or runner.no_progress
        )


@_driver_errors_translated
def plan_migrate(
    database_url: str | None = None,
    directory: PathLike | None = None,
    *,
    to: int | None = None,
    allow_out_of_order: bool = False,
    allow_missing: bool = False,
    allow_existing_schema: bool = False,
    atomic: bool = False,
) -> DryRun:
    """What ``migrate`` would do, statement by statement, analysed; changes nothing."""
    from dbledger import dryrun  # only for dry runs: every replica imports this module

    settings = resolve(database_url, directory)
    migrations = discover(settings.directory)
    with open_backend(settings.database) as backend:
        planned, problems = dryrun.plan_up(
            backend,
            migrations,
            backend.annotator(calibrate=True),
            target=to,
            allow=Allowances(out_of_order=allow_out_of_order, missing=allow_missing),
            allow_existing_schema=allow_existing_schema,
            atomic=atomic,
        )
    return dryrun.DryRun(settings.database.display, str(settings.directory), "up", atomic, planned, problems)


@_driver_errors_translated
def plan_down(
    database_url: str | None = None,
    directory: PathLike | None = None,
    *,
    steps: int | None = None,
    to: int | None = None,
) -> DryRun:
    """What ``down`` would roll back, statement by statement, analysed; changes nothing."""
    from dbledger import dryrun

    settings = resolve(database_url, directory)
    migrations = discover(settings.directory)
    with open_backend(settings.database) as backend:
        planned = dryrun.plan_down(
            backend, migrations, backend.annotator(calibrate=True), steps=steps, target=to
        )
    return dryrun.DryRun(settings.database.display, str(settings.directory), "down", False, planned)


@_driver_errors_translated
def drift(
    database_url: str | None = None,
    directory: PathLike | None = None,
    *,
    replay: bool = False,
    shadow_url: str | None = None,
) -> Drift:
    """Compare the live schema with the one the last run recorded, or (``replay``) with what the
    applied migrations produce on a scratch database."""
    from dbledger.drift import detect  # loads the schema model only for this command

    settings = resolve(database_url, directory)
    migrations = discover(settings.directory)
    with open_backend(settings.database) as backend:
        return detect(
            backend,
            migrations,
            settings.database.display,
            replay_files=replay,
            shadow=None if shadow_url is None else parse_database_url(shadow_url),
        )


@_driver_errors_translated
def dump(database_url: str | None = None) -> str:
    """The live schema as normalised SQL, stable across runs (for review in pull requests)."""
    from dbledger.schema import dump_sql

    settings = resolve(database_url, "")
    with open_backend(settings.database) as backend:
        return dump_sql(backend.introspect())


TEMPLATE = """\
-- migrate:up


-- migrate:down

"""


def new(name: str, directory: PathLike | None = None) -> Path:
    """Create the next numbered migration file with empty up and down sections."""
    if not FILE_NAME.match(f"1_{name}.sql"):
        raise UsageError(
            f"invalid migration name {name!r}: use lower-case letters, digits and '_' (e.g. add_users_email)"
        )
    settings = resolve("sqlite:///:memory:", directory)  # the database plays no part here
    folder = settings.directory
    try:
        folder.mkdir(parents=True, exist_ok=True)
        # From the names alone: the previous 'new' left a template that does not parse yet.
        found = [m for p in folder.glob("*.sql") if (m := FILE_NAME.match(p.name))]
        clash = [m.string for m in found if m.group("name") == name]
        if clash:
            raise UsageError(
                f"a migration named {name!r} already exists ({clash[0]}): choose a name that says "
                "what this change does"
            )
        width = max([3] + [len(m.group("version")) for m in found])
        version = max((int(m.group("version")) for m in found), default=0) + 1
        path = folder / f"{version:0{width}d}_{name}.sql"
        with path.open("x", encoding="utf-8") as handle:
            handle.write(TEMPLATE)
    except OSError as exc:
        raise ConfigError(f"cannot create a migration in {str(folder)!r}: {exc.strerror}") from None
    return path
