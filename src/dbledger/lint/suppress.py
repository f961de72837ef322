"""Suppressions: ``-- dbledger:ignore RULE[,RULE...] reason`` on the line just before a statement
silences those rules for that statement. The reason is required, so that the next reader knows
why the statement is safe; a suppression without one silences nothing and is itself a finding,
as is one naming an unknown rule or one that precedes no statement.

Only a comment outside the statements is a suppression: one inside a statement (in a function's
dollar-quoted body, between the lines of a long ALTER TABLE) is the statement's own text.
"""

from __future__ import annotations

import difflib
import re
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

from dbledger.lint.findings import Finding
from dbledger.lint.ruleset import RULES

_COMMENT = re.compile(r"^(?P<indent>\s*)--\s*dbledger:ignore\b(?P<rest>.*)$")
_RULE_LIST = re.compile(r"^\s*(?P<rules>[A-Za-z0-9_-]+(?:\s*,\s*[A-Za-z0-9_-]+)*)(?P<reason>.*)$")
_INVALID = RULES["invalid-suppression"]


class Suppression(NamedTuple):
    """One ``-- dbledger:ignore`` comment: the file line and column it is on, the rules it
    names, and its reason ("" when it gives none)."""

    line: int
    column: int
    rules: tuple[str, ...]
    reason: str

    def silences(self, rule: str) -> bool:
        return bool(self.reason) and rule in self.rules


def read(sql: str, first_line: int, statements: Sequence[tuple[int, int]] = ()) -> dict[int, Suppression]:
    """The suppressions of a section whose text ``sql`` starts on ``first_line``, by file line.
    ``statements``: where each statement starts and ends in ``sql`` (in order); a comment
    inside one is not a suppression."""
    starts = [start for start, _ in statements]
    found: dict[int, Suppression] = {}
    at = 0  # where the line starts in sql
    for index, text in enumerate(sql.split("\n")):
        line_at, at = at, at + len(text) + 1
        comment = _COMMENT.match(text)
        if comment is None or _inside(statements, starts, line_at + len(comment.group("indent"))):
            continue
        listed = _RULE_LIST.match(comment.group("rest"))
        rules = tuple(r.strip() for r in listed.group("rules").split(",")) if listed else ()
        reason = listed.group("reason").strip() if listed else ""
        line = first_line + index
        found[line] = Suppression(line, len(comment.group("indent")) + 1, rules, reason)
    return found


def _inside(statements: Sequence[tuple[int, int]], starts: list[int], offset: int) -> bool:
    """Whether ``offset`` is within one of ``statements`` (``starts``: their starts)."""
    index = bisect_right(starts, offset) - 1
    return index >= 0 and offset < statements[index][1]


def problems(path: Path, found: dict[int, Suppression], statement_lines: Iterable[int]) -> list[Finding]:
    """A finding for each suppression that cannot silence anything as written: no rule, no
    reason, an unknown rule, or no statement on the next line."""
    starts = set(statement_lines)
    out: list[Finding] = []
    for item in found.values():
        for message in _faults(item, item.line + 1 in starts):
            out.append(
                Finding(path, item.line, item.column, _INVALID.id, _INVALID.severity, message, _INVALID.safer)
            )
    return out


def _faults(item: Suppression, before_statement: bool) -> list[str]:
    if not item.rules:
        return ["'-- dbledger:ignore' names no rule: nothing is suppressed"]
    faults = []
    named = ", ".join(item.rules)
    if not item.reason:
        faults.append(
            f"the suppression of {named} gives no reason, so it suppresses nothing: say why the "
            f"statement is safe, e.g. '-- dbledger:ignore {','.join(item.rules)} the table is empty "
            "in production'"
        )
    for rule in item.rules:
        if rule not in RULES:
            close = difflib.get_close_matches(rule, list(RULES), n=1)
            hint = f": did you mean {close[0]!r}?" if close else " (docs/lint.md lists the rules)"
            faults.append(f"unknown rule {rule!r} in the suppression{hint}")
    if not before_statement:
        faults.append(
            f"the suppression of {named} is not on the line just before a statement, so it "
            "suppresses nothing: move it there"
        )
    return faults
