#!/usr/bin/env bash
# Every check CI runs, in the order that fails fastest: lint, types, tests.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
ruff check src tests bench
ruff format --check src tests bench
mypy src
pytest "$@"
