"""Split a PostgreSQL section into statements with the PostgreSQL parser itself (pglast), so
dollar-quoted function bodies, ``BEGIN ATOMIC`` blocks and semicolons inside strings are never cut.

Imported only when a PostgreSQL migration is about to run: pglast costs ~90 ms to import.
"""

from __future__ import annotations

from dbledger.backends.base import Statement, statement_at


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
    found = (statement_at(text, part.start, part.stop, first_line) for part in slices)
    return [statement for statement in found if statement is not None]
