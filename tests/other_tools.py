"""The other migration tools, as the adoption tests run them: their executables (installed with
the dev extras), Flyway's checksum computed another way than dbledger's, and an Alembic project
that applies a history of SQL revisions."""

from __future__ import annotations

import subprocess
import sys
import zlib
from pathlib import Path

import pytest

ALEMBIC_REVISION = '''from alembic import op

revision = "{revision}"
down_revision = {down!r}
branch_labels = None
depends_on = None


def upgrade():
    op.execute("""{sql}""")


def downgrade():
    pass
'''


def tool(name: str) -> str:
    """The path of a peer's executable in this virtualenv; the test is skipped without it."""
    found = Path(sys.executable).parent / name
    if not found.exists():
        pytest.skip(f"{name} is not installed (pip install -e '.[dev]')")
    return str(found)


def run_tool(argv: list[str], cwd: Path) -> None:
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def flyway_crc(text: str) -> int:
    """Flyway's checksum, computed another way than dbledger does: CRC32 of the lines joined
    without their breaks, as a signed 32-bit number."""
    crc = zlib.crc32("".join(text.splitlines()).encode())
    return crc - (1 << 32) if crc >= 1 << 31 else crc


def sqlalchemy_url(url: str) -> str:
    """A dbledger test URL as SQLAlchemy (alembic, yoyo) reads it: PostgreSQL through psycopg 3."""
    return url.replace("postgresql://", "postgresql+psycopg://", 1)


def alembic_history(project: Path, url: str, revisions: list[tuple[str, str | None, str, str]]) -> None:
    """An Alembic project in ``project`` whose revisions (revision, down revision, name, SQL)
    ``alembic upgrade head`` applies to the database at ``url``."""
    project.mkdir(exist_ok=True)
    run_tool([tool("alembic"), "init", "alembic"], project)
    ini = project / "alembic.ini"
    ini.write_text(ini.read_text().replace("driver://user:pass@localhost/dbname", sqlalchemy_url(url)))
    for revision, down, name, sql in revisions:
        text = ALEMBIC_REVISION.format(revision=revision, down=down, sql=sql.strip())
        (project / "alembic" / "versions" / f"{revision}_{name}.py").write_text(text)
    run_tool([tool("alembic"), "upgrade", "head"], project)
