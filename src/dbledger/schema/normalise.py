"""Text normalisation shared by both introspections."""

from __future__ import annotations

import re
from typing import Any

_BLANKS = re.compile(r"[ \t\f\v]+")
_PLAIN_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_$]*")


def normalise_body(text: str) -> str:
    """Each line stripped with runs of blanks collapsed to one space, blank lines dropped. Line
    breaks stay: a line break ends a ``--`` comment, so it can change what the code does."""
    lines = (_BLANKS.sub(" ", line).strip() for line in text.replace("\r\n", "\n").split("\n"))
    return "\n".join(line for line in lines if line)


def normalise_space(text: str) -> str:
    """All whitespace runs collapsed to one space: for single-statement definitions."""
    return " ".join(text.split())


def quote_identifier(name: str) -> str:
    """``name`` as SQL spells it: bare when lower-case and plain, double-quoted otherwise."""
    if _PLAIN_IDENTIFIER.fullmatch(name):
        return name
    return '"' + name.replace('"', '""') + '"'


_LITERAL = r"'(?:[^']|'')*'::[a-z ]+"
_CAST_ARRAY = re.compile(rf"\(ARRAY\[((?:{_LITERAL})(?:, {_LITERAL})*)\]\)::([a-z ]+)\[\]")
_ONE_LITERAL = re.compile(_LITERAL)


def normalise_expression(text: str) -> str:
    """PostgreSQL's deparsed expressions in one form where it prints two for one meaning.

    ``status IN ('a', 'b')`` on a varchar column is stored as ``(ARRAY['a'::character varying,
    ...])::text[]``; that text, run again (a dump restored, a dump replayed), is stored as
    ``ARRAY[('a'::character varying)::text, ...]``. Both are written here in the second form, or a
    database restored from ``pg_dump`` would always look drifted."""

    def rewrite(match: re.Match[str]) -> str:
        items = _ONE_LITERAL.findall(match.group(1))
        return "ARRAY[" + ", ".join(f"({item})::{match.group(2)}" for item in items) + "]"

    return _CAST_ARRAY.sub(rewrite, text)


# -- view definitions ---------------------------------------------------------------------------

_QUALIFIER = re.compile(r'"(?:[^"]|"")*"|[A-Za-z_][A-Za-z0-9_$]*')


def normalise_view(text: str) -> str:
    """A view's definition as PostgreSQL 16 and later print it: when the top level of the query
    reads a single relation (a table, a function, a sub-select or VALUES), its columns are
    printed without the relation's name (``SELECT a FROM t``), where 13 to 15 print ``SELECT t.a
    FROM t``. Sub-selects and CTEs keep their qualified names, as 16 keeps them.

    The column references come from the parse tree, so a schema, function or type name is never
    taken for one. Text of another shape, text pglast cannot parse, and a query where a bare name
    could mean an output column instead (``SELECT t.b AS a ... ORDER BY t.a``) are returned as
    they are: a difference left is a false alarm, a name removed wrongly would change the view."""
    from pglast import ast, parse_sql, parser

    try:
        tree = parse_sql(text)
    except parser.ParseError:
        return text
    query: Any = tree[0].stmt if len(tree) == 1 else None
    relation = _single_relation(query) if isinstance(query, ast.SelectStmt) else None
    if relation is None:
        return text
    references = _own_columns(query, relation)
    # ORDER BY and DISTINCT ON read a bare name as an output column first.
    outputs = {target.name for target in query.targetList or () if target.name}
    ordering = [*(query.sortClause or ()), *(query.distinctClause or ())]
    if not references or outputs & {column for _, column in _own_columns(ordering, relation)}:
        return text
    for location, _ in sorted(references, reverse=True):
        qualifier = _QUALIFIER.match(text, location)
        if qualifier is None or not text.startswith(".", qualifier.end()):
            return text  # not where the tree says: leave the whole text alone
        text = text[:location] + text[qualifier.end() + 1 :]
    return text


def _single_relation(query: Any) -> str | None:
    """The name the top level's one FROM item is known by, or None (a join, a list, a set
    operation, no FROM)."""
    from pglast import ast

    if query.op.name != "SETOP_NONE" or not query.fromClause or len(query.fromClause) != 1:
        return None
    item = query.fromClause[0]
    if isinstance(item, ast.RangeTableSample):
        item = item.relation
    if item.alias is not None:
        return str(item.alias.aliasname)
    return str(item.relname) if isinstance(item, ast.RangeVar) else None


def _own_columns(query: Any, relation: str) -> list[tuple[int, str]]:
    """(location, column) of each ``relation.column`` in ``query`` (a node, or a list of them),
    not in its sub-selects or CTEs (their own levels)."""
    from pglast import ast, visitors

    found: list[tuple[int, str]] = []

    class Columns(visitors.Visitor):
        def visit_SelectStmt(self, ancestors: Any, node: Any) -> Any:
            return None if node is query else visitors.Skip  # another level

        def visit_ColumnRef(self, ancestors: Any, node: Any) -> None:
            fields = node.fields
            if (
                len(fields) == 2
                and isinstance(fields[0], ast.String)
                and isinstance(fields[1], ast.String)
                and fields[0].sval == relation
            ):
                found.append((node.location, str(fields[1].sval)))

    for node in query if isinstance(query, list) else [query]:
        Columns()(node)
    return found


# -- a procedure's arguments ----------------------------------------------------------------------

_MODES = ("IN ", "OUT ", "INOUT ", "VARIADIC ")


def procedure_arguments(arguments: str) -> str:
    """A procedure's argument list with each argument's mode, as PostgreSQL 14 and later print
    it: 13 leaves out ``IN`` (its procedures have no OUT arguments to tell apart)."""
    return ", ".join(part if part.startswith(_MODES) else "IN " + part for part in _top_level(arguments))


def _top_level(text: str) -> list[str]:
    """``text`` cut at the commas outside parentheses, brackets, quotes and double quotes."""
    parts: list[str] = []
    depth, quote, start = 0, "", 0
    for position, char in enumerate(text):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "([":
            depth += 1
        elif char in ")]":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(text[start:position].strip())
            start = position + 1
    rest = text[start:].strip()
    return [*parts, rest] if rest else parts
