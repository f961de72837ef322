"""Replay the incident end to end on a throwaway PostgreSQL: start the connections service (it
migrates first), create the seed's organization and Slack connection, DELETE it, and print the
audit row and /api/db/version. Needs PostgreSQL's server binaries (apt-get install postgresql)
and the service with its ``replay`` extra (httpx, the HTTP client this script uses):

    .venv/bin/pip install -q -e './service[replay]' && .venv/bin/python examples/replay_incident.py
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time

try:
    import httpx
except ModuleNotFoundError:  # pragma: no cover - a message instead of a traceback
    sys.exit(
        "examples/replay_incident.py needs httpx: install the service with its replay extra, "
        "pip install -e './service[replay]'"
    )

from dbledger.testing import free_port, temporary_postgres


def show(response: httpx.Response) -> None:
    body = json.dumps(response.json(), indent=2) if response.content else ""
    print(f"{response.request.method} {response.request.url.path} -> {response.status_code}\n{body}\n")


def main() -> int:
    with temporary_postgres() as cluster:
        url = cluster.create_database("saas_xray")
        port = free_port()
        token = secrets.token_hex(16)  # GET /api/db/version admits only requests bearing it
        env = {**os.environ, "DATABASE_URL": url, "PORT": str(port), "VERSION_TOKEN": token}
        service = subprocess.Popen([sys.executable, "-m", "connections_service"], env=env)
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as api:
                for _ in range(300):
                    if service.poll() is not None:
                        return service.returncode
                    try:
                        api.get("/health")
                        break
                    except httpx.TransportError:
                        time.sleep(0.1)
                show(api.post("/api/organizations", json={"id": "org_test_clerk_123", "name": "Test Org"}))
                show(
                    api.post(
                        "/api/connections",
                        json={
                            "id": "slack-test-9876543210",
                            "organization_id": "org_test_clerk_123",
                            "platform_type": "slack",
                            "platform_user_id": "U9876543",
                            "display_name": "Test Connection",
                        },
                    )
                )
                show(api.delete("/api/connections/slack-test-9876543210"))
                show(api.get("/api/audit-logs", params={"resource_id": "slack-test-9876543210"}))
                show(api.get("/api/db/version", headers={"Authorization": f"Bearer {token}"}))
                show(api.get("/health"))
        finally:
            service.terminate()
            service.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
