"""``wove.contrib`` uses the core only through ``wove`` (the public API) and
``wove.lowlevel`` (the documented internal API), so the core can be rewritten freely
behind them. Imports between ``wove.contrib`` packages are fine."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import wove

WOVE = Path(wove.__file__).parent
CONTRIB = WOVE / "contrib"
ALLOWED = ("wove", "wove.lowlevel")


def _core_modules() -> set[str]:
    """The core's own submodules and packages (``from wove import engine`` imports one),
    less the public names that share a module's name (``from wove import weave`` is the
    function)."""
    names = {p.stem for p in WOVE.glob("*.py")} | {p.name for p in WOVE.iterdir() if p.is_dir()}
    return names - {"__init__", "__pycache__", "contrib", "lowlevel", *wove.__all__}


def _package_of(path: Path) -> list[str]:
    """The package a relative import in ``path`` starts from, e.g. wove.contrib.django."""
    parts = list(path.relative_to(WOVE.parent).with_suffix("").parts)
    return parts if path.name == "__init__.py" else parts[:-1]


def _crossing(target: str) -> bool:
    """Whether importing ``target`` reaches the core outside the allowed modules."""
    if target in ALLOWED or target == "wove.contrib" or target.startswith("wove.contrib."):
        return False
    return target == "wove" or target.startswith("wove.")


def violations(source: str, path: Path) -> list[str]:
    """Each import in ``source`` (as if it were ``path``) of a core module outside the
    allowed ones, as ``"line: module"``."""
    found: list[str] = []
    core = _core_modules()
    for node in ast.walk(ast.parse(source, str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = _package_of(path)
                base = package[: len(package) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets = [module]
            if module == "wove":  # from wove import engine: a core module by name
                targets += [f"wove.{a.name}" for a in node.names if a.name in core]
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", None))
            in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            targets = [node.args[0].value]
        line = getattr(node, "lineno", 0)
        found += [f"{line}: {target}" for target in targets if _crossing(target)]
    return found


def test_contrib_imports_only_the_public_and_the_documented_internal_api() -> None:
    files = sorted(CONTRIB.rglob("*.py"))
    assert len(files) > 20, "wove/contrib was not found"
    crossing = {
        str(path.relative_to(WOVE.parent)): found
        for path in files
        if (found := violations(path.read_text(encoding="utf-8"), path))
    }
    assert crossing == {}, "wove.contrib may import only wove and wove.lowlevel of the core"


@pytest.mark.parametrize(
    ("source", "crosses"),
    [
        ("from wove import weave, Weave", False),
        ("from wove.lowlevel import on_abandon", False),
        ("import wove.lowlevel", False),
        ("from wove import lowlevel", False),
        ("from wove.contrib.traces import RequestRecorder", False),
        ("from ..traces.detached import run_forked", False),
        ("from . import conf", False),
        ("from wove.engine import timed", True),
        ("import wove.scheduler", True),
        ("from wove import engine", True),
        ("from ...result import RESERVED_NAMES", True),
        ("from ... import tracing", True),
        ("def f():\n    from wove.task_spec import is_async_callable", True),
        ("importlib.import_module('wove.tracing')", True),
    ],
)
def test_the_check_tells_a_crossing_import(source: str, crosses: bool) -> None:
    """The checker itself, on imports written in wove/contrib/django/conf.py."""
    found = violations(source, CONTRIB / "django" / "conf.py")
    assert bool(found) is crosses, found
