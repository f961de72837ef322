"""Split a PostgreSQL section into statements with the PostgreSQL parser itself (pglast), so
dollar-quoted function bodies, ``BEGIN ATOMIC`` blocks and semicolons inside strings are never cut.

Imported only when a PostgreSQL migration is about to run: pglast costs ~90 ms to import.
"""

from __future__ import annotations

from dbledger.backends.base import Statement


def split_statements(text: str, first_line: int) -> list[Statement]:
    """Statements of ``text`` with the file line each starts on (``text`` starts at ``first_line``).

    A section the parser rejects is split by pglast's scanner instead, so the server still runs
    each statement and reports the real error for the one it rejects.
    """
    from pglast import parser

    try:
        slices = list(parser.split(text, with_parser=True, only_slices=True))
    except parser.ParseError:
        slices = list(parser.split(text, with_parser=False, only_slices=True))
    statements = []
    for part in slices:
        body = text[part]
        # The scanner's slices may start with comments or blank lines; count from the first token.
        offset = part.start + (len(body) - len(body.lstrip()))
        statements.append(Statement(sql=body.strip(), line=first_line + text.count("\n", 0, offset)))
    return statements
