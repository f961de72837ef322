"""The PostgreSQL versions dbledger supports, and what it uses that not all of them have.

Every major version from OLDEST to NEWEST runs the test suite (docs/postgres-versions.md). An
older or newer server still works as far as it goes, with a warning: its catalogs and locks are
the ones dbledger has not been checked against.
"""

from __future__ import annotations

from typing import NamedTuple

OLDEST = 13
NEWEST = 18

# What dbledger can be asked to use, by the first major version that has it.
SINCE = {
    "transaction_timeout": 17,  # the whole migration's transaction bounded by the server
}


def major(server_version: int) -> int:
    """13 for ``server_version_num`` 130023 (the numbering of PostgreSQL 10 and later)."""
    return server_version // 10000


def shown(server_version: int) -> str:
    """``13.23`` for 130023."""
    return f"{major(server_version)}.{server_version % 10000}"


def support_warning(server_version: int, where: str) -> str | None:
    """What to say of a server outside the supported range, or None."""
    version = shown(server_version)
    if major(server_version) < OLDEST:
        return (
            f"{where} runs PostgreSQL {version}, older than dbledger supports ({OLDEST} to {NEWEST}): "
            "drift detection and the dry run's analysis read catalogs this version does not have; "
            f"upgrade the server to PostgreSQL {OLDEST} or newer"
        )
    if major(server_version) > NEWEST:
        return (
            f"{where} runs PostgreSQL {version}, newer than dbledger has been tested with "
            f"({OLDEST} to {NEWEST}): the dry run's lock analysis and drift detection may not know "
            "what this version changed; check for a newer dbledger"
        )
    return None


class Server(NamedTuple):
    """A PostgreSQL server as the preflight knows it: its ``server_version_num`` and how it is
    shown in messages (the database's redacted address)."""

    version: int
    where: str

    def lacks(self, what: str, first: int) -> str | None:
        """Why ``what``, which PostgreSQL ``first`` added, cannot be used here; None if it can."""
        if major(self.version) >= first:
            return None
        version = shown(self.version)
        return f"{what} needs PostgreSQL {first} or newer, and {self.where} runs PostgreSQL {version}"
