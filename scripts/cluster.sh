#!/usr/bin/env bash
# A GenOS cluster on this machine: three etcd members, PostgreSQL, nodes and
# control-plane replicas (see `genos cluster --help`). Sets up first (idempotent).
#   bash scripts/cluster.sh up [--nodes N] [--replicas N] [--driver oci|fake]
#   bash scripts/cluster.sh status [--json]
#   bash scripts/cluster.sh down
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >/dev/null
exec .venv/bin/genos cluster "$@"
