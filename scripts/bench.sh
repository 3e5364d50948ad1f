#!/usr/bin/env bash
# Installs what the benchmarks need (ClickHouse, PostgreSQL, nginx) and runs them all,
# release build.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
[ -x /usr/sbin/clickhouse-server ] || command -v clickhouse-server >/dev/null 2>&1 || need+=(clickhouse-server)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx)
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need+=(postgresql)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
export PATH="$PATH:/usr/sbin"
cargo bench --bench api -- "$@"
cargo bench --bench gateway -- "$@"
cargo bench --bench vault -- "$@"
cargo bench --bench allocations -- "$@"
cargo bench --bench scale -- "$@"
