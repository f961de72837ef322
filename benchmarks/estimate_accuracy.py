"""How close the dry-run's time estimate comes to the real run, on the incident's own migration.

Run: .venv/bin/python benchmarks/estimate_accuracy.py [--rows 10000 100000 1000000] [--detail]
     .venv/bin/python benchmarks/estimate_accuracy.py --calibrate [--rows 100000 1000000]

Accuracy (the default). For each size, on a throwaway cluster (dbledger.testing.temporary_postgres):
the service's migrations 001 and 002 are applied, ``platform_connections`` (the parent) and
``audit_logs`` (the child, one audit row per connection, foreign key to its connection) get N rows
each and ``organizations`` N/100, statistics are gathered, then ``estimate_migration`` prices the
service's 003 (every UUID key to VARCHAR(255), foreign keys dropped and re-created) from the
catalog, and 003 runs statement by statement in one transaction, timed. The table compares the
estimate with the measured time (COMMIT included).

Calibration (``--calibrate``). Each primitive of the cost model is timed alone on a synthetic table
unrelated to the service's schema (shaped like an application table: NOT NULL columns, a CHECK, a
timestamp, uuids, a payload), at every size, in narrow and wide rows: a rewrite converting one or
two uuid columns, the same with two indexes to rebuild, an index build on int, uuid and text keys,
a CHECK scan, foreign key validations against a parent ten times smaller and one as big, with int
and text keys, an UPDATE of every row with and without an index, a catalog-only ALTER. Least
squares gives the constants, printed as the ``CostModel`` to paste into
src/dbledger/analysis/estimate.py.
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import time
from dataclasses import fields
from datetime import date
from pathlib import Path

import psycopg
from seed_data import FILL  # benchmarks/: the script's own folder is on sys.path

from dbledger.analysis import CALIBRATED, CostModel, PostgresCatalog, estimate_migration
from dbledger.dialects.postgres import PostgresDialect
from dbledger.migrations import parse
from dbledger.testing import Cluster, temporary_postgres

MIGRATIONS = Path(__file__).resolve().parents[1] / "service" / "connections_service" / "migrations"
MB = 1024 * 1024


def up_section(stem: str) -> str:
    (path,) = MIGRATIONS.glob(f"{stem}_*.sql")
    return parse(path, path.read_bytes()).up.sql


# -- accuracy --------------------------------------------------------------------------------


def accuracy(cluster: Cluster, rows: int, detail: bool) -> tuple[float, float]:
    url = cluster.create_database(f"accuracy_{rows}")
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute((up_section("001") + up_section("002")).encode())
            # Client-side binding: several statements in one execute.
            psycopg.ClientCursor(conn).execute(FILL, {"rows": rows, "orgs": max(10, rows // 100)})
            conn.execute("VACUUM ANALYZE")
            statements = [s.sql for s in PostgresDialect().split(up_section("003"), 1, Path("003.sql"))]
            estimate = estimate_migration(statements, PostgresCatalog(conn))
            timings: list[float] = []
            conn.execute("BEGIN")
            start = time.perf_counter()
            for sql in statements:
                began = time.perf_counter()
                conn.execute(sql.encode())
                timings.append((time.perf_counter() - began) * 1000)
            conn.execute("COMMIT")
            actual = (time.perf_counter() - start) * 1000
        if detail:
            for item, took in zip(estimate.statements, timings, strict=True):
                if took > 5 or item.ms > 5:
                    first = " ".join(item.analysis.notes[:1]) or item.analysis.kind
                    print(f"    {item.ms:9.1f} est {took:9.1f} ms  {item.analysis.effect:8} {first[:70]}")
        return estimate.total_ms, actual
    finally:
        cluster.drop_database(f"accuracy_{rows}")


# -- calibration -----------------------------------------------------------------------------

# A table shaped like an application's (NOT NULL columns, a CHECK, a timestamp, uuids, a text
# payload whose width varies), with two parents: one row per ten children, and one per child.
# Every child key exists in both, so every foreign key validates.
CAL_TABLE = """
DROP TABLE IF EXISTS cal, cal_parent_small, cal_parent_big;
CREATE TABLE cal (
    id integer NOT NULL, n integer NOT NULL, u uuid NOT NULL, u2 uuid, key text NOT NULL,
    status varchar(20) NOT NULL CHECK (status IN ('active', 'inactive', 'error')),
    created_at timestamptz NOT NULL DEFAULT now(), payload text
);
INSERT INTO cal (id, n, u, u2, key, status, payload)
SELECT g, g %% %(parents)s, gen_random_uuid(), gen_random_uuid(), md5((g %% %(parents)s)::text), 'active',
       repeat('x', %(width)s)
FROM generate_series(1, %(rows)s) g;
CREATE TABLE cal_parent_small (id integer PRIMARY KEY, key text UNIQUE);
INSERT INTO cal_parent_small SELECT g, md5(g::text) FROM generate_series(0, %(parents)s - 1) g;
CREATE TABLE cal_parent_big (id integer PRIMARY KEY, key text UNIQUE);
INSERT INTO cal_parent_big SELECT g, md5(g::text) FROM generate_series(0, %(rows)s - 1) g;
"""


def fit(xs: list[list[float]], ys: list[float]) -> list[float]:
    """Least squares ``y ~ x . c`` through the origin (normal equations, Gauss-Jordan)."""
    k = len(xs[0])
    pairs = list(zip(xs, ys, strict=True))
    a = [
        [sum(x[i] * x[j] for x in xs) for j in range(k)] + [sum(x[i] * y for x, y in pairs)] for i in range(k)
    ]
    for col in range(k):
        pivot = max(range(col, k), key=lambda r: abs(a[r][col]))
        a[col], a[pivot] = a[pivot], a[col]
        for r in range(k):
            if r != col and a[col][col]:
                factor = a[r][col] / a[col][col]
                a[r] = [v - factor * p for v, p in zip(a[r], a[col], strict=True)]
    return [a[i][k] / a[i][i] if a[i][i] else 0.0 for i in range(k)]


class Calibration:
    """Times each primitive on the synthetic table; ``model`` fits the constants."""

    def __init__(self, url: str) -> None:
        self.conn = psycopg.connect(url, autocommit=True)
        self.runs: list[dict[str, float]] = []

    def timed(self, sql: str, *, setup: str | None = None, undo: str | None = None) -> float:
        """Milliseconds ``sql`` takes, best of two, each in a transaction (after ``setup``, not
        timed) that is rolled back so that every sample starts from the same table; or outside a
        transaction, followed by ``undo``."""
        best = math.inf
        for _ in range(2):
            if undo is None:
                self.conn.execute("BEGIN")
            if setup:
                self.conn.execute(setup.encode())
            start = time.perf_counter()
            self.conn.execute(sql.encode())
            best = min(best, (time.perf_counter() - start) * 1000)
            self.conn.execute((undo or "ROLLBACK").encode())
        return best

    def measure(self, rows: int, width: int) -> None:
        parents = max(10, rows // 10)
        params = {"rows": rows, "width": width, "parents": parents}
        psycopg.ClientCursor(self.conn).execute(CAL_TABLE, params)
        self.conn.execute("VACUUM ANALYZE")
        sizes = self.conn.execute(
            "SELECT pg_total_relation_size('cal'), pg_total_relation_size('cal_parent_small'),"
            " pg_total_relation_size('cal_parent_big')"
        ).fetchone()
        assert sizes is not None
        run = {"rows": rows, "mb": sizes[0] / MB, "parents_small": parents, "parents_big": rows}
        run |= {"parent_mb_small": sizes[1] / MB, "parent_mb_big": sizes[2] / MB}
        run["statement"] = self.timed("ALTER TABLE cal ALTER COLUMN payload SET DEFAULT 'x'")
        convert_one = "ALTER TABLE cal ALTER COLUMN u TYPE varchar(255) USING u::text"
        run["rewrite1"] = self.timed(convert_one)
        run["rewrite2"] = self.timed(convert_one + ", ALTER COLUMN u2 TYPE varchar(255) USING u2::text")
        # The same rewrite with two indexes to rebuild (one on the converted column).
        indexes = "CREATE INDEX cal_u ON cal (u); CREATE INDEX cal_key ON cal (key)"
        run["rewrite1_indexed"] = self.timed(convert_one, setup=indexes)
        for column in ("id", "u", "key"):
            run[f"build_{column}"] = self.timed(f"CREATE INDEX cal_build ON cal ({column})")
        run["scan"] = self.timed("ALTER TABLE cal ADD CONSTRAINT cal_check CHECK (n >= 0)")
        for parent in ("small", "big"):
            for child, key in (("n", "id"), ("key", "key")):
                run[f"join_{parent}_{key}"] = self.timed(
                    f"ALTER TABLE cal ADD FOREIGN KEY ({child}) REFERENCES cal_parent_{parent} ({key})"
                )
        run["update"] = self.timed("UPDATE cal SET n = n + 1")
        run["update_indexed"] = self.timed("UPDATE cal SET n = n + 1", setup="CREATE INDEX cal_n ON cal (n)")
        run["concurrent"] = self.timed("CREATE INDEX CONCURRENTLY cal_c ON cal (id)", undo="DROP INDEX cal_c")
        self.runs.append(run)

    def model(self) -> CostModel:
        runs = self.runs
        statement_ms = statistics.median(r["statement"] for r in runs)

        def minus(r: dict[str, float], key: str) -> float:
            return r[key] - r["statement"]

        scan_row, scan_mb = fit([[r["rows"], r["mb"]] for r in runs], [minus(r, "scan") for r in runs])
        rewrite_row, rewrite_mb, convert_row = fit(
            [[r["rows"], r["mb"], n * r["rows"]] for r in runs for n in (1, 2)],
            [minus(r, f"rewrite{n}") for r in runs for n in (1, 2)],
        )
        (rebuild_row_log,) = fit(
            [[2 * r["rows"] * math.log2(r["rows"])] for r in runs],
            [r["rewrite1_indexed"] - r["rewrite1"] for r in runs],
        )
        builds = [(r, c) for r in runs for c in ("id", "u", "key")]
        (build_row_log,) = fit(
            [[r["rows"] * math.log2(r["rows"])] for r, _ in builds],
            [minus(r, f"build_{c}") - r["mb"] * scan_mb for r, c in builds],
        )
        joins = [(r, p, k) for r in runs for p in ("small", "big") for k in ("id", "key")]
        join_row, join_parent_row = fit(
            [[r["rows"], r[f"parents_{p}"]] for r, p, _ in joins],
            [minus(r, f"join_{p}_{k}") - (r["mb"] + r[f"parent_mb_{p}"]) * scan_mb for r, p, k in joins],
        )
        data_row, data_index_row = fit(
            [[r["rows"], 0.0] for r in runs] + [[r["rows"], r["rows"]] for r in runs],
            [minus(r, "update") for r in runs] + [minus(r, "update_indexed") for r in runs],
        )
        (concurrent_factor,) = fit(
            [[minus(r, "build_id")] for r in runs], [minus(r, "concurrent") for r in runs]
        )
        return CostModel(
            statement_ms=statement_ms,
            rewrite_row=rewrite_row,
            rewrite_mb=rewrite_mb,
            convert_row=convert_row,
            rebuild_row_log=rebuild_row_log,
            build_row_log=build_row_log,
            scan_row=scan_row,
            scan_mb=scan_mb,
            join_row=join_row,
            join_parent_row=join_parent_row,
            data_row=data_row,
            data_index_row=data_index_row,
            concurrent_factor=concurrent_factor,
        )


def calibrate(cluster: Cluster, sizes: list[int]) -> CostModel:
    url = cluster.create_database("calibration")
    calibration = Calibration(url)
    for rows in sizes:
        for width in (20, 300):
            print(f"  calibrating on {rows:,} rows, payload {width} bytes", flush=True)
            calibration.measure(rows, width)
    for run in calibration.runs:
        print("  " + ", ".join(f"{k} {v:.1f}" for k, v in run.items()))
    calibration.conn.close()
    return calibration.model()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, nargs="+", default=None)
    parser.add_argument("--calibrate", action="store_true")
    parser.add_argument("--detail", action="store_true", help="per-statement estimate and time")
    args = parser.parse_args()
    print(f"{date.today()}, {platform.node()}: Python {platform.python_version()}, {platform.machine()}")
    with temporary_postgres() as cluster:
        with psycopg.connect(cluster.url(), autocommit=True) as conn:
            version = conn.execute("SHOW server_version").fetchone()
        print(f"PostgreSQL {version[0] if version else '?'} (throwaway cluster, fsync off)")
        if args.calibrate:
            model = calibrate(cluster, args.rows or [100_000, 1_000_000])
            print("CALIBRATED = CostModel(")
            for item in fields(model):
                print(f"    {item.name}={getattr(model, item.name):.3g},")
            print(")")
            return
        print(f"cost model: {CALIBRATED}")
        print("| rows (parent, child) | estimate | actual | actual / estimate |")
        print("| ---: | ---: | ---: | ---: |")
        for rows in args.rows or [10_000, 100_000, 1_000_000]:
            estimated, actual = accuracy(cluster, rows, args.detail)
            ratio = actual / estimated
            print(f"| {rows:,} | {_seconds(estimated)} | {_seconds(actual)} | {ratio:.2f} |", flush=True)


def _seconds(ms: float) -> str:
    return f"{ms / 1000:.2f} s" if ms >= 1000 else f"{ms:.0f} ms"


if __name__ == "__main__":
    main()
