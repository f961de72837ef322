"""The names PostgreSQL gives the objects a statement does not name, so that a later statement
naming them (``DROP CONSTRAINT t_parent_id_fkey``) finds what an earlier one created.

Ported from PostgreSQL 15: ``ChooseForeignKeyConstraintNameAddition`` joins the key's columns with
``_``; ``makeObjectName`` builds ``table_columns_label`` within 63 bytes (NAMEDATALEN - 1), cutting
the longer part first and never inside a character; ``ChooseConstraintName`` adds 1, 2... to the
label while the name is taken.
"""

from __future__ import annotations

from collections.abc import Collection

from dbledger.analysis.nodes import split_qualified

NAMEDATALEN = 64


def foreign_key_name(table: str, columns: tuple[str, ...], taken: Collection[str] = ()) -> str:
    """The name of ``FOREIGN KEY (columns)`` on ``table`` (as ``relation`` spells it) when the SQL
    gives none. ``taken``: constraint names already in use, which PostgreSQL skips. (It checks
    every constraint of the schema; the analysis knows those of the table.)"""
    relname = split_qualified(table)[-1]
    addition = _column_addition(columns)
    label, number = "fkey", 0
    while (name := make_object_name(relname, addition, label)) in taken:
        number += 1
        label = f"fkey{number}"
    return name


def make_object_name(name1: str, name2: str | None, label: str) -> str:
    """``name1_name2_label`` in at most NAMEDATALEN - 1 bytes, as ``makeObjectName`` cuts it."""
    first, second = name1.encode(), (name2 or "").encode()
    overhead = len(label) + 1 + (1 if name2 is not None else 0)  # the label and the underscores
    available = NAMEDATALEN - 1 - overhead
    keep_first, keep_second = len(first), len(second)
    while keep_first + keep_second > available:
        if keep_first > keep_second:
            keep_first -= 1
        else:
            keep_second -= 1
    parts = [_clip(first, keep_first)]
    if name2 is not None:
        parts.append(_clip(second, keep_second))
    return "_".join([*parts, label])


def _column_addition(columns: tuple[str, ...]) -> str:
    """The columns joined by ``_``, stopping once NAMEDATALEN bytes are reached."""
    addition = ""
    for column in columns:
        addition += ("_" if addition else "") + column
        if len(addition.encode()) >= NAMEDATALEN:
            break
    return addition


def _clip(raw: bytes, length: int) -> str:
    # pg_mbcliplen: a cut that would split a multi-byte character drops the whole character.
    return raw[:length].decode("utf-8", errors="ignore")
