#!/usr/bin/env bash
# The main job: set up (idempotent), then turn the example request into an
# environment spec. Grows into `genos up` as the runtime and gateway land.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
prompt=${1:-"I need a Linux environment with Tor browser for secure browsing"}
.venv/bin/genos compose "$prompt"
