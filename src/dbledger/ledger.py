"""The ledger's identity: where its tables live, which format version they have, who is acting.

dbledger keeps four tables, all named after the ledger table (``schema_migrations`` unless
``--ledger-table`` says otherwise, in the connection's current schema unless ``schema.table``):

- ``NAME``: one row per migration, with the incident report's columns exactly (``id``,
  ``migration_name``, ``applied_at``, ``checksum``, ``execution_time_ms``, ``success``,
  ``error_message``) so its verification queries work unchanged, plus dbledger's own;
- ``NAME_history``: append-only, one row per action, each chained to the one before by SHA-256;
- ``NAME_schema``: the schema each run left (fingerprint and model), for ``drift``;
- ``NAME_version``: one row, the format version of the four (``LEDGER_VERSION``), so a newer
  dbledger can upgrade them in place;
- ``NAME_lock``: the migration lease, only where runs exclude one another with the lease lock
  (PgBouncer in transaction mode, databases without advisory locks).
"""

from __future__ import annotations

import getpass
import os
import re
from functools import cache
from typing import NamedTuple

from dbledger.errors import ConfigError

DBLEDGER_VERSION = "0.3.0"
# The format of dbledger's own tables. 1: dbledger 0.1 (no version table). 2: applied order,
# running migrations, structured and chained history. 3: each row names its checksum's
# algorithm and keeps the file as applied. 4: a version may be dotted (Flyway's 1.1) or empty (a
# repeatable migration's row), which a dbledger that reads versions as integers cannot read: the
# format says so, and such a dbledger refuses the ledger instead of failing on a row.
LEDGER_VERSION = 4
# The first format whose history rows are chained by SHA-256.
CHAINED_FORMAT = 2
# What ``checksum`` holds: the SHA-256 hex digest of the normalised file.
CHECKSUM_ALGORITHM = "sha256"
# Files longer than this are not copied into the ledger (a data load of many megabytes): a later
# change to one is reported as a change of unknown kind.
MAX_SOURCE_BYTES = 1 << 20
DEFAULT_LEDGER_TABLE = "schema_migrations"

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")
# PostgreSQL truncates identifiers at 63 bytes; the longest suffix is "_history".
_MAX_TABLE = 63 - len("_history")


class LedgerNames(NamedTuple):
    """Where the ledger lives: ``table`` in ``schema``, or in the connection's current schema when
    ``schema`` is None. The other three tables take the same name plus a suffix."""

    table: str = DEFAULT_LEDGER_TABLE
    schema: str | None = None

    @classmethod
    def parse(cls, text: str) -> LedgerNames:
        """``table`` or ``schema.table``; ConfigError naming the value otherwise."""
        if text == DEFAULT_LEDGER_TABLE:  # every start of every replica: no regular expression
            return cls()
        parts = text.strip().split(".")
        if len(parts) > 2 or not all(_IDENTIFIER.match(p) for p in parts):
            raise ConfigError(
                f"invalid ledger table {text!r}: give TABLE or SCHEMA.TABLE, each lower-case letters, "
                "digits and '_' starting with a letter or '_' (e.g. dbledger_migrations or "
                "ops.schema_migrations)"
            )
        if len(parts[-1]) > _MAX_TABLE:
            raise ConfigError(
                f"invalid ledger table {text!r}: the table name may have at most {_MAX_TABLE} "
                "characters, so that its _history table still fits PostgreSQL's 63"
            )
        return cls(table=parts[-1], schema=parts[0] if len(parts) == 2 else None)

    @property
    def history(self) -> str:
        return f"{self.table}_history"

    @property
    def snapshots(self) -> str:
        return f"{self.table}_schema"

    @property
    def version(self) -> str:
        return f"{self.table}_version"

    @property
    def lock(self) -> str:
        return f"{self.table}_lock"

    @property
    def tables(self) -> tuple[str, ...]:
        """dbledger's table names, ledger first; the lease table last (it exists only where the
        lease lock was used)."""
        return (self.table, self.history, self.snapshots, self.version, self.lock)

    def qualified(self, schema: str | None = None) -> str:
        """``schema.table`` for messages, with the schema the connection resolved when given."""
        where = self.schema or schema
        return f"{where}.{self.table}" if where else self.table


DEFAULT_LEDGER = LedgerNames()


@cache
def _user_at_host() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry for the uid (common in containers)
        user = str(os.getuid())
    import socket  # only when writing: the no-op path never does

    return f"{user}@{socket.gethostname()}"


def actor() -> str:
    """``user@host:pid`` of this process, recorded with every row so an operator can find it.
    The pid is read each time: a forked worker must not report its parent's."""
    return f"{_user_at_host()}:{os.getpid()}"
