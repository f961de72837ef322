"""Keep passwords out of every message, log line and JSON document dbledger writes.

Three layers, because drivers and users put secrets in different places:
  * URLs with a password in the user-info part: ``postgresql://app:***@host/db``;
  * libpq key/value strings and URL query parameters: ``password=***``;
  * ``PASSWORD '...'`` in SQL (``CREATE ROLE app LOGIN PASSWORD '...'`` in a failing migration);
  * in a driver's connection error only (``redact(text, secrets=True)``), any password dbledger
    has seen while parsing a database URL, as a whole token: a driver may echo part of a
    connection string in its own words. Not everywhere: with the common ``postgres:postgres``,
    masking the value would also mask the user, the database and every "postgres" in a message.
"""

from __future__ import annotations

import re

MASK = "***"

# scheme://user:password@  -- greedy up to the last '@' of the token, so a password that
# contains an unescaped '@' is still masked whole (over-masking is the safe failure).
_URL_USERINFO = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/@]*):[^\s]*@")
_SQL_PASSWORD = re.compile(r"(?P<key>\bPASSWORD\s+)'(?:[^']|'')*'", re.IGNORECASE)
_KEY_VALUE = re.compile(
    r"(?P<key>\b(?:password|passwd|pwd|sslpassword)\s*=\s*)(?:'(?:[^'\\]|\\.)*'|[^\s&;,]+)",
    re.IGNORECASE,
)

# Passwords shorter than this are not masked by value, and a value is masked only as a whole
# token: masking "users" or "postgres" inside "001_create_users" or "postgresql://" would garble
# messages and the stored audit trail. The structural rules above catch short passwords where
# they appear in a URL or key/value string.
_MIN_REMEMBERED = 8
_remembered: set[str] = set()
_TOKEN_EDGE = "A-Za-z0-9_"  # noqa: S105 -- a character class, not a password


def remember_secret(secret: str | None) -> None:
    """Mask ``secret`` wherever it appears in later messages."""
    if secret and len(secret) >= _MIN_REMEMBERED:
        _remembered.add(secret)


def redact(text: str, *, secrets: bool = False) -> str:
    """Return ``text`` with every password it may contain replaced by ``***``; with ``secrets``
    also every password remembered from a parsed URL (for a driver's connection errors)."""
    text = _URL_USERINFO.sub(lambda m: f"{m.group('head')}:{MASK}@", text)
    text = _KEY_VALUE.sub(lambda m: f"{m.group('key')}{MASK}", text)
    text = _SQL_PASSWORD.sub(lambda m: f"{m.group('key')}'{MASK}'", text)
    for secret in sorted(_remembered, key=len, reverse=True) if secrets else ():
        if secret in text:
            pattern = f"(?<![{_TOKEN_EDGE}]){re.escape(secret)}(?![{_TOKEN_EDGE}])"
            text = re.sub(pattern, MASK, text)
    return text
