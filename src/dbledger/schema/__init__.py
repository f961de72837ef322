"""The live schema as a normalised model: introspection, fingerprint, diff and dump (drift
detection, issue 5). The significance decisions are in ``model``'s docstring.

    model = introspect_postgres(conn)          # or introspect_sqlite(sqlite3_conn)
    fingerprint(model)                         # sha256 hex of the canonical JSON
    diff(expected, found)                      # list[Difference], empty when equal
    dump_sql(model)                            # stable SQL for review

``introspect_postgres`` lives in its own module so that SQLite users never import psycopg.
"""

from __future__ import annotations

from dbledger.schema.diff import Difference, diff
from dbledger.schema.dump import dump_sql
from dbledger.schema.fingerprint import canonical_json, fingerprint
from dbledger.schema.introspect_sqlite import introspect_sqlite
from dbledger.schema.model import SchemaModel

__all__ = [
    "Difference",
    "SchemaModel",
    "canonical_json",
    "diff",
    "dump_sql",
    "fingerprint",
    "introspect_sqlite",
]
