"""``dbledger lint``: dangerous operations in PostgreSQL migrations, found before they run.

    from dbledger.lint import lint_migrations

    for finding in lint_migrations(migrations):            # without a database
        print(finding.format())
    lint_migrations(pending, catalog=PostgresCatalog(conn))  # against the live catalog

Importing this package imports pglast (through ``dbledger.analysis``); ``import dbledger``
never imports it.
"""

from dbledger.lint.findings import Finding, Severity
from dbledger.lint.run import lint_migrations

__all__ = ["Finding", "Severity", "lint_migrations"]
