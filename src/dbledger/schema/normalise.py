"""Text normalisation shared by both introspections."""

from __future__ import annotations

import re

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
