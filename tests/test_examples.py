"""The README's examples run as written."""

from __future__ import annotations

import subprocess
import sys
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
