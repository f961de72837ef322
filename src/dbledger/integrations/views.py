"""What the version and health endpoints show, from a ``Status``, with no web framework.

Two audiences, two views. ``/health`` answers load balancers and anyone who can reach the port,
so it names each migration at fault and its kind of trouble, never the text of a database error
(which can quote table contents, host names or file paths). The version view is for operators
behind the application's own access check: the ledger as ``dbledger status --json`` gives it,
without the database's location or the migrations folder's path.
"""

from __future__ import annotations

import logging
from typing import Any

from dbledger.api import Status
from dbledger.errors import DatabaseError, DatabaseUnavailable, DbledgerError
from dbledger.redaction import redact

__all__ = ["health_body", "health_reasons", "unavailable_body", "version_body"]

logger = logging.getLogger("dbledger")

# Fields of ``Status.to_dict()`` that say where things are, not what state they are in.
_LOCATIONS = ("database", "directory")


def health_reasons(state: Status) -> list[str]:
    """Why a service on this database should not be called healthy, one line per migration at
    fault; empty when it should. Names and kinds only: the details are in the version view."""
    plan = state.plan
    reasons = [f"migration '{row.name}' failed: its error is in the version endpoint" for row in plan.failed]
    reasons += [f"migration '{row.name}' ran outside a transaction and did not finish" for row in plan.dirty]
    for _, row in plan.modified:
        reasons.append(f"migration '{row.name}' was modified after it was applied")
    for migration, row in plan.renamed:
        reasons.append(f"migration '{row.name}' was renamed to '{migration.name}'")
    for migration, row in plan.reused:
        reasons.append(f"version {row.version} was applied as '{row.name}', and '{migration.name}' reuses it")
    reasons += [f"migration '{row.name}' was applied but its file is missing" for row in plan.missing]
    for migration in plan.out_of_order:
        reasons.append(f"migration '{migration.name}' is pending but sorts before applied ones")
    out_of_order = {m.name for m in plan.out_of_order}
    reasons += [
        f"migration '{m.name}' is pending: the database is behind this service's migrations"
        for m in plan.pending
        # a failed one is explained above, an out-of-order one too
        if m.name not in plan.rows and m.name not in out_of_order
    ]
    if state.schema is not None and state.schema["drifted"]:
        reasons.append("the live schema differs from the one recorded after the last migration run")
    return reasons


def health_body(state: Status) -> tuple[int, dict[str, Any]]:
    """The status code and body of ``/health``: 200 and ``ok``, or 503 and the reasons."""
    reasons = health_reasons(state)
    body = {"status": "unhealthy" if reasons else "ok", "version": state.version, "reasons": reasons}
    return (503 if reasons else 200), body


def version_body(state: Status) -> dict[str, Any]:
    """The ledger as ``status --json`` shows it, without locations. dbledger records error texts
    redacted; a row written by hand or by another tool is not, so they are masked here too."""
    body = {key: value for key, value in state.to_dict().items() if key not in _LOCATIONS}
    body["problems"] = [redact(line) for line in body["problems"]]
    for kind in ("applied", "running", "failed", "modified", "renamed", "missing", "dirty"):
        for row in body[kind]:
            if row["error_message"]:
                row["error_message"] = redact(row["error_message"])
    return body


def unavailable_body(exc: Exception, endpoint: str) -> dict[str, Any]:
    """The 503 body when dbledger could not read the state at all. The full message, which names
    the host or the file at fault, goes to the log; the body says only what kind of trouble."""
    if isinstance(exc, DbledgerError):
        logger.warning("%s: %s", endpoint, exc.message)  # dbledger's messages are redacted
    else:  # not dbledger's words: masked by structure, and by value for the passwords it knows
        logger.warning("%s: %s", endpoint, redact(f"{type(exc).__name__}: {exc}", secrets=True))
    if isinstance(exc, DatabaseUnavailable):
        reason = "the database is unreachable"
    elif isinstance(exc, DatabaseError):
        reason = f"the database refused to show the ledger (SQLSTATE {exc.sqlstate or 'unknown'})"
    elif isinstance(exc, DbledgerError):
        reason = f"the migrations could not be checked ({type(exc).__name__})"
    else:
        reason = f"the ledger could not be read ({type(exc).__name__})"
    return {"status": "unavailable", "reasons": [f"{reason}: the service's log has the details"]}
