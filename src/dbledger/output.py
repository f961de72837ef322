"""Human-readable rendering of ``status`` with rich (imported only here, only when printing)."""

from __future__ import annotations

from dbledger.api import Status

_STYLES = {
    "applied": "green",
    "baseline": "cyan",
    "pending": "yellow",
    "not written yet": "yellow",
    "running": "yellow",
}
_ANSI = {"green": "32", "cyan": "36", "yellow": "33", "red": "31"}


def print_status(result: Status, *, terminal: bool, color: bool) -> None:
    """A table of the migrations, then the summary and the problems. On a terminal a rich table;
    elsewhere plain lines, columns aligned with spaces, never wrapped, styled only with colour."""
    header, rows = _rows(result)
    if terminal:
        _print_rich(result, header, rows, color)
    else:
        _print_plain(result, header, rows, color)


def _rows(result: Status) -> tuple[list[str], list[tuple[list[str], str]]]:
    """The column names, and each migration's cells with its state (which picks its style)."""
    plan = result.plan
    order = ["order"] if plan.order_differs else []
    header = [*order, "version", "migration", "state", "applied at", "ms", "checksum"]
    states = _states(result)
    names = {m.name for m in plan.migrations} | set(plan.rows)
    versions = {m.name: m.version for m in plan.migrations} | {n: r.version for n, r in plan.rows.items()}
    rows = []
    for name in sorted(names, key=lambda n: (versions[n], n)):
        row = plan.rows.get(name)
        state = states.get(name) or (row.state if row is not None else "pending")
        cells = [
            *([str(row.applied_order or "") if row else ""] if plan.order_differs else []),
            str(versions[name]),
            name,
            state,
            (row.applied_at or "")[:19].replace("T", " ") if row else "",
            str(row.execution_time_ms) if row and row.execution_time_ms is not None else "",
            (row.checksum or "")[:12] if row else "",
        ]
        rows.append((cells, state))
    return header, rows


def _states(result: Status) -> dict[str, str]:
    """The state to show for each migration whose ledger state alone would mislead."""
    plan = result.plan
    shown: dict[str, str] = {}
    # Later entries win: the order is the order of precedence, lowest first.
    for name in (m.name for m in plan.pending if m.up.empty):
        shown[name] = "not written yet"
    for row in plan.failed:
        shown[row.name] = "failed"
    for migration in plan.out_of_order:
        shown[migration.name] = "out of order"
    for row in plan.running:
        shown[row.name] = "running"
    for migration, row in plan.reused:
        shown[migration.name] = shown[row.name] = "version reused"
    for migration, row in plan.renamed:
        shown[migration.name] = shown[row.name] = "renamed"
    for row in plan.missing:
        shown[row.name] = "missing"
    for _, row in plan.modified:
        shown[row.name] = "modified"
    return shown


def _summary(result: Status) -> str:
    plan = result.plan
    return (
        f"version {result.version if result.version is not None else '-'}: "
        f"{len(plan.applied)} applied, {len(plan.pending)} pending, {len(plan.failed)} failed"
        + (f", {len(plan.running)} running" if plan.running else "")
        + ("" if result.ledger_exists else " (no ledger table yet)")
    )


def _print_plain(result: Status, header: list[str], rows: list[tuple[list[str], str]], color: bool) -> None:
    state_column = header.index("state")
    widths = [max(len(cells[i]) for cells in [header, *(c for c, _ in rows)]) for i in range(len(header))]
    right = {header.index("version"), header.index("ms")} | ({0} if header[0] == "order" else set())

    def line(cells: list[str], state: str | None) -> str:
        out = []
        for i, cell in enumerate(cells):
            padded = cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            if color and state is not None and i == state_column:
                padded = f"\x1b[{_ANSI[_STYLES.get(state, 'red')]}m{cell}\x1b[0m" + padded[len(cell) :]
            out.append(padded)
        return "  ".join(out).rstrip()

    lines = [f"{result.database}  ({result.directory})", line(header, None)]
    lines += [line(cells, state) for cells, state in rows]
    lines.append(_summary(result))
    lines += [f"problem: {problem}" for problem in result.problems]
    print("\n".join(lines))


def _print_rich(result: Status, header: list[str], rows: list[tuple[list[str], str]], color: bool) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console(highlight=False, color_system="auto" if color else None)
    table = Table(title=escape(f"{result.database}  ({result.directory})"), title_justify="left")
    for column in header:
        table.add_column(column, justify="right" if column in ("order", "version", "ms") else "left")
    state_column = header.index("state")
    for cells, state in rows:
        shown = [escape(cell) for cell in cells]
        shown[state_column] = f"[{_STYLES.get(state, 'red')}]{escape(state)}[/]"
        table.add_row(*shown)
    console.print(table)
    console.print(escape(_summary(result)))
    for problem in result.problems:
        console.print(f"[red]problem:[/] {escape(problem)}")
