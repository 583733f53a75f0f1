#!/usr/bin/env bash
# Starlette middleware overhead on a 10-task weave: two uvicorn servers on 127.0.0.1,
# one with WoveMiddleware (V=1 recording with Server-Timing, 2 without it, 3 record=False)
# and one without, loaded in turns by wrk (Debian package `wrk`).
# Usage (from the repository root): bench/starlette/wrk_overhead.sh [WORK seconds per task]
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$(cd ../.. && pwd)
UVICORN="$ROOT/.venv/bin/uvicorn"
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk"; exit 2; }
W=${1:-0}
WITH_WOVE=${V:-1} WORK=$W "$UVICORN" --factory app:make --port 8811 --log-level warning --no-access-log & P1=$!
WITH_WOVE=0 WORK=$W "$UVICORN" --factory app:make --port 8812 --log-level warning --no-access-log & P2=$!
trap 'kill $P1 $P2 2>/dev/null; wait $P1 $P2 2>/dev/null' EXIT
# Until both answer (a busy machine can take longer than a fixed pause to start them).
for _ in $(seq 150); do
  curl -s -o /dev/null http://127.0.0.1:8811/ && curl -s -o /dev/null http://127.0.0.1:8812/ && break
  sleep 0.2
done
curl -s -D - http://127.0.0.1:8811/ -o /dev/null | grep -i server-timing | cut -c1-80 || true
wrk -t1 -c8 -d3s http://127.0.0.1:8811/ >/dev/null
wrk -t1 -c8 -d3s http://127.0.0.1:8812/ >/dev/null
for _ in 1 2 3 4 5; do
  a=$(wrk -t1 -c8 -d6s --latency http://127.0.0.1:8811/ | grep -E "Requests/sec|50%" | tr -s ' ' | tr '\n' ' ')
  b=$(wrk -t1 -c8 -d6s --latency http://127.0.0.1:8812/ | grep -E "Requests/sec|50%" | tr -s ' ' | tr '\n' ' ')
  echo "with: $a | without: $b"
done
