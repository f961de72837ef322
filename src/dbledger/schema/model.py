"""A live schema as a normalised, deterministic model: what ``drift`` compares, what the
fingerprint hashes and what ``dump`` prints.

Every collection is a tuple sorted by its key, every definition is the database's own canonical
text (``format_type``, ``pg_get_constraintdef``, ``pg_get_indexdef``, ``pg_get_viewdef``,
``pg_get_triggerdef`` on PostgreSQL; the stored ``CREATE`` text modulo whitespace on SQLite), so two
databases in the same state give equal models whatever statements led there.

What is significant, and why:

* **Names of tables, columns, constraints, indexes, triggers, sequences, types** are significant:
  migrations refer to them (``DROP CONSTRAINT x``, ``DROP INDEX y``), so a database where a
  constraint has another name will break the next migration even if it enforces the same rule.
* **Column order is not significant** (``Column.position`` is recorded for ``dump`` but left out of
  equality and of the fingerprint). ``ALTER TABLE ... ADD COLUMN`` always appends, so a database
  built by replaying migrations and one built from a hand-written ``CREATE TABLE`` with the same
  columns differ only in physical position, which no query by column name can see. dbmate's
  schema.sql and Flyway keep order (they compare dumps or nothing); Atlas ignores it by default.
  A ``SELECT *`` consumer that depends on order is the one case this hides.
* **Types with modifiers, nullability, defaults, identity, generated expressions** are significant
  (``character varying(255)`` vs ``uuid`` is the incident's own drift).
* **Constraint and index definitions, index validity** (an INVALID index left by a failed
  ``CREATE INDEX CONCURRENTLY`` enforces nothing), **trigger definitions and enabled state**,
  **view definitions** (as PostgreSQL deparses them), **function signatures, return type,
  language, volatility, strictness, security definer and body**, **sequence options** (type,
  start, increment, min, max, cache, cycle; not the current value, which is data), **enum labels
  in order** (order is what ``<`` on an enum compares), **domains with their checks**,
  **extensions by name and schema**.
* **Function bodies are compared modulo whitespace within lines**: each line is stripped, runs of
  blanks collapse to one space and blank lines go away (re-indenting, tabs, trailing blanks and
  CRLF are noise). Line breaks themselves are kept, because a line break ends a ``--`` comment. The
  rare change of the number of spaces inside a string literal is therefore not seen.
* **Not significant**: OIDs, owners, grants, comments, tablespaces, statistics, storage
  parameters, the current value of sequences, extension versions (they follow the server's
  packages, not the migrations), and dbledger's own four tables (``schema_migrations`` and its
  ``_history``, ``_schema`` and ``_version``, or wherever ``--ledger-table`` put them). Objects
  that belong to an extension come with ``CREATE EXTENSION`` and are left out.

Names are schema-qualified except in ``public`` (``platform_connections``, ``audit.events``) and
quoted only where SQL needs it, so they read like the migrations that created them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    nullable: bool
    default: str | None = None
    identity: str | None = None  # 'ALWAYS' or 'BY DEFAULT'
    generated: str | None = None  # the expression of a generated column ('VIRTUAL'/'STORED' on SQLite)
    position: int = field(default=0, compare=False)  # for dump only: see the module docstring


@dataclass(frozen=True)
class Constraint:
    name: str
    kind: str  # 'primary key', 'unique', 'check', 'foreign key', 'exclusion', 'trigger'
    definition: str
    on_delete: str | None = None  # foreign keys only, also part of ``definition``
    on_update: str | None = None
    deferrable: str | None = None  # 'DEFERRABLE INITIALLY DEFERRED' / 'DEFERRABLE' / None


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]  # sorted by name
    constraints: tuple[Constraint, ...] = ()  # sorted by name
    kind: str = "table"  # 'table', 'partitioned table', 'foreign table'


@dataclass(frozen=True)
class Index:
    name: str
    table: str
    definition: str
    valid: bool = True


@dataclass(frozen=True)
class View:
    name: str
    definition: str
    materialized: bool = False


@dataclass(frozen=True)
class Function:
    name: str
    arguments: str  # identity arguments: what tells overloads apart
    kind: str  # 'function', 'trigger function', 'procedure', 'aggregate', 'window function'
    returns: str
    language: str
    volatility: str  # 'IMMUTABLE', 'STABLE', 'VOLATILE'
    body: str  # normalised: see the module docstring
    strict: bool = False
    security_definer: bool = False
    full_arguments: str = ""  # with defaults and names, for dump

    @property
    def key(self) -> str:
        return f"{self.name}({self.arguments})" if self.arguments else self.name


@dataclass(frozen=True)
class Trigger:
    name: str
    table: str
    definition: str
    enabled: str = "ORIGIN"  # 'ORIGIN' (the default), 'DISABLED', 'REPLICA', 'ALWAYS'

    @property
    def key(self) -> str:
        return f"{self.table}.{self.name}"


@dataclass(frozen=True)
class Sequence:
    name: str
    type: str
    start: int
    increment: int
    minimum: int
    maximum: int
    cache: int
    cycle: bool
    owned_by: str | None = None


@dataclass(frozen=True)
class Enum:
    name: str
    labels: tuple[str, ...]  # in sort order


@dataclass(frozen=True)
class Domain:
    name: str
    type: str
    nullable: bool
    default: str | None
    checks: tuple[Constraint, ...] = ()


@dataclass(frozen=True)
class Extension:
    name: str
    schema: str


@dataclass(frozen=True)
class SchemaModel:
    dialect: str  # 'postgresql' or 'sqlite'
    schemas: tuple[str, ...] = ()
    extensions: tuple[Extension, ...] = ()
    enums: tuple[Enum, ...] = ()
    domains: tuple[Domain, ...] = ()
    sequences: tuple[Sequence, ...] = ()
    tables: tuple[Table, ...] = ()
    indexes: tuple[Index, ...] = ()
    views: tuple[View, ...] = ()
    functions: tuple[Function, ...] = ()
    triggers: tuple[Trigger, ...] = ()

    def to_dict(self, *, positions: bool = False) -> dict[str, Any]:
        """A JSON-able form. Without ``positions`` it holds exactly what equality compares (the
        form the fingerprint hashes); with it, column positions too (for storing a model whose
        dump must keep the table layout)."""
        plain: dict[str, Any] = _plain(self, positions)
        return plain


def _plain(value: object, positions: bool) -> Any:
    if isinstance(value, tuple):
        return [_plain(item, positions) for item in value]
    names = _field_names(type(value), positions)
    if names is None:
        return value
    return {name: _plain(getattr(value, name), positions) for name in names}


_FIELD_NAMES: dict[tuple[type, bool], tuple[str, ...] | None] = {}


def _field_names(kind: type, positions: bool) -> tuple[str, ...] | None:
    """The fields of a model class that ``to_dict`` keeps (None: not a model class). Found once
    per class: a 1000-table schema has ~25,000 values, and ``dataclasses.fields`` per value made
    its fingerprint cost twice its introspection."""
    key = (kind, positions)
    if key not in _FIELD_NAMES:
        _FIELD_NAMES[key] = (
            tuple(f.name for f in dataclasses.fields(kind) if f.compare or positions)
            if dataclasses.is_dataclass(kind)
            else None
        )
    return _FIELD_NAMES[key]


def key_of(item: object) -> str:
    """The name an object is matched by between two models."""
    key = getattr(item, "key", None)
    return key if isinstance(key, str) else str(getattr(item, "name"))  # noqa: B009


def sorted_by_key(items: list[T]) -> tuple[T, ...]:
    return tuple(sorted(items, key=key_of))
