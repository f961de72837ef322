"""PostgreSQL parse trees, parsed once per run and shared by every reader.

The preflight, lint and the dry-run analysis each read the statements they are given with
pglast, and pglast builds a tree in about 240 us (a one-line CREATE TABLE, 2-core machine): a
run of 1000 migrations spent more than a second parsing the same text five times. Inside
``shared()`` (one ``up``, one dry run) a text is parsed once and its tree handed to each reader.
What is kept is bounded by the length of the text, so a 500,000-statement data file does not
keep 500,000 trees; past the budget a text is parsed as often as it is asked for.

Readers must not change a tree they are given (``Dialect.normal_form``, which does, parses its
own). The trees live until ``shared()`` ends, and only in the context that entered it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

# Characters of SQL whose trees a run keeps: about 36 bytes of tree a character, so at most
# ~70 MB, and every tree of 10,000 one-line migrations (about 0.5 MB of text).
TEXT_BUDGET = 2_000_000


class _Kept:
    __slots__ = ("chars", "trees")

    def __init__(self) -> None:
        self.trees: dict[str, tuple[Any, ...]] = {}
        self.chars = 0


_current: ContextVar[_Kept | None] = ContextVar("dbledger_sql_trees", default=None)


def parse(sql: str) -> tuple[Any, ...]:
    """pglast's ``parse_sql(sql)``: the statements' RawStmt nodes. Raises pglast's ParseError."""
    from pglast import parse_sql

    kept = _current.get()
    if kept is None:
        return tuple(parse_sql(sql))
    found = kept.trees.get(sql)
    if found is None:
        found = tuple(parse_sql(sql))
        if kept.chars + len(sql) <= TEXT_BUDGET:
            kept.trees[sql] = found
            kept.chars += len(sql)
    return found


def drop() -> None:
    """Let the trees kept so far go (their readers are done), keeping what is parsed next."""
    kept = _current.get()
    if kept is not None:
        kept.trees.clear()
        kept.chars = 0


@contextmanager
def shared() -> Iterator[None]:
    """Keep the trees parsed inside, for the readers inside; nested uses share the outer one."""
    if _current.get() is not None:
        yield
        return
    token = _current.set(_Kept())
    try:
        yield
    finally:
        _current.reset(token)
