"""Request and response bodies. Validation happens here, so a malformed request gets a 422 that
names the field (FastAPI's standard error body) before any SQL runs: whatever passes is text
PostgreSQL can store."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, StringConstraints, WithJsonSchema

__all__ = [
    "ID_PATTERN",
    "TEXT_PATTERN",
    "AuditLog",
    "Connection",
    "ConnectionCreate",
    "ConnectionStatus",
    "Id",
    "Organization",
    "OrganizationCreate",
    "PlatformType",
    "Text",
    "storable_text",
]

# Clerk-style ids (org_33fSYwlyUqkYiSD2kBt7hqBz7dE, google-1759721169098); the columns are
# VARCHAR(255) since migration 003.
ID_PATTERN = r"^[A-Za-z0-9_-]{1,255}$"
Id = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
PlatformType = Annotated[str, StringConstraints(pattern=r"^[a-z0-9_]{1,50}$")]


# C0 and C1 controls, DEL among them: none belongs in a one-line name (NUL cannot even be stored).
_CONTROLS = "\\x00-\\x1f\\x7f-\\x9f"
# What JSON Schema's regular expressions (ECMA-262) call whitespace, written out so that the
# schema's pattern and the check below agree character for character.
_WHITESPACE = "\\t\\n\\x0b\\x0c\\r \\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000\\ufeff"
# No control anywhere, and at least one character that is neither a control nor whitespace.
TEXT_PATTERN = f"^[^{_CONTROLS}]*[^{_CONTROLS}{_WHITESPACE}][^{_CONTROLS}]*$"
_VISIBLE = re.compile(f"[^{_CONTROLS}{_WHITESPACE}]")
_CONTROL = re.compile(f"[{_CONTROLS}]")


def storable_text(value: str) -> str:
    """A name or label as the database can keep it and a person can read it (``TEXT_PATTERN``):
    no control character (NUL, which PostgreSQL's text cannot hold, tabs and line breaks among
    them: these are one-line fields), no lone surrogate (not Unicode, so not UTF-8), and
    something besides whitespace."""
    if control := _CONTROL.search(value):
        position, char = control.start(), control.group()
        raise ValueError(f"character {position + 1} is the control character U+{ord(char):04X}")
    for position, char in enumerate(value):
        if "\ud800" <= char <= "\udfff":
            raise ValueError(f"character {position + 1} is a lone surrogate (U+{ord(char):04X}), not Unicode")
    if not _VISIBLE.search(value):
        raise ValueError("only whitespace: give a visible name")
    return value


# VARCHAR(255) columns, which count characters.
Text = Annotated[
    str,
    StringConstraints(min_length=1, max_length=255),
    AfterValidator(storable_text),
    # The rule in the OpenAPI document, so generated clients and tests know it; the check itself
    # is storable_text's, which says which character is at fault.
    WithJsonSchema({"type": "string", "minLength": 1, "maxLength": 255, "pattern": TEXT_PATTERN}),
]
# The CHECK constraint of platform_connections.status (migration 001).
ConnectionStatus = Literal["active", "inactive", "error", "expired", "pending"]


class _Request(BaseModel):
    # An unknown field is a typo the client should hear about, not silently drop.
    model_config = ConfigDict(extra="forbid")


class OrganizationCreate(_Request):
    """``POST /api/organizations``: without ``id``, the service generates ``org_`` + KSUID."""

    id: Id | None = None
    name: Text


class Organization(BaseModel):
    id: str
    name: str
    created_at: datetime


class ConnectionCreate(_Request):
    """``POST /api/connections``: without ``id``, the service generates
    ``{platform_type}-{epoch milliseconds}``."""

    id: Id | None = None
    organization_id: Id
    platform_type: PlatformType
    platform_user_id: Text
    display_name: Text
    status: ConnectionStatus = "active"


class Connection(BaseModel):
    id: str
    organization_id: str
    platform_type: str
    platform_user_id: str
    display_name: str
    status: str
    created_at: datetime
    updated_at: datetime


class AuditLog(BaseModel):
    """A row written by the ``log_platform_connection_changes()`` trigger. After a DELETE,
    ``platform_connection_id`` is NULL and the id is in ``resource_id`` and ``event_data``."""

    id: str
    organization_id: str | None
    platform_connection_id: str | None
    event_type: str
    resource_type: str
    resource_id: str | None
    event_data: Any  # JSONB: the trigger writes an object, but the column holds any JSON value
    created_at: datetime
