"""Time estimates and lock hold times: the cost model's arithmetic with round constants, the
migration totals, the history correction, and one estimate from a real server's catalog.

How close the calibrated model comes to real runs is measured by benchmarks/estimate_accuracy.py
(docs/dry-run.md), not here: timings in a test suite would be flaky.
"""

from __future__ import annotations

import math

import psycopg
import pytest

from dbledger.analysis import (
    CALIBRATED,
    CostModel,
    ForeignKey,
    PostgresCatalog,
    StaticCatalog,
    TableSize,
    analyse,
    estimate_migration,
    estimate_ms,
    history_scale,
)

MB = 1024 * 1024
# Round numbers, so each expected value below can be worked out by hand.
ROUND = CostModel(
    statement_ms=1.0,
    rewrite_row=0.01,
    rewrite_mb=10.0,
    convert_row=0.001,
    rebuild_row_log=0.0002,
    build_row_log=0.0001,
    scan_row=0.002,
    scan_mb=1.0,
    join_row=0.003,
    join_parent_row=0.004,
    data_row=0.02,
    data_index_row=0.01,
    concurrent_factor=2.0,
)
BIG = TableSize(rows=1024, bytes=8 * MB)
CATALOG = StaticCatalog(
    columns={"t": {"id": "uuid", "n": "integer"}, "c": {"t_id": "uuid"}},
    sizes={"t": BIG, "c": TableSize(rows=2048, bytes=4 * MB)},
    indexes={"t": 2, "c": 1},
    index_tables={"t_pkey": "t"},
    keys=(ForeignKey("c_t", "c", ("t_id",), "t", ("id",)),),
)


def ms(sql: str, size: TableSize | None = BIG, indexes: int = 2) -> float:
    return estimate_ms(analyse(sql, CATALOG), size, indexes=indexes, catalog=CATALOG, model=ROUND)


def test_each_kind_of_work_is_priced_from_the_table_size() -> None:
    build = 1024 * 10 * 0.0001  # rows * log2(rows) * build_row_log
    assert ms("ALTER TABLE t ALTER COLUMN n SET DEFAULT 0") == 1.0
    # rewrite: copy (rows * (row + 1 column * convert) + MB * rewrite_mb) and rebuild 2 indexes
    assert ms("ALTER TABLE t ALTER COLUMN n TYPE bigint", indexes=2) == pytest.approx(
        1 + 1024 * 0.011 + 8 * 10 + 2 * 1024 * 10 * 0.0002
    )
    assert ms("ALTER TABLE t ALTER COLUMN n SET NOT NULL") == pytest.approx(1 + 1024 * 0.002 + 8)
    assert ms("CREATE INDEX i ON t (n)") == pytest.approx(1 + build + 8)
    assert ms("CREATE INDEX CONCURRENTLY i ON t (n)") == pytest.approx(1 + 2 * (build + 8))
    # a foreign key: child rows looked up in the parent, both tables read
    child = TableSize(2048, 4 * MB)
    assert ms(
        "ALTER TABLE c ADD CONSTRAINT k FOREIGN KEY (t_id) REFERENCES t (id)", child, 1
    ) == pytest.approx(1 + 2048 * 0.003 + 1024 * 0.004 + 12)
    assert ms("ANALYZE t") == pytest.approx(1 + 1024 * 0.002 + 8)  # a sample of 30,000 rows: all of t
    huge = TableSize(rows=300_000, bytes=300 * MB)
    assert ms("ANALYZE t", size=huge) == pytest.approx(1 + 0.1 * (300_000 * 0.002 + 300))
    assert ms("UPDATE t SET n = 1", indexes=2) == pytest.approx(1 + 1024 * (0.02 + 2 * 0.01))
    assert ms("INSERT INTO t (n) VALUES (1), (2)", indexes=0) == pytest.approx(1 + 2 * 0.02)


def test_a_missing_table_costs_the_statement_only() -> None:
    assert ms("ALTER TABLE t ALTER COLUMN n TYPE bigint", size=None, indexes=0) == 1.0


def test_a_widening_is_priced_as_the_rewrite_it_is_and_a_no_op_as_nothing() -> None:
    widening = estimate_migration(["ALTER TABLE t ALTER COLUMN n TYPE bigint"], CATALOG, model=ROUND)
    [statement] = widening.statements
    assert not statement.analysis.destructive
    assert statement.ms == pytest.approx(1 + 1024 * 0.011 + 8 * 10 + 2 * 1024 * 10 * 0.0002)
    assert [(h.table, h.mode) for h in widening.lock_holds] == [("t", "ACCESS EXCLUSIVE")]
    absent = estimate_migration(["DROP TABLE IF EXISTS ghost"], CATALOG, model=ROUND)
    assert [s.ms for s in absent.statements] == [1.0]
    assert absent.lock_holds == ()


def test_calibrated_constants_are_positive_and_grow_with_size() -> None:
    assert all(value > 0 for value in vars(CALIBRATED).values())
    analysis = analyse("ALTER TABLE t ALTER COLUMN id TYPE varchar(255) USING id::text", CATALOG)
    small = estimate_ms(analysis, TableSize(10_000, 2 * MB), indexes=2)
    large = estimate_ms(analysis, TableSize(1_000_000, 200 * MB), indexes=2)
    assert 50 < large / small < 200


def test_a_migration_adds_its_statements_and_knows_what_it_created() -> None:
    estimate = estimate_migration(
        [
            "CREATE TABLE fresh (id integer, n integer)",
            "CREATE INDEX fresh_n ON fresh (n)",  # empty: the statement overhead only
            "ALTER TABLE t ALTER COLUMN n TYPE bigint",
        ],
        CATALOG,
        model=ROUND,
    )
    assert [round(s.ms, 3) for s in estimate.statements[:2]] == [1.0, 1.0]
    assert estimate.statements[1].size == TableSize(0, 0)
    assert estimate.total_ms == pytest.approx(sum(s.ms for s in estimate.statements))
    assert [s.start_ms for s in estimate.statements] == [0.0, 1.0, 2.0]
    assert estimate.unknown == 0


def test_in_a_transaction_every_lock_is_held_until_commit() -> None:
    estimate = estimate_migration(
        ["ALTER TABLE t ALTER COLUMN n SET DEFAULT 0", "UPDATE c SET t_id = NULL"], CATALOG, model=ROUND
    )
    holds = {h.table: h for h in estimate.lock_holds}
    assert (holds["t"].mode, holds["t"].start_ms) == ("ACCESS EXCLUSIVE", 0.0)
    assert holds["t"].held_ms == estimate.total_ms
    assert holds["c"].mode == "ROW EXCLUSIVE"
    assert holds["c"].held_ms == pytest.approx(estimate.total_ms - 1.0)


def test_outside_a_transaction_each_statement_releases_its_locks() -> None:
    estimate = estimate_migration(
        ["CREATE INDEX CONCURRENTLY t_n ON t (n)", "ALTER TABLE c ALTER COLUMN t_id SET DEFAULT NULL"],
        CATALOG,
        transactional=False,
        model=ROUND,
    )
    holds = {h.table: h for h in estimate.lock_holds}
    assert holds["t"].held_ms == pytest.approx(estimate.statements[0].ms)
    assert holds["c"].held_ms == 1.0


def test_history_scale_is_the_median_ratio_of_migrations_long_enough_to_measure() -> None:
    assert history_scale([]) == 1.0
    assert history_scale([(1000, 2000), (1000, 3000)]) == 1.0  # too few
    assert history_scale([(1000, 2000), (1000, 3000), (500, 500), (10, 5000)]) == 2.0  # 10 ms: noise
    assert history_scale([(1000, 900_000)] * 3) == 10.0  # clamped
    assert math.isclose(history_scale([(400, 200), (400, 300), (400, 250)]), 0.625)


def test_estimate_from_a_real_catalog(pg_url: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE big (id uuid PRIMARY KEY, note text)")
        conn.execute("CREATE TABLE small (id uuid PRIMARY KEY, note text)")
        conn.execute("INSERT INTO big SELECT gen_random_uuid(), 'note' FROM generate_series(1, 20000)")
        conn.execute("VACUUM ANALYZE")
        catalog = PostgresCatalog(conn)
        statements = ["ALTER TABLE {} ALTER COLUMN id TYPE varchar(255) USING id::text"]
        big = estimate_migration([s.format("big") for s in statements], catalog)
        small = estimate_migration([s.format("small") for s in statements], catalog)
    assert big.statements[0].size is not None
    assert big.statements[0].size.rows == 20000
    assert big.total_ms > 10 * small.total_ms
