"""Ids in the style the application already uses (Clerk's), for rows created without one.

    connection_id("google")  -> "google-1759721169098"            {platform_type}-{epoch ms}
    organization_id()        -> "org_33fSYwlyUqkYiSD2kBt7hqBz7dE"  org_ + 27 base62 characters

Both are VARCHAR(255) values since migration 003; a UUID column would reject them.
"""

from __future__ import annotations

import secrets
import string
import threading
import time

__all__ = ["BASE62", "connection_id", "organization_id"]

BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase

# KSUID layout (what Clerk's ids are): 4 bytes of seconds since this epoch, 16 random bytes,
# 20 bytes in all, written as 27 base62 digits (62**27 > 2**160), so ids sort by creation time.
_KSUID_EPOCH = 1_400_000_000
_KSUID_LENGTH = 27


class _MonotonicMillis:
    """Epoch milliseconds that never repeat within the process: a second call in the same
    millisecond gets the next one. Under a burst the values run ahead of the clock by at most the
    burst's size in milliseconds, which keeps them unique and still close to the creation time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # endpoints run in a thread pool
        self._last = 0

    def next(self) -> int:
        with self._lock:
            self._last = max(time.time_ns() // 1_000_000, self._last + 1)
            return self._last


_millis = _MonotonicMillis()


def connection_id(platform_type: str) -> str:
    """``{platform_type}-{epoch milliseconds}``, unique within this process. Another replica can
    produce the same value in the same millisecond; the caller retries on a duplicate key."""
    return f"{platform_type}-{_millis.next()}"


def organization_id() -> str:
    """``org_`` and a KSUID: 27 base62 characters, time-ordered, 128 random bits."""
    seconds = max(int(time.time()) - _KSUID_EPOCH, 0)
    value = int.from_bytes(seconds.to_bytes(4, "big") + secrets.token_bytes(16), "big")
    digits = []
    for _ in range(_KSUID_LENGTH):
        value, digit = divmod(value, 62)
        digits.append(BASE62[digit])
    return "org_" + "".join(reversed(digits))
