"""Keep passwords out of every message, log line and JSON document dbledger writes.

Layers, because drivers and users put secrets in different places:
  * URLs with a password in the user-info part: ``postgresql://app:***@host/db``;
  * URL query parameters: ``?password=***&sslmode=require`` (the value ends at ``&``);
  * libpq key/value strings: ``password=***`` (the value ends at white space, as libpq reads it,
    so ``password=k3y,val;ue&pw`` is masked whole), or a quoted value with backslash escapes;
  * ``PASSWORD '...'`` in SQL (``CREATE ROLE app LOGIN PASSWORD '...'`` in a failing migration);
  * in a driver's connection error only (``redact(text, secrets=True)``): any password dbledger
    has seen while parsing a database URL, the one in ``PGPASSWORD``, and those in the password
    file (``PGPASSFILE`` or ``~/.pgpass``), each as a whole token: libpq may echo part of a
    connection string in its own words. Not everywhere: with the common ``postgres:postgres``,
    masking the value would also mask the user, the database and every "postgres" in a message.

A URL that does not parse never reaches a message whole: ``dbledger.config`` shows it without
its user-info.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

MASK = "***"

# scheme://user:password@  -- greedy up to the last '@' of the token, so a password that
# contains an unescaped '@' is still masked whole (over-masking is the safe failure).
_URL_USERINFO = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/@]*):[^\s]*@")
# PASSWORD '...', E'...' (backslash escapes) or $tag$...$tag$; a literal cut short (no closing
# quote) is masked to the end.
_SQL_PASSWORD = re.compile(
    r"(?P<key>\bPASSWORD\s+)(?:[Ee]'(?:[^'\\]|''|\\.)*'?|'(?:[^']|'')*'?|(?P<tag>\$\w*\$).*?(?:(?P=tag)|\Z))",
    re.IGNORECASE | re.DOTALL,
)
_KEYS = r"(?:password|passwd|pwd|sslpassword)"
# In a URL's query string the value ends at '&', '#' or white space.
# A quote after it ends it too: messages quote URLs.
_QUERY_VALUE = re.compile(rf"(?P<key>(?<=[?&]){_KEYS}=)[^&#\s'\"]*", re.IGNORECASE)
# Elsewhere, as libpq reads a key/value string: a quoted value, or everything up to white space.
# The key may carry a prefix, as environment variables do: PGPASSWORD=..., DB_PASSWORD=....
_KEY_VALUE = re.compile(
    rf"(?P<key>(?<![?&\w])(?:PG|[A-Za-z0-9]+_)?{_KEYS}\s*=\s*)(?:'(?:[^'\\]|\\.)*'?|\S+)",
    re.IGNORECASE,
)
# JSON or a Python mapping in a statement: {"password": "..."}.
_MAPPING_VALUE = re.compile(
    rf"""(?P<key>(?P<quote>["'])(?:[A-Za-z0-9]+_)?{_KEYS}(?P=quote)\s*:\s*)(?P<open>["'])(?:(?!(?P=open))[^\\]|\\.)*(?P=open)?""",
    re.IGNORECASE,
)

# Passwords shorter than this are not masked by value, and a value is masked only as a whole
# token: masking "users" or "postgres" inside "001_create_users" or "postgresql://" would garble
# messages and the stored audit trail. The structural rules above catch short passwords where
# they appear in a URL or key/value string.
_MIN_REMEMBERED = 8
_remembered: set[str] = set()
# Masked in every text, not only connection errors, as whole tokens: the values of secret
# placeholders (dbledger.placeholders). Shorter ones could only be guessed at, not masked.
_MIN_EVERYWHERE = 4
_everywhere: set[str] = set()
_TOKEN_EDGE = "A-Za-z0-9_"  # noqa: S105 -- a character class, not a password


def remember_secret(secret: str | None, *, everywhere: bool = False) -> None:
    """Mask ``secret`` wherever it appears in later connection errors; with ``everywhere``, in
    every later redacted text (a secret placeholder's value, which migration statements carry)."""
    if secret and everywhere and len(secret) >= _MIN_EVERYWHERE:
        _everywhere.add(secret)
    if secret and len(secret) >= _MIN_REMEMBERED:
        _remembered.add(secret)


def _password_file_secrets() -> set[str]:
    """The passwords of libpq's password file: ``host:port:database:user:password`` lines, with
    ``\\:`` and ``\\\\`` escapes. Read only when a connection error is being redacted."""
    path = Path(os.environ.get("PGPASSFILE") or Path.home() / ".pgpass")
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return set()
    found = set()
    for line in lines:
        if line.startswith("#"):
            continue
        fields = re.split(r"(?<!\\):", line, maxsplit=4)
        if len(fields) == 5:
            found.add(fields[4].replace("\\:", ":").replace("\\\\", "\\"))
    return found


def _known_secrets() -> list[str]:
    secrets = set(_remembered) | {os.environ.get("PGPASSWORD", "")} | _password_file_secrets()
    long_enough = {s for s in secrets if len(s) >= _MIN_REMEMBERED} | _everywhere
    return sorted(long_enough, key=len, reverse=True)


def redact(text: str, *, secrets: bool = False) -> str:
    """Return ``text`` with every password it may contain replaced by ``***``; with ``secrets``
    also every password dbledger knows of by value (for a driver's connection errors)."""
    text = _URL_USERINFO.sub(lambda m: f"{m.group('head')}:{MASK}@", text)
    text = _QUERY_VALUE.sub(lambda m: f"{m.group('key')}{MASK}", text)
    text = _KEY_VALUE.sub(lambda m: f"{m.group('key')}{MASK}", text)
    text = _MAPPING_VALUE.sub(lambda m: f"{m.group('key')}{m.group('open')}{MASK}{m.group('open')}", text)
    text = _SQL_PASSWORD.sub(lambda m: f"{m.group('key')}'{MASK}'", text)
    known = _known_secrets() if secrets else sorted(_everywhere, key=len, reverse=True)
    for secret in known:
        if secret in text:
            pattern = f"(?<![{_TOKEN_EDGE}]){re.escape(secret)}(?![{_TOKEN_EDGE}])"
            text = re.sub(pattern, MASK, text)
    return text
