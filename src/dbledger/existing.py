"""Databases built without dbledger (the incident's own: tables created by hand from old files,
no ledger). ``up`` refuses to run on one; this module works out which migrations it already
contains, so the refusal can name the exact ``dbledger baseline`` command.

The method: replay the migration files one by one on a scratch database of the same kind and
compare its schema signature with the live one after each step. A version whose result equals the
live schema is one the database may be baselined at.
"""

from __future__ import annotations

from dbledger.backends.base import Backend, StatementError
from dbledger.errors import DbledgerError
from dbledger.migrations import Migration


def replay(scratch: Backend, migration: Migration) -> None:
    """Run ``migration``'s up section on a scratch database, as the runner would but with no
    ledger. Raises StatementError when a statement fails."""
    statements = scratch.split(migration.up)
    if migration.up.transaction:
        with scratch.transaction():
            for statement in statements:
                scratch.execute(statement)
    else:
        for statement in statements:
            scratch.execute(statement)


def replay_matches(backend: Backend, migrations: list[Migration]) -> list[Migration] | None:
    """Migrations after which a fresh database has exactly the live schema, in order; None when
    no scratch database could be made. The replay stops at the first file that fails."""
    live = backend.schema_signature()
    matches: list[Migration] = []
    try:
        with backend.scratch() as scratch:
            for migration in migrations:
                try:
                    replay(scratch, migration)
                except StatementError:
                    break
                if scratch.schema_signature() == live:
                    matches.append(migration)
    except DbledgerError:
        return None
    return matches


def existing_schema_problem(backend: Backend, migrations: list[Migration], tables: list[str]) -> str:
    """The refusal for a database that has ``tables`` but no ledger, with the way forward."""
    shown = ", ".join(tables[:5]) + (f" and {len(tables) - 5} more" if len(tables) > 5 else "")
    head = (
        f"the database already has {len(tables)} table(s) ({shown}) but no ledger table "
        "schema_migrations: it was built without dbledger, so nothing records which migrations it "
        "already contains. "
    )
    tail = " (or pass --allow-existing-schema to run every migration on top of it)"
    matches = replay_matches(backend, migrations)
    if matches:
        newest = matches[-1]
        also = ""
        if len(matches) > 1:
            others = ", ".join(m.name for m in matches[:-1])
            also = f" ({others} produce the same schema: choose the newest whose work is really there)"
        return (
            f"{head}Its schema is exactly what the migrations up to {newest.name} produce{also}: "
            f"run 'dbledger baseline {newest.version}' with the same database and migrations "
            f"folder, then 'dbledger up' applies the rest{tail}"
        )
    if matches == []:
        return (
            f"{head}Its schema matches what no prefix of the migration files produces: compare the "
            "two, make the database match one version, then run 'dbledger baseline VERSION'" + tail
        )
    return (
        f"{head}Mark what it already contains with 'dbledger baseline VERSION' (VERSION = the "
        "newest migration the database already matches)" + tail
    )
