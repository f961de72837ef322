"""Where a finding points: the file line and column of the clause at fault.

A ``Statement`` knows the file line it starts on; pglast gives offsets within the statement (in
characters) for some nodes, not for ALTER TABLE's subcommands, so those are found by scanning
the statement's tokens: the subcommands are its top-level comma-separated clauses after the
table's name.
"""

from __future__ import annotations

import re
from bisect import bisect_right

from pglast import parser

from dbledger.contracts import Statement

# Token names of the punctuation the scanner reports as ASCII codes.
_COMMA, _DOT, _STAR = "ASCII_44", "ASCII_46", "ASCII_42"
_OPEN, _CLOSE = frozenset({"ASCII_40", "ASCII_91"}), frozenset({"ASCII_41", "ASCII_93"})
_NEWLINE = re.compile("\n")
_COMMENTS = frozenset({"SQL_COMMENT", "C_COMMENT"})  # a clause starts at its first keyword


class SectionText:
    """A section's text, with what turns an offset in it into a file line and column."""

    def __init__(self, text: str, first_line: int) -> None:
        self.text = text
        self.first_line = first_line
        self._starts = [0] + [found.end() for found in _NEWLINE.finditer(text)]

    def position(self, offset: int) -> tuple[int, int]:
        """The 1-based file line and column of ``offset`` into the text."""
        index = bisect_right(self._starts, offset) - 1
        return self.first_line + index, offset - self._starts[index] + 1

    def offsets(self, statements: list[Statement]) -> list[int]:
        """Where each statement (split from this text, in order) starts in it. Each is searched
        from its own line on, after the one before, so text in a comment above it cannot match."""
        found: list[int] = []
        cursor = 0
        for statement in statements:
            index = min(max(statement.line - self.first_line, 0), len(self._starts) - 1)
            start = max(cursor, self._starts[index])
            at = self.text.find(statement.sql, start)
            at = start if at < 0 else at
            found.append(at)
            cursor = at + len(statement.sql)
        return found


def clause_starts(sql: str, name_at: int) -> list[int]:
    """The offset of each top-level, comma-separated clause that follows the relation name at
    offset ``name_at`` of ``sql``: ALTER TABLE's subcommands, RENAME's clause. Empty when the
    statement cannot be scanned."""
    try:
        tokens = [t for t in parser.scan(sql) if t.start >= name_at and t.name not in _COMMENTS]
    except parser.ParseError:
        return []
    index = 1  # the name's first part
    while index + 1 < len(tokens) and tokens[index].name == _DOT:
        index += 2  # schema.table
    if index < len(tokens) and tokens[index].name == _STAR:
        index += 1  # ALTER TABLE t* (the table and its children)
    if index >= len(tokens):
        return []
    starts = [tokens[index].start]
    depth = 0
    for position, token in enumerate(tokens[index:], start=index):
        if token.name in _OPEN:
            depth += 1
        elif token.name in _CLOSE:
            depth -= 1
        elif token.name == _COMMA and depth == 0 and position + 1 < len(tokens):
            starts.append(tokens[position + 1].start)
    return starts
