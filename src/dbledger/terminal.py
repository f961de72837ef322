"""How the command line talks to the person running it: progress on stderr while a command
works, and whether to style what it prints.

Off a terminal (a pipe, a file, CI's log) every line is plain text, printed whole as it happens:
no escape sequences, no redrawing, no wrapping. On a terminal, a run shows the migration at work
with its elapsed time, a lock wait with its holder, and a bar over the run's migrations (rich,
imported only then). ``NO_COLOR`` (https://no-color.org) and ``--color never`` remove every
escape sequence; ``--color always`` keeps colour in a pipe.
"""

from __future__ import annotations

import os
import sys
from typing import IO, Any, Literal

ColorChoice = Literal["auto", "always", "never"]

# Plain progress lines, one per event, for a log or a pipe.
LINES = {
    "using": "dbledger: {subject}",
    "waiting": "waiting for the migration lock, held by {subject} ...",
    "busy": "waiting for {subject} ...",
    "upgrade": "dbledger: upgraded the ledger ({subject})",
    "start": "applying {subject} ...",
    "done": "applied  {subject} in {ms} ms",
    "warning": "dbledger: warning: {subject}",
    "note": "dbledger: note: {subject}",
    "backup": "backed up to {subject}",
    "rollback": "rolling back {subject} ...",
    "rolled back": "rolled back {subject} in {ms} ms",
    "statement": "  {subject}",
    "retry": "dbledger: retry: {subject}",
}
# Events a live display shows as a line that stays (the others only update the display).
_KEPT = frozenset(
    {"using", "upgrade", "done", "warning", "note", "backup", "rolled back", "statement", "retry"}
)
# Events that begin something the live display shows with its elapsed time.
_ONGOING = {"start": "applying {subject}", "rollback": "rolling back {subject}"}
_WAITS = {"waiting": "waiting for the migration lock, held by {subject}", "busy": "waiting for {subject}"}


def wants_color(choice: ColorChoice, stream: IO[str]) -> bool:
    """Style output on ``stream``? ``always`` and ``never`` decide; ``auto``: on a terminal that
    is not ``TERM=dumb``, unless ``NO_COLOR`` is set to anything but the empty string."""
    if choice != "auto":
        return choice == "always"
    return is_terminal(stream) and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"


def is_terminal(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # replaced or closed streams
        return False


def write_line(text: str, stream: IO[str] | None = None) -> None:
    """Print one line; a reader that went away (``| head``) is not an error of this command."""
    try:
        print(text, file=stream or sys.stderr, flush=True)
    except BrokenPipeError:
        silence(stream or sys.stderr)


def silence(stream: IO[str]) -> None:
    """Point the broken stream at /dev/null, so Python's flush at exit finds nothing to write."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
    except (OSError, ValueError):
        pass


class Reporter:
    """The progress callback of the command line (``Progress``). ``quiet``: nothing but errors.
    ``verbose``: also each statement as it runs (the executor sends those only when the callback
    has ``statements`` set). ``live``: a rich display on the terminal, else plain lines."""

    def __init__(
        self, *, quiet: bool = False, verbose: bool = False, live: bool = False, color: bool = False
    ):
        self.quiet = quiet
        self.statements = verbose and not quiet
        self._live: Any = _Live(color) if live and not quiet else None

    def __call__(self, event: str, subject: str, ms: int | None) -> None:
        if self.quiet:
            return
        if self._live is not None:
            self._live.show(event, subject, ms)
            return
        line = LINES.get(event)
        if line is not None:
            write_line(line.format(subject=_one_line(subject) if event == "statement" else subject, ms=ms))

    def close(self) -> None:
        """End the live display (its last state stays on the screen)."""
        if self._live is not None:
            self._live.stop()
            self._live = None


def _one_line(sql: str, width: int = 200) -> str:
    """A statement for a progress line, on one line (the executor sent it redacted: cutting it
    here cannot split a secret)."""
    text = " ".join(sql.split())
    return text if len(text) <= width else text[: width - 1] + "…"


class _Live:
    """A rich Progress on stderr: a bar over the run's migrations, the one at work, the wait."""

    def __init__(self, color: bool) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
        )

        console = Console(stderr=True, highlight=False, color_system="auto" if color else None)
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self.run: Any = None  # the task over every migration of the run
        self.current: Any = None  # the migration at work, or the wait
        self.started = False

    def show(self, event: str, subject: str, ms: int | None) -> None:
        if event == "steps":
            self._start()
            self.run = self.progress.add_task("migrations", total=int(subject))
            return
        if event != "statement":  # a statement runs within the migration on the live line
            self._end_current()
        if event in _KEPT:
            text = _one_line(subject) if event == "statement" else subject
            # soft_wrap: a long line is the terminal's to fold, not cut into two by rich.
            self.progress.console.print(
                LINES[event].format(subject=text, ms=ms), markup=False, highlight=False, soft_wrap=True
            )
            if event in ("done", "rolled back") and self.run is not None:
                self.progress.advance(self.run)
            return
        described = _ONGOING.get(event) or _WAITS.get(event)
        if described is not None:
            self._start()
            from rich.markup import escape

            self.current = self.progress.add_task(escape(described.format(subject=subject)), total=None)

    def _start(self) -> None:
        if not self.started:
            self.progress.start()
            self.started = True

    def _end_current(self) -> None:
        if self.current is not None:
            self.progress.remove_task(self.current)
            self.current = None

    def stop(self) -> None:
        if self.started:
            self.progress.stop()
