"""The connections service under load, and through an outage.

Run: .venv/bin/python benchmarks/service_load.py [--clients 20] [--seconds 10]

Starts a throwaway PostgreSQL cluster and ``python -m connections_service`` on it (one uvicorn
worker, the database on the same machine), then drives it with ``--clients`` concurrent HTTP
clients (httpx, one asyncio loop, keep-alive connections) for ``--seconds`` per scenario:

  * read:   GET /api/connections/{id} of existing connections;
  * mixed:  70% GET by id, 10% list an organization's connections, 10% POST, 10% DELETE;
  * delete: the incident's flow, POST a connection and DELETE it (two requests, both counted).

For each: requests per second, p50 and p99 latency in milliseconds, and the count of responses
that were not the expected status (any 5xx among them). Then the outage: the cluster is stopped
under the running service, the clients keep sending for a few seconds (p50 and p99 of the 503s,
and that every answer was a 503), the cluster is started again, and the time from its return to
the first 200 is measured. The client shares the machine's cores with the service and PostgreSQL.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from dbledger.testing import Cluster, free_port, temporary_postgres

ORG = "org_33fSYwlyUqkYiSD2kBt7hqBz7dE"
_ids = itertools.count(1)


@dataclass
class Tally:
    latencies_ms: list[float] = field(default_factory=list)
    unexpected: dict[int, int] = field(default_factory=dict)

    def record(self, started: float, status: int, expected: tuple[int, ...]) -> None:
        self.latencies_ms.append((time.perf_counter() - started) * 1000)
        if status not in expected:
            self.unexpected[status] = self.unexpected.get(status, 0) + 1

    def row(self, name: str, seconds: float) -> str:
        ordered = sorted(self.latencies_ms)
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
        errors = sum(self.unexpected.values())
        detail = f" {self.unexpected}" if errors else ""
        return (
            f"| {name} | {len(ordered) / seconds:,.0f} | {statistics.median(ordered):.1f} | {p99:.1f} "
            f"| {errors}{detail} |"
        )


def new_connection() -> dict[str, str]:
    return {
        "id": f"bench-{os.getpid()}-{next(_ids)}",
        "organization_id": ORG,
        "platform_type": "google",
        "platform_user_id": "103947561234",
        "display_name": "Google Workspace",
    }


async def call(
    tally: Tally,
    expected: tuple[int, ...],
    send: Callable[[], Awaitable[httpx.Response]],
) -> httpx.Response | None:
    started = time.perf_counter()
    try:
        response = await send()
    except httpx.HTTPError:
        tally.record(started, 0, expected)  # 0: no answer at all
        return None
    tally.record(started, response.status_code, expected)
    return response


async def read_one(client: httpx.AsyncClient, tally: Tally, ids: list[str]) -> None:
    await call(tally, (200,), lambda: client.get(f"/api/connections/{random.choice(ids)}"))


async def read_while_down(client: httpx.AsyncClient, tally: Tally, ids: list[str]) -> None:
    await call(tally, (503,), lambda: client.get(f"/api/connections/{random.choice(ids)}"))


async def create_and_delete(client: httpx.AsyncClient, tally: Tally, ids: list[str]) -> None:
    body = new_connection()
    await call(tally, (201,), lambda: client.post("/api/connections", json=body))
    await call(tally, (204,), lambda: client.delete(f"/api/connections/{body['id']}"))


async def mixed(client: httpx.AsyncClient, tally: Tally, ids: list[str]) -> None:
    roll = random.random()
    if roll < 0.7:
        await read_one(client, tally, ids)
    elif roll < 0.8:
        params = {"organization_id": ORG}
        await call(tally, (200,), lambda: client.get("/api/connections", params=params))
    elif roll < 0.9:
        body = new_connection()
        await call(tally, (201,), lambda: client.post("/api/connections", json=body))
    else:
        body = new_connection()
        created = await call(Tally(), (201,), lambda: client.post("/api/connections", json=body))
        if created is not None:
            await call(tally, (204,), lambda: client.delete(f"/api/connections/{body['id']}"))


Scenario = Callable[[httpx.AsyncClient, Tally, list[str]], Awaitable[None]]


async def drive(url: str, scenario: Scenario, clients: int, seconds: float, ids: list[str]) -> Tally:
    tally = Tally()
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:

        async def worker() -> None:
            while time.perf_counter() < deadline:
                await scenario(client, tally, ids)

        await asyncio.gather(*(worker() for _ in range(clients)))
    return tally


async def seed(url: str, count: int) -> list[str]:
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        organization = await client.post("/api/organizations", json={"id": ORG, "name": "Acme"})
        if organization.status_code != 409:  # 409: made for an earlier DATABASE_WAIT
            organization.raise_for_status()
        ids = []
        for _ in range(count):
            body = new_connection()
            (await client.post("/api/connections", json=body)).raise_for_status()
            ids.append(body["id"])
        return ids


def start_service(database_url: str, wait: float, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {**os.environ, "DATABASE_URL": database_url, "PORT": str(port), "DATABASE_WAIT": f"{wait:g}"}
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "connections_service"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"the service did not start:\n{log.read_text()}")


async def first_success(url: str) -> float:
    """Seconds until a data request answers 200, asking again at once after each 503."""
    started = time.perf_counter()
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        while (await client.get("/api/connections", params={"organization_id": ORG})).status_code != 200:
            pass
    return time.perf_counter() - started


def outage(cluster: Cluster, url: str, clients: int, seconds: float, ids: list[str]) -> tuple[Tally, float]:
    """The 503s while the database is down, then the seconds to the first 200 once it is back."""
    cluster.stop()
    down = asyncio.run(drive(url, read_while_down, clients, seconds, ids))
    cluster.start()
    return down, asyncio.run(first_success(url))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--waits", type=float, nargs="+", default=[1.0, 3.0])
    options = parser.parse_args()
    scenarios: dict[str, Scenario] = {"read": read_one, "mixed": mixed, "delete": create_and_delete}

    with tempfile.TemporaryDirectory() as scratch, temporary_postgres() as cluster:
        database_url = cluster.create_database("load")
        print(f"{options.clients} clients, {options.seconds:g} s per scenario, {os.cpu_count()} cores\n")
        print("| scenario | requests/s | p50 (ms) | p99 (ms) | unexpected statuses |")
        print("| --- | ---: | ---: | ---: | ---: |")
        for wait in options.waits:
            process, url = start_service(database_url, wait, Path(scratch) / f"service-{wait:g}.log")
            try:
                ids = asyncio.run(seed(url, 200))
                if wait == options.waits[0]:
                    asyncio.run(drive(url, read_one, options.clients, 2, ids))  # warm-up
                    for name, scenario in scenarios.items():
                        tally = asyncio.run(drive(url, scenario, options.clients, options.seconds, ids))
                        print(tally.row(name, options.seconds), flush=True)
                seconds = max(5.0, 3 * wait)
                down, back = outage(cluster, url, options.clients, seconds, ids)
                print(down.row(f"database down, DATABASE_WAIT={wait:g}: 503s", seconds), flush=True)
                print(f"| back: first 200 after {back * 1000:.0f} ms | | | | |", flush=True)
            finally:
                process.terminate()
                process.wait(timeout=30)
            log = (Path(scratch) / f"service-{wait:g}.log").read_text(errors="replace")
            if "Traceback" in log:
                raise SystemExit(f"the service logged a traceback:\n{log}")


if __name__ == "__main__":
    main()
