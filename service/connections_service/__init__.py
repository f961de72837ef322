"""The incident report's connections service, rebuilt on dbledger.

Organizations and their platform connections (Slack, Google, ...) under Clerk-style string ids,
with an audit trail written by a database trigger. The service migrates its database before it
listens, and refuses to listen when that fails: ``python -m connections_service``.

Modules, one job each: ``__main__`` (environment, logging, migrate then serve), ``app`` (HTTP
endpoints), ``db`` (SQL), ``models`` (request and response bodies), ``ids`` (id generation).
"""

from pathlib import Path

__all__ = ["MIGRATIONS"]

# The migrations that ship with the package (package data); DBLEDGER_DIR overrides it at run time.
MIGRATIONS = Path(__file__).resolve().with_name("migrations")
