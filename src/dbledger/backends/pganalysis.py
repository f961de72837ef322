"""The PostgreSQL backend's dry-run annotator: ``dbledger.analysis`` (pglast and the catalog)
turned into the lines and JSON a dry run prints.

One annotator serves a whole dry run: the schema each migration is analysed against includes the
changes of the migrations planned before it (a table created by 001 is empty, and exists, when
002 alters it).
"""

from __future__ import annotations

from typing import Any

import psycopg

from dbledger.analysis import MigrationEstimate, Overlay, PostgresCatalog, estimate_migration, history_scale
from dbledger.analysis.model import conflicts, lock_from_pg_locks
from dbledger.annotation import Annotation, SectionAnnotation
from dbledger.backends.pgwaits import describe
from dbledger.contracts import HistoryRow, Statement
from dbledger.errors import DatabaseError
from dbledger.redaction import redact


def learned_scale(history: list[HistoryRow]) -> float:
    """How this database's migrations compared with their estimates: the history's ``apply`` rows
    carry the estimate made just before each ran next to the time it took."""
    pairs = [
        (float(row.estimate_ms), float(row.execution_time_ms))
        for row in history
        if row.action == "apply" and row.estimate_ms is not None and row.execution_time_ms is not None
    ]
    return history_scale(pairs)


# Who holds a table-level lock on one of the named tables now (this session left out).
_HOLDERS_NOW = """
SELECT DISTINCT ON (l.relation, l.mode, a.pid) l.relation::regclass::text, l.mode, a.pid, a.application_name,
       a.usename, a.state, now() - coalesce(a.xact_start, a.query_start), a.query
FROM pg_locks AS l JOIN pg_stat_activity AS a USING (pid)
WHERE l.locktype = 'relation' AND l.granted AND l.pid <> pg_backend_pid()
  AND l.relation IN (SELECT to_regclass(name) FROM unnest(%s::text[]) AS name)
"""


class PostgresAnnotator:
    def __init__(self, conn: psycopg.Connection[Any], *, scale: float = 1.0, live: bool = False) -> None:
        self.conn = conn
        self.live = live  # a dry run: name the sessions a statement would wait for now
        self.catalog = Overlay(PostgresCatalog(conn))
        self.scale = scale

    def annotate(self, statements: list[Statement], transactional: bool) -> SectionAnnotation:
        try:
            estimate = estimate_migration(
                [s.sql for s in statements], self.catalog, transactional=transactional, scale=self.scale
            )
        except psycopg.Error as exc:  # the catalog could not be read: the connection's error
            raise DatabaseError(redact(str(exc)), sqlstate=exc.sqlstate) from exc
        waits = (
            self._waits_now(estimate) if self.live else []
        )  # before this migration's own tables join the catalog
        for item in estimate.statements:  # the next migration sees this one's schema
            self.catalog.apply(item.analysis.changes)
        return SectionAnnotation(
            statements=[_annotation(item) for item in estimate.statements],
            notes=_lock_notes(estimate) + waits,
        )

    def _waits_now(self, estimate: MigrationEstimate) -> list[str]:
        """The sessions that hold, right now, a lock one of the statements would wait for: the
        wait a dry run cannot estimate, named so the operator can decide before the run."""
        wanted = [
            (lock.table, lock.mode)
            for item in estimate.statements
            for lock in item.analysis.locks
            if not lock.new
        ]
        if not wanted:
            return []
        try:
            rows = self.conn.execute(_HOLDERS_NOW, ([table for table, _ in wanted],)).fetchall()
        except psycopg.Error:  # a diagnosis; the plan stands without it
            return []
        notes = []
        for table, held, *session in rows:
            mode = lock_from_pg_locks(held)
            blocked = sorted({want for name, want in wanted if name == table and conflicts(want, mode)})
            if blocked:
                notes.append(
                    f"waits now: {table} is held ({mode}) by {describe(*session)}; {', '.join(blocked)} "
                    "waits for it: each statement waits at most its lock timeout, then the migration is "
                    "rolled back and tried again"
                )
        return notes


def _annotation(item: Any) -> Annotation:
    analysis = item.analysis
    parts = [analysis.kind]
    # Locks on tables the migration itself creates block nobody: leave them out of the summary.
    blocking = [lock for lock in analysis.locks if not lock.new]
    if blocking:
        parts.append(", ".join(f"{lock.mode} on {lock.table}" for lock in blocking))
    parts.append(analysis.effect + (", destructive" if analysis.destructive else ""))
    if item.size is not None:
        parts.append(f"{item.size.rows:,} rows, {item.size.bytes / 1_048_576:.1f} MB")
    parts.append(f"~{_ms(item.ms)}")
    notes = [redact(note) for note in analysis.notes]  # notes may quote the statement
    summary = "; ".join(parts)
    if notes:
        summary += "\n--   " + "\n--   ".join(notes)
    details = {
        "kind": analysis.kind,
        "tables": list(analysis.tables),
        "lock": analysis.lock,
        "locks": [{"table": lock.table, "mode": lock.mode, "new": lock.new} for lock in analysis.locks],
        "effect": analysis.effect,
        "destructive": analysis.destructive,
        "notes": notes,
        "rows": item.size.rows if item.size else None,
        "bytes": item.size.bytes if item.size else None,
    }
    return Annotation(summary, details, item.ms, analysis.destructive)


def _lock_notes(estimate: MigrationEstimate) -> list[str]:
    notes = [
        f"{hold.mode} on {hold.table} for ~{_ms(hold.held_ms)}"
        for hold in estimate.lock_holds
        if not hold.new and hold.held_ms >= 1
    ]
    if estimate.scale != 1.0:
        notes.append(f"estimates scaled by {estimate.scale:.2f}, from earlier migrations on this database")
    if estimate.unknown:
        notes.append(f"{estimate.unknown} statement(s) not analysed: their time is a guess")
    return notes


def _ms(ms: float) -> str:
    return f"{ms / 1000:.1f} s" if ms >= 1000 else f"{ms:.0f} ms"
