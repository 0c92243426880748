#!/usr/bin/env bash
# Set up everything GenOS needs on a Debian 12 host, idempotently:
# apt packages, a virtualenv with GenOS in it, and Debian's package index
# for the composer. Fast when already done (each step checks first).
set -euo pipefail
cd "$(dirname "$0")/.."

# The Debian packages, one list (scripts/packages.txt; tests check it covers
# every host command the code, tests and benchmarks run).
read -r -a APT_PACKAGES <<<"$(sed -e 's/#.*//' scripts/packages.txt | tr '\n' ' ')"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Node and npm for the web client's build: Debian's packages unless some node
# with npm is already installed (a nodejs that bundles npm conflicts with them).
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  missing+=(nodejs npm)
fi
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# Debian's own interpreter, not whatever python3 is first on PATH.
PY=/usr/bin/python3
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import sys; assert sys.version_info[:2] == (3, 11)' 2>/dev/null; then
  rm -rf .venv
  "$PY" -m venv .venv
fi
stamp=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat .venv/.genos-stamp 2>/dev/null)" != "$stamp" ]; then
  echo "setup: installing Python packages into .venv"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[dev]'
  echo "$stamp" > .venv/.genos-stamp
fi

# The web client: noVNC and our modules, bundled into web/dist (skipped when
# its inputs have not changed).
if [ -f web/build.sh ]; then
  bash web/build.sh
fi

# Debian's package index for the composer's knowledge base (cached; refreshed
# when older than a week).
.venv/bin/genos catalog update --if-older-than 7d
