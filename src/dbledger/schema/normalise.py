"""Text normalisation shared by both introspections."""

from __future__ import annotations

import re
from typing import NamedTuple

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

_TOKEN = re.compile(
    r"""(?P<literal>[EeBbXxNnUu]?'(?:[^']|'')*')|(?P<quoted>"(?:[^"]|"")*")|(?P<word>[A-Za-z_][A-Za-z0-9_$]*)"""
    r"""|(?P<open>\()|(?P<close>\))|(?P<other>[^\s'"()A-Za-z_]+)|\s+"""
)
_NAME = r'(?:[A-Za-z_][A-Za-z0-9_$]*|"(?:[^"]|"")*")'
_SET_OPERATIONS = frozenset({"UNION", "INTERSECT", "EXCEPT"})
_AFTER_FROM = frozenset({"WHERE", "GROUP", "HAVING", "WINDOW", "ORDER", "LIMIT", "OFFSET", "FETCH", "FOR"})
_KEYWORDS = frozenset({"SELECT", "FROM", "WITH", "AS", "JOIN", *_SET_OPERATIONS, *_AFTER_FROM})


class _Token(NamedTuple):
    text: str
    kind: str  # literal, quoted, word, open, close, other, space
    top: bool  # in the top level's own text: outside every sub-select, not a literal or space
    depth: int  # parentheses open around it (a sub-select's own included)


def normalise_view(text: str) -> str:
    """A view's definition as PostgreSQL 16 and later print it: when the top level of the query
    reads a single relation (a table, a function, a sub-select or VALUES), its columns are
    printed without the relation's name (``SELECT a FROM t``), where 13 to 15 print ``SELECT t.a
    FROM t``. Sub-selects and CTEs keep their qualified names, as 16 keeps them. Text already in
    that form, or not of that shape, is returned as it is."""
    tokens = _tokens(text)
    relation = _one_relation([t for t in tokens if t.top])
    if relation is None:
        return text
    out: list[str] = []
    skip = False
    for at, token in enumerate(tokens):
        if skip:  # the "." after a dropped qualifier
            skip = False
            continue
        qualifier = (
            token.top
            and token.text == relation
            and at + 2 < len(tokens)
            and tokens[at + 1].text == "."
            and tokens[at + 2].kind in ("word", "quoted")
            and (at == 0 or tokens[at - 1].text != ".")
        )
        if qualifier:
            skip = True
            continue
        out.append(token.text)
    return "".join(out)


def _tokens(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    stack: list[bool] = []  # for each open parenthesis: does a sub-select start there?
    opened = False
    for match in _TOKEN.finditer(text):
        token, kind = match.group(0), match.lastgroup or "space"
        if opened and kind != "space":
            stack[-1] = kind == "word" and token.upper() in ("SELECT", "WITH", "VALUES")
            opened = False
        if kind == "close" and stack:
            stack.pop()
        top = not any(stack) and kind not in ("literal", "space")
        tokens.append(_Token(token, kind, top, len(stack)))
        if kind == "open":
            stack.append(False)
            opened = True
    return tokens


def _one_relation(top: list[_Token]) -> str | None:
    """The name the top level's single relation is known by (its alias, else its name); None
    when it reads none or several, or the query is a set operation."""
    words = [t.text.upper() if t.kind == "word" else t.text for t in top if t.depth == 0]
    if "SELECT" not in words or words.count("FROM") != 1 or _SET_OPERATIONS & set(words):
        return None
    if words[0] not in ("SELECT", "WITH"):
        return None
    clause: list[_Token] = []
    for token in top[[t.depth == 0 and t.text.upper() == "FROM" for t in top].index(True) + 1 :]:
        if token.depth == 0 and (token.text.upper() in _AFTER_FROM or token.text == ";"):
            break
        clause.append(token)
    outer = [t for t in clause if t.depth == 0]
    if any(t.text in (",", "JOIN", "join") or t.text.upper() in ("JOIN", "LATERAL") for t in outer):
        return None
    names = [t for t in outer if t.kind in ("word", "quoted") and t.text.upper() not in ("ONLY", "AS")]
    return names[-1].text if names else None


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
