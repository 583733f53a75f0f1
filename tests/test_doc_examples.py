"""Every Python example in README.md and docs/ runs, so the examples cannot rot.

Each fenced ``python`` (or ``py``) block is run on its own, in a fresh interpreter, and
must exit with status 0 and print no traceback. A block that cannot run as it is (it
needs Django, Starlette, Celery, a database or a network, or it is a fragment) says so
on the line just before its fence, with a reason:

    <!-- not-run: needs a Django project -->

An example whose comments show where Wove points (``# ... /app/report.py:10 ...``, the
``file:line`` of a weave or of a call in a note or a log line) is run as a file of that
name, and each such ``file:line`` must be in what it prints, so the line numbers stay
true.

A block marked ``<!-- setup: what it defines -->`` runs too, and is put before every
later block of its page that runs (the stand-ins that several examples share).

The reference pages of the documentation site are checked here too: each lists every
name of its module's ``__all__``.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

import wove

pytestmark = pytest.mark.slow  # about 60 interpreters, some examples sleep

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
SOURCES = [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]

FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`\s]*)")
PYTHON = frozenset({"python", "py", "python3"})
MARKER = re.compile(r"^\s*<!--\s*(?P<kind>not-run|setup):(?P<text>.*?)-->\s*$")
MARKER_WORDS = ("not-run", "setup:")
TIMEOUT = 30  # seconds per example; the slowest one takes about 1 s
# A `file:line` the example shows in its comments, as it would print when run as /app/<file>.
WHERE = re.compile(r"/app/(\w+\.py):(\d+)")


@dataclass(frozen=True)
class Block:
    path: str  # relative to the repository, e.g. "docs/basics.md"
    line: int  # the fence's line, 1-based
    code: str  # with the page's setup blocks before it
    skip_reason: str | None  # None: run it

    @property
    def id(self) -> str:
        return f"{self.path}:{self.line}"


def _blocks(path: Path) -> list[Block]:
    lines = path.read_text(encoding="utf-8").splitlines()
    relative = path.relative_to(ROOT).as_posix()
    blocks = []
    setup = ""
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if not opening:
            index += 1
            continue
        fence, indent = opening["fence"], opening["indent"]
        end = index + 1
        while end < len(lines):
            closing = FENCE.match(lines[end])
            if (
                closing
                and closing["fence"][0] == fence[0]
                and len(closing["fence"]) >= len(fence)
                and not closing["info"]
            ):
                break
            end += 1
        if opening["info"].lower() in PYTHON:
            code = "\n".join(line.removeprefix(indent) for line in lines[index + 1 : end]) + "\n"
            marker = MARKER.match(lines[index - 1]) if index else None
            kind = marker["kind"] if marker else None
            reason = marker["text"].strip() if kind == "not-run" else None
            blocks.append(Block(relative, index + 1, setup + code, reason))
            if kind == "setup":
                setup += code
        index = end + 1
    return blocks


BLOCKS = [block for path in SOURCES for block in _blocks(path)]
RUNNABLE = [block for block in BLOCKS if block.skip_reason is None]


def test_the_examples_are_found():
    assert len(BLOCKS) >= 40
    assert any(block.path == "README.md" for block in RUNNABLE)


def test_not_run_markers_give_a_reason():
    unexplained = [block.id for block in BLOCKS if block.skip_reason == ""]
    assert unexplained == [], "say why a block is not run: <!-- not-run: why -->"


@pytest.mark.parametrize("path", SOURCES, ids=[p.relative_to(ROOT).as_posix() for p in SOURCES])
def test_every_marker_stands_just_before_a_python_block(path: Path):
    relative = path.relative_to(ROOT).as_posix()
    fences = {block.line for block in BLOCKS if block.path == relative}
    lines = path.read_text(encoding="utf-8").splitlines()
    stray = [
        f"{relative}:{number}"
        for number, line in enumerate(lines, 1)
        if line.lstrip().startswith("<!--")
        and any(word in line for word in MARKER_WORDS)
        and not (MARKER.match(line) and number + 1 in fences)
    ]
    assert stray == []


@pytest.mark.parametrize("block", RUNNABLE, ids=[block.id for block in RUNNABLE])
def test_example_runs(block: Block, tmp_path: Path):
    env = dict(os.environ)
    # The wove that this test imports (the checkout, or the installed package).
    env["PYTHONPATH"] = os.path.dirname(os.path.dirname(wove.__file__))
    env.pop("DJANGO_SETTINGS_MODULE", None)
    places = WHERE.findall(block.code)
    if places:  # run as the file its comments name, to check the line numbers it shows
        script = tmp_path / places[0][0]
        script.write_text(block.code, encoding="utf-8")
        command = [sys.executable, "-P", str(script)]
    else:
        command = [sys.executable, "-P", "-c", block.code]
    done = subprocess.run(
        command,
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    report = f"{block.id} exited with {done.returncode}\n{done.stdout}\n{done.stderr}"
    assert done.returncode == 0, report
    assert "Traceback (most recent call last)" not in done.stderr, report
    output = done.stdout + done.stderr
    wrong = [
        f"{name}:{line}"
        for name, line in places
        if not re.search(rf"/{re.escape(name)}:{line}\b", output)
    ]
    assert wrong == [], f"shown in the comments but not printed: {wrong}\n{report}"


def _all_of(module_file: Path) -> list[str]:
    for node in ast.parse(module_file.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == "__all__" for target in node.targets
        ):
            return list(ast.literal_eval(node.value))
    raise AssertionError(f"{module_file} has no __all__")


REFERENCE = {
    "wove": "reference/wove.md",
    "wove.lowlevel": "reference/lowlevel.md",
    "wove.contrib.django": "reference/contrib-django.md",
    "wove.contrib.starlette": "reference/contrib-starlette.md",
    "wove.contrib.celery": "reference/contrib-celery.md",
    "wove.contrib.dask": "reference/contrib-dask.md",
    "wove.contrib.process": "reference/contrib-process.md",
    "wove.contrib.remote": "reference/contrib-remote.md",
    "wove.contrib.rq": "reference/contrib-rq.md",
    "wove.contrib.opentelemetry": "reference/contrib-opentelemetry.md",
    "wove.contrib.traces": "reference/contrib-traces.md",
}


def _module_file(module: str) -> Path:
    path = ROOT.joinpath(*module.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def test_every_contrib_package_has_a_reference_page():
    packages = {
        f"wove.contrib.{path.parent.name}"
        for path in (ROOT / "wove" / "contrib").glob("*/__init__.py")
    }
    assert packages <= set(REFERENCE)


@pytest.mark.parametrize("module", sorted(REFERENCE))
def test_the_reference_page_lists_every_public_name(module: str):
    page = (DOCS / REFERENCE[module]).read_text(encoding="utf-8")
    # `::: wove.weave.weave` documents `wove.weave` where a submodule has the same name.
    paths = re.findall(rf"^::: ({re.escape(module)}\.[\w.]+)\s*$", page, re.MULTILINE)
    assert {path.rpartition(".")[2] for path in paths} == set(_all_of(_module_file(module)))
