"""The files ``dbledger new`` and ``dbledger init`` write: a migration in the folder's layout,
and a starter project (docs/switching.md).

``new`` writes each layout's own shape: one file with empty ``-- migrate:up`` / ``-- migrate:down``
sections (dbledger, dbmate); ``.up.sql`` and ``.down.sql`` (golang-migrate); ``V<n>__name.sql``
(Flyway); a ``<timestamp>_name/`` folder with up.sql and down.sql (Diesel) or migration.sql
(Prisma). The version follows the folder's: its width, or the UTC time in a folder numbered by
timestamps. In the other tools' layouts a file of only comments runs as a no-op, so the files
``new`` writes there carry ``NOT_WRITTEN``, and a file still holding it with nothing else is
refused as not written yet, as dbledger's own template is.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

from dbledger.contracts import Version
from dbledger.errors import ConfigError, UsageError
from dbledger.layouts import listing, read
from dbledger.migrations import NOT_WRITTEN

TEMPLATE = """\
-- migrate:up


-- migrate:down

"""
# A folder whose versions have this many digits numbers them by UTC time (YYYYMMDDHHMMSS), as
# dbmate, Rails and golang-migrate's -format do.
TIMESTAMP_WIDTH = 14


def migration_name(text: str) -> str:
    """``Add Users-Email`` -> ``add_users_email``, ``Café`` -> ``cafe``: what a person types,
    as a file name's part (accents dropped, not the letters they sit on)."""
    import unicodedata

    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def new_migration(folder: Path, layout: str | None, slug: str) -> Path:
    """Write the next migration named ``slug`` in ``folder`` (created when missing) in
    ``layout`` (None: the one its files show); returns its up file."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create a migration in {str(folder)!r}: {exc.strerror}") from None
    chosen, versions, names = _layout_and_versions(folder, layout)
    if clash := [name for name in names if name.removesuffix(".sql").endswith((f"_{slug}", f"__{slug}"))]:
        raise UsageError(
            f"a migration named {slug!r} already exists ({clash[0]}): choose a name that says what "
            "this change does"
        )
    files = _files(chosen, versions, slug)
    try:
        for relative, text in files:
            path = folder / relative
            path.parent.mkdir(exist_ok=True)
            with path.open("x", encoding="utf-8") as handle:
                handle.write(text)
    except OSError as exc:
        raise ConfigError(f"cannot create a migration in {str(folder)!r}: {exc.strerror}") from None
    return folder / files[0][0]


def _layout_and_versions(folder: Path, layout: str | None) -> tuple[str, list[str], list[str]]:
    """The folder's layout, its versions as written (for their width), and its names. From the
    names alone where it can: the previous 'new' left a template that does not run yet."""
    from dbledger.migrations import FILE_NAME

    if layout in (None, "dbledger", "dbmate"):
        own = [m for e in listing(folder) if (m := FILE_NAME.match(e.name))]
        if own or layout is not None:
            return layout or "dbledger", [m.group("version") for m in own], [m.string for m in own]
    read_as, _ = read(folder, layout)
    written = [_written_version(m.name, read_as.layout) for m in read_as.migrations]
    return read_as.layout, written, [m.name for m in read_as.migrations]


def _written_version(name: str, layout: str) -> str:
    if layout == "diesel":
        return name.split("_", 1)[0].replace("-", "")
    if layout == "flyway":
        return name[1:].split("__", 1)[0]
    return name.split("_", 1)[0]


def next_version(written: list[str], least: int = 3) -> str:
    """After the folder's versions: the next number at their width (at least ``least``), or the
    UTC time in a folder numbered by timestamps."""
    width = max([least] + [len(v) for v in written])
    last = max((int(v) for v in written if v.isdigit()), default=0)
    if width == TIMESTAMP_WIDTH:
        return str(max(_now(), last + 1))  # a clock behind the newest file still sorts after it
    return f"{last + 1:0{width}d}"


def _now() -> int:
    return int(datetime.now(UTC).strftime("%Y%m%d%H%M%S"))


def _files(layout: str, written: list[str], slug: str) -> list[tuple[str, str]]:
    """The files of a new migration: (path in the folder, text), the up file first."""
    todo = f"{NOT_WRITTEN}\n"
    if layout == "golang-migrate":
        stem = f"{next_version(written, 6)}_{slug}"  # as 'migrate create -seq' numbers them
        return [(f"{stem}.up.sql", todo), (f"{stem}.down.sql", todo)]
    if layout == "flyway":
        newest = max((Version.of(v) for v in written), default=Version((0,)))
        return [(f"V{newest[0] + 1}__{slug}.sql", todo)]
    if layout == "diesel":
        stamp = datetime.now(UTC).strftime("%Y-%m-%d-%H%M%S")
        return [(f"{stamp}_{slug}/up.sql", todo), (f"{stamp}_{slug}/down.sql", todo)]
    if layout == "prisma":
        return [(f"{max(_now(), max((int(v) for v in written), default=0) + 1)}_{slug}/migration.sql", todo)]
    if layout == "dbmate":  # numbered by UTC time, as 'dbmate new' numbers them
        version = next_version(written) if written else str(_now())
        return [(f"{version}_{slug}.sql", TEMPLATE.replace("\n\n", f"\n{NOT_WRITTEN}\n"))]
    return [(f"{next_version(written)}_{slug}.sql", TEMPLATE)]


PYPROJECT_SECTION = """\
[tool.dbledger]
# Where the migration files are, relative to this file.
dir = {dir}
{layout}# The database: DATABASE_URL in the environment (never a password in this file), e.g.
# DATABASE_URL=postgresql://app@localhost/app dbledger up
"""


def init_project(here: Path, directory: str, layout: str | None) -> list[Path]:
    """Write ``[tool.dbledger]`` into ``here``'s pyproject.toml (created when missing) and create
    the migrations folder; UsageError when the file has the section already. Returns what it wrote."""
    pyproject = here / "pyproject.toml"
    existing = pyproject.read_text(encoding="utf-8") if pyproject.exists() else ""
    if re.search(r"^\s*\[tool\.dbledger(\.|\])", existing, re.MULTILINE):
        raise UsageError(f"{pyproject} has a [tool.dbledger] section already: edit it there")
    chosen = "" if layout in (None, "dbledger") else f'layout = "{layout}"\n'
    import json  # a TOML basic string is written as JSON writes one: quotes and backslashes escaped

    section = PYPROJECT_SECTION.format(dir=json.dumps(directory), layout=chosen)
    folder = here / directory
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with pyproject.open("a", encoding="utf-8") as handle:
            handle.write(("" if not existing else "\n" if existing.endswith("\n") else "\n\n") + section)
    except OSError as exc:
        raise ConfigError(f"cannot write {pyproject}: {exc.strerror}") from None
    return [pyproject, folder]
