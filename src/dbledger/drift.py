"""``dbledger drift``: the live schema compared with the schema the applied migrations produce.

The expected schema is computed by replaying every applied migration's file, in the order the
ledger applied them, on a scratch database of the same kind (a temporary database on the same
server, or an in-memory SQLite database), then introspecting both into the normalised model of
``dbledger.schema``. This also checks a database that was built some other way: restored from an
old dump, or created by hand from old schema files.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dbledger.backends.base import Backend, StatementError
from dbledger.errors import DbledgerError
from dbledger.existing import replay
from dbledger.migrations import Migration
from dbledger.plan import make_plan
from dbledger.schema import Difference, diff, fingerprint


@dataclass(frozen=True)
class Drift:
    """The outcome of a comparison: empty ``differences`` means the schemas are equal."""

    database: str
    replayed: list[str]  # the migrations the expected schema was built from
    expected_fingerprint: str
    found_fingerprint: str
    differences: list[Difference]

    def to_dict(self) -> dict[str, Any]:
        return {
            "database": self.database,
            "replayed": self.replayed,
            "expected_fingerprint": self.expected_fingerprint,
            "found_fingerprint": self.found_fingerprint,
            "drifted": bool(self.differences),
            "differences": [d.to_dict() for d in self.differences],
        }


def detect(backend: Backend, migrations: list[Migration], display: str) -> Drift:
    """Replay the applied migrations on a scratch database and compare with the live one."""
    files = {m.name: m for m in migrations}
    plan = make_plan(migrations, backend.read_ledger() or [])
    if plan.missing:
        names = ", ".join(row.name for row in plan.missing)
        raise DbledgerError(
            f"cannot compute the expected schema: applied migration(s) {names} have no file; "
            "restore them first"
        )
    applied = [files[row.name] for row in plan.rows.values() if row.state in ("applied", "baseline")]
    try:
        with backend.scratch() as scratch:
            for migration in applied:
                try:
                    replay(scratch, migration)
                except StatementError as err:
                    raise DbledgerError(
                        f"replaying {migration.name} on a scratch database failed: {err.message}"
                    ) from None
            expected = scratch.introspect()
    except DbledgerError as exc:
        if "scratch database" in exc.message and "cannot create" in exc.message:
            raise DbledgerError(
                f"{exc.message}: drift replays the migrations on a temporary database; grant this "
                "user CREATEDB (ALTER ROLE ... CREATEDB)"
            ) from None
        raise
    found = backend.introspect()
    return Drift(
        display,
        [m.name for m in applied],
        fingerprint(expected),
        fingerprint(found),
        diff(expected, found),
    )
