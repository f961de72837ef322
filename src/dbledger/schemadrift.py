"""``dbledger drift``: the live schema compared with the schema the applied migrations produce.

Two sources for the expected schema. By default, the one the last run that changed something
recorded in the ledger's ``_schema`` table (cheap: no other database is needed). With
``--replay`` (or when nothing is recorded yet), every applied migration's file is replayed, in the
order the ledger applied them, on a scratch database of the same kind (a temporary database on the
same server, or a temporary SQLite file). Replaying also checks a database that was built
some other way: restored from an old dump, or created by hand from old schema files. Both are
compared through the normalised model of ``dbledger.schema``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from dbledger.backends.base import Backend
from dbledger.config import Database
from dbledger.contracts import APPLIED_STATES
from dbledger.errors import DbledgerError
from dbledger.migrations import Migration
from dbledger.plan import make_plan
from dbledger.replay import replayed_model
from dbledger.schema import Difference, diff, fingerprint
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


def detect(
    backend: Backend,
    migrations: list[Migration],
    display: str,
    *,
    replay_files: bool = False,
    repeatables: Sequence[Migration] = (),
    shadow: Database | None = None,
) -> Drift:
    """Compare the live schema with the expected one: the schema the last successful run
    recorded, or (``replay_files``, or nothing recorded yet) the applied migrations replayed, in
    the order they were applied, on a scratch database."""
    found = backend.introspect()
    recorded = None if replay_files or shadow is not None else backend.latest_schema()
    if recorded is not None:
        expected = loads(recorded[1])
        source = "recorded after the last migration run"
        replayed: list[str] = []
    else:
        applied = _applied_files(backend, migrations, repeatables)
        expected = replayed_model(backend, applied, shadow)
        source = "replayed from the applied migrations"
        replayed = [m.name for m in applied]
    return Drift(display, source, replayed, fingerprint(expected), fingerprint(found), diff(expected, found))


def _applied_files(
    backend: Backend, migrations: list[Migration], repeatables: Sequence[Migration] = ()
) -> list[Migration]:
    """The files of the applied migrations, in the order they were applied, with the repeatable
    ones whose last run was of the file as it is now, where that run came."""
    files = {m.name: m for m in [*migrations, *repeatables]}
    snapshot = backend.read_ledger()
    plan = make_plan(migrations, snapshot.rows if snapshot is not None else ())
    if plan.missing or plan.renamed or plan.reused:
        names = ", ".join(row.name for row in plan.missing + [r for _, r in plan.renamed + plan.reused])
        raise DbledgerError(
            f"cannot compute the expected schema: applied migration(s) {names} have no file; "
            "restore them first"
        )
    ran = [*plan.applied]
    for row in plan.repeatable_rows.values():
        same = row.name in files and files[row.name].checksum == row.checksum
        if same and row.state in APPLIED_STATES:
            ran.append(row)
    ran.sort(key=lambda row: row.applied_order or 0)
    return [files[row.name] for row in ran]
