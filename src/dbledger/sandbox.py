"""The scratch database ``dbledger check`` applies the migrations on, and how work on it is
undone: a temporary database (or SQLite file) whose migrations commit, each part that must
leave no trace in a transaction of its own that is rolled back; or a ``--shadow-url`` database
the user gives, where everything runs in one transaction rolled back at the end, each such
part in a savepoint. Also how one of the application's queries is tried there, and which
statements reach past a temporary database to the server it is on (``server_wide``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, NamedTuple

from dbledger.contracts import Progress, Statement, no_progress
from dbledger.dialects import first_word
from dbledger.errors import ConfigError, DatabaseError

if TYPE_CHECKING:
    from dbledger.backends.base import Backend
    from dbledger.preflight import Step
    from dbledger.queries import Query
    from dbledger.schema import SchemaModel


def emptied(backend: Backend, display: str) -> Backend:
    """``backend`` (a ``--shadow-url`` database), after checking that it is empty: the check
    runs there in one transaction that is rolled back, and leaves it as empty as it found it."""
    if backend.read_ledger() is not None or backend.user_tables():
        raise ConfigError(
            f"shadow database {display} is not empty: give an empty database (the check runs there "
            "in one transaction that is rolled back, and leaves it empty)"
        )
    return backend


# Prepared under one name, deallocated after each query: PREPARE outlives a rollback.
_PREPARED = "dbledger_check_query"
_SAVEPOINT = "dbledger_check"


class Sandbox:
    """The database the migrations are applied on, and how work on it is undone. ``nested``:
    everything runs inside one transaction the caller rolls back (a ``--shadow-url``
    database), so an undone part is a savepoint; otherwise each undone part is a transaction
    of its own, rolled back, on a scratch database whose migrations commit."""

    def __init__(self, backend: Backend, *, nested: bool, progress: Progress = no_progress) -> None:
        from dbledger.executor import Executor  # the one ``up`` runs migrations with

        self.backend = backend
        self.nested = nested
        # The progress callback sees each statement (-v), as in a run of up.
        self.executor = Executor(backend, record=False, progress=progress)

    def apply(self, step: Step, *, undoable: bool = False) -> None:
        """Run one section; ``undoable``: inside ``undone()``. Raises DatabaseError."""
        self.executor.replay(step, within_transaction=self.nested or undoable)

    @contextmanager
    def undone(self) -> Iterator[None]:
        """Whatever runs inside is rolled back on exit, also after a statement failed."""
        if not self.nested:
            with self.backend.rolled_back():
                yield
            return
        self.backend.execute(Statement(f"SAVEPOINT {_SAVEPOINT}", 0))
        try:
            yield
        finally:
            self.backend.execute(Statement(f"ROLLBACK TO SAVEPOINT {_SAVEPOINT}", 0))
            self.backend.execute(Statement(f"RELEASE SAVEPOINT {_SAVEPOINT}", 0))

    def introspect(self) -> SchemaModel:
        """The schema as it is now. Inside a transaction, within a savepoint rolled back after:
        PostgreSQL's introspection sets ``search_path`` for the rest of the transaction it runs in
        (``SET LOCAL``), which would send the next migration's tables to ``pg_catalog``."""
        if not self.backend.in_transaction():
            return self.backend.introspect()
        self.backend.execute(Statement("SAVEPOINT dbledger_check_look", 0))
        try:
            return self.backend.introspect()
        finally:
            self.backend.execute(Statement("ROLLBACK TO SAVEPOINT dbledger_check_look", 0))
            self.backend.execute(Statement("RELEASE SAVEPOINT dbledger_check_look", 0))

    def try_query(self, query: Query) -> DatabaseError | None:
        """Prepare ``query`` on the schema as it is and run it with each of its sample values,
        all rolled back; the database's error, or None when it works."""
        if self.backend.dialect_name != "postgresql":
            return self._try_without_prepare(query)
        prepared = False
        try:
            with self.undone():
                # PostgreSQL infers each parameter's type and resolves every name here.
                self.backend.execute(Statement(f"PREPARE {_PREPARED} AS {query.sql}", query.line))
                prepared = True
                for values in query.runs:
                    arguments = f" ({', '.join(values)})" if values else ""
                    self.backend.execute(Statement(f"EXECUTE {_PREPARED}{arguments}", query.line))
        except DatabaseError as err:
            return err
        finally:
            if prepared:
                self.backend.execute(Statement(f"DEALLOCATE {_PREPARED}", 0))
        return None

    def _try_without_prepare(self, query: Query) -> DatabaseError | None:
        """SQLite has no PREPARE statement: EXPLAIN compiles a query (names resolved) without
        running it, its parameters bound as NULL; with sample values it runs, rolled back."""
        from dbledger.queries import bind

        try:
            with self.undone():
                if not query.runs:
                    self.backend.execute(Statement(f"EXPLAIN {bind(query.sql, None)}", query.line))
                for values in query.runs:
                    self.backend.execute(Statement(bind(query.sql, values), query.line))
        except DatabaseError as err:
            return err
        return None


def reason(err: DatabaseError) -> str:
    """The database's words for a failed query: SQLSTATE, message, DETAIL and HINT, without the
    statement (dbledger's PREPARE around it is no business of the reader)."""
    lines = [line for line in err.message.split("\n") if not line.startswith("statement at ")]
    first = lines[0] if lines else err.message
    if err.sqlstate and first.startswith(f"{err.sqlstate}: "):
        first = f"{err.sqlstate} {first[len(err.sqlstate) + 2 :]}"
    return "\n".join([first, *lines[1:]])


# -- statements that reach past the scratch database ---------------------------------------------
class ServerWide(NamedTuple):
    """A statement that changes the PostgreSQL server, not only the database it runs in: roles,
    databases, tablespaces and server settings are shared by every database of a server, so on
    a temporary database they outlive it. ``command``: what it does, in words without its
    options (a password stays out); ``creates``: the role it creates, or renames another to;
    ``undone``: check can undo it, since it only creates, changes or drops roles the folder
    creates (they are dropped afterwards); ``transactional``: PostgreSQL runs it inside a
    transaction, so a ``--shadow-url`` check, rolled back, undoes it; ``guarded``: in a DO
    block, which may create the role only when it is missing."""

    step: Step
    statement: Statement
    command: str
    creates: str | None = None
    undone: bool = False
    transactional: bool = True
    guarded: bool = False


class _Reach(NamedTuple):
    command: str
    creates: str | None = None
    # The sets of roles of which one must be all the folder's for check to undo the statement
    # (none: it changes something else of the server, which check cannot undo).
    roles: tuple[frozenset[str], ...] = ()
    transactional: bool = True
    guarded: bool = False


_SERVER_WORDS = frozenset({"CREATE", "ALTER", "DROP", "GRANT", "REVOKE", "COMMENT", "DO"})
# Only these statements are parsed: a data file's thousands of INSERTs are not.
_MENTIONS = re.compile(r"\b(?:ROLE|USER|GROUP|DATABASE|TABLESPACE|SYSTEM)\b|\bGRANT\b|\bREVOKE\b", re.I)
_IN_BODY = re.compile(
    r"\b(CREATE|ALTER|DROP)\s+(?:ROLE|USER|GROUP)\s+(?!MAPPING\b)(?:IF\s+EXISTS\s+)?"
    r'("(?:[^"]|"")+"|[A-Za-z_][\w$]*)',
    re.I,
)
# Node -> (command, the attribute naming its object): shared objects other than roles.
_SHARED = {
    "CreatedbStmt": ("CREATE DATABASE", "dbname"),
    "DropdbStmt": ("DROP DATABASE", "dbname"),
    "AlterDatabaseStmt": ("ALTER DATABASE", "dbname"),
    "AlterDatabaseSetStmt": ("ALTER DATABASE", "dbname"),
    "AlterDatabaseRefreshCollStmt": ("ALTER DATABASE", "dbname"),
    "CreateTableSpaceStmt": ("CREATE TABLESPACE", "tablespacename"),
    "DropTableSpaceStmt": ("DROP TABLESPACE", "tablespacename"),
    "AlterTableSpaceOptionsStmt": ("ALTER TABLESPACE", "tablespacename"),
}
# What PostgreSQL refuses to run inside a transaction block (SQLSTATE 25001).
_OUTSIDE = frozenset(
    {"CreatedbStmt", "DropdbStmt", "CreateTableSpaceStmt", "DropTableSpaceStmt", "AlterSystemStmt"}
)
_OBJECT_WORDS = {"OBJECT_ROLE": "ROLE", "OBJECT_DATABASE": "DATABASE", "OBJECT_TABLESPACE": "TABLESPACE"}
_ROLE_WORDS = {"ROLESTMT_ROLE": "ROLE", "ROLESTMT_USER": "USER", "ROLESTMT_GROUP": "GROUP"}


def server_wide(steps: Iterable[Step]) -> list[ServerWide]:
    """The statements of ``steps`` (PostgreSQL sections) that change the server, in order. One
    that creates a role, or changes or drops only roles the folder creates, is ``undone``."""
    reached = [
        (step, statement, reach)
        for step in steps
        for statement in step.statements
        for reach in _reaches(statement)
    ]
    created: set[str] = set()
    for _, _, reach in reached:
        if reach.creates is not None and (not reach.roles or any(r <= created for r in reach.roles)):
            created.add(reach.creates)
    return [
        ServerWide(
            step,
            statement,
            reach.command,
            reach.creates if reach.creates in created else None,
            reach.creates in created or any(roles <= created for roles in reach.roles),
            reach.transactional,
            reach.guarded,
        )
        for step, statement, reach in reached
    ]


def _reaches(statement: Statement) -> list[_Reach]:
    word = first_word(statement)
    if word not in _SERVER_WORDS or not _MENTIONS.search(statement.sql):
        return []
    if word == "DO":  # a PL/pgSQL body: its role statements, found in its text
        return [_in_body(found) for found in _IN_BODY.finditer(statement.sql)]
    from pglast import parser

    from dbledger import sqltrees

    try:
        parsed = sqltrees.parse(statement.sql)
    except parser.ParseError:  # the server says what is wrong with it, when it runs
        return []
    return [reach for raw in parsed if (reach := _reach(raw.stmt)) is not None]


def _in_body(found: re.Match[str]) -> _Reach:
    verb, name = found.group(1).upper(), found.group(2)
    role = name[1:-1].replace('""', '"') if name.startswith('"') else name.lower()
    if verb == "CREATE":
        return _Reach(f"CREATE ROLE {role}", role, guarded=True)
    return _Reach(f"{verb} ROLE {role}", roles=(frozenset({role}),))


def _reach(node: Any) -> _Reach | None:
    """What ``node`` changes of the server, or None when it stays in its database."""
    kind = type(node).__name__
    if kind == "CreateRoleStmt":
        return _Reach(f"CREATE {_ROLE_WORDS.get(node.stmt_type.name, 'ROLE')} {node.role}", node.role)
    if kind in ("AlterRoleStmt", "AlterRoleSetStmt"):
        role = _role(node.role) if node.role is not None else "ALL"
        options = node.options or () if kind == "AlterRoleStmt" else ()
        roles = [frozenset({role})]
        if options and all(option.defname == "rolemembers" for option in options):  # ALTER GROUP
            roles.append(frozenset(_role(member) for option in options for member in option.arg))
        return _Reach(f"ALTER ROLE {role}", roles=tuple(roles))
    if kind == "DropRoleStmt":
        names = [_role(spec) for spec in node.roles]
        return _Reach(f"DROP ROLE {', '.join(names)}", roles=(frozenset(names),))
    if kind == "GrantRoleStmt":  # a membership: gone when either role is dropped
        granted = [access.priv_name for access in node.granted_roles]
        grantees = [_role(spec) for spec in node.grantee_roles]
        verb, to = ("GRANT", "TO") if node.is_grant else ("REVOKE", "FROM")
        return _Reach(
            f"{verb} {', '.join(granted)} {to} {', '.join(grantees)}",
            roles=(frozenset(granted), frozenset(grantees)),
        )
    if kind == "AlterSystemStmt":
        return _Reach(f"ALTER SYSTEM SET {node.setstmt.name}", transactional=False)
    if kind in _SHARED:
        command, attribute = _SHARED[kind]
        moves = kind == "AlterDatabaseStmt" and any(o.defname == "tablespace" for o in node.options or ())
        return _Reach(
            f"{command} {getattr(node, attribute)}", transactional=kind not in _OUTSIDE and not moves
        )
    return _named_shared(kind, node)


def _named_shared(kind: str, node: Any) -> _Reach | None:
    """RENAME, OWNER TO and COMMENT ON a role, database or tablespace."""
    if kind == "RenameStmt" and (word := _OBJECT_WORDS.get(node.renameType.name)):
        if word == "ROLE":
            return _Reach(
                f"ALTER ROLE {node.subname} RENAME TO {node.newname}",
                node.newname,
                roles=(frozenset({node.subname}),),
            )
        return _Reach(f"ALTER {word} {node.subname} RENAME TO {node.newname}")
    if kind == "AlterOwnerStmt" and (word := _OBJECT_WORDS.get(node.objectType.name)):
        return _Reach(f"ALTER {word} {node.object.sval} OWNER TO {_role(node.newowner)}")
    if kind == "CommentStmt" and (word := _OBJECT_WORDS.get(node.objtype.name)):
        name = node.object.sval
        return _Reach(f"COMMENT ON {word} {name}", roles=(frozenset({name}),) if word == "ROLE" else ())
    return None


def _role(spec: Any) -> str:
    """A RoleSpec's name; CURRENT_USER, SESSION_USER, CURRENT_ROLE and PUBLIC as those words
    (never a role the folder creates)."""
    if spec.roletype.name == "ROLESPEC_CSTRING":
        return str(spec.rolename)
    return str(spec.roletype.name.removeprefix("ROLESPEC_"))


def roles_present(backend: Backend, names: Iterable[str]) -> set[str]:
    """Which of ``names`` are roles on the server of ``backend`` (PostgreSQL)."""
    wanted = sorted(set(names))
    if not wanted:
        return set()
    found = backend._fetch("SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)", (wanted,))
    return {str(name) for (name,) in found}


def drop_role(backend: Backend, name: str) -> None:
    """``DROP ROLE IF EXISTS`` ``name`` on the server of ``backend``; raises DatabaseError."""
    quoted = '"' + name.replace('"', '""') + '"'
    backend.execute(Statement(f"DROP ROLE IF EXISTS {quoted}", 0))
