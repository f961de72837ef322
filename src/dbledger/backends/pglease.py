"""The migration lock as a lease row, for connections on which a session lock means nothing.

Behind PgBouncer in transaction mode each transaction may run on another server connection: a
session advisory lock lands on one of them and excludes no one. The lease is a row in
``NAME_lock`` instead, correct without a session:

- taken when free or expired, with a *token* one higher than the last holder's (``INSERT ... ON
  CONFLICT DO UPDATE ... WHERE expired``, one statement, so two runners cannot both win);
- kept alive by a heartbeat thread on its own connection, every third of its time to live;
- *fenced*: every transaction that writes the ledger updates the row by its token just before
  it commits, so a holder that was frozen past its expiry and then woke up finds another token
  there and its late write is rolled back (``LeaseLost``), whatever it ran meanwhile.

A statement of a ``transaction:false`` section is not inside a fenced transaction: its own
effects are guarded only by the migration's dirty mark, which a late holder cannot clear.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable
from contextlib import suppress
from typing import Any

import psycopg
from psycopg import sql

from dbledger.errors import DbledgerError

# How long a contender waits for the lease row when a holder is inside a fenced transaction:
# a moment, then it counts as busy and polls again (no waiting statement holds a snapshot).
_ROW_WAIT = b"SET LOCAL lock_timeout = '200ms'"


# The live lease: owner, token, seconds since its heartbeat, seconds left.
LIVE_LEASE = (
    "SELECT owner, token, extract(epoch FROM now() - heartbeat_at), extract(epoch FROM expires_at - now())"
    " FROM {} WHERE id = 1 AND expires_at > now()"
)


def describe_lease(owner: str, token: int, beat: Any, left: Any) -> str:
    return (
        f"the lease of {owner} (token {token}, heartbeat {float(beat):.1f} s ago, "
        f"expires in {float(left):.1f} s)"
    )


def through_proxy(conn: psycopg.Connection[Any]) -> str | None:
    """Why the connection seems to pass through a pooler or proxy, or None: the server sees its
    client at another end (port, or socket kind) than this end of the connection is."""
    row = conn.execute(
        "SELECT client_addr::text, client_port FROM pg_stat_activity WHERE pid = pg_backend_pid()"
    ).fetchone()
    if row is None:
        return None
    address, port = row
    with socket.socket(fileno=os.dup(conn.pgconn.socket)) as mine:
        here = mine.getsockname()
        unix_here = mine.family == socket.AF_UNIX
    unix_there = port is None or port < 0
    if unix_here and unix_there:
        return None
    if unix_here != unix_there or here[1] != port:
        seen = "a Unix socket" if unix_there else f"{address} port {port}"
        mine_text = "a Unix socket" if unix_here else f"port {here[1]}"
        return (
            f"the server sees this connection's client at {seen}, but this end is {mine_text} "
            "(a pooler or proxy)"
        )
    return None


class LeaseLost(DbledgerError):
    """This run's lease expired and another run took the lock: what it was writing is rolled back."""


def owner_name() -> str:
    """Who holds the lease, in words an operator can find: host, process, and a random part."""
    return f"{socket.gethostname()} pid {os.getpid()} #{os.urandom(3).hex()}"


class Lease:
    """The lease row of one ledger, taken and released through ``conn`` (the backend's own
    connection, in autocommit) and kept alive through a connection ``connect`` opens for the
    heartbeat."""

    def __init__(
        self,
        conn: psycopg.Connection[Any],
        connect: Callable[[], psycopg.Connection[Any]],
        schema: str,
        table: str,
        ttl: float,
    ) -> None:
        self.conn = conn
        self._connect = connect  # the heartbeat's own connection
        self.ttl = ttl
        self.owner = owner_name()
        self.schema = schema
        self.token: int | None = None
        name = sql.Identifier(schema, table)
        self._create = sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (id int PRIMARY KEY CHECK (id = 1), token bigint NOT NULL,"
            " owner text NOT NULL, acquired_at timestamptz NOT NULL, heartbeat_at timestamptz NOT NULL,"
            " expires_at timestamptz NOT NULL)"
        ).format(name)
        self._take = sql.SQL(
            "INSERT INTO {} AS l (id, token, owner, acquired_at, heartbeat_at, expires_at)"
            " VALUES (1, 1, %(owner)s, now(), now(), now() + %(ttl)s * interval '1 second')"
            " ON CONFLICT (id) DO UPDATE SET token = l.token + 1, owner = excluded.owner,"
            " acquired_at = now(), heartbeat_at = now(), expires_at = excluded.expires_at"
            " WHERE l.expires_at < now() RETURNING token"
        ).format(name)
        self._renew = sql.SQL(
            # clock_timestamp(): inside a migration's transaction now() is when it began, and a
            # lease renewed from then could already be over at its COMMIT.
            "UPDATE {} SET heartbeat_at = clock_timestamp(),"
            " expires_at = clock_timestamp() + %(ttl)s * interval '1 second'"
            " WHERE id = 1 AND token = %(token)s"
        ).format(name)
        self._release = sql.SQL(
            "UPDATE {} SET expires_at = now() - interval '1 second' WHERE id = 1 AND token = %(token)s"
        ).format(name)
        self._beat: threading.Thread | None = None
        self._stop = threading.Event()

    # -- taking and releasing --------------------------------------------------------------
    def try_take(self) -> bool:
        """One attempt, without waiting: True when this run now holds the lease."""
        try:
            with self.conn.transaction():
                self.conn.execute(_ROW_WAIT)
                row = self.conn.execute(self._take, {"owner": self.owner, "ttl": self.ttl}).fetchone()
        except psycopg.errors.UndefinedTable:
            self.create()
            return self.try_take()
        except psycopg.errors.LockNotAvailable:  # the holder is committing a fenced transaction
            return False
        if row is None:
            return False
        self.token = int(row[0])
        self._start_heartbeat()
        return True

    def create(self) -> None:
        """The lease table, when the first lease on this ledger is taken. Two runners creating it
        at once collide in the catalog: the loser finds it there."""
        found = self.conn.execute("SELECT to_regnamespace(%s) IS NOT NULL", (self.schema,)).fetchone()
        if found is not None and not found[0]:  # a ledger in a schema of its own, not created yet
            with suppress(psycopg.errors.UniqueViolation, psycopg.errors.DuplicateSchema):
                self.conn.execute(
                    sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema))
                )
        # The loser's error depends on where the race is lost: the table's row or its row type's
        # in the catalog (42P07, 23505; PostgreSQL 18 names the type, 42710).
        lost = (psycopg.errors.UniqueViolation, psycopg.errors.DuplicateTable, psycopg.errors.DuplicateObject)
        with suppress(*lost):
            self.conn.execute(self._create)

    def release(self) -> None:
        """Give the lease up (expired at once), if this run still holds it."""
        self._stop.set()
        if self._beat is not None:
            self._beat.join(timeout=5)
        if self.token is not None:
            with suppress(psycopg.Error):  # else it expires by itself
                self.conn.execute(self._release, {"token": self.token})
        self.token = None

    def fence(self) -> None:
        """Called inside a transaction that writes the ledger, just before COMMIT: renew the lease
        by this run's token, or raise LeaseLost when another run holds it now."""
        if self.token is None:
            return
        try:
            done = self.conn.execute(self._renew, {"ttl": self.ttl, "token": self.token}).rowcount
        except psycopg.Error as exc:
            raise LeaseLost(f"could not confirm the migration lease: {exc}") from None
        if done != 1:
            raise LeaseLost(
                f"this run's migration lease (token {self.token}) expired and another run took the "
                "lock: the change it was committing was rolled back; run the command again"
            )

    # -- keeping it alive ------------------------------------------------------------------
    def _start_heartbeat(self) -> None:
        self._stop.clear()
        token, connect = self.token, self._connect

        def beat() -> None:
            conn: psycopg.Connection[Any] | None = None
            try:
                while not self._stop.wait(self.ttl / 3):
                    try:
                        if conn is None or conn.closed:
                            conn = connect()
                        if conn.execute(self._renew, {"ttl": self.ttl, "token": token}).rowcount != 1:
                            return  # taken over: the next fence says so
                    except Exception:  # no connection now (a pooler out of slots): the next beat
                        if conn is not None:
                            conn.close()
                        conn = None
            finally:
                if conn is not None:
                    conn.close()

        self._beat = threading.Thread(target=beat, name="dbledger-lease-heartbeat", daemon=True)
        self._beat.start()
