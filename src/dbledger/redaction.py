"""Keep passwords out of every message, log line and JSON document dbledger writes.

Three layers, because drivers and users put secrets in different places:
  * URLs with a password in the user-info part: ``postgresql://app:***@host/db``;
  * libpq key/value strings and URL query parameters: ``password=***``;
  * any password dbledger has seen while parsing a database URL, wherever it appears verbatim
    (a driver may echo part of a connection string in its own words).
"""

from __future__ import annotations

import re

MASK = "***"

# scheme://user:password@  -- greedy up to the last '@' of the token, so a password that
# contains an unescaped '@' is still masked whole (over-masking is the safe failure).
_URL_USERINFO = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/@]*):[^\s]*@")
_KEY_VALUE = re.compile(
    r"(?P<key>\b(?:password|passwd|pwd|sslpassword)\s*=\s*)(?:'(?:[^'\\]|\\.)*'|[^\s&;,]+)",
    re.IGNORECASE,
)

# Passwords shorter than this are not masked by value: masking "pw" would garble every message,
# and the structural rules above already catch them where they appear in a URL or key/value.
_MIN_REMEMBERED = 4
_remembered: set[str] = set()


def remember_secret(secret: str | None) -> None:
    """Mask ``secret`` wherever it appears in later messages."""
    if secret and len(secret) >= _MIN_REMEMBERED:
        _remembered.add(secret)


def redact(text: str) -> str:
    """Return ``text`` with every password it may contain replaced by ``***``."""
    text = _URL_USERINFO.sub(lambda m: f"{m.group('head')}:{MASK}@", text)
    text = _KEY_VALUE.sub(lambda m: f"{m.group('key')}{MASK}", text)
    for secret in sorted(_remembered, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text
