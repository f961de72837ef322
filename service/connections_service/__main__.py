"""``python -m connections_service``: migrate, then serve (the incident report's ``startServer()``).

Environment:
    DATABASE_URL   required: the PostgreSQL database (postgresql://user:password@host:5432/db)
    HOST           address to listen on, default 127.0.0.1
    PORT           port to listen on, default 8000
    DBLEDGER_DIR   migrations folder, default the package's own ``migrations/``
    DBLEDGER_LEDGER_TABLE  where dbledger keeps its ledger, default ``schema_migrations`` (read
                   by dbledger itself, for the startup migration and the version endpoints alike)
    DATABASE_WAIT  seconds a request waits for the database before answering 503, default 3
    VERSION_TOKEN  the bearer token ``GET /api/db/version`` requires; unset, that endpoint
                   admits no one (``/health`` stays open)
    HEALTH_UNHEALTHY_DRIFT  the least severe schema drift that makes readiness (``/health``,
                   ``/health/ready``) 503: ``breaking`` (default), ``risky``, ``slow``,
                   ``harmless`` (any drift) or ``never``
    HEALTH_LEDGER_AHEAD  ``warning`` (default) or ``unhealthy``: what readiness makes of
                   migrations a newer release applied that this one does not have

The order is the point. ``migrate_or_exit`` returns only once every migration is applied, and
otherwise logs why and exits 1; only after it returned does uvicorn bind the port. A process that
could not migrate never listens, so a deploy cannot take traffic on a schema it does not expect.
Any number of replicas may start at once: dbledger's lock lets one apply, the others find nothing
to do.

A refusal that names a dbledger command to run (``'dbledger baseline 2'`` for a database built by
hand) is completed with the command in full, for this service's own migrations folder, which is
inside the installed package where nobody would think to look.

Exit codes: 1 when the configuration is wrong or migrating failed (nothing listened); 3 when
uvicorn could not start the application (the database went away between migrating and opening
the connection pool). SIGTERM and SIGINT shut down gracefully: in-flight requests finish, the pool
closes.
"""

from __future__ import annotations

import logging
import math
import os
import re
import shlex
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import uvicorn

from connections_service import MIGRATIONS
from connections_service.app import create_app
from connections_service.db import DEFAULT_WAIT
from dbledger.integrations.fastapi import (
    DRIFT_THRESHOLDS,
    LEDGER_AHEAD,
    DriftThreshold,
    HealthPolicy,
    LedgerAhead,
)
from dbledger.integrations.startup import migrate_or_exit
from dbledger.redaction import redact

__all__ = [
    "FullCommandFilter",
    "RedactingFilter",
    "Settings",
    "configure_logging",
    "full_command_hint",
    "main",
    "read_settings",
]

logger = logging.getLogger("connections_service")

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class RedactingFilter(logging.Filter):
    """Mask passwords in each record a handler emits: the message with its arguments merged in,
    and the traceback text. dbledger's own messages are redacted already; this covers everything
    else that may quote the database URL (uvicorn, psycopg_pool, a traceback)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


# A command dbledger's messages tell the user to run: 'dbledger baseline 2', 'dbledger repair'.
_SUGGESTED_COMMAND = re.compile(r"'dbledger ([^']+)'")


def full_command_hint(message: str, directory: Path, environ: Mapping[str, str] = os.environ) -> str | None:
    """For a message that suggests a dbledger command, the sentence giving that command in full
    for this service: its migrations folder, and the database as ``"$DATABASE_URL"`` (the
    variable the service itself reads; a URL written out would only show as ``user:***``).
    None when the message suggests no command."""
    found = _SUGGESTED_COMMAND.search(message)
    if found is None:
        return None
    folder = shlex.quote(str(directory.resolve()))
    options = f'--dir {folder} --database-url "$DATABASE_URL"'
    ledger_table = environ.get("DBLEDGER_LEDGER_TABLE", "").strip()
    if ledger_table:
        options += f" --ledger-table {shlex.quote(ledger_table)}"
    return (
        f"This service's migrations are in {folder}; with DATABASE_URL set as for the service, run: "
        f"dbledger {options} {found.group(1)}"
    )


class FullCommandFilter(logging.Filter):
    """On the startup migration's logger: an error that suggests a dbledger command gets the
    command in full appended (``full_command_hint``)."""

    def __init__(self, directory: Path) -> None:
        super().__init__()
        self.directory = directory

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            message = record.getMessage()
            hint = full_command_hint(message, self.directory)
            if hint is not None:
                record.msg = f"{message}. {hint}"
                record.args = None
        return True


def configure_logging(level: int = logging.INFO) -> logging.Handler:
    """One handler on the root logger, to stderr, with the redacting filter. uvicorn is started
    with ``log_config=None`` so its loggers propagate here instead of getting handlers of their
    own that would bypass the filter."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level)
    return handler


@dataclass(frozen=True)
class Settings:
    database_url: str = field(repr=False)  # carries the password
    host: str
    port: int
    directory: Path
    wait: float = DEFAULT_WAIT
    version_token: str | None = field(default=None, repr=False)  # a secret: never shown
    health: HealthPolicy = field(default_factory=HealthPolicy)


# A request waits at least this long: less is shorter than one connection attempt can take.
MIN_WAIT, MAX_WAIT = 0.1, 300.0


def _read_wait(environ: Mapping[str, str]) -> float:
    text = environ.get("DATABASE_WAIT", "").strip()
    if not text:
        return DEFAULT_WAIT
    try:
        wait = float(text)
    except ValueError:
        wait = math.nan
    if not MIN_WAIT <= wait <= MAX_WAIT:  # NaN fails both
        raise ValueError(
            f"DATABASE_WAIT must be a number of seconds between {MIN_WAIT:g} and {MAX_WAIT:g}, not {text!r}"
        )
    return wait


def _read_choice(environ: Mapping[str, str], name: str, choices: tuple[str, ...], default: str) -> str:
    text = environ.get(name, "").strip()
    if not text:
        return default
    if text not in choices:
        listed = ", ".join(choices[:-1]) + f" or {choices[-1]}"
        raise ValueError(f"{name} must be one of {listed}, not {text!r}")
    return text


def _read_health(environ: Mapping[str, str]) -> HealthPolicy:
    default = HealthPolicy()
    drift = _read_choice(environ, "HEALTH_UNHEALTHY_DRIFT", DRIFT_THRESHOLDS, default.unhealthy_drift)
    ahead = _read_choice(environ, "HEALTH_LEDGER_AHEAD", LEDGER_AHEAD, default.ledger_ahead)
    return HealthPolicy(cast(DriftThreshold, drift), cast(LedgerAhead, ahead))


def read_settings(environ: Mapping[str, str]) -> Settings:
    """Settings from the environment; ValueError with a message saying what to set."""
    url = environ.get("DATABASE_URL", "").strip()
    if not url:
        raise ValueError(
            "DATABASE_URL is not set: set it to the service's PostgreSQL database, "
            "e.g. DATABASE_URL=postgresql://app@localhost:5432/app"
        )
    # A libpq key/value string ("host=db dbname=app") is PostgreSQL too.
    if not url.startswith(("postgresql://", "postgres://")) and ("://" in url or "=" not in url):
        raise ValueError(
            f"DATABASE_URL must point at PostgreSQL (postgresql://user:password@host:5432/db), "
            f"not {redact(url)!r}"
        )
    port_text = environ.get("PORT", "8000").strip()
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"PORT must be a port number between 1 and 65535, not {port_text!r}")
    directory = environ.get("DBLEDGER_DIR", "").strip()
    return Settings(
        database_url=url,
        host=environ.get("HOST", "").strip() or "127.0.0.1",
        port=int(port_text),
        directory=Path(directory) if directory else MIGRATIONS,
        wait=_read_wait(environ),
        version_token=environ.get("VERSION_TOKEN", "").strip() or None,
        health=_read_health(environ),
    )


def main() -> None:
    configure_logging()
    try:
        settings = read_settings(os.environ)
    except ValueError as exc:
        logger.error("not starting: %s", exc)
        sys.exit(1)
    migration_log = logging.getLogger("connections_service.migrate")
    migration_log.addFilter(FullCommandFilter(settings.directory))
    migrate_or_exit(settings.database_url, settings.directory, log=migration_log)  # exits 1 on failure
    if settings.version_token is None:
        logger.info("VERSION_TOKEN is not set: GET /api/db/version admits no one")
    uvicorn.run(
        create_app(
            settings.database_url,
            settings.directory,
            wait=settings.wait,
            version_token=settings.version_token,
            health=settings.health,
        ),
        host=settings.host,
        port=settings.port,
        log_config=None,
    )


if __name__ == "__main__":
    main()
