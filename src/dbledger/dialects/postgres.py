"""PostgreSQL's SQL, read with the PostgreSQL parser itself (pglast), so dollar-quoted bodies,
``BEGIN ATOMIC`` blocks and semicolons inside strings are never cut, and a statement's kind is
decided from its parse tree, not from its text.

pglast costs ~60 ms to import: it is loaded only when a section must be split, which the no-op
path never does.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

from dbledger.contracts import Statement
from dbledger.dialects import Dialect, first_word, pgfeatures, statements_at
from dbledger.errors import MigrationFileError
from dbledger.placeholders import Placeholder

# Statement kinds (pglast node names) worth parsing for each question, by first keyword: parsing
# every statement of a 500,000-row data file to find none would be wasted work.
_TRANSACTION_WORDS = frozenset({"BEGIN", "START", "COMMIT", "END", "ABORT", "ROLLBACK", "PREPARE"})
_OUTSIDE_WORDS = frozenset({"CREATE", "DROP", "REINDEX", "VACUUM", "ALTER", "CLUSTER", "DISCARD"})
# TransactionStmt kinds that open or close a transaction (savepoints do neither).
_ENDS_TRANSACTION = {
    "TRANS_STMT_BEGIN": "BEGIN",
    "TRANS_STMT_START": "START TRANSACTION",
    "TRANS_STMT_COMMIT": "COMMIT",
    "TRANS_STMT_ROLLBACK": "ROLLBACK",
    "TRANS_STMT_PREPARE": "PREPARE TRANSACTION",
    "TRANS_STMT_COMMIT_PREPARED": "COMMIT PREPARED",
    "TRANS_STMT_ROLLBACK_PREPARED": "ROLLBACK PREPARED",
}


class PostgresDialect(Dialect):
    name: ClassVar[str] = "postgresql"

    def split(self, sql: str, first_line: int, path: Path) -> list[Statement]:
        """Cut by the parser; a section it rejects (a syntax error the server will report, or
        grammar newer than pglast's) is cut at the scanner's top-level semicolons instead, so
        every statement still reaches the server. Text the scanner cannot read (an unterminated
        string or dollar quote) is refused, naming its line."""
        return statements_at(sql, _bounds(sql, path, first_line), first_line)

    def quote(self, placeholder: Placeholder) -> str:
        from psycopg import sql  # only for a folder that uses placeholders

        value = (
            sql.Identifier(placeholder.value)
            if placeholder.kind == "identifier"
            else sql.Literal(placeholder.value)
        )
        return value.as_string(None)

    def transaction_control(self, statement: Statement) -> str | None:
        if first_word(statement) not in _TRANSACTION_WORDS:
            return None
        node = _parse(statement)
        if type(node).__name__ != "TransactionStmt":
            return None
        return _ENDS_TRANSACTION.get(node.kind.name)

    def outside_transaction_only(self, statement: Statement) -> str | None:
        word = first_word(statement)
        if word == "COMMIT" or word == "ROLLBACK":
            node = _parse(statement)  # COMMIT PREPARED / ROLLBACK PREPARED
            kind = node.kind.name if type(node).__name__ == "TransactionStmt" else ""
            return _ENDS_TRANSACTION[kind] if kind.endswith("_PREPARED") else None
        if word not in _OUTSIDE_WORDS:
            return None
        node = _parse(statement)
        return None if node is None else _outside_only(node)

    def commits_in_phases(self, statement: Statement) -> bool:
        # A procedure (CALL) or a DO block may COMMIT inside, batch by batch.
        return first_word(statement) in ("CALL", "DO") or super().commits_in_phases(statement)

    def releases_lock(self, statement: Statement) -> str | None:
        if "pg_advisory_unlock_all" in statement.sql.lower():
            return "pg_advisory_unlock_all()"
        if first_word(statement) == "DISCARD":
            node = _parse(statement)
            if type(node).__name__ == "DiscardStmt" and node.target.name == "DISCARD_ALL":
                return "DISCARD ALL"
        return None

    def newest_feature(self, statement: Statement) -> tuple[str, int] | None:
        if not pgfeatures.may_use_any(statement.sql):
            return None
        node = _parse(statement)
        return None if node is None else pgfeatures.newest_feature(node)

    def may_change_identity(self, statement: Statement) -> bool:
        # SET ROLE, SET SESSION AUTHORIZATION, set_config('role', ...), or either inside a DO
        # block: each names the word. A false alarm costs one round trip, a miss a ledger row
        # written as another role (which may not be allowed to write it).
        lowered = statement.sql.lower()
        return "role" in lowered or "authorization" in lowered

    def normal_form(self, statement: Statement) -> str:
        """The statement as pglast prints its parse tree back, so white space, comments, keyword
        case and spellings such as ``int`` for ``integer`` fall away. A PL/pgSQL body is a string
        to that tree: it is compared as PL/pgSQL's own tree, without line numbers, so a comment
        or a blank line in a trigger function is cosmetic too. Text pglast cannot parse is
        compared token by token."""
        from pglast import parse_sql, parser
        from pglast.stream import RawStream

        try:
            tree = parse_sql(statement.sql)
        except parser.ParseError:
            return _token_form(statement.sql)
        body = _body_form(tree)
        if body is not None:  # the body's tokens stand in for its text
            _set_body(tree[0].stmt, "")
        text = str(RawStream()(tree))
        return text if body is None else f"{text}\n-- body: {body}"

    def pretty(self, statement: Statement) -> str:
        from pglast import parser, prettify

        try:
            return str(prettify(statement.sql))
        except (parser.ParseError, ValueError, NotImplementedError):
            return statement.sql

    def references(self, statement: Statement, tables: frozenset[str]) -> list[tuple[str | None, str]]:
        lowered = statement.sql.lower()
        if not any(table in lowered for table in tables):  # the common case: no parse at all
            return []
        node = _parse(statement)
        if node is None:
            return []
        return [(schema, name) for schema, name in _relation_names(node) if name in tables]


def _parse(statement: Statement) -> Any:
    """The statement's parse tree, or None when pglast cannot parse it (the server decides)."""
    from pglast import parser

    from dbledger import sqltrees

    try:
        parsed = sqltrees.parse(statement.sql)
    except parser.ParseError:
        return None
    return parsed[0].stmt if len(parsed) == 1 else None


# Bodies in these languages are SQL's tokens: comments, white space and keyword case fall away.
_SQL_LIKE = frozenset({"plpgsql", "sql"})


def _body_form(tree: Any) -> str | None:
    """A function's or a DO block's body (PL/pgSQL or SQL) as its tokens; None for other
    statements, and for bodies in other languages (their text then decides, comments and all)."""
    node = tree[0].stmt if len(tree) == 1 else None
    kind = type(node).__name__
    if kind not in ("CreateFunctionStmt", "DoStmt"):
        return None
    options = _options(node)
    default = "plpgsql" if kind == "DoStmt" else None  # DO's language; a function must name one
    named = (o.arg.sval for o in options if o.defname == "language" and hasattr(o.arg, "sval"))
    if next(named, default) not in _SQL_LIKE:
        return None
    body = [o.arg for o in options if o.defname == "as"]
    if not body:  # BEGIN ATOMIC: the body is part of the tree already
        return None
    parts = body[0] if isinstance(body[0], tuple | list) else (body[0],)
    return " ".join(_token_form(part.sval) for part in parts if hasattr(part, "sval"))


def _options(node: Any) -> tuple[Any, ...]:
    return tuple(node.options if type(node).__name__ == "CreateFunctionStmt" else node.args) or ()


def _set_body(node: Any, text: str) -> None:
    from pglast import ast

    for option in _options(node):
        if option.defname == "as":
            option.arg = (
                ast.String(sval=text) if type(node).__name__ == "DoStmt" else (ast.String(sval=text),)
            )


def _token_form(sql: str) -> str:
    """The scanner's tokens, comments left out, keywords and unquoted names lower-cased (as the
    server folds them)."""
    from pglast import parser

    try:
        tokens = parser.scan(sql)
    except parser.ParseError:
        return " ".join(sql.split())
    raw = sql.encode()  # the scanner's offsets count bytes
    words = []
    for token in tokens:
        if token.name in ("SQL_COMMENT", "C_COMMENT"):
            continue
        text = raw[token.start : token.end + 1].decode(errors="replace")
        folded = token.kind != "NO_KEYWORD" or (token.name == "IDENT" and not text.startswith('"'))
        words.append(text.lower() if folded else text)
    return " ".join(words)


def _outside_only(node: Any) -> str | None:
    """The command when ``node`` cannot run inside a transaction block (SQLSTATE 25001)."""
    kind = type(node).__name__
    if kind == "IndexStmt" and node.concurrent:
        return "CREATE INDEX CONCURRENTLY"
    if kind == "DropStmt" and node.concurrent:
        return "DROP INDEX CONCURRENTLY"
    if kind == "ReindexStmt":
        if any(option.defname == "concurrently" for option in node.params or ()):
            return "REINDEX CONCURRENTLY"
        if node.kind.name in ("REINDEX_OBJECT_SYSTEM", "REINDEX_OBJECT_DATABASE"):
            return f"REINDEX {node.kind.name.removeprefix('REINDEX_OBJECT_')}"
        return None
    if kind == "AlterTableStmt":
        for command in node.cmds or ():
            if command.subtype.name == "AT_DetachPartition" and getattr(command.def_, "concurrent", False):
                return "ALTER TABLE ... DETACH PARTITION ... CONCURRENTLY"
        return None
    if kind == "AlterDatabaseStmt":
        moves = any(option.defname == "tablespace" for option in node.options or ())
        return "ALTER DATABASE ... SET TABLESPACE" if moves else None
    if kind == "VacuumStmt":
        return "VACUUM" if node.is_vacuumcmd else None
    if kind == "ClusterStmt":
        return "CLUSTER without a table" if node.relation is None else None
    if kind == "DiscardStmt":
        return "DISCARD ALL" if node.target.name == "DISCARD_ALL" else None
    return {
        "CreatedbStmt": "CREATE DATABASE",
        "DropdbStmt": "DROP DATABASE",
        "CreateTableSpaceStmt": "CREATE TABLESPACE",
        "DropTableSpaceStmt": "DROP TABLESPACE",
        "AlterSystemStmt": "ALTER SYSTEM",
        "CreateSubscriptionStmt": "CREATE SUBSCRIPTION",
    }.get(kind)


def _relation_names(node: Any) -> Iterator[tuple[str | None, str]]:
    """``(schema, name)`` of every relation ``node`` names: RangeVar nodes (CREATE, ALTER,
    INSERT, SELECT, TRUNCATE, ...), the new name of a RENAME and the name lists of DROP."""
    from pglast import ast
    from pglast.visitors import Visitor

    found: list[tuple[str | None, str]] = []

    class Relations(Visitor):
        def visit_RangeVar(self, ancestors: Any, range_var: Any) -> None:
            found.append((range_var.schemaname, range_var.relname))

        def visit_RenameStmt(self, ancestors: Any, rename: Any) -> None:
            if rename.newname and rename.relation is not None:  # ALTER TABLE x RENAME TO ledger
                found.append((rename.relation.schemaname, rename.newname))

        def visit_DropStmt(self, ancestors: Any, drop: Any) -> None:
            for names in drop.objects or ():
                parts: list[str] = []
                if isinstance(names, tuple):
                    parts = [str(part.sval) for part in names if isinstance(part, ast.String)]
                if parts:
                    found.append((parts[-2] if len(parts) > 1 else None, parts[-1]))

    Relations()(node)
    return iter(found)


# Characters the parser reads at once. A rejected statement makes dbledger parse again after
# it; reading the whole rest of the section each time would make a file of many rejected
# statements cost their number times its size.
_WINDOW = 1 << 20
_AFTER_ERROR = 1 << 12
_RUN, _SCANNED_AFTER_RUN = 8, 1 << 16


def _bounds(sql: str, path: Path, first_line: int) -> list[tuple[int, int]]:
    """Statement bounds: by the parser where it can read the text, by the scanner around each
    statement it rejects. The parser reads a window of the section at a time; the window's last
    statement (which the window's end may cut) is read again with the next window. A data file
    of 500,000 statements with a syntax error is scanned only around that statement (scanning
    all of it builds millions of tokens: ~20 s)."""
    from pglast import parser

    found: list[tuple[int, int]] = []
    start, window, rejected_in_a_row = 0, _WINDOW, 0
    while start < len(sql):
        end = min(len(sql), start + window)
        if end < len(sql) and (line_end := sql.rfind("\n", start, end)) > start:
            end = line_end + 1  # a statement ends at a line's end far more often than within one
        try:
            parsed = _parsed(sql, start, end)
        except parser.ParseError as exc:
            error = start + (exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], int) else 0)
            if end < len(sql) and error > sql.rfind(";", start, end):
                window *= 4  # in the window's last statement, which its end may have cut
                continue
            start = _good_prefix(sql, start, error, found)
            # A run of rejected statements (a file in another dialect, say) is scanned in larger
            # pieces: going back to the parser after each would cost a parse per statement.
            rejected_in_a_row += 1
            reach = _SCANNED_AFTER_RUN if rejected_in_a_row >= _RUN else 0
            start = _scan_past(sql, start, min(error + reach, len(sql) - 1), path, first_line, found)
            window = _AFTER_ERROR  # where one statement was rejected, others may follow soon
            continue
        rejected_in_a_row = 0
        if end == len(sql):
            return found + parsed
        if len(parsed) < 2:  # one statement longer than the window: read more at once
            window *= 4
            continue
        found += parsed[:-1]
        start = parsed[-1][0]
        window = min(window * 2, _WINDOW)
    return found


def _parsed(sql: str, start: int, end: int) -> list[tuple[int, int]]:
    from pglast import parser

    slices = parser.split(sql[start:end], with_parser=True, only_slices=True)
    return [(start + part.start, start + part.stop) for part in slices]


def _good_prefix(sql: str, start: int, error: int, found: list[tuple[int, int]]) -> int:
    """Add the statements before the one the parser rejected at ``error``; return where the
    rejected one may start: after the last statement the parser accepted, not after the
    semicolon tried (which may sit in a comment). Tries the last few semicolons before the
    error, since one may be inside a string."""
    from pglast import parser

    cut = sql.rfind(";", start, error)
    for _ in range(8):
        if cut < 0:
            break
        try:
            accepted = _parsed(sql, start, cut + 1)
        except parser.ParseError:
            cut = sql.rfind(";", start, cut)
            continue
        found += accepted
        return accepted[-1][1] if accepted else start
    return start


def _scan_past(
    sql: str, start: int, beyond: int, path: Path, first_line: int, found: list[tuple[int, int]]
) -> int:
    """Cut ``sql`` from ``start`` at the scanner's top-level semicolons, up to the first one past
    offset ``beyond`` (the rejected statement's error, or further); return the offset after it
    (the parser takes over from there). The scanned window grows until it holds that semicolon
    outside any string or block."""
    from pglast import parser

    window = beyond - start + 256  # grown until it holds the semicolon; small: errors may be dense
    while True:
        end = min(len(sql), start + window)
        try:
            tokens = parser.scan(sql[start:end])
        except parser.ParseError as exc:
            if end < len(sql):  # the window may end inside a string: widen it
                window *= 4
                continue
            offset = start + (exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], int) else 0)
            line = first_line + sql.count("\n", 0, offset)
            reason = _one_line(str(exc.args[0]))
            raise MigrationFileError(
                str(path), f"line {line}: {reason}: close it, or the rest of the file is part of it"
            ) from None
        ends = [start + cut for cut in _top_level_ends(tokens)]
        past = [cut for cut in ends if cut > beyond]
        if past or end == len(sql):
            stop = past[0] if past else len(sql)
            previous = start
            for cut in [*(c for c in ends if c < stop), stop]:
                found.append((previous, cut))
                previous = cut
            return stop
        window *= 4


def _top_level_ends(tokens: Any) -> Iterator[int]:
    """The offset after each semicolon outside ``BEGIN ATOMIC ... END`` and ``CASE ... END``."""
    depth, previous = 0, ""
    for token in tokens:
        if (token.name == "ATOMIC" and previous == "BEGIN_P") or token.name == "CASE":
            depth += 1
        elif token.name == "END_P" and depth:
            depth -= 1
        elif token.name == "ASCII_59" and not depth:
            yield token.end + 1
        previous = token.name


def _one_line(reason: str, near: int = 40) -> str:
    """The scanner's reason on one line, the text it quotes cut short: it quotes the rest of the
    section, which an unterminated string can make the rest of the file."""
    head, found, quoted = reason.partition(' at or near "')
    if not found:
        return " ".join(reason.split())
    text = " ".join(quoted.removesuffix('"').split())
    return f'{head} at or near "{text if len(text) <= near else text[: near - 1] + "…"}"'
