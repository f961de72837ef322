"""Human-readable rendering of ``status`` and of a run over a fleet (``--all``: the bar while it
works, the summary after) with rich (imported only here, only when printing)."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from dbledger.api import Status
from dbledger.terminal import LINES, write_line

if TYPE_CHECKING:
    from dbledger.fleet import FleetReport, TargetResult
    from dbledger.targets import Target

_STYLES = {
    "applied": "green",
    "baseline": "cyan",
    "pending": "yellow",
    "not written yet": "yellow",
    "running": "yellow",
    "modified (cosmetic)": "yellow",
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
    order_differs = plan.order_differs  # computed from every applied row: once, not per row
    order = ["order"] if order_differs else []
    header = [*order, "version", "migration", "state", "applied at", "ms", "checksum"]
    states = _states(result)
    names = {m.name for m in plan.migrations} | set(plan.rows)
    versions = {m.name: m.version for m in plan.migrations} | {n: r.version for n, r in plan.rows.items()}
    rows = []
    for name in sorted(names, key=lambda n: (versions[n], n)):
        row = plan.rows.get(name)
        state = states.get(name) or (row.state if row is not None else "pending")
        cells = [
            *([str(row.applied_order or "") if row else ""] if order_differs else []),
            str(versions[name]),
            name,
            state,
            (row.applied_at or "")[:19].replace("T", " ") if row else "",
            str(row.execution_time_ms) if row and row.execution_time_ms is not None else "",
            (row.checksum or "")[:12] if row else "",
        ]
        rows.append((cells, state))
    for migration, row, state in result.repeatable_states():  # after the versioned ones, as they run
        cells = [
            *([str(row.applied_order or "") if row else ""] if order_differs else []),
            "R",
            migration.name,
            state,
            (row.applied_at or "")[:19].replace("T", " ") if row else "",
            str(row.execution_time_ms) if row and row.execution_time_ms is not None else "",
            migration.checksum[:12],
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
        edit = plan.edit(row.name)
        kind = edit.kind if edit is not None and edit.kind != "unknown" else None
        shown[row.name] = f"modified ({kind})" if kind else "modified"
    return shown


def _summary(result: Status) -> str:
    plan = result.plan
    return (
        f"version {result.version if result.version is not None else '-'}: "
        f"{len(plan.applied)} applied, {len(plan.pending)} pending, {len(plan.failed)} failed"
        + (f", {len(plan.running)} running" if plan.running else "")
        + (f", {len(due)} repeatable to run" if (due := plan.repeatables_due(result.repeatables)) else "")
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


# -- fleets (--all) ---------------------------------------------------------------------------

# Each outcome in words and its style, in the order the summary line counts them.
_OUTCOMES = {
    "applied": ("applied", "green"),
    "up_to_date": ("up to date", "green"),
    "ok": ("ok", "green"),
    "pending": ("pending", "yellow"),
    "problems": ("with problems", "red"),
    "claimed": ("claimed by another runner", "cyan"),
    "failed": ("failed", "red"),
    "not_started": ("not started", "yellow"),
    "interrupted": ("interrupted", "yellow"),
}
# Per-target events worth a line also without --verbose.
_TARGET_NOTES = frozenset({"warning", "note", "retry", "upgrade", "backup"})


class FleetWatch:
    """A fleet run on stderr while it works (``dbledger.fleet.Watch``). On a terminal: a bar over
    the targets, the targets at work under it, each failure as a line that stays. Off a terminal
    nothing (the summary follows on stdout) but each target's warnings and notes, named with the
    target; ``verbose``: also every event of every target, and each finished target."""

    def __init__(
        self, total: int, *, live: bool, verbose: bool = False, quiet: bool = False, color: bool = False
    ) -> None:
        self.quiet = quiet
        self.verbose = verbose and not quiet
        self.counts: Counter[str] = Counter()
        self._retrying = False
        self._bar: Any = None
        self._at_work: dict[Target, Any] = {}  # each target at work -> its line under the bar
        self._live = live and not quiet
        self._color = color
        self._total = total

    def _start(self) -> None:
        """The bar, at the first target (what the run works on is said before it)."""
        if not self._live or self._bar is not None:
            return
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        console = Console(stderr=True, highlight=False, color_system="auto" if self._color else None)
        self._bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[count]}"),  # done/total over the fleet; nothing for one target
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self._bar.start()
        self._all = self._bar.add_task("targets", total=self._total, count=f"0/{self._total}")

    def started(self, target: Target) -> None:
        self._start()
        if self._bar is not None:
            from rich.markup import escape

            self._at_work[target] = self._bar.add_task(f"  {escape(target.label)}", total=None, count="")

    def finished(self, result: TargetResult) -> None:
        label = result.target.label
        if self._bar is not None:
            self._bar.remove_task(self._at_work.pop(result.target))
            if self._retrying:  # a claimed target, tried again: counted once, as what it is now
                self.counts["claimed"] -= 1
            self.counts[result.outcome] += 1
            shown = ", ".join(f"{n} {_OUTCOMES[o][0]}" for o, n in self.counts.items() if n)
            finished = self.counts.total()
            self._bar.update(
                self._all,
                completed=finished,
                description=f"targets: {shown}",
                count=f"{finished}/{self._total}",
            )
        if self.verbose:
            self._line(f"{label}: {result.detail} ({result.elapsed_ms} ms)")
        elif result.failed and self._bar is not None:
            self._line(f"{label}: {result.detail}")

    def retrying(self, count: int) -> None:
        self._retrying = True
        if self.verbose:
            self._line(f"trying {count} claimed target(s) once more, without waiting")

    def note(self, target: Target, event: str, subject: str, ms: int | None) -> None:
        if self.quiet or event not in LINES or not (event in _TARGET_NOTES or self.verbose):
            return
        template = LINES[event]
        text = " ".join(subject.split()) if event == "statement" else subject
        if template.startswith("dbledger: "):  # dbledger: warning: TARGET: what
            self._line(template.format(subject=f"{target.label}: {text}", ms=ms))
        else:  # TARGET: applying 001_a ...
            self._line(f"{target.label}: {template.format(subject=text, ms=ms).strip()}")

    def _line(self, text: str) -> None:
        if self._bar is not None:
            self._bar.console.print(text, markup=False, highlight=False, soft_wrap=True)
        else:
            write_line(text)

    def close(self) -> None:
        self._live = False
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def fleet_summary(report: FleetReport) -> str:
    """``7 target(s) in 3.2 s: 5 applied, 1 up to date, 1 failed``."""
    counts = report.counts()
    shown = ", ".join(f"{counts[o]} {words}" for o, (words, _) in _OUTCOMES.items() if counts.get(o))
    return f"{len(report.results)} target(s) in {report.elapsed_ms / 1000:.1f} s: {shown}"


def print_fleet(report: FleetReport, *, terminal: bool, color: bool, quiet: bool = False) -> None:
    """The summary of a run over a fleet: each target and what happened there, then the counts.
    ``quiet``: only the targets that failed (nothing when none did)."""
    results = [r for r in report.results if r.failed or not quiet]
    if not results:
        return
    schemas = any(r.target.schema is not None for r in report.results)  # else no schema column
    header = ["target", *(["schema"] if schemas else []), "outcome", "ms"]
    rows: list[tuple[list[str], str]] = [
        (
            [r.target.database, *([r.target.schema or ""] if schemas else []), r.detail, str(r.elapsed_ms)],
            r.outcome,
        )
        for r in results
    ]
    title = f"{report.command} --all: {len(report.results)} target(s) from {report.source}"
    if terminal:
        _print_fleet_rich(title, header, rows, fleet_summary(report), color)
        return
    widths = [max(len(cells[i]) for cells in [header, *(c for c, _ in rows)]) for i in range(len(header))]

    def line(cells: list[str], outcome: str | None) -> str:
        out = []
        for i, cell in enumerate(cells):
            padded = cell.rjust(widths[i]) if i == len(cells) - 1 else cell.ljust(widths[i])
            if color and outcome is not None and i == len(cells) - 2:
                code = _ANSI[_OUTCOMES[outcome][1]]
                padded = f"\x1b[{code}m{cell}\x1b[0m" + padded[len(cell) :]
            out.append(padded)
        return "  ".join(out).rstrip()

    lines = [
        title,
        line(header, None),
        *(line(cells, outcome) for cells, outcome in rows),
        fleet_summary(report),
    ]
    print("\n".join(lines))


def _print_fleet_rich(
    title: str, header: list[str], rows: list[tuple[list[str], str]], summary: str, color: bool
) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console(highlight=False, color_system="auto" if color else None)
    table = Table(title=escape(title), title_justify="left")
    for column in header:
        table.add_column(column, justify="right" if column == "ms" else "left")
    for cells, outcome in rows:
        shown = [escape(cell) for cell in cells]
        shown[-2] = f"[{_OUTCOMES[outcome][1]}]{shown[-2]}[/]"
        table.add_row(*shown)
    console.print(table)
    console.print(escape(summary))
