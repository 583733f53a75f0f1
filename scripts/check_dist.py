"""Build Wove's sdist and wheel into dist/ and check them as a user gets them (`make dist`).

1. The files git would ship (tracked, and untracked but not ignored) are copied to a
   temporary directory and built there with ``python -m build`` (the sdist, then the
   wheel from the sdist), so nothing an earlier install left in build/ or wove.egg-info
   gets in. The build's output must not contain the word "warning".
2. Both archives hold LICENSE; the wheel holds only wove/ and its .dist-info; the
   metadata has the version of wove/__init__.py, the SPDX license expression and only
   valid trove classifiers.
3. ``twine check --strict`` on both.
4. For each user extra (none, spawn, django, starlette, celery, process, rq, dask,
   opentelemetry), a fresh venv gets the wheel with that extra, and imports wove and the
   matching module there.

Run with the project's venv (requirements/dev.txt has build, twine and
trove-classifiers). Exits non-zero, saying why, at the first check that fails.
"""

from __future__ import annotations

import concurrent.futures
import email.parser
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import textwrap
import time
import zipfile
from pathlib import Path
from typing import Any, NoReturn

from trove_classifiers import classifiers as TROVE_CLASSIFIERS

ROOT = Path(__file__).resolve().parent.parent
DIST = ROOT / "dist"

# What each venv runs after installing the wheel with the extra: imports as a user would,
# and one weave, which needs nothing outside the standard library.
CORE = """
import wove
from wove import weave
with weave(x=2) as w:
    @w.do
    def doubled(x):
        return x * 2
assert w.result.final == 4, w.result.final
"""
CHECKS: dict[str, str] = {
    # Without an extra, wove brings no third-party distribution at all.
    "": """
from importlib.metadata import distributions
extra = {d.metadata["Name"].lower() for d in distributions()} - {"wove", "pip", "setuptools"}
assert not extra, f"installed with no extra: {sorted(extra)}"
""",
    "spawn": """
import cloudpickle
""",
    # The adapter imports without configured settings; configured, its app, middleware
    # and URLs load and Django's system checks pass.
    "django": """
import wove.contrib.django
from django.conf import settings
settings.configure(
    INSTALLED_APPS=["wove.contrib.django"],
    MIDDLEWARE=["wove.contrib.django.middleware.WoveMiddleware"],
    ROOT_URLCONF="wove.contrib.django.urls",
    SECRET_KEY="check-dist-" + "x" * 40,
)
import django
django.setup()
import wove.contrib.django.middleware, wove.contrib.django.urls
import io
from django.core.management import call_command
call_command("check", fail_level="WARNING", stdout=io.StringIO())
""",
    "starlette": """
import wove.contrib.starlette
from starlette.applications import Starlette
from starlette.middleware import Middleware
Starlette(middleware=[Middleware(wove.contrib.starlette.WoveMiddleware)])
""",
    "celery": """
import wove.contrib.celery
import cloudpickle
""",
    # A real call in a worker process: the pool's child imports the installed wove.
    "process": """
import os
from wove.contrib.process import ProcessEnv
pool = ProcessEnv(workers=1)
remove = wove.register_env("process", pool)
factor = 3
with weave(x=2) as w:
    @w.do(env="process")
    def remote(x):
        import os
        return x * factor, os.getpid()
assert w.result.remote[0] == 6 and w.result.remote[1] != os.getpid(), w.result.remote
pool.close()
remove()
""",
    # Imports, and an environment built (no Redis is contacted until a call is made).
    "rq": """
import wove.contrib.rq.worker
from wove.contrib.rq import RQEnv
RQEnv("redis://127.0.0.1:6379/0", keys=["k" * 40])
import cloudpickle
""",
    # Imports, and an environment built (the scheduler is contacted on the first call).
    "dask": """
from wove.contrib.dask import DaskEnv
DaskEnv("tcp://127.0.0.1:8786")
import distributed, cloudpickle
""",
    # Only opentelemetry-api: the instrumentor works without opentelemetry-instrumentation,
    # and is the entry point `opentelemetry-instrument` finds.
    "opentelemetry": """
from importlib.metadata import entry_points
from wove.contrib.opentelemetry import WoveInstrumentor
(entry_point,) = entry_points(group="opentelemetry_instrumentor", name="wove")
assert entry_point.load() is WoveInstrumentor
WoveInstrumentor().instrument()
with weave(x=2) as w:
    @w.do
    def tripled(x):
        return x * 3
assert w.result.final == 6, w.result.final
WoveInstrumentor().uninstrument()
""",
}
# Printed after each check: the module imported and the distributions the extra brought.
REPORT = """
from importlib.metadata import distributions
names = sorted(
    f'{d.metadata["Name"]} {d.version}' for d in distributions()
    if d.metadata["Name"].lower() not in {"pip", "setuptools"}
)
print(", ".join(names))
"""
MODULES = {
    "": "wove",
    "spawn": "wove, cloudpickle",
    "django": "wove.contrib.django (+ django.setup(), check)",
    "starlette": "wove.contrib.starlette",
    "celery": "wove.contrib.celery",
    "process": "wove.contrib.process (+ one call in a worker process)",
    "rq": "wove.contrib.rq",
    "dask": "wove.contrib.dask",
    "opentelemetry": "wove.contrib.opentelemetry (+ its entry point)",
}


def fail(message: str) -> NoReturn:
    sys.exit(f"make dist: {message}")


def run(args: list[Any], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], text=True, capture_output=True, **kwargs)


def shipped_files() -> list[str]:
    out = run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT)
    if out.returncode:
        fail(f"git ls-files failed (a git checkout is needed):\n{out.stderr}")
    return [name for name in out.stdout.split("\0") if name and (ROOT / name).is_file()]


def build(workdir: Path) -> tuple[Path, Path]:
    source = workdir / "source"
    for name in shipped_files():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, source / name)
    for old in DIST.glob("wove-*"):
        old.unlink()
    # With PYTHONDONTWRITEBYTECODE set, setuptools warns that it skips byte-compiling:
    # that says something about this shell, not about the package.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    out = run([sys.executable, "-m", "build", "--outdir", DIST, source], env=env)
    log = out.stdout + out.stderr
    (workdir / "build.log").write_text(log)
    if out.returncode:
        fail(f"python -m build failed:\n{log}")
    warnings = [line for line in log.splitlines() if "warning" in line.lower()]
    if warnings:
        fail("the build printed warnings:\n  " + "\n  ".join(warnings))
    sdists, wheels = list(DIST.glob("wove-*.tar.gz")), list(DIST.glob("wove-*.whl"))
    if len(sdists) != 1 or len(wheels) != 1:
        fail(f"expected one sdist and one wheel in dist/, found {sdists + wheels}")
    return sdists[0], wheels[0]


def version() -> str:
    match = re.search(r'^__version__ = "([^"]+)"', (ROOT / "wove/__init__.py").read_text(), re.M)
    if not match:
        fail("no __version__ in wove/__init__.py")
    return match[1]


#: The Django trace pages' templates: package data both archives must ship.
TEMPLATES = tuple(
    f"wove/contrib/django/templates/wove/{name}"
    for name in ("base.html", "trace_list.html", "trace_detail.html")
)


def check_archives(sdist: Path, wheel: Path) -> None:
    expected = version()
    top = f"wove-{expected}"
    if sdist.name != f"{top}.tar.gz" or not wheel.name.startswith(f"{top}-"):
        fail(f"{sdist.name}, {wheel.name}: not version {expected} of wove/__init__.py")
    with tarfile.open(sdist) as tar:
        names = sdist_names = set(tar.getnames())
    for needed in ("LICENSE", "README.md", "CHANGELOG.md", "pyproject.toml", "wove/py.typed"):
        if f"{top}/{needed}" not in names:
            fail(f"{sdist.name} lacks {needed}")
    with zipfile.ZipFile(wheel) as whl:
        names = set(whl.namelist())
        metadata = whl.read(f"{top}.dist-info/METADATA").decode()
    if f"{top}.dist-info/licenses/LICENSE" not in names:
        fail(f"{wheel.name} lacks {top}.dist-info/licenses/LICENSE")
    for shipped in ("wove/py.typed", *TEMPLATES):
        if shipped not in names:
            fail(f"{wheel.name} lacks {shipped}")
        if f"{top}/{shipped}" not in sdist_names:
            fail(f"{sdist.name} lacks {shipped}")
    strays = sorted(n for n in names if not n.startswith(("wove/", f"{top}.dist-info/")))
    if strays:
        fail(f"{wheel.name} holds files outside wove/: {strays}")
    headers = email.parser.Parser().parsestr(metadata, headersonly=True)
    if headers["License-Expression"] != "MIT" or headers["License-File"] != "LICENSE":
        fail("the wheel's METADATA lacks License-Expression: MIT or License-File: LICENSE")
    classifiers = headers.get_all("Classifier") or []
    invalid = [c for c in classifiers if c not in TROVE_CLASSIFIERS]
    if invalid:
        fail(f"not trove classifiers: {invalid}")
    if any(c.startswith("License ::") for c in classifiers):
        fail("a License :: classifier beside the SPDX license expression")


def twine_check(sdist: Path, wheel: Path) -> str:
    out = run([sys.executable, "-m", "twine", "check", "--strict", sdist, wheel])
    report = re.sub(r"\x1b\[[0-9;]*m", "", out.stdout + out.stderr).strip()
    if out.returncode:
        fail(f"twine check --strict failed:\n{report}")
    return report


def check_extra(extra: str, wheel: Path, workdir: Path) -> str:
    venv = workdir / f"venv-{extra or 'none'}"
    python = venv / "bin" / "python"
    requirement = f"{wheel}[{extra}]" if extra else str(wheel)
    for step in (
        [sys.executable, "-m", "venv", venv],
        [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", requirement],
    ):
        out = run(step, cwd=workdir)
        if out.returncode:
            return f"FAILED: {' '.join(map(str, step))}\n{out.stdout}{out.stderr}"
    script = textwrap.dedent(CORE) + textwrap.dedent(CHECKS[extra]) + textwrap.dedent(REPORT)
    # Run from the venv's directory, so the checkout's wove/ cannot be imported instead.
    out = run([python, "-c", script], cwd=workdir, env={"PATH": os.environ.get("PATH", "")})
    if out.returncode:
        return f"FAILED: import {MODULES[extra]}\n{out.stdout}{out.stderr}"
    return f"import {MODULES[extra]}: ok; installed: {out.stdout.strip()}"


def main() -> None:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="wove-dist-") as tmp:
        workdir = Path(tmp)
        sdist, wheel = build(workdir)
        print(f"built  {sdist.relative_to(ROOT)} ({sdist.stat().st_size / 1024:.0f} KiB)")
        print(f"built  {wheel.relative_to(ROOT)} ({wheel.stat().st_size / 1024:.0f} KiB)")
        print("        no warning in the build output")
        check_archives(sdist, wheel)
        print("        LICENSE in both, License-Expression: MIT, valid classifiers")
        for line in twine_check(sdist, wheel).splitlines():
            print(f"twine  {line}")
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(CHECKS)) as pool:
            results = {extra: pool.submit(check_extra, extra, wheel, workdir) for extra in CHECKS}
        failed = False
        for extra, future in results.items():
            result = future.result()
            failed = failed or result.startswith("FAILED")
            print(f"wheel{'[' + extra + ']' if extra else ''}: {result}")
    if failed:
        fail("a fresh install of the wheel failed (above)")
    print(f"make dist: ok in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
