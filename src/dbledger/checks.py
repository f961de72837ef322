"""What ``dbledger check`` reports: one ``CheckFinding`` per thing found, and ``CheckReport``
with what was checked, in the forms people, ``--json`` and GitHub Actions read. How a check runs
is ``dbledger.checkrun``'s; these records import nothing heavy, for the command line and the
pytest plugin.

The parts of a check, each named as ``parts=`` and ``CheckFinding.kind`` name them:

- ``folder``: the files as ``up`` would take them: strays that never run, empty up sections,
  statements ``up`` would refuse (a COMMIT in a transactional section, dbledger's own tables);
- ``apply``: every migration applied from empty on a scratch database, in version order, by the
  executor ``up`` uses; on a temporary database, the statements that change its server (a role
  the folder creates: a warning, dropped afterwards; anything else: refused, nothing applied);
- ``round-trip``: for each migration with a down section, up -> down -> up: the schema after the
  down must be the one before the up, and the second up must leave what the first left;
- ``lint``: ``dbledger.lint`` (its errors fail the check, its warnings are shown);
- ``queries``: the application's queries prepared (and, given sample values, run in a
  transaction that is rolled back) after each migration and on the final schema;
- ``against``: a real database's ledger verified against the files, read-only.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from dbledger.errors import CheckFailed, ConfigError, UsageError

Severity = Literal["error", "warning", "note"]

PARTS = frozenset({"folder", "apply", "round-trip", "lint", "queries", "against"})
# The parts that need the migrations applied on a scratch database.
ON_SCRATCH = frozenset({"apply", "round-trip", "queries"})


class CheckFinding(NamedTuple):
    """One thing a check found. ``kind``: the part that found it (one of ``PARTS``);
    ``severity``: ``error`` fails the check, ``warning`` and ``note`` are only shown. ``path``
    and ``line``: the file and line at fault, when there is one; ``migration``: the migration
    it is about (for a query: the one that broke it); ``sqlstate``: the database's error code."""

    kind: str
    severity: Severity
    message: str
    path: str | None = None
    line: int | None = None
    migration: str | None = None
    sqlstate: str | None = None

    def format(self) -> str:
        """One line for people, as lint's: ``path:line kind severity message`` (the place left
        out when there is none; a message's further lines follow, indented)."""
        place = (
            f"{self.path}:{self.line} " if self.path and self.line else f"{self.path} " if self.path else ""
        )
        return f"{place}{self.kind} {self.severity} {self.message}".replace("\n", "\n    ")

    def annotation(self) -> str:
        """The GitHub Actions workflow command that shows this finding on the file's line
        (https://docs.github.com/actions/reference/workflow-commands-for-github-actions)."""
        level = {"error": "error", "warning": "warning"}.get(self.severity, "notice")
        where = []
        if self.path:
            where.append(f"file={_property(self.path)}")
            if self.line:
                where.append(f"line={self.line}")
        where.append(f"title={_property(f'dbledger check: {self.kind}')}")
        return f"::{level} {','.join(where)}::{_data(self.message)}"


def _data(text: str) -> str:
    # The escapes the runner undoes in a command's message: %, CR and LF.
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _property(text: str) -> str:
    # A property value also may not hold its separators, ':' and ','.
    return _data(text).replace(":", "%3A").replace(",", "%2C")


@dataclass(frozen=True)
class CheckReport:
    """What ``dbledger check`` checked and found. ``ok``: no finding is an error."""

    database: str  # where the migrations were applied (redacted), "" when nothing was applied
    directory: str
    parts: list[str]
    migrations: list[str] = field(default_factory=list)  # the folder's migrations, in order
    queries: int = 0  # how many queries were checked
    findings: list[CheckFinding] = field(default_factory=list)
    pending: list[str] | None = None  # with ``against``: the migrations it has not applied yet

    @property
    def ok(self) -> bool:
        return not any(f.severity == "error" for f in self.findings)

    @property
    def errors(self) -> list[CheckFinding]:
        return [f for f in self.findings if f.severity == "error"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "database": self.database,
            "directory": self.directory,
            "parts": self.parts,
            "migrations": self.migrations,
            "queries": self.queries,
            "pending": self.pending,
            "errors": len(self.errors),
            "warnings": sum(f.severity == "warning" for f in self.findings),
            "findings": [f._asdict() for f in self.findings],
        }

    def check(self) -> None:
        """Raise CheckFailed (exit 1) when a finding is an error; warnings and notes pass."""
        if not self.ok:
            first = self.errors[0].format().split("\n")[0]
            raise CheckFailed(
                f"check found {len(self.errors)} error(s); the first: {first}",
                self.to_dict(),
                [f.format() for f in self.findings] + [self.summary()],
            )

    def write(self, path: str | os.PathLike[str]) -> None:
        """Write ``to_dict()`` as JSON to ``path`` (``--report FILE``); ConfigError when it cannot."""
        import json
        from pathlib import Path

        target = Path(path)
        try:
            target.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        except OSError as exc:
            folder = target.absolute().parent
            hint = "" if folder.is_dir() else f": folder {str(folder)!r} does not exist, create it first"
            raise ConfigError(f"cannot write the report {str(target)!r}: {exc.strerror}{hint}") from None

    def summary(self) -> str:
        """The last line for people: what was checked and how it went."""
        checked = f"{len(self.migrations)} migration(s)" + (
            f", {self.queries} query(ies)" if self.queries else ""
        )
        warnings = sum(f.severity == "warning" for f in self.findings)
        also = f", {warnings} warning(s)" if warnings else ""
        if self.ok:
            return f"ok: {checked} checked ({', '.join(self.parts)}){also}"
        return f"failed: {len(self.errors)} error(s){also} in {checked}"


def chosen_parts(parts: Iterable[str] | None) -> frozenset[str]:
    """The parts to run: all for None; UsageError naming an unknown one."""
    if parts is None:
        return PARTS
    chosen = frozenset(parts)
    if unknown := sorted(chosen - PARTS):
        raise UsageError(f"unknown check part {unknown[0]!r}: choose from {', '.join(sorted(PARTS))}")
    return chosen
