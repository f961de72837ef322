"""Replay migration files on an empty database of the same kind, through the same preflight and
executor as ``up``, to learn the schema they produce. A target schema (one tenant's) is replayed
into a schema of the same name with the same search_path, and only that schema is compared.

Used by ``drift --replay`` (what the applied migrations produce), ``baseline --verify`` (what
the files up to V produce), and the refusal of a database built without dbledger (which prefix
of the files it matches, so the refusal can name the exact ``dbledger baseline V``).
"""

from __future__ import annotations

from dbledger import preflight
from dbledger.backends.base import Backend
from dbledger.config import Database
from dbledger.errors import ConfigError, DatabaseError, DbledgerError, UsageError
from dbledger.executor import Executor
from dbledger.migrations import Migration
from dbledger.schema import SchemaModel


def replayed_model(
    backend: Backend, migrations: list[Migration], shadow: Database | None = None
) -> SchemaModel:
    """The schema ``migrations`` produce, replayed in the order given on a scratch database (or
    on the empty ``shadow`` database, in one transaction that is rolled back)."""
    steps = preflight.replay(
        migrations, backend.dialect, backend.names, backend.server(), backend.placeholders
    )
    if shadow is not None:
        return _on_shadow(backend, shadow, steps)
    with backend.scratch() as scratch:
        executor = Executor(scratch, record=False)
        for step in steps:
            try:
                executor.replay(step)
            except DatabaseError as err:
                raise DbledgerError(
                    f"replaying {step.name} on a scratch database failed: {err.message}"
                ) from None
        return scratch.introspect()


def _on_shadow(backend: Backend, shadow: Database, steps: tuple[preflight.Step, ...]) -> SchemaModel:
    """Replay on a database the user provides (``--shadow-url``), for users without CREATEDB.
    Everything runs in one transaction that is rolled back, so the shadow stays empty."""
    from dbledger.backends import open_backend

    outside = [step.name for step in steps if not step.transactional]
    if outside:
        raise UsageError(
            f"--shadow-url replays in one transaction that is rolled back, but {', '.join(outside)} "
            "must run outside one (transaction:false): replay on a scratch database instead (give "
            "this user CREATEDB and leave out --shadow-url)"
        )
    # With the live connection's target schema and search_path: the replay lands in a schema of
    # the same name, so the two models compare equal.
    with open_backend(backend.replay_address(shadow), backend.names) as target:
        # Checked again against the shadow's own server, which may be another version.
        steps = preflight.replay(
            [s.migration for s in steps], target.dialect, target.names, target.server(), backend.placeholders
        )
        if target.read_ledger() is not None or target.user_tables():
            raise ConfigError(
                f"shadow database {shadow.display} is not empty: give an empty database (it is "
                "only read from and left empty)"
            )
        with target.rolled_back():
            target.prepare_replay()
            executor = Executor(target, record=False)
            for step in steps:
                try:
                    executor.replay(step, within_transaction=True)
                except DatabaseError as err:
                    raise DbledgerError(
                        f"replaying {step.name} on {shadow.display} failed: {err.message}"
                    ) from None
            return target.introspect()


def matching_prefixes(backend: Backend, migrations: list[Migration]) -> list[Migration] | None:
    """Migrations after which a fresh database has exactly the live schema, in order; None when
    no scratch database could be made. The replay stops at the first file that fails."""
    live = backend.schema_signature()
    matches: list[Migration] = []
    try:
        steps = preflight.replay(
            migrations, backend.dialect, backend.names, backend.server(), backend.placeholders
        )
        with backend.scratch() as scratch:
            executor = Executor(scratch, record=False)
            for step in steps:
                try:
                    executor.replay(step)
                except DatabaseError:
                    break
                if scratch.schema_signature() == live:
                    matches.append(step.migration)
    except DbledgerError:
        return None
    return matches


def baseline_advice(backend: Backend, migrations: list[Migration]) -> str | None:
    """For a database built without dbledger: which ``dbledger baseline V`` matches it, or why
    none does; None when no scratch database could be made to find out."""
    matches = matching_prefixes(backend, migrations)
    if matches is None:
        return None
    if not matches:
        return (
            "Its schema matches what no prefix of the migration files produces: compare the two, "
            "make the database match one version, then run 'dbledger baseline VERSION'"
        )
    newest = matches[-1]
    also = ""
    if len(matches) > 1:
        others = ", ".join(m.name for m in matches[:-1])
        also = f" ({others} produce the same schema: choose the newest whose work is really there)"
    return (
        f"Its schema is exactly what the migrations up to {newest.name} produce{also}: run "
        f"'dbledger baseline {newest.version}' with the same database and migrations folder, then "
        "'dbledger up' applies the rest"
    )
