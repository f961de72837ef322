"""Who keeps a migration waiting for a lock, seen from a second connection while it waits.

When a statement gives up on a lock (``lock_timeout``), its own session can no longer ask who
held it: the wait is over. So while a migration's statements run, a watcher thread asks
``pg_blocking_pids`` about the migration's backend every half lock timeout, on a connection of
its own opened only when a statement has waited that long, and keeps what it saw last. A quick
migration costs nothing but arming and disarming the watcher.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

from dbledger.redaction import redact

# The sessions that block ``pid``, oldest transaction first.
_BLOCKERS = """
SELECT a.pid, a.application_name, a.usename, a.state, now() - coalesce(a.xact_start, a.query_start),
       a.query
FROM pg_stat_activity AS a
WHERE a.pid = ANY(pg_blocking_pids(%s))
ORDER BY a.xact_start NULLS LAST
"""


def describe(
    pid: int, app: str | None, user: str | None, state: str | None, age: Any, query: str | None
) -> str:
    """One blocking session in words: what an operator needs to find it and decide."""
    seconds = age.total_seconds() if age is not None else None
    held = f", transaction open {seconds:.1f} s" if seconds is not None else ""
    # Redacted before it is cut: a cut inside a URL or PASSWORD '...' would hide what to mask.
    text = " ".join(redact(query or "").split())
    if len(text) > 120:
        text = text[:119] + "…"
    last = f", last query: {text}" if text else ""
    return redact(
        f"pid {pid} ({app or 'no application_name'}, user {user}, {state or 'unknown state'}{held}{last})"
    )


class WaitWatcher:
    """Samples the sessions blocking one backend while armed. ``connect`` opens the watcher's
    own connection (in autocommit), called in the watcher's thread at its first sample."""

    def __init__(self, connect: Callable[[], Any]) -> None:
        self._connect = connect
        self._conn: Any = None
        self._changed = threading.Condition()
        self._pid: int | None = None
        self._every = 1.0
        self._round = 0  # arming again starts a new round: a late sample of the old one is dropped
        self._closed = False
        self._thread: threading.Thread | None = None
        self.seen: tuple[str, ...] = ()
        self.seen_at: datetime | None = None

    def arm(self, pid: int, every: float) -> None:
        """Watch ``pid`` from now, sampling every ``every`` seconds; forget the last sample."""
        with self._changed:
            self._pid, self._every = pid, max(every, 0.05)
            self._round += 1
            self.seen = ()
            self._changed.notify()
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="dbledger-wait-watcher", daemon=True)
            self._thread.start()

    def disarm(self) -> None:
        with self._changed:
            self._pid = None
            self._changed.notify()

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._pid = None
            self._changed.notify()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._conn is not None:
            self._conn.close()

    def _loop(self) -> None:
        while True:
            with self._changed:
                while self._pid is None and not self._closed:
                    self._changed.wait()
                if self._closed:
                    return
                current = self._round
                self._changed.wait(timeout=self._every)
                if self._pid is None or self._round != current or self._closed:
                    continue
                pid = self._pid
            found = self._sample(pid)
            with self._changed:
                if found and self._round == current:
                    self.seen = found
                    self.seen_at = datetime.now()

    def _sample(self, pid: int) -> tuple[str, ...]:
        try:
            if self._conn is None or self._conn.closed:
                self._conn = self._connect()
            rows = self._conn.execute(_BLOCKERS, (pid,)).fetchall()
        except Exception:  # a diagnosis must never disturb the migration it watches
            return ()
        return tuple(describe(*row) for row in rows)
