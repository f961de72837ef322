"""Request and response bodies. Validation happens here, so a malformed request gets a 422 that
names the field (FastAPI's standard error body) before any SQL runs."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, StringConstraints

__all__ = [
    "ID_PATTERN",
    "AuditLog",
    "Connection",
    "ConnectionCreate",
    "ConnectionStatus",
    "Id",
    "Organization",
    "OrganizationCreate",
    "PlatformType",
]

# Clerk-style ids (org_33fSYwlyUqkYiSD2kBt7hqBz7dE, google-1759721169098); the columns are
# VARCHAR(255) since migration 003.
ID_PATTERN = r"^[A-Za-z0-9_-]{1,255}$"
Id = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
PlatformType = Annotated[str, StringConstraints(pattern=r"^[a-z0-9_]{1,50}$")]
Text = Annotated[str, StringConstraints(min_length=1, max_length=255)]
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
    event_data: dict[str, Any]
    created_at: datetime
