"""The ``dbledger`` command: parse arguments, call the API, format the result. No logic here.

Human output goes to stdout, progress and messages to stderr; with ``--json`` stdout carries
exactly one JSON document (also on failure: ``{"ok": false, "error": ...}``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from dbledger import api
from dbledger.config import DEFAULT_LOCK_TIMEOUT, resolve
from dbledger.errors import DbledgerError, LedgerStateError
from dbledger.redaction import redact


class _Parser(argparse.ArgumentParser):
    """argparse that redacts its own error messages (they echo arguments, URLs included) and
    keeps the --json promise of one document on stdout for usage errors too."""

    def error(self, message: str) -> NoReturn:
        message = redact(message)
        if _JSON_REQUESTED[0]:
            error = {"type": "UsageError", "message": message, "exit_code": 2}
            print(json.dumps({"ok": False, "error": error}, indent=2))
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


# Set by main() from its argv, which need not be sys.argv (tests, embedding).
_JSON_REQUESTED = [False]


def _common(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    default: Any = argparse.SUPPRESS if suppress else None
    parser.add_argument(
        "--database-url",
        metavar="URL",
        default=default,
        help="database URL (default: $DATABASE_URL, pyproject.toml, sqlite:///dbledger.sqlite3)",
    )
    parser.add_argument(
        "--dir",
        metavar="PATH",
        default=default,
        help="migrations directory (default: $DBLEDGER_DIR, pyproject.toml, ./migrations)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS if suppress else False,
        help="print one JSON document on stdout",
    )


def _lock_timeout(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--lock-timeout",
        type=float,
        metavar="SECONDS",
        default=DEFAULT_LOCK_TIMEOUT,
        help="how long to wait for another migration run to finish (default: 600)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="dbledger",
        description="Apply SQL migrations exactly once, with a ledger, checksums and a lock.",
    )
    _common(parser, suppress=False)
    parser.add_argument("--version", action="version", version=f"dbledger {api_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = commands.add_parser("up", help="verify, then apply pending migrations in order")
    _common(up, suppress=True)
    _lock_timeout(up)
    up.add_argument("--to", type=int, metavar="VERSION", help="stop after this version")
    up.add_argument(
        "--allow-out-of-order",
        action="store_true",
        help="apply pending files that sort before the newest applied one",
    )
    up.add_argument(
        "--allow-missing", action="store_true", help="go on although applied migrations have no file any more"
    )
    up.add_argument(
        "--allow-existing-schema",
        action="store_true",
        help="run on a database that has tables but no ledger yet",
    )
    up.add_argument(
        "--dry-run",
        action="store_true",
        help="print what would run, with locks and estimates; change nothing",
    )
    up.add_argument(
        "--backup",
        metavar="DIR",
        help="back up the database into DIR before the first risky migration (backup:true or destructive)",
    )
    up.add_argument(
        "--atomic",
        action="store_true",
        help="apply all pending migrations in one transaction: a failure undoes the whole deploy",
    )

    down = commands.add_parser("down", help="roll back applied migrations with their down sections")
    _common(down, suppress=True)
    _lock_timeout(down)
    scope = down.add_mutually_exclusive_group()
    scope.add_argument("--steps", type=int, metavar="N", help="how many to roll back (default: 1)")
    scope.add_argument("--to", type=int, metavar="VERSION", help="the version to end at (0: roll back all)")
    down.add_argument("--dry-run", action="store_true", help="print what would run; change nothing")

    drift = commands.add_parser(
        "drift", help="compare the live schema with what the applied migrations produce (exit 1 on drift)"
    )
    _common(drift, suppress=True)
    drift.add_argument(
        "--shadow-url",
        metavar="URL",
        help="replay on this empty database (left empty) instead of a temporary one; implies --replay",
    )
    drift.add_argument(
        "--replay",
        action="store_true",
        help="replay the applied migrations on a scratch database instead of using the recorded schema",
    )

    dump = commands.add_parser("dump", help="print the live schema as normalised SQL (or write it to FILE)")
    _common(dump, suppress=True)
    dump.add_argument("file", nargs="?", metavar="FILE", help="write here instead of stdout")

    redo = commands.add_parser("redo", help="roll back the newest migration and apply it again")
    _common(redo, suppress=True)
    _lock_timeout(redo)

    for name, text in [
        ("status", "applied / pending / failed / modified / missing migrations"),
        ("verify", "check checksums, order and missing files; change nothing"),
    ]:
        sub = commands.add_parser(name, help=text)
        _common(sub, suppress=True)
        if name == "verify":
            sub.add_argument("--strict", action="store_true", help="also fail when a migration is pending")

    new = commands.add_parser("new", help="create the next numbered migration file")
    _common(new, suppress=True)
    new.add_argument("name", help="lower-case words joined by '_', e.g. add_users_email")

    repair = commands.add_parser("repair", help="accept modified checksums, clear failed and dirty records")
    _common(repair, suppress=True)
    _lock_timeout(repair)
    repair.add_argument(
        "--forget-missing",
        action="store_true",
        help="also drop the records of applied migrations whose files are gone",
    )

    baseline = commands.add_parser(
        "baseline", help="mark migrations up to VERSION as applied without running them"
    )
    _common(baseline, suppress=True)
    _lock_timeout(baseline)
    baseline.add_argument("version", type=int, metavar="VERSION")
    baseline.add_argument(
        "--shadow-url", metavar="URL", help="with --verify: replay on this empty database (left empty)"
    )
    baseline.add_argument(
        "--verify",
        action="store_true",
        help="first check that the database is what the files up to VERSION produce",
    )
    return parser


def api_version() -> str:
    from dbledger import __version__

    return __version__


def _err(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _progress(event: str, name: str, ms: int | None) -> None:
    if event == "waiting":
        _err(f"waiting for the migration lock, held by {name} ...")
    elif event == "start":
        _err(f"applying {name} ...")
    elif event == "done":
        _err(f"applied  {name} in {ms} ms")
    elif event == "warning":
        _err(f"dbledger: warning: {name}")
    elif event == "backup":
        _err(f"backed up to {name}")
    elif event == "rollback":
        _err(f"rolling back {name} ...")
    elif event == "rolled back":
        _err(f"rolled back {name} in {ms} ms")


def main(argv: Sequence[str] | None = None) -> int:
    _JSON_REQUESTED[0] = "--json" in (sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    as_json: bool = args.json
    try:
        document = _run(args)
    except DbledgerError as exc:
        _err(f"dbledger: error: {exc.message}")
        if as_json:
            found = exc.document if isinstance(exc, LedgerStateError | DriftFound) else {}
            print(json.dumps({"ok": False, **found, "error": _error_dict(exc)}, indent=2, default=str))
        return exc.exit_code
    except KeyboardInterrupt:
        _err("dbledger: interrupted")
        return 130
    if as_json:
        print(json.dumps({"ok": True, **document}, indent=2, default=str))
    return 0


def _error_dict(exc: DbledgerError) -> dict[str, Any]:
    fields: dict[str, Any] = {"type": type(exc).__name__, "message": exc.message, "exit_code": exc.exit_code}
    for key in ("migration", "sqlstate", "statement", "line", "dirty", "undone", "path", "problems"):
        if hasattr(exc, key):
            fields[key] = getattr(exc, key)
    return fields


def _run(args: argparse.Namespace) -> dict[str, Any]:
    if args.command == "new":
        path = api.new(args.name, args.dir)
        _out(args, f"created {path}")
        return {"path": str(path)}

    settings = resolve(args.database_url, args.dir)
    _err(
        f"dbledger: database {settings.database.display} (from {settings.database_source}), "
        f"migrations {settings.directory}"
    )
    url, folder = settings.database.url, settings.directory

    if args.command == "up":
        # What up checks and plans with, whether it then runs or only prints (--dry-run).
        plan_options: dict[str, Any] = {
            "to": args.to,
            "allow_out_of_order": args.allow_out_of_order,
            "allow_missing": args.allow_missing,
            "allow_existing_schema": args.allow_existing_schema,
            "atomic": args.atomic,
        }
    if args.command in ("up", "down") and args.dry_run:
        if args.command == "up":
            run = api.plan_migrate(url, folder, **plan_options)
        else:
            run = api.plan_down(url, folder, steps=args.steps, to=args.to)
        if not args.json:
            from dbledger.dryrun import render

            print(render(run))
        if run.problems:
            raise LedgerStateError(run.problems, run.to_dict())
        return run.to_dict()
    if args.command == "up":
        report = api.migrate(
            url,
            folder,
            **plan_options,
            backup_dir=args.backup,
            lock_timeout=args.lock_timeout,
            progress=_progress,
        )
        if report.applied:
            total = sum(a.execution_time_ms for a in report.applied)
            _out(args, f"applied {len(report.applied)} migration(s) in {total} ms")
        else:
            scope = f" up to version {args.to}" if args.to is not None else ""
            _out(args, f"nothing to do{scope}: every migration{scope} is applied")
        return report.to_dict()
    if args.command == "down":
        undone = api.down(
            url, folder, steps=args.steps, to=args.to, lock_timeout=args.lock_timeout, progress=_progress
        )
        if undone:
            total = sum(r.execution_time_ms for r in undone)
            _out(args, f"rolled back {len(undone)} migration(s) in {total} ms")
        else:
            _out(args, "nothing to roll back")
        return {"rolled_back": [vars(r) for r in undone]}
    if args.command == "redo":
        rolled, reapplied = api.redo(url, folder, lock_timeout=args.lock_timeout, progress=_progress)
        if rolled is None:
            _out(args, "nothing to redo: no migration is applied")
            return {"rolled_back": [], "applied": []}
        _out(args, f"redid {rolled.name}")
        return {"rolled_back": [vars(rolled)], "applied": [vars(a) for a in reapplied]}
    if args.command == "drift":
        found = api.drift(url, folder, replay=args.replay, shadow_url=args.shadow_url)
        if not args.json:
            for difference in found.differences:
                print(difference)
        if found.differences:
            raise DriftFound(found.to_dict())
        _out(args, f"no drift: the live schema is the one {found.expected_from}")
        return found.to_dict()
    if args.command == "dump":
        text = api.dump(url)
        if args.file:
            with open(args.file, "w", encoding="utf-8") as handle:
                handle.write(text)
            _out(args, f"wrote {args.file}")
        elif not args.json:
            print(text, end="")
        return {"sql": text} if not args.file else {"path": args.file}
    if args.command == "status":
        result = api.status(url, folder, check_schema=True)
        if not args.json:
            from dbledger.output import print_status

            print_status(result)
        return result.to_dict()
    if args.command == "verify":
        result = api.verify(url, folder, strict=args.strict)
        pending = len(result.plan.pending)
        _out(
            args,
            f"ok: {len(result.plan.applied)} applied migration(s) match their files"
            + (f"; {pending} pending" if pending else ""),
        )
        return result.to_dict()
    if args.command == "repair":
        repaired = api.repair(url, folder, forget_missing=args.forget_missing, lock_timeout=args.lock_timeout)
        for item in repaired:
            _out(args, f"{item.name}: {item.action} ({item.detail})")
        if not repaired:
            _out(args, "nothing to repair")
        return {"repaired": [vars(item) for item in repaired]}
    if args.command == "baseline":
        marked = api.baseline(
            args.version,
            url,
            folder,
            verify=args.verify,
            shadow_url=args.shadow_url,
            lock_timeout=args.lock_timeout,
        )
        for name in marked:
            _out(args, f"baseline {name}")
        _out(args, f"marked {len(marked)} migration(s) as applied without running them")
        return {"baselined": marked}
    raise AssertionError(args.command)  # argparse only accepts the commands above


class DriftFound(DbledgerError):
    """Exit 1: the live schema differs (the differences were printed already)."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        count = len(document["differences"])
        super().__init__(
            f"the live schema has {count} difference(s) from the schema the applied migrations "
            "produce: write a migration for a change that should stay, or undo it by hand"
        )


def _out(args: argparse.Namespace, text: str) -> None:
    # With --json, human lines still reach the user, on stderr.
    print(text, file=sys.stderr if args.json else sys.stdout, flush=True)
