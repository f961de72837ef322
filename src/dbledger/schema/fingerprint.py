"""The schema's fingerprint: one short string that changes exactly when the model does.

SHA-256 of the model's canonical JSON (sorted keys, no whitespace, UTF-8), so it is the same on
every machine and Python version, and cheap to store next to every ledger action.
"""

from __future__ import annotations

import hashlib
import json

from dbledger.schema.model import SchemaModel


def canonical_json(model: SchemaModel) -> str:
    """The model as JSON in one canonical form: what is compared is what is hashed."""
    return json.dumps(model.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def fingerprint(model: SchemaModel) -> str:
    """SHA-256 hex of ``canonical_json(model)``."""
    return hashlib.sha256(canonical_json(model).encode("utf-8")).hexdigest()
