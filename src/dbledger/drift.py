"""``dbledger drift``: the live schema compared with the schema the applied migrations produce.

Two sources for the expected schema. By default, the one the last successful ``up``, ``down`` or
``baseline`` recorded in ``schema_migrations_schema`` (cheap: no other database is needed). With
``--replay`` (or when nothing is recorded yet), every applied migration's file is replayed, in the
order the ledger applied them, on a scratch database of the same kind (a temporary database on the
same server, or an in-memory SQLite database). Replaying also checks a database that was built
some other way: restored from an old dump, or created by hand from old schema files. Both are
compared through the normalised model of ``dbledger.schema``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dbledger.backends.base import Backend, StatementError
from dbledger.errors import DbledgerError
from dbledger.existing import replay
from dbledger.migrations import Migration
from dbledger.plan import make_plan
from dbledger.schema import Difference, SchemaModel, diff, fingerprint
from dbledger.schema.storage import loads


@dataclass(frozen=True)
class Drift:
    """The outcome of a comparison: empty ``differences`` means the schemas are equal."""

    database: str
    expected_from: str  # "recorded after the last migration run" or "replayed from ..."
    replayed: list[str]  # the migrations the expected schema was built from, when replayed
    expected_fingerprint: str
    found_fingerprint: str
    differences: list[Difference]

    def to_dict(self) -> dict[str, Any]:
        return {
            "database": self.database,
            "expected_from": self.expected_from,
            "replayed": self.replayed,
            "expected_fingerprint": self.expected_fingerprint,
            "found_fingerprint": self.found_fingerprint,
            "drifted": bool(self.differences),
            "differences": [d.to_dict() for d in self.differences],
        }


def replayed_model(backend: Backend, migrations: list[Migration]) -> SchemaModel:
    """The schema ``migrations`` produce, replayed in order on a scratch database."""
    try:
        with backend.scratch() as scratch:
            for migration in migrations:
                try:
                    replay(scratch, migration)
                except StatementError as err:
                    raise DbledgerError(
                        f"replaying {migration.name} on a scratch database failed: {err.message}"
                    ) from None
            return scratch.introspect()
    except DbledgerError as exc:
        if "cannot create a scratch database" in exc.message:
            raise DbledgerError(
                f"{exc.message}: comparing with the migrations replays them on a temporary "
                "database; grant this user CREATEDB (ALTER ROLE ... CREATEDB)"
            ) from None
        raise


def detect(
    backend: Backend, migrations: list[Migration], display: str, *, replay_files: bool = False
) -> Drift:
    """Compare the live schema with the expected one: the schema the last successful run
    recorded, or (``replay_files``, or nothing recorded yet) the applied migrations replayed on a
    scratch database."""
    found = backend.introspect()
    recorded = None if replay_files else backend.latest_schema()
    if recorded is not None:
        expected = loads(recorded[1])
        source = "recorded after the last migration run"
        replayed: list[str] = []
    else:
        applied = _applied_files(backend, migrations)
        expected = replayed_model(backend, applied)
        source = "replayed from the applied migrations"
        replayed = [m.name for m in applied]
    return Drift(display, source, replayed, fingerprint(expected), fingerprint(found), diff(expected, found))


def _applied_files(backend: Backend, migrations: list[Migration]) -> list[Migration]:
    files = {m.name: m for m in migrations}
    plan = make_plan(migrations, backend.read_ledger() or [])
    if plan.missing:
        names = ", ".join(row.name for row in plan.missing)
        raise DbledgerError(
            f"cannot compute the expected schema: applied migration(s) {names} have no file; "
            "restore them first"
        )
    return [files[row.name] for row in plan.rows.values() if row.state in ("applied", "baseline")]
