#!/usr/bin/env bash
# Runs every check and test of the workspace. Installs first what is missing: redis-server (the
# integration tests start their own redis-server processes on free loopback ports), redis-sentinel
# (tests/sentinel.rs starts three sentinels), chromium (the dashboard test drives a headless
# chromium) and promtool (Debian package `prometheus`, for the rules in deploy/prometheus/).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v redis-server >/dev/null 2>&1; then
  echo "redis-server not found: installing it (apt-get)" >&2
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server >/dev/null
fi
redis-server --version

# tests/sentinel.rs starts a Sentinel deployment (a master, a replica, three sentinels).
if ! command -v redis-sentinel >/dev/null 2>&1; then
  echo "redis-sentinel not found: installing it (apt-get)" >&2
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-sentinel >/dev/null
fi

# tests/dashboard.rs checks the dashboard in a real headless browser (it fails without one).
if ! command -v chromium >/dev/null 2>&1 && [ -z "${CHROMIUM:-}" ]; then
  echo "chromium not found: installing it (apt-get)" >&2
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi

if ! command -v python3 >/dev/null 2>&1; then
  echo "python3 not found (scripts/import_circles.py needs it): installing it (apt-get)" >&2
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3 >/dev/null
fi

# promtool (Debian package `prometheus`) checks the alert rules in deploy/prometheus/.
if ! command -v promtool >/dev/null 2>&1; then
  echo "promtool not found (it checks deploy/prometheus/*.yml): installing prometheus (apt-get)" >&2
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi

# Disk: every test binary, the examples and trybuild's own build of the macros' dependencies
# (target/tests/trybuild) are linked with line tables only (Cargo.toml's [profile.dev]; exported
# too, because trybuild's nested cargo reads no profile of ours), and no incremental caches are
# written (a whole run recompiles anyway). Said up front: when the disk fills, the error is
# rustc's "No space left on device" in whatever step was running.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
export CARGO_PROFILE_DEV_DEBUG="${CARGO_PROFILE_DEV_DEBUG:-line-tables-only}"
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
mkdir -p "$TARGET_DIR"
echo "free space for $TARGET_DIR: $(df -h "$TARGET_DIR" | awk 'NR==2 {print $4}')" \
  "(a clean run of this script writes about 7 GB there)" >&2

# The Debian packages start a system redis on 6379 (and a sentinel on 26379, where systemd runs);
# the tests do not need them (they start their own).
cargo fmt --all --check
# The Prometheus rules: syntax and templates, then their unit tests (input series -> alerts).
if ! command -v promtool >/dev/null 2>&1; then
  echo "error: promtool is required to check deploy/prometheus/*.yml and was not installed;" \
    "install the Debian package 'prometheus' (apt-get install prometheus)" >&2
  exit 1
fi
promtool check rules deploy/prometheus/*.yml
promtool test rules deploy/prometheus/tests/*.test.yml
# architecture.md promises no import circle among cache-core's modules.
python3 scripts/import_circles.py
cargo clippy --workspace --all-targets -- -D warnings
# The API docs of every crate and feature, with rustdoc's warnings (broken intra-doc links, bad
# HTML...) as errors.
RUSTDOCFLAGS="-D warnings" cargo doc --all-features --no-deps
# The published crates package and build from their packages alone (no file outside them, no
# path-only dependency): cargo packages cache-macros, then verifies cache-core against it through
# a local registry overlay (target/package/tmp-registry), reading only the crates.io index.
# --allow-dirty: a developer's uncommitted changes are checked too (CI's clone is clean anyway).
cargo publish --dry-run --allow-dirty -p cache-macros -p cache-core
cargo test --workspace --no-fail-fast
# The side-by-side benchmark in its quick mode (debug build, small counts): it keeps compiling and
# running; its figures are not meaningful here (see README, "Benchmarks: side by side").
COMPARE_QUICK=1 cargo test -p cache-benches --bench compare
echo "$TARGET_DIR now holds $(du -sh "$TARGET_DIR" | cut -f1)" >&2
