"""The module map holds: data flows one way, from the contract types at the bottom through the
preflight and the executor to the API and the command line at the top. Read from the source's
own imports (every import, also those inside functions), so a shortcut cannot hide.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

SOURCE = Path(__file__).parent.parent / "src" / "dbledger"

# Each module's layer: a module may import only modules of its own layer or below.
LAYERS: list[tuple[str, ...]] = [
    ("contracts", "annotation", "redaction", "sqltrees", "pgversions"),
    ("errors",),
    ("ledger", "config", "chain", "testing", "checksumcache", "placeholders"),
    ("migrations", "dialects", "schema", "analysis", "backup", "queries", "checks", "edits"),
    ("scratchcopy", "synthetic", "lockwatch", "layouts"),
    ("plan", "lint", "scaffold"),
    ("preflight", "backends"),
    ("executor",),
    ("replay", "schemadrift", "dryrun", "sandbox", "checkrun"),
    ("engine",),
    ("rehearse", "adoption"),
    ("api",),
    ("targets", "fleet"),
    ("output", "terminal", "completion", "integrations", "cli", "__init__", "__main__"),
]
LAYER = {name: index for index, names in enumerate(LAYERS) for name in names}


def modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(SOURCE.rglob("*.py")):
        parts = path.relative_to(SOURCE).with_suffix("").parts
        yield ".".join(parts), path


def imports(path: Path) -> Iterator[tuple[str, list[str]]]:
    """(module imported, names taken from it) for every import of dbledger in ``path``."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module == "dbledger":  # from dbledger import api
            for alias in node.names:
                yield f"dbledger.{alias.name}", []
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "dbledger":
            yield node.module, [alias.name for alias in node.names]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "dbledger":
                    yield alias.name, []


def layer(module: str) -> int:
    """``dbledger.backends.postgres`` -> the layer of ``backends``; the package itself: the top."""
    first = module.removeprefix("dbledger").lstrip(".").split(".")[0]
    return LAYER.get(first, LAYER["__init__"])  # a name the package itself exports


def test_every_module_has_a_layer() -> None:
    listed = [name for names in LAYERS for name in names]
    assert len(listed) == len(set(listed)), "a module is listed in two layers"
    for name, _ in modules():
        assert name.split(".")[0] in LAYER, f"{name} belongs to no layer: add it to LAYERS"


@pytest.mark.parametrize("name", [name for name, _ in modules()])
def test_imports_go_down_the_layers(name: str) -> None:
    path = SOURCE / (name.replace(".", "/") + ".py")
    own = layer(f"dbledger.{name}")
    upward = [target for target, _ in imports(path) if layer(target) > own]
    assert upward == [], f"{name} (layer {own}) reaches up to {upward}"


@pytest.mark.parametrize("name", [name for name, _ in modules()])
def test_no_module_takes_another_ones_private_names(name: str) -> None:
    path = SOURCE / (name.replace(".", "/") + ".py")
    private = [
        f"{target}.{n}"
        for target, names in imports(path)
        for n in names
        if n.startswith("_") and not n.endswith("__")
    ]
    assert private == [], f"{name} imports private names {private}"


def test_the_backends_know_nothing_above_them() -> None:
    above = {
        "engine",
        "executor",
        "preflight",
        "replay",
        "schemadrift",
        "dryrun",
        "api",
        "fleet",
        "cli",
        "output",
        "integrations",
    }
    for name, path in modules():
        if name.split(".")[0] in ("backends", "dialects", "schema", "analysis", "contracts", "errors"):
            reached = {target.split(".")[1] for target, _ in imports(path) if "." in target} & above
            assert reached == set(), f"{name} imports {reached}"


def test_complexity_is_checked_in_ci() -> None:
    config = (SOURCE.parent.parent / "pyproject.toml").read_text(encoding="utf-8")
    assert '"C901"' in config
    assert "max-complexity = 15" in config
