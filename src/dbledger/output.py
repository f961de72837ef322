"""Human-readable rendering of ``status`` with rich (imported only here, only when printing)."""

from __future__ import annotations

from dbledger.api import Status


def print_status(result: Status) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    plan = result.plan
    probe = Console()
    # Piped output keeps whole names instead of rich's 80-column default.
    console = Console(highlight=False, width=None if probe.is_terminal else 160)
    table = Table(title=escape(f"{result.database}  ({result.directory})"), title_justify="left")
    for column, justify in [
        ("version", "right"),
        ("migration", "left"),
        ("state", "left"),
        ("applied at", "left"),
        ("ms", "right"),
        ("checksum", "left"),
    ]:
        table.add_column(column, justify=justify)  # type: ignore[arg-type]

    modified = {row.name for _, row in plan.modified}
    missing = {row.name for row in plan.missing}
    late = {m.name for m in plan.out_of_order}
    styles = {
        "applied": "green",
        "baseline": "cyan",
        "pending": "yellow",
        "failed": "red",
        "dirty": "red",
        "modified": "red",
        "missing": "red",
        "out of order": "red",
    }
    names = {m.name for m in plan.migrations} | set(plan.rows)
    versions = {m.name: m.version for m in plan.migrations} | {n: r.version for n, r in plan.rows.items()}
    for name in sorted(names, key=lambda n: (versions[n], n)):
        row = plan.rows.get(name)
        state = row.state if row is not None else "pending"
        if name in modified:
            state = "modified"
        elif name in missing:
            state = "missing"
        elif name in late:
            state = "out of order"
        elif row is not None and row.state == "failed":
            state = "failed"
        table.add_row(
            str(versions[name]),
            escape(name),
            f"[{styles[state]}]{state}[/]",
            (row.applied_at or "")[:19].replace("T", " ") if row else "",
            str(row.execution_time_ms) if row and row.execution_time_ms is not None else "",
            (row.checksum or "")[:12] if row else "",
        )
    console.print(table)
    applied, pending = len(plan.applied), len(plan.pending)
    console.print(
        f"version {result.version if result.version is not None else '-'}: "
        f"{applied} applied, {pending} pending, {len(plan.failed)} failed"
        + ("" if result.ledger_exists else " (no ledger table yet)")
    )
    for problem in result.problems:
        console.print(f"[red]problem:[/] {escape(problem)}")
