"""The checksums of a migrations folder's files, remembered between runs by what ``stat`` says.

Every replica's start reads every migration file only to find that nothing changed: 1000 files
cost ~40 ms to read on the 2-core development machine, their ``stat`` ~5 ms. A file whose
size, modification time, change time, inode and device are what they were when its checksum was
taken has the same bytes, with one exception that git's index knows too: a file changed again
within the timestamp granularity of its first change, after it was read. So an
entry is trusted only when the file had stopped changing ``SETTLE_NS`` before the scan that
recorded it began; any other file is read and hashed as if there were no record. A change time cannot be
set back by ``touch`` or ``git checkout``, so a file edited and given its old mtime is read too.

The record is a JSON file per folder under ``$XDG_CACHE_HOME/dbledger`` (``~/.cache``), written
with the dbledger version that read the files (another version reads them again: what it accepts
may differ). Where it cannot be read or written, every file is read, as before: it only ever
saves work. It holds names, numbers and checksums, never SQL.
"""

from __future__ import annotations

import contextlib
import json
import os
import zlib
from pathlib import Path
from typing import NamedTuple

from dbledger.ledger import DBLEDGER_VERSION

# A file must have stopped changing this long before the scan that read it began, to be trusted.
SETTLE_NS = 2_000_000_000
_FORMAT = 1


class FileStamp(NamedTuple):
    """What ``stat`` says of a file, in the parts that change whenever its bytes do."""

    size: int
    mtime_ns: int
    ctime_ns: int
    inode: int
    device: int

    @classmethod
    def of(cls, found: os.stat_result) -> FileStamp:
        return cls(found.st_size, found.st_mtime_ns, found.st_ctime_ns, found.st_ino, found.st_dev)


class Record(NamedTuple):
    """A folder's record: each file name's stamp and checksum, and when the scan that took them
    began (every stamp was read after that moment, every file's bytes after its stamp)."""

    scanned_ns: int
    entries: dict[str, tuple[tuple[int, ...], str]]

    def checksum(self, name: str, stamp: FileStamp) -> str | None:
        """The remembered checksum of ``name`` when its stamp is unchanged and it had settled
        before the scan that recorded it began; else None (read the file)."""
        entry = self.entries.get(name)
        if entry is None or entry[0] != stamp:
            return None
        settled = max(stamp.mtime_ns, stamp.ctime_ns) + SETTLE_NS <= self.scanned_ns
        return str(entry[1]) if settled else None


EMPTY = Record(0, {})


def location(directory: Path) -> Path | None:
    """Where ``directory``'s record lives; None when there is no cache folder to use."""
    base = os.environ.get("XDG_CACHE_HOME") or (
        os.path.join(home, ".cache") if (home := os.environ.get("HOME")) else None
    )
    if not base:
        return None
    # A folder's real path, as a short name (a clash costs only reads: every stamp carries the
    # file's inode and device). zlib, not hashlib: ~3 ms less at every start.
    real = os.path.realpath(directory)
    key = zlib.crc32(real.encode("utf-8", "surrogateescape"))
    shown = "".join(c if c.isalnum() or c in "-_" else "_" for c in os.path.basename(real))[:40]
    return Path(base) / "dbledger" / f"checksums-{shown}-{key:08x}.json"


def load(path: Path | None) -> Record:
    """The record at ``path``; EMPTY when there is none, or it is unreadable, damaged or
    written by another dbledger version."""
    if path is None:
        return EMPTY
    try:
        data = json.loads(path.read_bytes())
        if data.get("format") != _FORMAT or data.get("dbledger") != DBLEDGER_VERSION:
            return EMPTY
        # Compared whole with a FileStamp: a damaged stamp only ever fails to match.
        entries = {name: (tuple(stamp), digest) for name, (stamp, digest) in data["files"].items()}
        return Record(int(data["scanned_ns"]), entries)
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return EMPTY


def save(path: Path | None, record: Record) -> None:
    """Write ``record`` (replacing the file whole, so a reader never sees half of it). A failure
    to write leaves the next run to read the files again."""
    if path is None:
        return
    document = {
        "format": _FORMAT,
        "dbledger": DBLEDGER_VERSION,
        "scanned_ns": record.scanned_ns,
        "files": {name: [list(stamp), digest] for name, (stamp, digest) in record.entries.items()},
    }
    temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary.write_text(json.dumps(document, separators=(",", ":")), encoding="utf-8")
        os.replace(temporary, path)
    except OSError:
        with contextlib.suppress(OSError):  # the folder itself may be what is missing
            temporary.unlink(missing_ok=True)
