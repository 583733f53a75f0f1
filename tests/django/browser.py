"""For the waterfall's screenshot and toolbar panel tests: the test project under
``manage.py runserver`` or uvicorn on a SQLite file, headless Chromium screenshots, and a
PNG reader (zlib only)."""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import zlib
from dataclasses import dataclass
from pathlib import Path

from servers import Server, manage, start_runserver, start_uvicorn

CHROMIUM = "/usr/bin/chromium"  # Debian's package; `make unit` installs it when missing
PROJECT_DIR = Path(__file__).resolve().parent  # holds manage.py


def project_env(database: Path, settings_module: str, **settings: str) -> dict[str, str]:
    """The environment for the test project with ``DEBUG`` on and a SQLite file at
    ``database``: this one, less any WOVE_TEST_ setting, plus ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WOVE_TEST_")}
    env.pop("PYTEST_CURRENT_TEST", None)
    env.update(
        DJANGO_SETTINGS_MODULE=settings_module,
        WOVE_TEST_SQLITE=str(database),
        WOVE_TEST_DEBUG="1",
        PYTHONUNBUFFERED="1",
        **settings,
    )
    return env


def dev_server(
    tmp_path: Path, settings_module: str, *, asgi: bool = False, **settings: str
) -> Server:
    """The test project with ``DEBUG`` on, on a fresh migrated SQLite file of its own,
    under ``manage.py runserver`` (WSGI) or, with ``asgi``, uvicorn. The caller stops it
    (``Server.stop``, by PID)."""
    database = tmp_path / f"db-{len(list(tmp_path.glob('db-*.sqlite3')))}.sqlite3"
    env = project_env(database, settings_module, **settings)
    manage(env, "migrate", "--noinput", "-v", "0")
    return start_uvicorn(tmp_path, env) if asgi else start_runserver(tmp_path, env)


def screenshot(
    url: str, png: Path, *, width: int = 1200, height: int = 900, wait_ms: int = 0
) -> str:
    """Load ``url`` in headless Chromium and save what it shows to ``png``; Chromium's
    output, with the page's console messages (``INFO:CONSOLE`` lines: a Content Security
    Policy violation is one).

    ``wait_ms``: virtual time to let the page's scripts and timers run first. Chromium
    runs in a session of its own, killed by its process group ID in any case, so no
    renderer or GPU process outlives the call.
    """
    output = _chromium(
        [
            f"--user-data-dir={png.parent / (png.stem + '-profile')}",
            "--enable-logging=stderr",
            "--v=0",
            f"--screenshot={png}",
            f"--window-size={width},{height}",
            *([f"--virtual-time-budget={wait_ms}"] if wait_ms else []),
            url,
        ]
    )
    if not png.exists():
        raise RuntimeError(f"chromium wrote no screenshot of {url}:\n{output}")
    return output


def console_messages(output: str) -> list[str]:
    """The page's console messages in Chromium's output (see :func:`screenshot`)."""
    return [line for line in output.splitlines() if ":CONSOLE" in line]


def dump_dom(url: str, profile: Path) -> str:
    """The DOM of ``url`` as headless Chromium built it (``--dump-dom``), as HTML."""
    return _chromium([f"--user-data-dir={profile}", "--dump-dom", url], stderr=False)


def _chromium(arguments: list[str], *, stderr: bool = True) -> str:
    """Run headless Chromium with ``arguments``; its output (stdout, and stderr unless
    told not to). Killed by its process group ID in any case."""
    command = [
        CHROMIUM,
        *("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"),
        *("--disable-background-networking", "--disable-component-update", "--disable-sync"),
        *("--force-color-profile=srgb", "--hide-scrollbars", "--force-device-scale-factor=1"),
        *arguments,
    ]
    process = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT if stderr else subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=90)
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        process.wait(10)
    return output.decode(errors="replace")


@dataclass(frozen=True)
class Image:
    width: int
    height: int
    rows: list[bytes]  # RGB, 3 bytes a pixel

    def pixel(self, x: int, y: int) -> tuple[int, int, int]:
        r, g, b = self.rows[y][3 * x : 3 * x + 3]
        return r, g, b

    def xs(self, y: int, colour: tuple[int, int, int]) -> list[int]:
        """The x of every pixel of row ``y`` that is exactly ``colour``."""
        row, pattern, found = self.rows[y], bytes(colour), []
        at = row.find(pattern)
        while at != -1:
            if at % 3 == 0:
                found.append(at // 3)
            at = row.find(pattern, at + 1)
        return found


def read_png(path: Path) -> Image:
    """An 8-bit RGB or RGBA, non-interlaced PNG (what Chromium writes), as RGB rows."""
    data = path.read_bytes()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path} is not a PNG")
    position, chunks = 8, []
    header = b""
    while position < len(data):
        length, kind = struct.unpack(">I4s", data[position : position + 8])
        body = data[position + 8 : position + 8 + length]
        position += 12 + length
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            chunks.append(body)
        elif kind == b"IEND":
            break
    width, height, depth, colour_type, _, _, interlace = struct.unpack(">IIBBBBB", header)
    if depth != 8 or interlace or colour_type not in (2, 6):
        raise ValueError(f"unsupported PNG: depth {depth}, colour type {colour_type}")
    channels = 3 if colour_type == 2 else 4
    stride = width * channels
    raw = zlib.decompress(b"".join(chunks))
    previous = bytes(stride)
    rows = []
    for y in range(height):
        start = y * (stride + 1)
        line = _unfilter(raw[start], raw[start + 1 : start + 1 + stride], previous, channels)
        previous = line
        rows.append(line if channels == 3 else _drop_alpha(line))
    return Image(width, height, rows)


def _unfilter(kind: int, line: bytes, above: bytes, bpp: int) -> bytes:
    if kind == 0:
        return line
    if kind == 2:
        return bytes((a + b) & 0xFF for a, b in zip(line, above, strict=True))
    out = bytearray(line)
    for i in range(len(out)):
        left = out[i - bpp] if i >= bpp else 0
        if kind == 1:
            out[i] = (out[i] + left) & 0xFF
        elif kind == 3:
            out[i] = (out[i] + ((left + above[i]) >> 1)) & 0xFF
        elif kind == 4:
            up, corner = above[i], above[i - bpp] if i >= bpp else 0
            p = left + up - corner
            pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
            pred = left if pa <= pb and pa <= pc else up if pb <= pc else corner
            out[i] = (out[i] + pred) & 0xFF
        else:
            raise ValueError(f"bad PNG filter type {kind}")
    return bytes(out)


def _drop_alpha(line: bytes) -> bytes:
    out = bytearray(len(line) // 4 * 3)
    out[0::3], out[1::3], out[2::3] = line[0::4], line[1::4], line[2::4]
    return bytes(out)


def hex_colour(value: str) -> tuple[int, int, int]:
    value = value.lstrip("#")
    return int(value[0:2], 16), int(value[2:4], 16), int(value[4:6], 16)


def bands(
    image: Image,
    colour: tuple[int, int, int],
    *,
    x_from: int = 0,
    x_to: int | None = None,
    least: int = 1,
) -> list[tuple[int, int]]:
    """Runs of rows (first, last) with at least ``least`` pixels of exactly ``colour``
    between ``x_from`` and ``x_to``: one per bar drawn on a line of its own."""
    x_to = image.width if x_to is None else x_to
    found: list[tuple[int, int]] = []
    for y in range(image.height):
        if len([x for x in image.xs(y, colour) if x_from <= x < x_to]) >= least:
            if found and found[-1][1] == y - 1:
                found[-1] = (found[-1][0], y)
            else:
                found.append((y, y))
    return found
