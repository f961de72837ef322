"""Migrate before serving: the incident report's ``startServer()``, for any Python application.

from dbledger.integrations.startup import migrate_or_exit

migrate_or_exit(os.environ["DATABASE_URL"], "migrations")   # exits 1 on any failure
uvicorn.run(app, port=8000)                                   # reached only after success

A replica that must not migrate (a Job or an init container runs ``dbledger up``) waits instead::

wait_or_exit(os.environ["DATABASE_URL"], "migrations", timeout=600)
"""

from __future__ import annotations

import logging
import os
import sys
from typing import NoReturn

from dbledger.api import Report, Status, migrate, wait_until_migrated
from dbledger.config import DEFAULT_LOCK_TIMEOUT
from dbledger.errors import DbledgerError

PathLike = str | os.PathLike[str]

logger = logging.getLogger("dbledger")


def migrate_or_exit(
    database_url: str | None = None,
    directory: PathLike | None = None,
    *,
    ledger_table: str | None = None,
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
    log: logging.Logger = logger,
) -> Report:
    """Apply pending migrations, logging each one; on any failure log the reason and exit 1,
    so the process never starts serving on a schema it does not expect."""

    def progress(event: str, name: str, ms: int | None) -> None:
        if event == "done":
            log.info("applied migration %s in %d ms", name, ms or 0)
        elif event in ("waiting", "upgrade", "backup", "warning"):
            log.info("%s: %s", event, name)

    try:
        report = migrate(
            database_url, directory, ledger_table=ledger_table, lock_timeout=lock_timeout, progress=progress
        )
    except DbledgerError as exc:
        _exit(log, exc)
    if report.applied:
        log.info("database migrated: %d migration(s) applied", len(report.applied))
    else:
        log.info("database schema is up to date (%s)", report.database)
    return report


def wait_or_exit(
    database_url: str | None = None,
    directory: PathLike | None = None,
    *,
    timeout: float = 300.0,
    ledger_table: str | None = None,
    log: logging.Logger = logger,
) -> Status:
    """Wait until another run has applied every migration in the folder; on a timeout, or a
    failed or dirty migration, log the reason and exit 1."""

    def progress(event: str, what: str, ms: int | None) -> None:
        if event in ("busy", "warning"):
            log.info("waiting for %s", what)

    try:
        found = wait_until_migrated(
            database_url, directory, timeout=timeout, ledger_table=ledger_table, progress=progress
        )
    except DbledgerError as exc:
        _exit(log, exc)
    log.info("database schema is up to date (version %s)", found.version)
    return found


def _exit(log: logging.Logger, exc: DbledgerError) -> NoReturn:
    log.error("migrations failed, not starting: %s", exc.message)  # messages are redacted
    sys.exit(1)
