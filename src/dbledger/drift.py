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
from dbledger.config import Database
from dbledger.errors import ConfigError, DbledgerError, UsageError
from dbledger.existing import replay
from dbledger.migrations import Migration
from dbledger.plan import APPLIED_STATES, make_plan
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


class _Undo(Exception):
    """Carries the model out of the shadow database's transaction, which it then rolls back."""

    def __init__(self, model: SchemaModel) -> None:
        self.model = model


def _replay_on_shadow(shadow: Database, migrations: list[Migration]) -> SchemaModel:
    """Replay on a database the user provides (``--shadow-url``), for users without CREATEDB.
    Everything runs in one transaction that is rolled back, so the shadow stays empty."""
    from dbledger.backends import open_backend

    outside = [m.name for m in migrations if not m.up.transaction]
    if outside:
        raise UsageError(
            f"--shadow-url replays in one transaction that is rolled back, but {', '.join(outside)} "
            "must run outside one (transaction:false): replay on a scratch database instead (give "
            "this user CREATEDB and leave out --shadow-url)"
        )
    with open_backend(shadow) as target:
        if target.read_ledger() is not None or target.user_tables():
            raise ConfigError(
                f"shadow database {shadow.display} is not empty: give an empty database (it is "
                "only read from and left empty)"
            )
        try:
            with target.transaction():
                for migration in migrations:
                    for statement in target.split(migration.up):
                        try:
                            target.execute(statement)
                        except StatementError as err:
                            raise DbledgerError(
                                f"replaying {migration.name} on {shadow.display} failed: {err.message}"
                            ) from None
                raise _Undo(target.introspect())
        except _Undo as undo:
            return undo.model
    raise AssertionError("unreachable: the transaction always ends in _Undo or an error")


def replayed_model(
    backend: Backend, migrations: list[Migration], shadow: Database | None = None
) -> SchemaModel:
    """The schema ``migrations`` produce, replayed in order on a scratch database (or on the
    empty ``shadow`` database, in a transaction that is rolled back)."""
    if shadow is not None:
        return _replay_on_shadow(shadow, migrations)
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
                "database; grant this user CREATEDB (ALTER ROLE ... CREATEDB), or give an empty "
                "database with --shadow-url"
            ) from None
        raise


def detect(
    backend: Backend,
    migrations: list[Migration],
    display: str,
    *,
    replay_files: bool = False,
    shadow: Database | None = None,
) -> Drift:
    """Compare the live schema with the expected one: the schema the last successful run
    recorded, or (``replay_files``, or nothing recorded yet) the applied migrations replayed on a
    scratch database."""
    found = backend.introspect()
    recorded = None if replay_files or shadow is not None else backend.latest_schema()
    if recorded is not None:
        expected = loads(recorded[1])
        source = "recorded after the last migration run"
        replayed: list[str] = []
    else:
        applied = _applied_files(backend, migrations)
        expected = replayed_model(backend, applied, shadow)
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
    return [files[row.name] for row in plan.rows.values() if row.state in APPLIED_STATES]
