"""What a migration really did on a scratch database, seen from a second connection: the table
locks its session held, and the tables and indexes whose storage it replaced.

    watch = Watch(lambda: connect(scratch), ledger=("public", "schema_migrations"), own=...)
    watch.begin()                  # just before the migration's transaction begins
    ...                            # the migration runs, in another session
    seen = watch.end()             # after it committed (or failed)

Locks, two ways, both from ``pg_locks`` on the watcher's own connection, keyed on the scratch
database (nobody else knows of it, so every other session there is the run's):

* **at commit**: ``begin`` takes ``SHARE`` on the ledger table in an open transaction. The
  migration's statements run untouched; when its transaction then writes its ledger row (the
  last thing before COMMIT, after its time was measured) that write waits for the watcher, and
  while it waits every lock the transaction took is still held (PostgreSQL keeps table locks to
  the end of the transaction). The watcher reads them, then lets the write through. This sees
  the locks of a transactional migration however short it is.
* **while running**: every 10 ms the watcher samples the run's granted relation locks, which
  is what sees a ``transaction:false`` migration, whose statements release their locks as each
  one ends (a statement quicker than the interval may go unseen).

Rewrites: ``pg_relation_filenode`` of every table, materialized view and index, read before and
after the migration: a table whose file changed was rewritten (ALTER COLUMN TYPE, VACUUM FULL,
CLUSTER, TRUNCATE, SET LOGGED); an index of a table that was there before is rebuilt when its file
changed (REINDEX, a rewrite's indexes) or when it is new (ALTER COLUMN TYPE drops an index on the
column and builds it again under a new oid; CREATE INDEX builds one).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, NamedTuple

from dbledger.analysis.model import lock_from_pg_locks, lock_strength
from dbledger.redaction import redact

if TYPE_CHECKING:
    import psycopg

__all__ = ["SAMPLE_EVERY", "HeldLock", "Seen", "Watch"]

SAMPLE_EVERY = 0.01  # seconds between two samples while a migration runs

# The run's relation locks on this database (the watcher's own left out).
_LOCKS = """
SELECT l.pid, l.relation::bigint, l.mode, l.granted FROM pg_locks l
WHERE l.locktype = 'relation' AND l.pid <> pg_backend_pid()
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""
# Each table's, materialized view's and index's file, and an index's table.
_FILES = """
SELECT c.oid::bigint, pg_relation_filenode(c.oid)::bigint, x.indrelid::bigint FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_index x ON x.indexrelid = c.oid
WHERE c.relkind IN ('r', 'm', 'i') AND n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'
"""
# Each relation's name and kind, and the table it belongs to (an index's, an owned sequence's).
_NAMES = """
SELECT c.oid::bigint, n.nspname, c.relname, c.relkind::text, pn.nspname, p.relname
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_index x ON x.indexrelid = c.oid
LEFT JOIN pg_depend d ON c.relkind = 'S' AND d.classid = 'pg_class'::regclass AND d.objid = c.oid
  AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')
LEFT JOIN pg_class p ON p.oid = coalesce(x.indrelid, d.refobjid)
LEFT JOIN pg_namespace pn ON pn.oid = p.relnamespace
WHERE c.oid = ANY(%s::oid[])
"""
_KINDS = {
    "r": "table",
    "p": "table",
    "m": "materialized view",
    "i": "index",
    "I": "index",
    "S": "sequence",
    "v": "view",
    "f": "foreign table",
    "t": "toast table",
    "c": "type",
}


class HeldLock(NamedTuple):
    """A table-level lock the migration's session held: on which relation (``schema.name``),
    in which mode (``ACCESS EXCLUSIVE``), and how it was seen (``at commit``, ``while running``)."""

    relation: str
    kind: str
    mode: str
    seen: str


class Seen(NamedTuple):
    """What one migration did, as the watcher saw it."""

    locks: list[HeldLock]
    rewritten: list[str]  # tables and materialized views whose file changed
    rebuilt: list[str]  # indexes of tables that existed before, whose file is new
    notes: list[str]


class Watch:
    """A watcher thread on its own connection to the scratch database. ``ledger``: (schema,
    table) of the ledger, whose write ends a migration's transaction; ``own``: dbledger's tables
    (``schema.table``), whose locks and files are the run's bookkeeping, not the migration's."""

    def __init__(
        self,
        connect: Callable[[], psycopg.Connection[Any]],
        *,
        ledger: tuple[str, str],
        own: Iterable[str],
    ) -> None:
        self._conn = connect()
        self._ledger = ledger
        self._own = frozenset(own)
        self._jobs: queue.Queue[tuple[str, queue.Queue[Any]]] = queue.Queue()
        self._watching = False
        self._gate = False  # the watcher holds SHARE on the ledger table
        self._ledger_oid: int | None = None
        self._at_commit: set[tuple[int, str]] = set()
        self._running: set[tuple[int, str]] = set()
        self._files: dict[int, tuple[int, int | None]] = {}  # oid -> (file, an index's table)
        self._early: dict[int, tuple[str, str]] = {}  # names read before the migration committed
        self._notes: list[str] = []
        self._thread = threading.Thread(target=self._loop, name="dbledger-lockwatch", daemon=True)
        self._thread.start()

    # -- the calling side ---------------------------------------------------------------------
    def begin(self) -> None:
        """Just before a migration: read the files, arm the gate, start sampling."""
        self._ask("begin")

    def end(self) -> Seen:
        """After the migration committed or failed: stop, let the gate go, compare the files."""
        seen: Seen = self._ask("end")
        return seen

    def close(self) -> None:
        if self._thread.is_alive():
            self._ask("stop")
            self._thread.join()
        self._conn.close()

    def _ask(self, job: str) -> Any:
        answer: queue.Queue[Any] = queue.Queue(maxsize=1)
        self._jobs.put((job, answer))
        result = answer.get()
        if isinstance(result, BaseException):
            raise result
        return result

    # -- the watcher's thread -----------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            try:
                job, answer = self._jobs.get(timeout=SAMPLE_EVERY if self._watching else None)
            except queue.Empty:
                self._guarded(self._sample)
                continue
            if job == "stop":
                self._guarded(self._release)
                answer.put(None)
                return
            try:
                if job == "begin":
                    self._begin()
                    answer.put(None)
                else:
                    answer.put(self._end())
            except Exception as exc:
                answer.put(exc)

    def _guarded(self, work: Callable[[], None]) -> None:
        """Observation must never fail the run: a lost watcher connection becomes a note."""
        import psycopg

        try:
            work()
        except psycopg.Error as exc:
            self._watching = False
            self._notes.append(f"the lock watcher stopped: {redact(str(exc).strip().splitlines()[0])}")

    def _begin(self) -> None:
        import psycopg
        from psycopg import sql

        self._at_commit, self._running, self._notes, self._early = set(), set(), [], {}
        self._files = self._read_files()
        try:
            row = self._conn.execute(
                "SELECT to_regclass(%s)::bigint", (".".join(self._ledger_quoted()),)
            ).fetchone()
            self._ledger_oid = None if row is None or row[0] is None else int(row[0])
            if self._ledger_oid is not None:
                self._conn.execute("BEGIN")
                self._conn.execute(
                    sql.SQL("LOCK TABLE {} IN SHARE MODE").format(sql.Identifier(*self._ledger))
                )
                self._gate = True
        except psycopg.Error as exc:
            self._release()
            self._notes.append(f"locks at commit not observed: {redact(str(exc).strip().splitlines()[0])}")
        self._watching = True

    def _ledger_quoted(self) -> list[str]:
        return ['"' + part.replace('"', '""') + '"' for part in self._ledger]

    def _sample(self) -> None:
        rows = self._conn.execute(_LOCKS).fetchall()
        self._running |= {(int(oid), mode) for _, oid, mode, granted in rows if granted}
        if not self._gate:
            return
        waiting = {pid for pid, oid, _, granted in rows if not granted and oid == self._ledger_oid}
        if waiting:  # the migration's ledger write: its transaction's locks are all still held
            held = {(int(oid), mode) for pid, oid, mode, granted in rows if granted and pid in waiting}
            self._at_commit |= held
            # Named now, while a table the migration drops is still there to be seen.
            self._early = self._names([oid for oid, _ in held])
            self._release()

    def _release(self) -> None:
        if self._gate:
            self._gate = False
            self._conn.execute("COMMIT")

    def _end(self) -> Seen:
        import psycopg

        self._guarded(self._sample)
        self._watching = False
        try:
            self._release()
            after = self._read_files()
            changed = [
                oid for oid, (node, _) in after.items() if oid in self._files and self._files[oid][0] != node
            ]
            # ALTER COLUMN TYPE drops an index on the column and builds it anew, under a new oid.
            built = [
                oid for oid, (_, table) in after.items() if oid not in self._files and table in self._files
            ]
            wanted = changed + built + [oid for oid, _ in self._at_commit | self._running]
            names = {**self._early, **self._names(wanted)}
        except psycopg.Error as exc:
            return Seen(
                [], [], [], [*self._notes, f"not observed: {redact(str(exc).strip().splitlines()[0])}"]
            )
        rewritten = sorted(names[oid][0] for oid in changed if oid in names and names[oid][1] != "index")
        rebuilt = sorted(
            names[oid][0] for oid in changed + built if oid in names and names[oid][1] == "index"
        )
        return Seen(self._locks(names), rewritten, rebuilt, list(self._notes))

    def _locks(self, names: dict[int, tuple[str, str]]) -> list[HeldLock]:
        """The strongest mode seen on each relation, at commit before while running."""
        best: dict[int, HeldLock] = {}
        for seen, found in (("at commit", self._at_commit), ("while running", self._running)):
            for oid, raw in found:
                if oid not in names:
                    continue
                mode = lock_from_pg_locks(raw)
                if oid not in best or lock_strength(mode) > lock_strength(best[oid].mode):
                    best[oid] = HeldLock(names[oid][0], names[oid][1], mode, seen)
        return sorted(best.values(), key=lambda lock: (-lock_strength(lock.mode), lock.relation))

    def _read_files(self) -> dict[int, tuple[int, int | None]]:
        return {
            int(oid): (int(node), None if table is None else int(table))
            for oid, node, table in self._conn.execute(_FILES)
            if node is not None
        }

    def _names(self, oids: list[int]) -> dict[int, tuple[str, str]]:
        """oid -> (schema.name, kind) for the migration's own relations: dbledger's tables and
        what belongs to them are left out, as are relations that no longer exist."""
        if not oids:
            return {}
        found: dict[int, tuple[str, str]] = {}
        for oid, schema, name, kind, parent_schema, parent in self._conn.execute(
            _NAMES, (sorted(set(oids)),)
        ):
            owner = f"{parent_schema}.{parent}" if parent is not None else f"{schema}.{name}"
            if owner in self._own or schema.startswith("pg_") or schema == "information_schema":
                continue
            found[int(oid)] = (f"{schema}.{name}", _KINDS.get(kind, kind))
        return found
