"""What the version and health endpoints show, from a ``Status``, with no web framework.

Two audiences, two views. ``/health`` answers load balancers and anyone who can reach the port,
so it names each migration and schema object at fault and its kind of trouble, never the text of
a database error (which can quote table contents, host names or file paths) nor a definition
(a default or a check can quote a value). The version view is for operators behind the
application's own access check: the ledger as ``dbledger status --json`` gives it, without the
database's location or the migrations folder's path.

Readiness is decided per finding, not per database: every replica of a service reads the same
database, so a finding that makes one unready makes them all unready at once. Only what makes
this code's statements fail, or what ``dbledger up`` refuses, is a reason; the rest is a warning,
listed while the replica stays ready. ``HealthPolicy`` says where the line is.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from dbledger.api import Status
from dbledger.errors import ConfigError, DatabaseError, DatabaseUnavailable, DbledgerError
from dbledger.plan import Plan
from dbledger.redaction import redact
from dbledger.schema.diff import SEVERITIES

__all__ = [
    "DRIFT_THRESHOLDS",
    "LEDGER_AHEAD",
    "HealthPolicy",
    "Readiness",
    "health_body",
    "health_reasons",
    "ledger_findings",
    "liveness_body",
    "readiness",
    "unavailable_body",
    "version_body",
]

logger = logging.getLogger("dbledger")

DriftThreshold = Literal["harmless", "slow", "risky", "breaking", "never"]
LedgerAhead = Literal["warning", "unhealthy"]
# unhealthy_drift: a severity (it and every more severe one make /health not ready), or never.
DRIFT_THRESHOLDS: tuple[DriftThreshold, ...] = ("harmless", "slow", "risky", "breaking", "never")
LEDGER_AHEAD: tuple[LedgerAhead, ...] = ("warning", "unhealthy")

# Fields of ``Status.to_dict()`` that say where things are, not what state they are in.
_LOCATIONS = ("database", "directory")
# Schema differences named one a line in a /health body; the rest are counted.
MAX_DRIFT_LINES = 20
_RANK: dict[str, int] = {severity: rank for rank, severity in enumerate(SEVERITIES)}


def _check(name: str, value: object, allowed: tuple[str, ...]) -> None:
    if not isinstance(value, str) or value not in allowed:
        choices = ", ".join(repr(choice) for choice in allowed[:-1]) + f" or {allowed[-1]!r}"
        raise ConfigError(f"{name} must be one of {choices}, not {value!r}")


@dataclass(frozen=True)
class HealthPolicy:
    """What makes ``/health`` answer "not ready" (503) rather than "ready, with a warning" (200).

    ``unhealthy_drift``: the least severe schema difference that makes it unready: ``breaking``
    (the default: only what makes the application's statements fail), ``risky``, ``slow``,
    ``harmless`` (any difference, as before severities), or ``never``.
    ``ledger_ahead``: migrations the ledger has and this code's folder lacks, each newer than the
    folder's newest file (a newer release applied or tried them: a rolling deploy), are a
    ``warning`` (the default) or make it ``unhealthy``.
    A value outside these is a ``ConfigError`` naming it."""

    unhealthy_drift: DriftThreshold = "breaking"
    ledger_ahead: LedgerAhead = "warning"

    def __post_init__(self) -> None:
        _check("unhealthy_drift", self.unhealthy_drift, DRIFT_THRESHOLDS)
        _check("ledger_ahead", self.ledger_ahead, LEDGER_AHEAD)

    def unhealthy(self, severity: str) -> bool:
        """Whether a schema difference of this severity makes the service unready. A severity
        this version does not know counts as the most severe."""
        if self.unhealthy_drift == "never":
            return False
        return _RANK.get(severity, len(SEVERITIES)) >= _RANK[self.unhealthy_drift]


DEFAULT_POLICY = HealthPolicy()


@dataclass(frozen=True)
class Readiness:
    """The findings of ``/health``: ``reasons`` make the service unready, ``warnings`` do not."""

    reasons: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    running: list[str] = field(default_factory=list)  # migrations at work (transaction:false)
    drift: dict[str, int] = field(default_factory=lambda: dict.fromkeys(reversed(SEVERITIES), 0))

    @property
    def ready(self) -> bool:
        return not self.reasons

    @property
    def status(self) -> str:
        if self.reasons:
            return "unhealthy"
        return "running" if self.running else "warning" if self.warnings else "ok"


def readiness(state: Status, policy: HealthPolicy = DEFAULT_POLICY) -> Readiness:
    """Sort everything ``state`` shows into reasons (unready) and warnings (ready)."""
    reasons, warnings = ledger_findings(state.plan, policy)
    reasons += [
        f"repeatable migration '{m.name}' is pending: the database has not run this service's file of it"
        for m, _, shown in state.repeatable_states()
        if shown == "pending"
    ]
    found = Readiness(reasons, warnings, [row.name for row in state.plan.running])
    _drift_findings(state.schema, policy, found)
    return found


def health_reasons(state: Status, policy: HealthPolicy = DEFAULT_POLICY) -> list[str]:
    """Why a service on this database should not be called ready, one line per migration or
    schema object at fault; empty when it should. Names and kinds only: the details are in the
    version view."""
    return readiness(state, policy).reasons


_AHEAD = ", and it is newer than this service's migrations: the database is ahead of this code"


def ledger_findings(plan: Plan, policy: HealthPolicy = DEFAULT_POLICY) -> tuple[list[str], list[str]]:
    """The ledger's trouble, one line per migration, as (reasons, warnings). A row of a migration
    this folder lacks, newer than its newest file, is the database being ahead of this code (a
    newer release's migration): under ``ledger_ahead="warning"`` it is a warning, whether it was
    applied, failed (rolled back: nothing of it is left) or did not finish (its partial work, if
    any, is schema drift and judged as such)."""
    newest = max((m.version for m in plan.migrations), default=None)
    ahead = {name for name, row in plan.rows.items() if newest is not None and row.version > newest}
    reasons: list[str] = []
    warnings: list[str] = []

    def report(name: str, line: str) -> None:
        if name in ahead:
            (warnings if policy.ledger_ahead == "warning" else reasons).append(line + _AHEAD)
        else:
            reasons.append(line)

    for row in plan.failed:
        report(row.name, f"migration '{row.name}' failed: its error is in the version endpoint")
    for row in plan.repeatable_rows.values():
        if row.state == "failed":
            report(
                row.name, f"repeatable migration '{row.name}' failed: its error is in the version endpoint"
            )
    for row in plan.dirty:
        report(row.name, f"migration '{row.name}' ran outside a transaction and did not finish")
    for _, row in plan.modified:
        edit = plan.edits.get(row.name)
        kind = f" ({edit.kind} change)" if edit is not None and edit.kind != "unknown" else ""
        reasons.append(f"migration '{row.name}' was modified after it was applied{kind}")
    for row in plan.unknown_checksums:
        algorithm = row.checksum_algorithm
        reasons.append(f"migration '{row.name}' has a {algorithm} checksum this dbledger cannot check")
    for migration, row in plan.renamed:
        reasons.append(f"migration '{row.name}' was renamed to '{migration.name}'")
    for migration, row in plan.reused:
        reasons.append(f"version {row.version} was applied as '{row.name}', and '{migration.name}' reuses it")
    for row in plan.missing:
        if row.name in ahead:
            report(row.name, f"migration '{row.name}' was applied")
        else:
            reasons.append(f"migration '{row.name}' was applied but its file is missing")
    reasons += [f"migration '{m.name}' is pending but sorts before applied ones" for m in plan.out_of_order]
    out_of_order = {m.name for m in plan.out_of_order}
    reasons += [
        f"migration '{m.name}' is pending: the database is behind this service's migrations"
        for m in plan.pending
        # a failed one is explained above, an out-of-order one too
        if m.name not in plan.rows and m.name not in out_of_order
    ]
    return reasons, warnings


def _drift_findings(schema: dict[str, Any] | None, policy: HealthPolicy, found: Readiness) -> None:
    """Each schema difference as a reason or a warning, by its severity and the policy."""
    if schema is None or not schema["drifted"]:
        return
    differences = sorted(schema.get("differences") or [], key=lambda d: -_RANK.get(d["severity"], 9))
    if not differences:  # fingerprints differ, models do not (a fingerprint of an older dbledger)
        found.warnings.append(
            "the live schema's fingerprint differs from the one recorded after the last migration "
            "run, yet no object differs: 'dbledger drift' shows more"
        )
        return
    for difference in differences:
        found.drift[difference["severity"]] = found.drift.get(difference["severity"], 0) + 1
    found.reasons.extend(_lines(d for d in differences if policy.unhealthy(d["severity"])))
    found.warnings.extend(_lines(d for d in differences if not policy.unhealthy(d["severity"])))


# How an attribute a difference names reads in a /health line.
_ATTRIBUTES = {
    "full_arguments": "arguments",
    "nullable": "nullability",
    "valid": "validity",
    "on_delete": "ON DELETE rule",
    "on_update": "ON UPDATE rule",
    "deferrable": "deferrability",
    "security_definer": "SECURITY DEFINER",
    "owned_by": "owner",
}


def _lines(differences: Iterable[dict[str, Any]]) -> list[str]:
    """One line per difference, naming the object and what differs, never a definition: a
    default or a check can quote a value."""
    lines = []
    for difference in differences:
        kind, name, change = difference["kind"], difference["name"], difference["change"]
        if change in ("missing", "extra"):
            text = f"{change} {kind} {name}"
        else:
            attribute = difference.get("attribute") or "definition"
            text = f"{kind} {name}: {_ATTRIBUTES.get(attribute, attribute)} differs"
        lines.append(f"{text} ({difference['severity']} schema drift)")
    if len(lines) > MAX_DRIFT_LINES:
        more = len(lines) - MAX_DRIFT_LINES
        lines[MAX_DRIFT_LINES:] = [f"and {more} more schema difference(s): 'dbledger drift' lists them all"]
    return lines


def health_body(state: Status, policy: HealthPolicy = DEFAULT_POLICY) -> tuple[int, dict[str, Any]]:
    """The status code and body of ``/health`` (readiness): 200 when ready (``ok``, ``warning``
    or ``running``), 503 (``unhealthy``) with the reasons."""
    found = readiness(state, policy)
    body = {
        "status": found.status,
        "version": None if state.version is None else state.version.shown(),
        "reasons": found.reasons,
        "warnings": found.warnings,
        "running": found.running,
        "drift": found.drift,
    }
    return (200 if found.ready else 503), body


def liveness_body() -> dict[str, Any]:
    """The body of ``/health/live``: the process answers. It reads nothing."""
    return {"status": "alive"}


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
