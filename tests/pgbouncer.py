"""A real PgBouncer in transaction-pooling mode in front of the test server, for one test.

Started as the unprivileged user the test cluster runs as (PgBouncer refuses root), on a free
loopback port, with the test database's user and password; stopped at the end.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

import psycopg

from dbledger.testing import _as_user, free_port


def find_pgbouncer() -> str | None:
    return shutil.which("pgbouncer") or next(
        (path for path in ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer") if os.path.exists(path)), None
    )


@contextmanager
def pgbouncer(url: str, *, pool_size: int = 4) -> Iterator[str]:
    """PgBouncer in transaction mode in front of ``url``'s server; yields the URL through it."""
    binary = find_pgbouncer()
    assert binary is not None, "pgbouncer is not installed (Debian package pgbouncer)"
    parts = urlsplit(url)
    user, password = unquote(parts.username or "postgres"), unquote(parts.password or "")
    dbname = parts.path.lstrip("/")
    port = free_port()
    base = Path(tempfile.mkdtemp(prefix="dbledger-pgbouncer-"))
    drop = _as_user()
    (base / "users.txt").write_text(f'"{user}" "{password}"\n')
    (base / "pgbouncer.ini").write_text(
        f"""[databases]
{dbname} = host={parts.hostname} port={parts.port} dbname={dbname}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = scram-sha-256
auth_file = {base / "users.txt"}
pool_mode = transaction
default_pool_size = {pool_size}
max_client_conn = 200
ignore_startup_parameters = extra_float_digits,options
server_reset_query =
logfile = {base / "pgbouncer.log"}
pidfile = {base / "pgbouncer.pid"}
"""
    )
    if drop:
        for path in (base, base / "users.txt", base / "pgbouncer.ini"):
            os.chown(path, drop["user"], drop["group"])
    process = subprocess.Popen(
        [binary, str(base / "pgbouncer.ini")],
        cwd="/",
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        **drop,
    )
    through = urlunsplit(parts._replace(netloc=f"{parts.username}:{parts.password}@127.0.0.1:{port}"))
    try:
        _wait_until_up(through, process, base / "pgbouncer.log")
        yield through
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
        shutil.rmtree(base, ignore_errors=True)


def _wait_until_up(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 20
    while True:
        try:
            with psycopg.connect(url, connect_timeout=2, prepare_threshold=None) as conn:
                conn.execute("SELECT 1")
            return
        except psycopg.OperationalError:
            if process.poll() is not None:
                said = log.read_text() if log.exists() else "(no log)"
                raise RuntimeError(f"pgbouncer exited: {said}") from None
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
