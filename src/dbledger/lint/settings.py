"""``SET lock_timeout`` in a migration: the value it gives the statements after it.

PostgreSQL reads a bare number as milliseconds, and accepts the units ``us``, ``ms``, ``s``,
``min``, ``h`` and ``d`` ("Setting Parameters" in the documentation). ``RESET`` and ``DEFAULT``
give back the server's default, 0 (no limit) unless the server or role sets one.
"""

from __future__ import annotations

import re

from dbledger.analysis.nodes import Node, child, children, enum, integer, kind_of, text

_VALUE = re.compile(r"^\s*(?P<number>[0-9]+(?:\.[0-9]*)?)\s*(?P<unit>us|ms|s|min|h|d)?\s*$")
_SECONDS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "min": 60.0, "h": 3600.0, "d": 86400.0}


def lock_setting(node: Node) -> float | None:
    """Seconds (0: no limit) when ``node`` sets lock_timeout; None for any other statement, or a
    value that cannot be read (the server decides)."""
    if kind_of(node) != "VariableSetStmt" or text(node, "name") != "lock_timeout":
        return None
    kind = enum(node, "kind")
    if kind in ("VAR_RESET", "VAR_SET_DEFAULT"):
        return 0.0
    if kind != "VAR_SET_VALUE":
        return None
    values = children(node, "args")
    value = child(values[0], "val") if len(values) == 1 else None
    if value is None:
        return None
    number = integer(value, "ival")
    if number is not None:
        return number / 1000
    written = _VALUE.match(text(value, "sval") or "")
    if written is None:
        return None
    return float(written.group("number")) * _SECONDS[written.group("unit") or "ms"]
