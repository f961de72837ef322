"""The ledger's vocabulary: table names, row states, history actions, who is acting.

The tables themselves are created by each backend in its own SQL dialect; this module holds what
they share, so the runner and the backends spell every state the same way.

``schema_migrations`` has the incident report's columns exactly (``id``, ``migration_name``,
``applied_at``, ``checksum``, ``execution_time_ms``, ``success``, ``error_message``), so its
verification queries work unchanged, plus ``version``, ``state``, ``applied_by`` and
``dbledger_version``. ``schema_migrations_history`` is append-only: one row per action.
"""

from __future__ import annotations

import getpass
import os
import socket
from functools import cache
from typing import Literal

LEDGER_TABLE = "schema_migrations"
HISTORY_TABLE = "schema_migrations_history"
# The schema each successful run left (fingerprint and model), for ``drift`` and ``status``.
SCHEMA_TABLE = "schema_migrations_schema"

# Current state of one migration in schema_migrations.
State = Literal["applied", "baseline", "failed", "dirty"]
# What the history table records.
Action = Literal["apply", "fail", "start", "rollback", "repair", "baseline", "backup"]

DBLEDGER_VERSION = "0.1.0"


@cache
def _user_at_host() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry for the uid (common in containers)
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


def actor() -> str:
    """``user@host:pid`` of this process, recorded with every row so an operator can find it.
    The pid is read each time: a forked worker must not report its parent's."""
    return f"{_user_at_host()}:{os.getpid()}"
