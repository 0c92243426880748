#!/usr/bin/env bash
# Build the GenOS web client into web/dist/ (served by `genos serve` at /).
# Idempotent: installs dependencies only when package-lock.json changed and
# rebuilds only when an input changed. FORCE=1 rebuilds anyway.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

command -v node >/dev/null || { echo "web/build.sh: node is not installed" >&2; exit 1; }
command -v npm >/dev/null || { echo "web/build.sh: npm is not installed" >&2; exit 1; }

hash_of() { sha256sum "$@" | sha256sum | cut -c1-64; }

# 1. Dependencies (from the npm registry, pinned by package-lock.json).
deps_stamp=node_modules/.genos-deps
if [ -f package-lock.json ]; then
  want=$(hash_of package.json package-lock.json)
  if [ "$(cat "$deps_stamp" 2>/dev/null)" != "$want" ] || [ ! -x node_modules/.bin/esbuild ]; then
    npm ci --no-audit --no-fund --loglevel=error
    echo "$want" >"$deps_stamp"
  fi
else
  npm install --no-audit --no-fund --loglevel=error
  echo "$(hash_of package.json package-lock.json)" >"$deps_stamp"
fi

# 2. Icons (committed; drawn again only if missing).
if [ ! -f icons/icon-192.png ] || [ ! -f icons/icon-512.png ]; then
  python3 icons/make_icons.py
fi

# 3. Bundle, unless nothing changed since the last build.
inputs=(build.sh package.json package-lock.json index.html style.css manifest.webmanifest sw.js
        spice-html5.js mic-worklet.js icons/icon-192.png icons/icon-512.png)
mapfile -t sources < <(find src -type f -name '*.js' | LC_ALL=C sort)
spice=node_modules/@spice-project/spice-html5
want=$(hash_of "${inputs[@]}" "${sources[@]}" node_modules/@novnc/novnc/package.json "$spice/package.json")
if [ "${FORCE:-0}" != 1 ] && [ "$(cat dist/.genos-build 2>/dev/null)" = "$want" ]; then
  echo "web/dist is up to date"
  exit 0
fi

# Build into a fresh directory and swap it in, so a running server never
# serves a half-written dist/.
tmp=$(mktemp -d dist.tmp.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
node_modules/.bin/esbuild src/main.js --bundle --format=esm --target=es2022 \
  --minify --sourcemap --legal-comments=linked --log-level=warning --outfile="$tmp/app.js" \
  --external:./spice-html5.js
# spice-html5 is LGPL-3.0-or-later: its own files, unmodified, loaded by app.js
# at run time through spice-html5.js, never bundled (see that file).
mkdir -p "$tmp/spice-html5/thirdparty"
cp "$spice"/src/*.js "$tmp/spice-html5/"
cp "$spice"/src/thirdparty/*.js "$tmp/spice-html5/thirdparty/"
cp index.html style.css manifest.webmanifest sw.js spice-html5.js mic-worklet.js "$tmp/"
mkdir "$tmp/licenses"
cp node_modules/@novnc/novnc/LICENSE.txt "$tmp/licenses/novnc.txt"
cp "$spice/COPYING.LESSER" "$tmp/licenses/spice-html5.txt"  # the LGPL-3.0 ...
cp "$spice/COPYING" "$tmp/licenses/spice-html5-gpl.txt"     # ... and the GPL-3.0 it builds on
mkdir "$tmp/icons"
cp icons/icon-192.png icons/icon-512.png "$tmp/icons/"
echo "$want" >"$tmp/.genos-build"
chmod -R a+rX "$tmp"
rm -rf dist.old
[ -d dist ] && mv dist dist.old
mv "$tmp" dist
rm -rf dist.old
trap - EXIT
echo "web/dist built ($(du -sh dist | cut -f1))"
