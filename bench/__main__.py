"""``python -m bench``: run every workload against its baseline and print one table.

Exit status 1 when any target is missed. ``--only NAME`` (repeatable) runs the
workloads whose name starts with NAME; ``--runs N`` sets the runs per workload (medians);
``--json PATH`` also writes the results there.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from . import blocks, celery, chains, dask, django, latency, mapping, memory, otel, process, rq
from .harness import MIN_RUNS, Row, Skipped, Workload

WORKLOADS: list[Workload] = [
    *mapping.WORKLOADS,
    *chains.WORKLOADS,
    *blocks.WORKLOADS,
    *latency.WORKLOADS,
    *memory.WORKLOADS,
    *django.WORKLOADS,
    *celery.WORKLOADS,
    *process.WORKLOADS,
    *rq.WORKLOADS,
    *dask.WORKLOADS,
    *otel.WORKLOADS,
]
HEADERS = ("workload", "wove", "baseline", "ratio", "target", "met?")


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    gil = getattr(sys, "_is_gil_enabled", lambda: True)()
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "platform": platform.platform(),
        "python": f"{platform.python_implementation()} {platform.python_version()}"
        + ("" if gil else " (free-threaded)"),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    }


def _quantity(value: float, unit: str) -> str:
    if unit == "B":
        return f"{value / 2**20:.1f} MiB"
    if value >= 1:
        return f"{value:.3f} s"
    if value >= 1e-3:
        return f"{value * 1e3:.2f} ms"
    return f"{value * 1e6:.1f} µs"


def table(rows: list[Row]) -> str:
    cells = [
        (
            row.name,
            _quantity(row.wove, row.unit),
            _quantity(row.baseline, row.unit),
            f"{row.ratio:.2f}",
            f"<= {row.target:g}",
            "yes" if row.met else "NO",
        )
        for row in rows
    ]
    widths = [max(len(line[i]) for line in [HEADERS, *cells]) for i in range(len(HEADERS))]

    def line(values: tuple[str, ...]) -> str:
        return "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(HEADERS), rule, *(line(c) for c in cells)])


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--only",
        action="append",
        metavar="NAME",
        help="run only workloads whose name starts with NAME (repeatable): "
        + ", ".join(w.name for w in WORKLOADS),
    )
    parser.add_argument(
        "--runs",
        type=int,
        default=7,
        metavar="N",
        help=f"timed runs per workload, medians over them (default 7, at least {MIN_RUNS})",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write results here")
    args = parser.parse_args(argv)
    if args.runs < MIN_RUNS:
        parser.error(f"--runs must be at least {MIN_RUNS}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    selected = [
        w for w in WORKLOADS if not args.only or any(w.name.startswith(n) for n in args.only)
    ]
    if not selected:
        print(f"no workload matches {args.only}", file=sys.stderr)
        return 2
    info = machine()
    print(f"Wove benchmark, {info['date']}")
    print(f"machine: {info['cpus']} CPUs ({info['cpu']}), {info['platform']}")
    print(f"python:  {info['python']}; {args.runs} runs per workload, medians")
    print()
    rows: list[Row] = []
    skipped: dict[str, str] = {}
    started = time.perf_counter()
    for workload in selected:
        print(f"running {workload.name} ...", file=sys.stderr, flush=True)
        try:
            rows.extend(workload.measure(args.runs))
        except Skipped as reason:
            skipped[workload.name] = str(reason)
    elapsed = time.perf_counter() - started
    if rows:
        print(table(rows))
        print()
    for workload in selected:
        print(f"  {workload.name}: {workload.description}")
    notes = [f"  {row.name}: {row.note}" for row in rows if row.note]
    if notes:
        print("notes:")
        print("\n".join(notes))
    if skipped:
        print("skipped (not measured):")
        print("\n".join(f"  {name}: {reason}" for name, reason in skipped.items()))
    missed = [row.name for row in rows if not row.met]
    print()
    print(f"{len(rows) - len(missed)}/{len(rows)} targets met in {elapsed:.0f} s", end="")
    print(f"; missed: {', '.join(missed)}" if missed else "", end="")
    print(f"; skipped: {', '.join(skipped)}" if skipped else "")
    if args.json is not None:
        payload = {
            "machine": info,
            "runs": args.runs,
            "rows": [
                {
                    "workload": row.name,
                    "wove": row.wove,
                    "baseline": row.baseline,
                    "unit": row.unit,
                    "ratio": row.ratio,
                    "target": row.target,
                    "met": row.met,
                    "runs": row.runs,
                    "note": row.note,
                }
                for row in rows
            ],
            "skipped": skipped,
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
