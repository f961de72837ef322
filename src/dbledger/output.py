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
    # The applied order is shown when it is not the version order (--allow-out-of-order).
    columns = [("order", "right")] if plan.order_differs else []
    for column, justify in [
        *columns,
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
    renamed = {name for m, row in plan.renamed for name in (m.name, row.name)}
    reused = {name for m, row in plan.reused for name in (m.name, row.name)}
    running = {row.name for row in plan.running}
    late = {m.name for m in plan.out_of_order}
    styles = {
        "applied": "green",
        "baseline": "cyan",
        "pending": "yellow",
        "failed": "red",
        "dirty": "red",
        "modified": "red",
        "missing": "red",
        "renamed": "red",
        "version reused": "red",
        "running": "yellow",
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
        elif name in renamed:
            state = "renamed"
        elif name in reused:
            state = "version reused"
        elif name in running:
            state = "running"
        elif name in late:
            state = "out of order"
        elif row is not None and row.state == "failed":
            state = "failed"
        order = [str(row.applied_order or "") if row else ""] if plan.order_differs else []
        table.add_row(
            *order,
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
        + (f", {len(plan.running)} running" if plan.running else "")
        + ("" if result.ledger_exists else " (no ledger table yet)")
    )
    for problem in result.problems:
        console.print(f"[red]problem:[/] {escape(problem)}")
