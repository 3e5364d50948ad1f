#!/usr/bin/env bash
# Installs what the tests need and runs every check: formatting, lints, all tests.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the integration tests start for themselves (each test run starts its
# own servers on free ports in temp dirs; nothing is left running).
need=()
command -v clickhouse-server >/dev/null 2>&1 || [ -x /usr/sbin/clickhouse-server ] || need+=(clickhouse-server)
command -v curl >/dev/null 2>&1 || need+=(curl)
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need+=(postgresql)
# The connect page is tested in a real browser (headless, through WebDriver).
[ -x /usr/bin/chromium ] || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
if [ ${#need[@]} -gt 0 ]; then
  echo "==> installing ${need[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

echo "==> toolchain: $(cargo --version)"
rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt clippy

echo "==> cargo fmt --check"
cargo fmt --all -- --check

echo "==> cargo clippy (warnings are errors)"
cargo clippy --all-targets --locked -- -D warnings

echo "==> cargo test (embedded SQLite store)"
cargo test --locked

# The integration suite again, every server on PostgreSQL (one cluster for the run, a fresh
# database per test). The store contract and the replica tests already run on both stores
# and on PostgreSQL respectively, so they are not repeated.
echo "==> cargo test (PostgreSQL store)"
SWITCHBOARD_TEST_STORE=postgres cargo test --locked --test integration -- \
  --skip store_contract:: --skip replicas::
