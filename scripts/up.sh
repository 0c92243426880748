#!/usr/bin/env bash
# The main job, on one machine: set up (idempotent), start `genos serve`
# (embedded SQLite in /var/lib/genos) unless one already answers, then
# `genos up` the example request and print the URL where its desktop is live.
# The server keeps running in the background: its log and pid are in the
# data directory; stop it with: kill "$(cat /var/lib/genos/serve.pid)"
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
prompt=${1:-"I need a Linux environment with Tor browser for secure browsing"}
export GENOS_DATA_DIR=${GENOS_DATA_DIR:-/var/lib/genos}
export GENOS_URL=${GENOS_URL:-http://127.0.0.1:8731}
mkdir -p "$GENOS_DATA_DIR"

ready() { curl -fsS -o /dev/null "$GENOS_URL/readyz" 2>/dev/null; }
if ! ready; then
  port=${GENOS_URL##*:}
  echo "up: starting genos serve on port $port (log: $GENOS_DATA_DIR/serve.log)"
  nohup .venv/bin/genos serve --port "$port" >>"$GENOS_DATA_DIR/serve.log" 2>&1 &
  echo $! >"$GENOS_DATA_DIR/serve.pid"
  for _ in $(seq 1 600); do
    ready && break
    kill -0 "$(cat "$GENOS_DATA_DIR/serve.pid")" 2>/dev/null || {
      echo "up: genos serve exited; see $GENOS_DATA_DIR/serve.log" >&2; exit 1; }
    sleep 0.1
  done
  ready || { echo "up: genos serve did not become ready" >&2; exit 1; }
fi
# The first request builds the image layers (a minute or two); later ones are cached.
.venv/bin/genos up "$prompt"
