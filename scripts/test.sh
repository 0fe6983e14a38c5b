#!/usr/bin/env bash
# Run every test: format and lint gates, Rust unit/property tests, then the end-to-end
# suite that drives real clients (boto3, AWS CLI, openai, DuckDB) against the real binary.
# Installs what the tests need into a virtualenv outside the clone (reused when present).
set -euo pipefail
cd "$(dirname "$0")/.."

# Reuse a target dir outside the clone (CI and newcomers share build artifacts).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/logbook/target}"
VENV="${LOGBOOK_TEST_VENV:-$HOME/.cache/logbook/venv}"
# The Rust sink conformance suite starts moto's server from this venv too.
export LOGBOOK_TEST_VENV="$VENV"
mkdir -p "$CARGO_TARGET_DIR" "$(dirname "$VENV")"

step() { printf '\n==> %s\n' "$*"; }

step "python test dependencies ($VENV)"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r tests/requirements.txt

step "a real browser for the console tests (Debian's chromium, headless)"
# Playwright (from tests/requirements.txt) drives the system Chromium; it downloads no
# browser of its own. Installed from Debian's packages when missing (needs root or sudo).
export LOGBOOK_CHROMIUM="${LOGBOOK_CHROMIUM:-/usr/bin/chromium}"
if [ ! -x "$LOGBOOK_CHROMIUM" ]; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null; then
      echo "chromium is missing and installing it needs root: run 'apt-get install chromium' as root, or set LOGBOOK_CHROMIUM" >&2
      exit 1
    fi
    SUDO="sudo"
  fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi
"$LOGBOOK_CHROMIUM" --version

step "redis-server for the budgets shared by replicas (Debian's package)"
export LOGBOOK_REDIS_SERVER="${LOGBOOK_REDIS_SERVER:-/usr/bin/redis-server}"
if [ ! -x "$LOGBOOK_REDIS_SERVER" ]; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null; then
      echo "redis-server is missing and installing it needs root: run 'apt-get install redis-server' as root, or set LOGBOOK_REDIS_SERVER" >&2
      exit 1
    fi
    SUDO="sudo"
  fi
  $SUDO apt-get update -qq
  # The tests start their own servers; the package's service is not needed.
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server >/dev/null
fi
"$LOGBOOK_REDIS_SERVER" --version

step "node test clients (npm ci from tests/node/package-lock.json)"
# s3rver (a second S3 implementation), the AWS SDK for JavaScript v3 (runtime, bedrock,
# cloudwatch-logs) and the OpenAI SDK for Node, installed outside the clone and
# reinstalled only when the committed lockfile changes.
NODE_DIR="${LOGBOOK_TEST_NODE:-$HOME/.cache/logbook/node-clients}"
mkdir -p "$NODE_DIR"
if ! cmp -s tests/node/package-lock.json "$NODE_DIR/package-lock.json" || [ ! -d "$NODE_DIR/node_modules" ]; then
  cp tests/node/package.json tests/node/package-lock.json "$NODE_DIR/"
  npm ci --prefix "$NODE_DIR" --no-audit --no-fund --loglevel=error
fi
export S3RVER_BIN="$NODE_DIR/node_modules/.bin/s3rver"
export LOGBOOK_NODE_MODULES="$NODE_DIR/node_modules"

step "prune stale test binaries from the shared target directory"
# Each commit's test binaries get new file names (their hash changes); a target directory
# shared across clones and commits keeps the old ones until the disk fills (CI once failed
# with the linker's bus error that way). Remove an executable in deps/ when a newer one of
# the same name exists; cargo rebuilds whatever it still needs.
prune_stale_binaries() {
  local deps="$CARGO_TARGET_DIR/debug/deps"
  [ -d "$deps" ] || return 0
  find "$deps" -maxdepth 1 -type f -executable ! -name '*.so' ! -name '*.rlib' -printf '%T@\t%p\n' |
    sort -rn | awk -F '\t' '{ p = $2; n = split(p, part, "-"); h = part[n]
      if (n > 1 && length(h) == 16 && h ~ /^[0-9a-f]+$/ && seen[substr(p, 1, length(p) - 17)]++) print p }' |
    xargs -r -d '\n' rm -f
  rm -f "$deps"/*.tmp* 2>/dev/null || true
}
prune_stale_binaries
df -h "$CARGO_TARGET_DIR" | tail -1

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "rust tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked
fi

step "build the logbook binary"
cargo build --locked --bin logbook
export LOGBOOK_BIN="$CARGO_TARGET_DIR/debug/logbook"

step "end-to-end tests with real clients"
cd tests/e2e
"$VENV/bin/python" -m pytest -q -p no:cacheprovider "$@"

step "every protocol test again, over HTTP/2 (prior knowledge)"
# The OpenAI and Anthropic SDKs speak HTTP/2 themselves; boto3, the AWS CLI, requests and
# the client libraries reach Logbook through tests/e2e/h2_forwarder.py (see TESTING.md).
if [ "$#" -eq 0 ]; then
  LOGBOOK_E2E_HTTP=2 "$VENV/bin/python" -m pytest -q -p no:cacheprovider \
    test_bedrock.py test_control_plane.py test_cloudwatch.py test_cloudwatch_metrics.py \
    test_openai.py test_responses.py test_anthropic.py test_client_libraries.py \
    test_alarms.py test_metric_filters.py test_query.py test_scoped_reads.py \
    test_cost.py test_budgets.py
fi
