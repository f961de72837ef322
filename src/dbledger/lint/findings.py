"""What ``dbledger lint`` reports: one ``Finding`` per dangerous operation, and its forms: the
one-line text, the JSON object, the GitHub Actions annotation.

No parser here: the records are cheap to import for code that only shows findings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, NamedTuple

Severity = Literal["error", "warning"]


class Finding(NamedTuple):
    """One finding: where (the file, 1-based line and column of the offending clause), which
    rule, how bad, what happens, and ``help``: the safer way."""

    path: Path
    line: int
    column: int
    rule: str
    severity: Severity
    message: str
    help: str

    def format(self) -> str:
        """``file:line:col rule severity message``: the form editors and CI logs link."""
        return f"{self.path}:{self.line}:{self.column} {self.rule} {self.severity} {self.message}"

    def to_dict(self) -> dict[str, Any]:
        """The finding in ``--json``: path, line, column, rule, severity, message, help."""
        return {**self._asdict(), "path": str(self.path)}

    def annotation(self) -> str:
        """The GitHub Actions workflow command (``::error file=...,line=...,col=...,title=RULE::``)
        that shows the finding on the pull request's diff."""
        where = f"file={_escape(str(self.path), prop=True)},line={self.line},col={self.column}"
        return f"::{self.severity} {where},title={_escape(self.rule, prop=True)}::{_escape(self.message)}"


def _escape(text: str, *, prop: bool = False) -> str:
    """As the runner unescapes: ``%``, CR and LF everywhere; ``:`` and ``,`` in properties too."""
    text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    return text.replace(":", "%3A").replace(",", "%2C") if prop else text
