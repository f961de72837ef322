"""Tamper evidence for the ledger: each history row carries a SHA-256 of its content and of the
row before it, and every ledger row must be what its history says.

    row.hash = sha256(row.prev_hash + canonical(row))        prev_hash of the first row: ""

``problems(history, rows)`` reports, naming each row:
- a history row edited after it was written (its hash no longer matches its content);
- a history row deleted, or rows reordered (a row's ``prev_hash`` is not the hash of the row
  before it);
- a ledger row inserted, deleted or edited outside dbledger (its state, checksum, version or
  applied order differs from what the newest history row about it recorded).

What the chain cannot prove: anyone who can write the tables can also recompute every hash, so
the chain shows edits made by hand or by other tools, not by an attacker who knows this format;
and deleting the newest history rows leaves a shorter chain that is still whole (the ledger
check catches it when those rows changed a migration). Keep the head hash (``verify --json``
reports it) somewhere the migrating role cannot write, and let that role only insert into the
history (docs/design.md shows the grants).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence

from dbledger.contracts import REMOVED, HistoryRow, LedgerRow

# The history columns a row's hash covers, in this order: all but id and the two hashes.
CONTENT = (
    "at",
    "action",
    "migration_name",
    "version",
    "state",
    "checksum",
    "execution_time_ms",
    "estimate_ms",
    "applied_order",
    "error_message",
    "detail",
    "actor",
    "dbledger_version",
)


def content(fields: Mapping[str, object]) -> str:
    """The canonical text of one history row's content (``fields`` by column name): what its
    hash covers."""
    return json.dumps([fields[name] for name in CONTENT], ensure_ascii=False, separators=(",", ":"))


def link(prev_hash: str, text: str) -> str:
    """The hash of a row whose canonical content is ``text`` and whose predecessor is ``prev_hash``."""
    return hashlib.sha256(f"{prev_hash}\n{text}".encode()).hexdigest()


def row_content(row: HistoryRow) -> str:
    return content(row._asdict())


def head(history: Sequence[HistoryRow]) -> str:
    """The hash of the newest history row ("" for an empty history): keep it to detect later
    deletions at the end of the chain."""
    return (history[-1].hash or "") if history else ""


def _describe(row: HistoryRow) -> str:
    about = f" {row.migration_name}" if row.migration_name else ""
    return f"history row {row.id} ({row.action}{about}, {row.at})"


def chain_problems(history: Sequence[HistoryRow]) -> list[str]:
    """Breaks in the chain, oldest first: edited rows, deleted rows, reordered rows."""
    problems: list[str] = []
    by_hash = {row.hash: row for row in history if row.hash}
    previous: HistoryRow | None = None
    for row in history:
        if row.hash is None or row.prev_hash is None:
            problems.append(f"{_describe(row)} has no hash: it was written outside dbledger")
        else:
            if link(row.prev_hash, row_content(row)) != row.hash:
                problems.append(
                    f"{_describe(row)} was edited after it was written: its hash no longer matches"
                )
            expected = previous.hash if previous is not None else ""
            if row.prev_hash != expected:
                problems.append(_broken_link(row, previous, by_hash.get(row.prev_hash)))
        previous = row
    return problems


def _broken_link(row: HistoryRow, previous: HistoryRow | None, written_after: HistoryRow | None) -> str:
    """Why ``row`` does not follow ``previous``: it was written after another row (moved), or
    after a row that is gone (deleted)."""
    if written_after is not None and written_after.id > row.id:
        return f"{_describe(row)} was moved: it was written after history row {written_after.id}"
    if written_after is not None:
        after = f"history row {previous.id}" if previous is not None else "the start"
        return (
            f"{_describe(row)} was written right after history row {written_after.id}, not after "
            f"{after}: rows between them were moved or deleted"
        )
    if row.prev_hash == "":
        return f"{_describe(row)} was the first row written: the rows before it were added later"
    return f"the history row written before {_describe(row)} was deleted: the chain is broken there"


def expected_rows(history: Iterable[HistoryRow]) -> dict[str, HistoryRow]:
    """For each migration, the newest history row that recorded its ledger row's state."""
    newest: dict[str, HistoryRow] = {}
    for row in history:
        if row.migration_name is not None and row.state is not None:
            newest[row.migration_name] = row
    return newest


def ledger_problems(history: Iterable[HistoryRow], rows: Iterable[LedgerRow]) -> list[str]:
    """Ledger rows that are not what their history says."""
    expected = {name: row for name, row in expected_rows(history).items() if row.state != REMOVED}
    problems = []
    actual = {row.name: row for row in rows}
    for name, row in actual.items():
        event = expected.pop(name, None)
        if event is None:
            problems.append(
                f"ledger row '{name}' has no history row that explains it: it was written outside dbledger"
            )
            continue
        for label, found, recorded in [
            ("state", row.state, event.state),
            ("checksum", row.checksum, event.checksum),
            ("version", str(row.version), event.version),
            ("applied order", row.applied_order, event.applied_order),
        ]:
            if found != recorded:
                problems.append(
                    f"ledger row '{name}' was edited outside dbledger: its {label} is {found}, but "
                    f"{_describe(event)} recorded {recorded}"
                )
    for name, event in expected.items():
        problems.append(
            f"ledger row '{name}' was deleted outside dbledger: {_describe(event)} recorded it "
            f"as {event.state}"
        )
    return problems
