"""The lint rules: each one's id, severity, what it catches, the safer way, and squawk's name for
the same rule (None: dbledger's own). docs/lint.md documents each; a test checks it does.

Severity: ``error`` when the statement, on a table that serves traffic, blocks reads or writes
for as long as the table takes to rewrite, scan or index, fails on a table with rows, is refused
by dbledger before it runs, or loses data; ``warning`` when the harm is bounded or depends on
what the application does: a rename breaks the code that still uses the old name, a DROP INDEX
holds its lock only briefly, and a lock wait without a limit is a setting someone chose.
"""

from __future__ import annotations

from typing import NamedTuple

from dbledger.lint.findings import Severity


class Rule(NamedTuple):
    id: str
    severity: Severity
    catches: str  # what the rule finds, for docs/lint.md and --help
    safer: str  # the default help line: the safer way
    squawk: str | None  # the squawk rule of the same id, when squawk has it


_RULES = (
    Rule(
        "changing-column-type",
        "error",
        "ALTER COLUMN ... TYPE that rewrites the table (not a catalog-only change such as varchar widening)",
        "add a new column of the new type, write both from the application, backfill in batches, "
        "then switch reads and drop the old column",
        "changing-column-type",
    ),
    Rule(
        "adding-field-with-default",
        "error",
        "ADD COLUMN whose default is volatile (random(), gen_random_uuid(), clock_timestamp(), nextval() "
        "by serial), GENERATED ... STORED or an identity: every row is written",
        "add the column without a default, SET DEFAULT for new rows, backfill existing rows in "
        "batches; a constant default is free since PostgreSQL 11",
        "adding-field-with-default",
    ),
    Rule(
        "adding-required-field",
        "error",
        "ADD COLUMN ... NOT NULL without a default on an existing table: fails when the table has rows",
        "add the column nullable (or with a constant default), backfill it, then SET NOT NULL",
        "adding-required-field",
    ),
    Rule(
        "require-concurrent-index-creation",
        "error",
        "CREATE INDEX without CONCURRENTLY on an existing table: writes wait for the whole build",
        "CREATE INDEX CONCURRENTLY, in a section marked '-- migrate:up transaction:false'",
        "require-concurrent-index-creation",
    ),
    Rule(
        "require-concurrent-index-deletion",
        "warning",
        "DROP INDEX without CONCURRENTLY on an existing table: takes ACCESS EXCLUSIVE on its table",
        "DROP INDEX CONCURRENTLY, in a section marked '-- migrate:up transaction:false'",
        "require-concurrent-index-deletion",
    ),
    Rule(
        "constraint-missing-not-valid",
        "error",
        "ADD FOREIGN KEY or CHECK without NOT VALID on an existing table (every row checked while "
        "writes wait), or VALIDATE CONSTRAINT in the transaction that added it NOT VALID",
        "ADD CONSTRAINT ... NOT VALID in one migration, VALIDATE CONSTRAINT in a later one",
        "constraint-missing-not-valid",
    ),
    Rule(
        "adding-not-nullable-field",
        "error",
        "SET NOT NULL on an existing table without a validated CHECK (column IS NOT NULL): every "
        "row is read under ACCESS EXCLUSIVE",
        "ADD CONSTRAINT ... CHECK (column IS NOT NULL) NOT VALID, VALIDATE CONSTRAINT in a later "
        "migration, then SET NOT NULL (no scan, PostgreSQL 12+) and drop the CHECK",
        "adding-not-nullable-field",
    ),
    Rule(
        "disallowed-unique-constraint",
        "error",
        "ADD UNIQUE without USING INDEX on an existing table: the index is built under ACCESS EXCLUSIVE",
        "CREATE UNIQUE INDEX CONCURRENTLY first (transaction:false), then ADD CONSTRAINT ... UNIQUE "
        "USING INDEX",
        "disallowed-unique-constraint",
    ),
    Rule(
        "adding-serial-primary-key-field",
        "error",
        "ADD PRIMARY KEY without USING INDEX on an existing table: the index is built under ACCESS EXCLUSIVE",
        "CREATE UNIQUE INDEX CONCURRENTLY first (transaction:false), then ADD CONSTRAINT ... "
        "PRIMARY KEY USING INDEX",
        "adding-serial-primary-key-field",
    ),
    Rule(
        "ban-drop-table",
        "error",
        "DROP TABLE of an existing table: its rows are lost",
        "stop using the table in a release first; drop it in a later migration, with a backup "
        "(up --backup DIR) and a suppression that says why",
        "ban-drop-table",
    ),
    Rule(
        "ban-drop-column",
        "error",
        "DROP COLUMN on an existing table: its values are lost",
        "stop reading and writing the column in a release first; drop it in a later migration, "
        "with a suppression that says why",
        "ban-drop-column",
    ),
    Rule(
        "renaming-table",
        "warning",
        "RENAME of an existing table (or view): code that uses the old name fails at once",
        "create the new table (or a view of the old name), move the code, then drop the old name",
        "renaming-table",
    ),
    Rule(
        "renaming-column",
        "warning",
        "RENAME COLUMN on an existing table: code that uses the old name fails at once",
        "add the new column, write both, backfill, move the reads, then drop the old column",
        "renaming-column",
    ),
    Rule(
        "ban-concurrent-index-creation-in-transaction",
        "error",
        "CONCURRENTLY (and the other statements PostgreSQL refuses in a transaction block) in a "
        "section that runs in a transaction: dbledger refuses the migration",
        "mark the section '-- migrate:up transaction:false' and keep it to statements that must run "
        "on their own",
        "ban-concurrent-index-creation-in-transaction",
    ),
    Rule(
        "transaction-nesting",
        "error",
        "BEGIN, COMMIT or ROLLBACK in a section dbledger runs in a transaction: dbledger refuses "
        "the migration",
        "remove it: each migration is one transaction already; or mark the section transaction:false",
        "transaction-nesting",
    ),
    Rule(
        "update-or-delete-without-where",
        "error",
        "UPDATE or DELETE without WHERE on an existing table: every row written (or lost) in one "
        "transaction, each row locked until it commits",
        "change the rows in batches (WHERE id BETWEEN ...), in a transaction:false section or a "
        "job outside the migration",
        None,
    ),
    Rule(
        "require-lock-timeout",
        "warning",
        "a statement that takes ACCESS EXCLUSIVE on an existing table while its lock wait has no "
        "limit (dbledger sets 3 s by default: this fires only when the limit was set to 0)",
        "give the wait a limit: drop the 0 from --statement-lock-timeout / statement_lock_timeout, "
        "or put lock_timeout:3s on the section's marker line",
        "require-lock-timeout",
    ),
    Rule(
        "syntax-error",
        "error",
        "a statement PostgreSQL's parser rejects: nothing about it can be checked, and the server "
        "will refuse it",
        "fix the statement (the parser's message says where)",
        "syntax-error",
    ),
    Rule(
        "invalid-suppression",
        "error",
        "a '-- dbledger:ignore' comment without a reason, or naming a rule that does not exist",
        "write '-- dbledger:ignore RULE[,RULE] reason' on the line before the statement",
        None,
    ),
)

RULES: dict[str, Rule] = {rule.id: rule for rule in _RULES}
