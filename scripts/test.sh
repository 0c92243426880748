#!/usr/bin/env bash
# Set up (idempotent), then run every check and the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/check.sh "$@"
