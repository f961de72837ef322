"""The analysis protocol, at the bottom of the house with the other contract types: what a
database's statement analysis (locks, rewrites, sizes, estimates) says of each statement. The
dry run prints it; the runner records each migration's estimate next to its real time.

A module of its own, so that the path every replica takes at every start does not load it.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

from dbledger.contracts import Statement


class Annotation(NamedTuple):
    """What the analysis says of one statement."""

    summary: str  # one line for people, e.g. "ALTER TABLE; ACCESS EXCLUSIVE on t; rewrite"
    details: dict[str, Any]  # the same, for --json
    estimate_ms: float | None
    destructive: bool = False


class SectionAnnotation(NamedTuple):
    """The analysis of one section: an annotation per statement, and notes on the whole (how long
    each table stays locked)."""

    statements: list[Annotation]
    notes: list[str]


class Annotator(Protocol):
    """Analyses one database's statements (PostgreSQL: the parser and the live catalog). Called
    once per section, in the order the sections would run, so each sees the schema the ones
    before it leave."""

    def annotate(self, statements: list[Statement], transactional: bool) -> SectionAnnotation: ...
