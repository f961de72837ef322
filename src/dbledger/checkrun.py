"""How ``dbledger check`` runs (``dbledger.checks`` lists the parts and the records): the
folder's files taken as ``up`` would take them, every migration applied on the scratch
database ``dbledger.sandbox`` provides, each down section round-tripped, the application's
queries tried after each migration, and lint's and a real database's findings gathered.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from contextlib import nullcontext
from dataclasses import replace
from typing import TYPE_CHECKING, Any, NamedTuple

from dbledger.checks import CheckFinding, CheckReport, Severity
from dbledger.contracts import LedgerRow, LedgerSnapshot, Progress, Statement, no_progress
from dbledger.errors import DatabaseError, MigrationFileError, UsageError
from dbledger.ledger import LEDGER_VERSION
from dbledger.migrations import Folder, Migration, shown_path
from dbledger.placeholders import Placeholder
from dbledger.redaction import redact
from dbledger.sandbox import Sandbox, ServerWide, drop_role, reason, roles_present, server_wide

if TYPE_CHECKING:
    from dbledger.backends.base import Backend
    from dbledger.dialects import Dialect
    from dbledger.lint import Finding
    from dbledger.preflight import Ledger, Step
    from dbledger.queries import Query
    from dbledger.schema import Difference, SchemaModel
    from dbledger.schema.model import Function


class _Steps(NamedTuple):
    migration: Migration
    up: Step
    down: Step | None


def read_queries(paths: Iterable[str | os.PathLike[str]], dialect: str) -> list[Query]:
    """The queries of ``paths``, read by the rules of ``dialect`` (``dbledger.queries``)."""
    from dbledger import queries
    from dbledger.dialects import for_name

    return queries.read_queries(paths, for_name(dialect))


# What became of one query after each migration: (migration name, error or None).
_Outcomes = list[tuple[str, DatabaseError | None]]


class Run:
    """One ``dbledger check``: the findings of each part, gathered as the parts run."""

    def __init__(
        self,
        folder: Folder,
        parts: frozenset[str],
        queries: list[Query],
        dialect: str,
        progress: Progress = no_progress,
    ) -> None:
        # The repeatable migrations run after the versioned ones, as in 'up'.
        self.migrations = [*folder.migrations, *folder.repeatables]
        self.placeholders: Mapping[str, Placeholder] = {}  # the project's, for lint
        self.parts = parts
        self.queries = queries
        self.dialect = dialect  # the SQL the migrations are written in
        self.progress = progress
        self.database = ""
        self.pending: list[str] | None = None
        self.checked = 0  # the queries tried on the scratch database
        self.ran: set[str] = set()  # the parts that had something to check
        self.findings: list[CheckFinding] = []
        self.wide: list[ServerWide] = []  # the statements that change the server, not a database
        self.made: dict[str, ServerWide] = {}  # the roles the migrations created on a borrowed server
        self.had: set[str] = set()  # of the roles the folder creates, those there before the check
        if "folder" in parts:
            self._folder(folder)
            self.ran.add("folder")

    def _add(self, kind: str, severity: Severity, message: str, **where: Any) -> None:
        if where.get("path"):
            where["path"] = shown_path(where["path"])
        finding = CheckFinding(kind, severity, redact(message), **where)
        if finding not in self.findings:  # the folder part and the scratch run meet one refusal
            self.findings.append(finding)

    def report(self, directory: str) -> CheckReport:
        return CheckReport(
            self.database,
            directory,
            sorted(self.ran),
            [m.name for m in self.migrations],
            self.checked,
            self.findings,
            self.pending,
        )

    # -- folder ------------------------------------------------------------------------------
    def _folder(self, folder: Folder) -> None:
        """What reading the folder lets pass but no run would: files that look like migrations
        but never run, and up sections with nothing to run (each version is unique, or reading
        the folder failed already)."""
        for stray in folder.strays:
            path, _, reason = stray.partition(": ")
            self._add("folder", "error", reason, path=path)
        for m in self.migrations:
            if m.up.empty:
                self._empty(m)

    def _empty(self, m: Migration) -> None:
        self._add(
            "folder",
            "error",
            "the up section is empty (only comments or blank lines): write the migration's SQL, or "
            "delete the file",
            path=str(m.path),
            line=m.up.line,
            migration=m.name,
        )

    def _steps(self, backend: Backend) -> list[_Steps]:
        """Each migration's sections as ``up`` and ``down`` would run them, on an empty database,
        up to the first one they would refuse (every refusal is a finding)."""
        from dbledger import preflight

        empty = preflight.Ledger(
            None,
            backend.names,
            backend.ledger_schema,
            backend.default_schema,
            server=backend.server(),
            transaction_timeout=backend.waits.transaction_timeout,
            placeholders=backend.placeholders,
        )
        steps: list[_Steps] = []
        refused = False
        for m in self.migrations:
            if m.up.empty:  # up refuses it; the folder part says so with the line
                self._empty(m)
                refused = True
                continue
            try:
                up = preflight.up([m], empty, backend.dialect).steps[0]
                down = None if m.down is None else _down_step(m, empty, backend)
            except MigrationFileError as exc:
                line = re.match(r"line (\d+): ", exc.reason)
                self._add(
                    "folder",
                    "error",
                    exc.reason[line.end() :] if line else exc.reason,
                    path=exc.path,
                    line=int(line.group(1)) if line else None,
                    migration=m.name,
                )
                refused = True
            if not refused:
                steps.append(_Steps(m, up, down))
        return steps

    # -- apply, round trip, queries ----------------------------------------------------------
    def on_scratch(self, backend: Backend, *, nested: bool) -> None:
        """Apply every migration on the empty database ``backend`` and check each part on it.
        ``nested``: it is a database to leave empty (everything in one transaction, rolled back)."""
        self.database = backend.database.display
        steps = self._steps(backend)
        if nested and (outside := [s.migration.name for s in steps if not _transactional(s)]):
            raise UsageError(
                f"--shadow-url runs the check in one transaction that is rolled back, but "
                f"{', '.join(outside)} must run outside one (transaction:false): check on a temporary "
                "database instead (leave out --shadow-url, and give the user CREATEDB)"
            )
        self.ran |= self.parts & {"apply", "round-trip"}
        if backend.dialect_name == "postgresql":
            self.wide = server_wide(s for step in steps for s in (step.up, step.down) if s is not None)
        if not nested and not self._may_borrow(backend):
            return  # a statement check cannot undo on the server: nothing is applied
        queries = self._checked_queries(backend)
        self.checked = len(queries)
        self.ran |= {"queries"} if queries else set()
        self.progress("note", f"applying {len(steps)} migration(s) on {self.database}", None)
        scratch = Sandbox(backend, nested=nested, progress=self.progress)
        outcomes: list[_Outcomes] = [[] for _ in queries]
        with backend.rolled_back() if nested else nullcontext():
            complete = self._apply_each(scratch, steps, queries, outcomes)
        complete = complete and len(steps) == len(self.migrations)
        for query, outcome in zip(queries, outcomes, strict=True):
            self._judge(query, outcome, complete=complete)

    def _checked_queries(self, backend: Backend) -> list[Query]:
        """The queries to try; an export's queries on dbledger's own tables are left out (the
        scratch database has no ledger)."""
        if "queries" not in self.parts:
            return []
        own = frozenset(backend.names.tables)
        kept = [
            q
            for q in self.queries
            if q.source != "export" or not backend.dialect.references(Statement(q.sql, q.line), own)
        ]
        if left := len(self.queries) - len(kept):
            self.progress("note", f"left out {left} exported query(ies) on dbledger's own tables", None)
        return kept

    # -- the server a temporary database is on -----------------------------------------------
    def _may_borrow(self, backend: Backend) -> bool:
        """On a temporary database, whose server is the user's: warn of each role the folder
        creates (dropped in ``leave_server``), and refuse, applying nothing, when a statement
        changes the server in a way check cannot undo. The roles there already are noted."""
        refused = [found for found in self.wide if not found.undone]
        for found in refused:
            advice = (
                "check on an empty database with --shadow-url instead, where every migration runs in "
                "one transaction that is rolled back, this statement too"
                if found.transactional and found.step.transactional
                else "it runs outside a transaction, so no check can roll it back: do this server setup "
                "outside the migrations (in CI: a step before check)"
            )
            self._server_finding(
                found,
                "error",
                f"{found.command} changes the server, not only the database (roles, databases, "
                "tablespaces and settings belong to all of a server's databases), and check cannot "
                f"undo it on the server it borrows for its scratch database, so it applied no "
                f"migration: {advice}",
            )
        if refused:
            return False
        for found in self.wide:
            if found.creates is not None and found.command.startswith("CREATE"):
                self._server_finding(found, "warning", _CREATES_A_ROLE[found.guarded].format(found.command))
        self.had = roles_present(backend, (f.creates for f in self.wide if f.creates is not None))
        return True

    def _server_finding(self, found: ServerWide, severity: Severity, message: str) -> None:
        self._add(
            "apply",
            severity,
            message,
            path=str(found.step.migration.path),
            line=found.statement.line,
            migration=found.step.name,
        )

    def _made_by(self, step: Step, scratch: Sandbox, failed: DatabaseError | None = None) -> None:
        """Note the roles ``step`` created on a borrowed server: all of its own once it ran, or,
        when it failed outside a transaction, those before the statement that failed."""
        if scratch.nested or (failed is not None and step.transactional):
            return  # rolled back
        stop = failed.statement.line if failed is not None and failed.statement is not None else None
        for found in self.wide:
            ran = stop is None or found.statement.line < stop
            if found.step is step and found.creates is not None and ran:
                self.made.setdefault(found.creates, found)

    def _role_there(self, err: DatabaseError) -> str:
        """Advice for a role the folder creates that the server has already (SQLSTATE 42710)."""
        if err.sqlstate != "42710" or not any(
            f.creates is not None and not f.guarded and f.statement == err.statement for f in self.wide
        ):
            return ""
        return (
            "\nhelp: roles belong to the whole server, not to one database, and this one was there "
            "before the check began; check creates the folder's roles from empty and drops them when "
            "done: drop it from this server, or check on a server of its own"
        )

    def leave_server(self, server: Backend) -> None:
        """Drop the roles the migrations created on ``server`` that were not there before, once
        the scratch database (and what they own in it) is gone; a warning for each that stays."""
        for name in sorted(set(self.made) - self.had):
            try:
                drop_role(server, name)
            except DatabaseError as err:
                found = self.made[name]
                self._server_finding(
                    found,
                    "warning",
                    f"the role {name} that {found.step.name} created is left on the server, DROP ROLE "
                    f"failed: {reason(err)}\nhelp: drop it there, or the next check fails where "
                    f"{found.step.name} creates it",
                )

    def _apply_each(
        self, scratch: Sandbox, steps: list[_Steps], queries: list[Query], outcomes: list[_Outcomes]
    ) -> bool:
        """Apply each migration in turn, round-trip it, try the queries after it; False when one
        failed and the rest could not be applied."""
        trips = "round-trip" in self.parts
        before = scratch.introspect() if trips else None
        for step in steps:
            m = step.migration
            try:
                scratch.apply(step.up)
            except DatabaseError as err:
                self._made_by(step.up, scratch, failed=err)
                self._add(
                    "apply",
                    "error",
                    f"{m.name} fails on a database that holds the migrations before it: {err.message}"
                    + self._role_there(err),
                    path=str(m.path),
                    line=err.line,
                    migration=m.name,
                    sqlstate=err.sqlstate,
                )
                return False
            self._made_by(step.up, scratch)
            after = scratch.introspect() if trips else None
            if trips and step.down is not None and not self._round_trip(scratch, step, before, after):
                return False
            for query, outcome in zip(queries, outcomes, strict=True):
                outcome.append((m.name, scratch.try_query(query)))
            before = after
        return True

    def _round_trip(
        self, scratch: Sandbox, step: _Steps, before: SchemaModel | None, after: SchemaModel | None
    ) -> bool:
        """Down, compared with the schema before the up; then up again, compared with the schema
        the first up left. Undone afterwards when both sections run in a transaction, so a down
        that does not revert does not spoil the migrations after it; False when a committed
        round trip failed halfway (the scratch database is then in no known state)."""
        assert step.down is not None
        assert before is not None
        assert after is not None
        m, dialect = step.migration, scratch.backend.dialect
        undoable = _transactional(step)
        section = step.down
        try:
            with scratch.undone() if undoable else nullcontext():
                scratch.apply(step.down, undoable=undoable)
                reverted = scratch.introspect()
                self._differ(
                    step.down,
                    _meaningful(before, reverted, dialect),
                    f"the down section of {m.name} does not undo its up section: after up and down",
                )
                section = step.up
                scratch.apply(step.up, undoable=undoable)
                again = scratch.introspect()
                self._differ(
                    step.up,
                    _meaningful(after, again, dialect),
                    f"{m.name} applied again after its down section leaves another schema than the "
                    "first time",
                )
        except DatabaseError as err:
            what = (
                f"the down section of {m.name} fails right after its up section"
                if section is step.down
                else f"{m.name} cannot be applied again after its down section ran"
            )
            self._add(
                "round-trip",
                "error",
                f"{what}: {err.message}",
                path=str(m.path),
                line=err.line or section.section.line,
                migration=m.name,
                sqlstate=err.sqlstate,
            )
            return undoable
        return True

    def _differ(self, section: Step, found: list[Difference], message: str) -> None:
        if found:
            self._add(
                "round-trip",
                "error",
                f"{message}, {_differences(found)}",
                path=str(section.migration.path),
                line=section.section.line,
                migration=section.name,
            )

    def _judge(self, query: Query, outcome: _Outcomes, *, complete: bool) -> None:
        """A query that fails on the final schema is an error, naming the migration that broke
        it when it worked before; one that broke and works again later is a warning."""
        where = {"path": query.path, "line": query.line}
        for index in range(1, len(outcome)):
            (worked_after, earlier), (broke_by, err) = outcome[index - 1], outcome[index]
            if earlier is not None or err is None:
                continue
            mended = next((name for name, later in outcome[index + 1 :] if later is None), None)
            if mended is None:
                self._add(
                    "queries",
                    "error",
                    f"the query worked after {worked_after} and fails after {broke_by}, which broke "
                    f"it: {reason(err)}",
                    **where,
                    migration=broke_by,
                    sqlstate=err.sqlstate,
                )
                return
            self._add(
                "queries",
                "warning",
                f"the query fails after {broke_by} (it worked after {worked_after}) until {mended}: "
                f"deployed without {mended}, {broke_by} breaks it: {reason(err)}",
                **where,
                migration=broke_by,
                sqlstate=err.sqlstate,
            )
        final = outcome[-1][1] if outcome else None
        if not complete or final is None or any(err is None for _, err in outcome):
            return
        if final.sqlstate == "42P18" and query.source == "export":
            # The application's driver sent the types a bare $1 needs; the export does not have them.
            self._add(
                "queries",
                "warning",
                f"the query cannot be prepared without the parameter types the application sent: "
                f"{reason(final)}",
                **where,
                sqlstate=final.sqlstate,
            )
            return
        self._add(
            "queries",
            "error",
            f"the query fails on the schema the migrations produce: {reason(final)}",
            **where,
            sqlstate=final.sqlstate,
        )

    # -- lint and a real database ------------------------------------------------------------
    def lint(self, findings: list[Finding] | None = None) -> None:
        """Lint's ``findings`` (with ``against``: the pending migrations, against that database's
        catalog), or else every migration linted as one run from empty, without a database. Its
        rules are PostgreSQL's: a SQLite folder is not linted."""
        if self.dialect != "postgresql":
            self.progress("note", "lint left out: its rules are PostgreSQL's", None)
            return
        if findings is None:
            from dbledger.lint import lint_migrations  # pglast: only for this part

            findings = lint_migrations(self.migrations, placeholders=self.placeholders)
        self.ran.add("lint")
        names = {str(m.path): m.name for m in self.migrations}
        for found in findings:
            self._add(
                "lint",
                "error" if found.severity == "error" else "warning",
                f"{found.rule}: {found.message}" + (f"\nhelp: {found.help}" if found.help else ""),
                path=str(found.path),
                line=found.line,
                migration=names.get(str(found.path)),
            )

    def against(self, problems: list[str], pending: list[str] | None, display: str) -> None:
        """What ``verify`` found on the real database ``display``, and what it has not applied
        (None: it cannot say, the database has no ledger to compare with)."""
        files = {m.name: m for m in self.migrations}
        self.pending = pending
        self.ran.add("against")
        for problem in problems:
            named = re.search(r"migration '([^']+)'", problem)
            m = files.get(named.group(1)) if named else None
            self._add(
                "against",
                "error",
                f"{display}: {problem}",
                path=str(m.path) if m else None,
                migration=named.group(1) if named else None,
            )
        for name in pending or ():
            self._add(
                "against",
                "note",
                f"pending on {display}: the next 'dbledger up' there applies it",
                path=str(files[name].path),
                migration=name,
            )


_CREATES_A_ROLE = {
    False: "{} creates a role, and roles belong to the whole server, not to one database: check "
    "creates it on the server it borrows for its scratch database and drops it when done; on a "
    "server that has it already (another database migrated with these files), this migration fails "
    "with 42710",
    True: "{} (in a DO block) creates a role, and roles belong to the whole server, not to one "
    "database: check creates it on the server it borrows for its scratch database and drops it when "
    "done, unless it was there before",
}


def _down_step(m: Migration, empty: Ledger, backend: Backend) -> Step:
    """The down section of ``m`` as ``down`` would run it, right after ``m`` was applied."""
    from dbledger import preflight

    row = LedgerRow(m.name, m.version, "applied", m.checksum, None, None, True, None, applied_order=1)
    applied = replace(empty, snapshot=LedgerSnapshot(LEDGER_VERSION, (row,)))
    return preflight.down([m], applied, backend.dialect, steps=1).steps[0]


def _meaningful(want: SchemaModel, have: SchemaModel, dialect: Dialect) -> list[Difference]:
    """The differences from ``want`` to ``have``, but for function bodies that differ only in
    comments and white space (a down section that restores a function with its comments
    reworded has restored it)."""
    from dbledger.schema import diff

    found = diff(want, have)
    wanted = {f.key: f for f in want.functions}
    had = {f.key: f for f in have.functions}
    return [
        d
        for d in found
        if not (
            d.attribute == "body"
            and d.name in wanted
            and d.name in had
            and _code_form(wanted[d.name], dialect) == _code_form(had[d.name], dialect)
        )
    ]


def _code_form(function: Function, dialect: Dialect) -> str:
    """A function's body as the dialect compares statements: for PostgreSQL its tokens, so
    comments, white space and keyword case fall away and everything else counts (``RETURN NEW``
    is not ``RETURN OLD``)."""
    return dialect.normal_form(Statement(function.body, 1))


def _transactional(step: _Steps) -> bool:
    return step.up.transactional and (step.down is None or step.down.transactional)


def _differences(found: list[Any], shown: int = 10) -> str:
    lines = [str(d).replace("\n", "\n  ") for d in found[:shown]]
    more = f"\n- and {len(found) - shown} more" if len(found) > shown else ""
    return f"{len(found)} difference(s):\n" + "\n".join(f"- {line}" for line in lines) + more
