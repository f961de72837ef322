"""The application's own queries, read for ``dbledger check --queries``: SQL files with sample
values, and ``pg_stat_statements`` exports.

SQL files (``*.sql``) hold one or more statements, each ended by ``;``, with ``$1``-style
parameters. A ``-- params:`` line right before a statement (comments and blank lines may sit
between) gives sample values to that statement only (not to one that follows it on its line),
as SQL literals separated by commas; each such line is one run:

    -- params: 'google-1759721169098'
    DELETE FROM platform_connections WHERE id = $1;

A value is a quoted string (a quote inside doubled: ``'it''s'``), a number, ``NULL``, ``TRUE``
or ``FALSE``; the database gives each the type it infers for its parameter, as it does for the
application's driver. ``-- params:`` with nothing after it runs a statement that has no
parameters. A statement without a params line is only prepared. Only queries can be checked
(``SELECT``, ``INSERT``, ``UPDATE``, ``DELETE``, ``MERGE``, ``VALUES``, ``TABLE``, ``WITH``).

Exports hold one query per record in a ``query`` column: CSV with a header (``\\copy (select
query from pg_stat_statements) to 'f.csv' csv header``, or ``psql --csv``), a JSON array of
objects or of strings, or JSON Lines (``*.jsonl``, or a ``*.json`` file that is not an array).
Their parameters have no values, so they are only prepared; their statements that are not
queries (``BEGIN``, ``SET``, utility commands) are left out.

A file that breaks these rules is a usage error naming the file and, where it can, the line.
Pure but for reading the files.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Literal, NamedTuple

from dbledger.dialects import Dialect
from dbledger.errors import ConfigError, MigrationFileError, UsageError

SUFFIXES = (".sql", ".csv", ".json", ".jsonl")
QUERY_WORDS = frozenset({"SELECT", "INSERT", "UPDATE", "DELETE", "MERGE", "VALUES", "TABLE", "WITH"})


class Query(NamedTuple):
    """One query to check: where it is (the line its first token is on), its text, and its
    runs: the sample values of each (SQL literals, in parameter order); none: prepare only."""

    path: str
    line: int
    sql: str
    runs: tuple[tuple[str, ...], ...] = ()
    source: Literal["sql", "export"] = "sql"


def read_queries(paths: Iterable[str | os.PathLike[str]], dialect: Dialect) -> list[Query]:
    """Every query of the given files and folders (a folder: its query files, recursively, in
    name order), split with ``dialect``'s rules. Raises UsageError naming the file and line."""
    found: list[Query] = []
    for given in paths:
        for path in _files(Path(given)):
            found += read_file(path, dialect)
    return found


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(
            p
            for p in path.rglob("*")
            if p.suffix in SUFFIXES and p.is_file() and not any(part.startswith(".") for part in p.parts)
        )
        if not files:
            raise ConfigError(
                f"query folder {str(path)!r} holds no query files: put the application's queries in "
                f"*.sql files, or a pg_stat_statements export in *.csv or *.json"
            )
        return files
    if not path.exists():
        raise ConfigError(f"query file {str(path)!r} does not exist: give a file or a folder of queries")
    if path.suffix not in SUFFIXES:
        raise ConfigError(
            f"query file {str(path)!r} is neither SQL (*.sql) nor a pg_stat_statements export "
            "(*.csv, *.json, *.jsonl): rename it after what it holds"
        )
    return [path]


def read_file(path: Path, dialect: Dialect) -> list[Query]:
    """The queries of one file, by its suffix."""
    try:
        text = path.read_bytes().decode("utf-8-sig").replace("\r\n", "\n").replace("\r", "\n")
    except OSError as exc:
        raise ConfigError(f"cannot read query file {str(path)!r}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise UsageError(f"{path}:{line}: the query file is not UTF-8: save it as UTF-8") from None
    if path.suffix == ".sql":
        return _sql_file(path, text, dialect)
    if path.suffix == ".csv":
        records = _csv_records(path, text)
    elif text.lstrip().startswith("["):
        records = _json_array(path, text)
    else:
        records = _json_lines(path, text)
    return [
        Query(str(path), line, sql, source="export")
        for line, raw in records
        if (sql := raw.strip().rstrip(";").rstrip()) and is_query(sql)
    ]


# -- SQL files -----------------------------------------------------------------------------
_PARAMS = re.compile(r"^[ \t]*--[ \t]*params[ \t]*:(.*)$", re.IGNORECASE | re.MULTILINE)
_COMMENT_OR_BLANK = re.compile(r"^[ \t]*(--.*)?$")


def _sql_file(path: Path, text: str, dialect: Dialect) -> list[Query]:
    try:
        statements = dialect.split(text, 1, path)
    except MigrationFileError as exc:  # an unterminated string or quote: the reason names the line
        raise UsageError(f"query file {exc.message}") from None
    lines = text.split("\n")
    # The index of a statement -> the runs its params lines give. By index, not by line: a params
    # line gives values to the next statement only, also when another one follows on its line.
    runs: dict[int, list[tuple[str, ...]]] = {}
    for found in _PARAMS.finditer(text):
        line = text.count("\n", 0, found.start()) + 1
        target = next((i for i, s in enumerate(statements) if s.line > line), None)
        between = lines[line : statements[target].line - 1] if target is not None else []
        if target is None or not all(_COMMENT_OR_BLANK.match(row) for row in between):
            raise UsageError(
                f"{path}:{line}: a '-- params:' line must come right before the statement it gives "
                "values to (only comments and blank lines between)"
            )
        runs.setdefault(target, []).append(parse_values(found.group(1), f"{path}:{line}"))
    queries = []
    for index, statement in enumerate(statements):
        if not is_query(statement.sql):
            word = statement.sql.split(None, 1)[0].upper()
            raise UsageError(
                f"{path}:{statement.line}: {word} is not a query: only SELECT, INSERT, UPDATE, "
                "DELETE, MERGE, VALUES, TABLE and WITH statements can be checked; remove it"
            )
        given = tuple(runs.get(index, ()))
        _check_arity(statement.sql, given, f"{path}:{statement.line}")
        queries.append(Query(str(path), statement.line, statement.sql, given))
    return queries


_LEADING_COMMENTS = re.compile(r"(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/)*", re.DOTALL)


def is_query(sql: str) -> bool:
    """Whether ``sql`` is a statement PREPARE takes (a query), after leading comments."""
    skip = _LEADING_COMMENTS.match(sql)
    rest = sql[skip.end() if skip else 0 :]
    if rest.startswith("("):  # (SELECT ...) UNION (SELECT ...)
        return True
    word = re.match(r"[A-Za-z]+", rest)
    return word is not None and word.group(0).upper() in QUERY_WORDS


_VALUE = re.compile(
    r"\s*('(?:[^']|'')*'|[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|(?i:null|true|false))\s*"
)


def parse_values(text: str, where: str) -> tuple[str, ...]:
    """The SQL literals of a ``-- params:`` line, each as written."""
    if not text.strip():
        return ()
    values: list[str] = []
    position = 0
    while True:
        found = _VALUE.match(text, position)
        if found is None:
            rest = text[position:].strip()
            raise UsageError(
                f"{where}: cannot read the value {rest[:40]!r} of '-- params:': give SQL literals "
                "separated by commas: 'text' (a quote inside doubled), 42, 1.5, NULL, TRUE, FALSE"
            )
        values.append(found.group(1))
        position = found.end()
        if position == len(text):
            return tuple(values)
        if text[position] != ",":
            raise UsageError(
                f"{where}: expected ',' between the values of '-- params:', found {text[position:][:20]!r}"
            )
        position += 1


def _check_arity(sql: str, runs: tuple[tuple[str, ...], ...], where: str) -> None:
    count = max((n for _, _, n in placeholders(sql)), default=0)
    for values in runs:
        if len(values) != count:
            wanted = f"{count} parameter(s) ($1 to ${count})" if count else "no parameters"
            raise UsageError(
                f"{where}: the statement has {wanted}, but its '-- params:' line gives "
                f"{len(values)} value(s): give one value per parameter"
            )


# -- parameters ----------------------------------------------------------------------------
# Strings, quoted names, comments and dollar quotes are skipped whole, so a '$1' inside one is
# not a parameter. (PostgreSQL's nested block comments are rare enough in queries to ignore.)
_TOKENS = re.compile(
    r"""[eE]'(?:[^'\\]|\\.|'')*'
    | '(?:[^']|'')*'
    | "(?:[^"]|"")*"
    | --[^\n]*
    | /\*.*?\*/
    | \$\$.*?\$\$
    | \$(?P<tag>[A-Za-z_]\w*)\$.*?\$(?P=tag)\$
    | (?<![\w$])\$(?P<number>\d+)""",
    re.DOTALL | re.VERBOSE,
)


def placeholders(sql: str) -> list[tuple[int, int, int]]:
    """``(start, end, n)`` of each ``$n`` parameter of ``sql``."""
    return [
        (found.start(), found.end(), int(found.group("number")))
        for found in _TOKENS.finditer(sql)
        if found.group("number")
    ]


def bind(sql: str, values: tuple[str, ...] | None) -> str:
    """``sql`` with each ``$n`` replaced by the n-th value (None: by NULL), for a database
    without server-side PREPARE (SQLite)."""
    parts, last = [], 0
    for start, end, number in placeholders(sql):
        parts += [sql[last:start], "NULL" if values is None else values[number - 1]]
        last = end
    return "".join(parts) + sql[last:]


# -- exports -------------------------------------------------------------------------------
def _csv_records(path: Path, text: str) -> list[tuple[int, str]]:
    reader = csv.reader(text.splitlines(keepends=True))
    try:
        header = next(reader, None)
        names = [name.strip().lower() for name in header or []]
        if "query" not in names:
            shown = ", ".join(header or []) or "an empty file"
            raise UsageError(
                f"{path}:1: no 'query' column in the header ({shown[:80]}): export with \\copy (select "
                "query from pg_stat_statements) to 'queries.csv' csv header"
            )
        column = names.index("query")
        records = []
        start = reader.line_num + 1
        for row in reader:
            if row:
                if len(row) <= column:
                    raise UsageError(f"{path}:{start}: the record has no 'query' value (column {column + 1})")
                records.append((start, row[column]))
            start = reader.line_num + 1
    except csv.Error as exc:
        raise UsageError(f"{path}:{reader.line_num}: malformed CSV: {exc}") from None
    return records


def _json_array(path: Path, text: str) -> list[tuple[int, str]]:
    decoder = json.JSONDecoder()
    records = []
    opened = text.index("[")
    position = opened + 1
    while True:
        position = _skip_space(text, position, path, opened)
        if text.startswith("]", position):
            break
        line = text.count("\n", 0, position) + 1
        try:
            item, position = decoder.raw_decode(text, position)
        except json.JSONDecodeError as exc:
            raise UsageError(f"{path}:{exc.lineno}: malformed JSON: {exc.msg}") from None
        records.append((line, _query_of(item, path, line)))
        position = _skip_space(text, position, path, opened)
        if text.startswith(",", position):
            position += 1
        elif not text.startswith("]", position):
            line = text.count("\n", 0, position) + 1
            raise UsageError(f"{path}:{line}: malformed JSON: expected ',' or ']' between the array's items")
    return records


def _json_lines(path: Path, text: str) -> list[tuple[int, str]]:
    records = []
    for number, row in enumerate(text.split("\n"), start=1):
        if row.strip():
            try:
                item = json.loads(row)
            except json.JSONDecodeError as exc:
                raise UsageError(
                    f"{path}:{number}: malformed JSON Lines: {exc.msg} (one JSON object a line, or "
                    "one array of them)"
                ) from None
            records.append((number, _query_of(item, path, number)))
    return records


def _skip_space(text: str, position: int, path: Path, opened: int) -> int:
    """The first position from ``position`` on that is not white space; UsageError naming the
    file when the text ends first (the array opened at ``opened`` is never closed)."""
    while position < len(text) and text[position] in " \t\n\r":
        position += 1
    if position >= len(text):
        line, end = text.count("\n", 0, opened) + 1, text.rstrip().count("\n") + 1
        raise UsageError(
            f"{path}:{line}: malformed JSON: the array opened on this line is not closed: the file "
            f"ends at line {end} without its ']'"
        )
    return position


def _query_of(item: object, path: Path, line: int) -> str:
    if isinstance(item, str):
        return item
    if isinstance(item, dict) and isinstance(item.get("query"), str):
        return str(item["query"])
    raise UsageError(f'{path}:{line}: expected an object with a "query" string (or a string)')


def lines_of(queries: list[Query]) -> Iterator[str]:
    """``path:line`` of each query, for messages."""
    return (f"{q.path}:{q.line}" for q in queries)
