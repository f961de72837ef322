"""make_plan and Plan.problems(): the files and the ledger's rows side by side, table-driven.

Plain data only: migrations are parsed from in-memory bytes with ``migrations.parse`` and the
ledger is a list of ``LedgerRow`` objects, exactly what the backends hand to the planner.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from dbledger.api import as_version
from dbledger.contracts import Version
from dbledger.migrations import Migration, parse
from dbledger.plan import Allowances, LedgerRow, Plan, make_plan

STAMP = "2024-05-01T12:00:00.000+00:00"


def migration(stem: str, sql: str | None = None) -> Migration:
    """A parsed migration file ``<stem>.sql`` whose SQL is unique to it (so checksums differ)."""
    body = sql if sql is not None else f"CREATE TABLE t_{stem} (id integer);\n"
    return parse(Path("migrations") / f"{stem}.sql", body.encode())


def row(
    source: Migration | str,
    state: str = "applied",
    *,
    checksum: str | None = None,
    error: str | None = None,
    order: int | None = None,
    runner: str | None = None,
) -> LedgerRow:
    """A ledger row for ``source`` (a parsed file, or just a stem for a file that is gone)."""
    if isinstance(source, Migration):
        name, version, recorded = source.name, source.version, source.checksum
    else:
        name, version, recorded = source, Version.of(source.split("_", 1)[0]), "f" * 64
    return LedgerRow(
        name=name,
        version=version,
        state=state,
        checksum=checksum if checksum is not None else recorded,
        applied_at=STAMP,
        execution_time_ms=None if state == "baseline" else 12,
        success=state in ("applied", "baseline"),
        error_message=error,
        applied_order=order
        if order is not None
        else (version[0] if state in ("applied", "baseline") else None),
        runner=runner,
    )


M1 = migration("001_create_users")
M2 = migration("002_add_email")
M3 = migration("003_create_orders")
M4 = migration("004_add_index")
M9 = migration("9_nine")
M10 = migration("10_ten")


@dataclass
class Case:
    files: list[Migration]
    rows: list[LedgerRow]
    applied: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    modified: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    out_of_order: list[str] = field(default_factory=list)
    dirty: list[str] = field(default_factory=list)
    renamed: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    running: list[str] = field(default_factory=list)
    current_version: int | None = None
    problem_count: int = 0


CASES: dict[str, Case] = {
    "fresh database: every file pending": Case(
        files=[M1, M2, M3],
        rows=[],
        pending=["001_create_users", "002_add_email", "003_create_orders"],
    ),
    "no files, no rows": Case(files=[], rows=[]),
    "everything applied": Case(
        files=[M1, M2, M3],
        rows=[row(M1), row(M2), row(M3)],
        applied=["001_create_users", "002_add_email", "003_create_orders"],
        current_version=3,
    ),
    "new file after the applied ones": Case(
        files=[M1, M2, M3],
        rows=[row(M1), row(M2)],
        applied=["001_create_users", "002_add_email"],
        pending=["003_create_orders"],
        current_version=2,
    ),
    "baseline rows count as applied": Case(
        files=[M1, M2, M3],
        rows=[row(M1, "baseline"), row(M2, "baseline")],
        applied=["001_create_users", "002_add_email"],
        pending=["003_create_orders"],
        current_version=2,
    ),
    "failed file is pending again, not applied": Case(
        files=[M1, M2, M3],
        rows=[row(M1), row(M2, "failed", error="42P01: relation missing")],
        applied=["001_create_users"],
        failed=["002_add_email"],
        pending=["002_add_email", "003_create_orders"],
        current_version=1,
    ),
    "failed row with a higher version does not raise current_version": Case(
        files=[M1, M2],
        rows=[row(M1), row(M2, "failed", error="boom")],
        applied=["001_create_users"],
        failed=["002_add_email"],
        pending=["002_add_email"],
        current_version=1,
    ),
    "modified after apply": Case(
        files=[M1, M2],
        rows=[row(M1), row(M2, checksum="0" * 64)],
        applied=["001_create_users", "002_add_email"],
        modified=["002_add_email"],
        current_version=2,
        problem_count=1,
    ),
    "applied file missing": Case(
        files=[M1, M3],
        rows=[row(M1), row(M2), row(M3)],
        applied=["001_create_users", "002_add_email", "003_create_orders"],
        missing=["002_add_email"],
        current_version=3,
        problem_count=1,
    ),
    "applied row for a file that never existed here": Case(
        files=[M1],
        rows=[row(M1), row("007_elsewhere")],
        applied=["001_create_users", "007_elsewhere"],
        missing=["007_elsewhere"],
        current_version=7,
        problem_count=1,
    ),
    "pending file sorts before the newest applied one": Case(
        files=[M1, M2, M3],
        rows=[row(M1), row(M3)],
        applied=["001_create_users", "003_create_orders"],
        pending=["002_add_email"],
        out_of_order=["002_add_email"],
        current_version=3,
        problem_count=1,
    ),
    "failed file below the newest applied one is out of order": Case(
        files=[M1, M2, M3],
        rows=[row(M1), row(M2, "failed", error="boom"), row(M3)],
        applied=["001_create_users", "003_create_orders"],
        failed=["002_add_email"],
        pending=["002_add_email"],
        out_of_order=["002_add_email"],
        current_version=3,
        problem_count=1,
    ),
    "dirty row: neither applied nor pending": Case(
        files=[M1, M2, M3],
        rows=[row(M1), row(M2, "dirty", error="started outside a transaction; not finished")],
        applied=["001_create_users"],
        dirty=["002_add_email"],
        pending=["003_create_orders"],
        current_version=1,
        problem_count=1,
    ),
    "versions compare as integers": Case(
        files=[M9, M10],
        rows=[row(M9)],
        applied=["9_nine"],
        pending=["10_ten"],
        current_version=9,
    ),
    "10 applied makes 9 out of order": Case(
        files=[M9, M10],
        rows=[row(M10)],
        applied=["10_ten"],
        pending=["9_nine"],
        out_of_order=["9_nine"],
        current_version=10,
        problem_count=1,
    ),
    "applied rows come out in the order they were applied, not by version or row": Case(
        files=[M1, M2, M3, M4],
        rows=[row(M2, order=3), row(M3, order=1), row(M1, order=2)],
        applied=["003_create_orders", "001_create_users", "002_add_email"],
        pending=["004_add_index"],
        current_version=3,
    ),
    "a file renamed after it was applied is a rename, not a pending migration": Case(
        files=[migration("001_seed_data", "INSERT INTO t VALUES (1);\n")],
        rows=[row(migration("001_seed", "INSERT INTO t VALUES (1);\n"))],
        applied=["001_seed"],
        renamed=["001_seed"],
        current_version=1,
        problem_count=1,
    ),
    "a new file under an applied version whose file is gone is refused": Case(
        files=[migration("001_other", "INSERT INTO t VALUES (2);\n")],
        rows=[row(migration("001_seed", "INSERT INTO t VALUES (1);\n"))],
        applied=["001_seed"],
        reused=["001_seed"],
        current_version=1,
        problem_count=1,
    ),
    "a dirty row whose runner holds the lock is running, not dirty": Case(
        files=[M1, M2],
        rows=[row(M1), row(M2, "dirty", runner="backend 4242")],
        applied=["001_create_users"],
        running=["002_add_email"],
        current_version=1,
    ),
    "every kind at once": Case(
        files=[M1, M2, M4],
        rows=[
            row(M1, checksum="0" * 64),
            row(M3),
            row(M4, "dirty", error="interrupted"),
            row("005_gone"),
        ],
        applied=["001_create_users", "003_create_orders", "005_gone"],
        modified=["001_create_users"],
        missing=["003_create_orders", "005_gone"],
        pending=["002_add_email"],
        out_of_order=["002_add_email"],
        dirty=["004_add_index"],
        current_version=5,
        problem_count=5,
    ),
}


def names(items: list[LedgerRow] | list[Migration]) -> list[str]:
    return [item.name for item in items]


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_classification(case: Case) -> None:
    plan = make_plan(case.files, case.rows, running=frozenset({"backend 4242"}))
    assert names(plan.applied) == case.applied
    assert names(plan.pending) == case.pending
    assert names(plan.failed) == case.failed
    assert [r.name for _, r in plan.modified] == case.modified
    assert [m.name for m, _ in plan.modified] == case.modified
    assert names(plan.missing) == case.missing
    assert names(plan.out_of_order) == case.out_of_order
    assert names(plan.dirty) == case.dirty
    assert [r.name for _, r in plan.renamed] == case.renamed
    assert [r.name for _, r in plan.reused] == case.reused
    assert names(plan.running) == case.running
    assert plan.current_version == as_version(case.current_version)
    assert len(plan.problems()) == case.problem_count
    assert plan.migrations == case.files
    assert plan.rows == {r.name: r for r in case.rows}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_to_apply_without_target_is_every_pending_file(case: Case) -> None:
    plan = make_plan(case.files, case.rows)
    assert plan.to_apply() == plan.pending
    assert plan.to_apply(None) == plan.pending


def test_pending_holds_the_parsed_migrations_themselves() -> None:
    plan = make_plan([M1, M2], [row(M1)])
    assert plan.pending == [M2]
    assert plan.pending[0].checksum == M2.checksum


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (None, ["001_create_users", "002_add_email", "003_create_orders", "004_add_index"]),
        (4, ["001_create_users", "002_add_email", "003_create_orders", "004_add_index"]),
        (3, ["001_create_users", "002_add_email", "003_create_orders"]),
        (1, ["001_create_users"]),
        (0, []),
    ],
)
def test_to_apply_stops_at_the_target_inclusive(target: int | None, expected: list[str]) -> None:
    plan = make_plan([M1, M2, M3, M4], [])
    assert names(plan.to_apply(as_version(target))) == expected


def test_to_apply_target_compares_versions_as_integers() -> None:
    plan = make_plan([M9, M10], [])
    assert names(plan.to_apply(Version((9,)))) == ["9_nine"]
    assert names(plan.to_apply(Version((10,)))) == ["9_nine", "10_ten"]


def test_to_apply_skips_applied_and_includes_failed() -> None:
    plan = make_plan([M1, M2, M3, M4], [row(M1), row(M2, "failed", error="boom")])
    assert names(plan.to_apply(Version((3,)))) == ["002_add_email", "003_create_orders"]


def test_to_apply_never_includes_a_dirty_migration() -> None:
    plan = make_plan([M1, M2], [row(M1, "dirty", error="interrupted")])
    assert names(plan.to_apply()) == ["002_add_email"]


def test_current_version_is_none_when_only_failed_or_dirty_rows_exist() -> None:
    plan = make_plan([M1, M2], [row(M1, "failed", error="boom"), row(M2, "dirty")])
    assert plan.current_version is None
    assert plan.out_of_order == []


def test_current_version_counts_baseline_and_missing_rows() -> None:
    plan = make_plan([M1], [row(M1, "baseline"), row("012_gone")])
    assert plan.current_version == Version((12,))


# -- problem texts -----------------------------------------------------------------------------


def only_problem(plan: Plan, allow: Allowances = Allowances()) -> str:
    problems = plan.problems(allow)
    assert len(problems) == 1, problems
    return problems[0]


def test_problem_text_modified() -> None:
    recorded = "ab" * 32
    plan = make_plan([M1, M2], [row(M1), row(M2, checksum=recorded)])
    text = only_problem(plan)
    assert "migration '002_add_email' was modified after it was applied" in text
    assert recorded[:12] in text
    assert M2.checksum[:12] in text
    assert "restore the file, or run 'dbledger repair' to accept the new checksum" in text


def test_problem_text_missing() -> None:
    plan = make_plan([M1], [row(M1), row(M2)])
    text = only_problem(plan)
    assert "migration '002_add_email' was applied" in text
    assert STAMP in text
    assert "its file is missing" in text
    assert "restore the file, or pass --allow-missing to go on without it" in text


def test_problem_text_out_of_order() -> None:
    plan = make_plan([M1, M2, M3], [row(M1), row(M3)])
    text = only_problem(plan)
    assert "migration '002_add_email' is pending but sorts before version 3" in text
    assert "renumber it after the newest migration" in text
    assert "pass --allow-out-of-order to apply it anyway" in text


def test_problem_text_dirty() -> None:
    plan = make_plan([M1, M2], [row(M1), row(M2, "dirty", error="XX000: server closed the connection")])
    text = only_problem(plan)
    assert "migration '002_add_email' ran outside a transaction and did not finish" in text
    assert STAMP in text
    assert "XX000: server closed the connection" in text
    assert "undo that work by hand, then run 'dbledger repair' (the next 'dbledger up' runs" in text


def test_failed_row_alone_is_not_a_problem_for_up() -> None:
    # A failed migration rolled back: the next 'up' simply runs the fixed file again.
    plan = make_plan([M1, M2], [row(M1), row(M2, "failed", error="boom")])
    assert plan.problems() == []
    assert names(plan.to_apply()) == ["002_add_email"]


def test_allow_out_of_order_suppresses_only_that_problem() -> None:
    plan = make_plan([M1, M2, M3], [row(M1, checksum="0" * 64), row(M3)])
    assert len(plan.problems()) == 2
    allowed = plan.problems(Allowances(out_of_order=True))
    assert len(allowed) == 1
    assert "001_create_users" in allowed[0]
    assert "dbledger repair" in allowed[0]
    assert all("002_add_email" not in p for p in allowed)
    # Allowing does not take the file out of the plan: it is still what 'up' applies.
    assert names(plan.to_apply()) == ["002_add_email"]
    assert names(plan.out_of_order) == ["002_add_email"]


def test_allow_missing_suppresses_only_that_problem() -> None:
    plan = make_plan([M1, M3], [row(M1), row(M2), row(M3, "dirty")])
    assert len(plan.problems()) == 2
    allowed = plan.problems(Allowances(missing=True))
    assert len(allowed) == 1
    assert "003_create_orders" in allowed[0]
    assert "ran outside a transaction" in allowed[0]
    assert names(plan.missing) == ["002_add_email"]


def test_allowances_do_not_suppress_modified_or_dirty() -> None:
    plan = make_plan([M1, M2], [row(M1, checksum="0" * 64), row(M2, "dirty")])
    everything = Allowances(out_of_order=True, missing=True)
    problems = plan.problems(everything)
    assert len(problems) == 2
    assert any("'001_create_users' was modified" in p for p in problems)
    assert any("'002_add_email' ran outside a transaction" in p for p in problems)


def test_both_allowances_together() -> None:
    plan = make_plan([M1, M2], [row(M1), row(M3)])  # 002 out of order, 003 missing
    assert len(plan.problems()) == 2
    assert plan.problems(Allowances(out_of_order=True)) == [
        p for p in plan.problems() if "--allow-missing" in p
    ]
    assert plan.problems(Allowances(missing=True)) == [
        p for p in plan.problems() if "--allow-out-of-order" in p
    ]
    assert plan.problems(Allowances(out_of_order=True, missing=True)) == []


def test_every_problem_names_its_migration_and_a_next_step() -> None:
    plan = make_plan(CASES["every kind at once"].files, CASES["every kind at once"].rows)
    problems = plan.problems()
    expected = {
        "004_add_index": "'dbledger repair'",
        "001_create_users": "'dbledger repair'",
        "003_create_orders": "--allow-missing",
        "005_gone": "--allow-missing",
        "002_add_email": "--allow-out-of-order",
    }
    assert len(problems) == len(expected)
    for name, hint in expected.items():
        [line] = [p for p in problems if f"'{name}'" in p]
        assert hint in line


def test_a_rename_is_named_with_its_repair_path() -> None:
    old = migration("001_seed", "INSERT INTO t VALUES (1);\n")
    new = migration("001_seed_data", "INSERT INTO t VALUES (1);\n")
    plan = make_plan([new], [row(old)])

    # Not pending, not missing: --allow-missing must never apply version 1 a second time.
    assert plan.to_apply() == []
    assert plan.problems(Allowances(missing=True, out_of_order=True)) == [
        "migration '001_seed' was renamed to '001_seed_data' (same version 1, same checksum): run "
        "'dbledger repair' to record the new name, or restore the old one"
    ]


def test_an_applied_version_is_never_pending_under_another_name() -> None:
    old = migration("001_seed", "INSERT INTO t VALUES (1);\n")
    other = migration("001_other", "INSERT INTO t VALUES (2);\n")
    plan = make_plan([other], [row(old)])

    assert plan.to_apply() == []
    [problem] = plan.problems(Allowances(missing=True))
    assert problem.startswith("version 1 was applied as '001_seed', whose file is gone, and '001_other'")


def test_order_differs_only_when_applied_out_of_version_order() -> None:
    assert not make_plan([M1, M2], [row(M1, order=1), row(M2, order=2)]).order_differs
    late = make_plan([M1, M2], [row(M2, order=1), row(M1, order=2)])
    assert late.order_differs
    assert late.next_order == 3
