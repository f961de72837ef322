"""The README's examples run as written."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_replay_incident_deletes_and_shows_the_audit_row() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "replay_incident.py")],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "DELETE /api/connections/slack-test-9876543210 -> 204" in done.stdout
    assert '"event_type": "platform_connection_deleted"' in done.stdout
    assert '"platform_connection_id": null' in done.stdout
    assert '"name": "004_fix_audit_trigger_for_deletes"' in done.stdout
    assert "GET /health -> 200" in done.stdout


def test_replay_without_httpx_says_which_extra_to_install() -> None:
    # As in a virtualenv where the service was installed without its replay extra.
    blocked = (
        "import runpy, sys; sys.modules['httpx'] = None; "
        f"runpy.run_path({str(ROOT / 'examples' / 'replay_incident.py')!r}, run_name='__main__')"
    )
    done = subprocess.run(
        [sys.executable, "-c", blocked], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 1
    assert done.stderr == (
        "examples/replay_incident.py needs httpx: install the service with its replay extra, "
        "pip install -e './service[replay]'\n"
    )


def test_the_service_declares_what_the_replay_imports() -> None:
    service = tomllib.loads((ROOT / "service" / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert any(r.startswith("httpx") for r in service["optional-dependencies"]["replay"])
    # Not a dependency of the service itself, which never imports it.
    assert not any(r.startswith("httpx") for r in service["dependencies"])
    sources = (ROOT / "service" / "connections_service").rglob("*.py")
    assert not [p.name for p in sources if re.search(r"^\s*(import|from) httpx", p.read_text(), re.M)]
