#!/usr/bin/env bash
#! scripts/test.sh — the project's test command: builds the binaries that the cluster
#! tests launch as real processes, then runs every test in the workspace.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then . "$HOME/.cargo/env"; fi
command -v cargo >/dev/null 2>&1 || { echo "cargo not found: install Rust (https://rustup.rs) first" >&2; exit 1; }
# Format and lint first: CI fails on either, and they answer in seconds where the tests take minutes.
# A minimal rustup profile lacks the two components; without rustup the check below says what is missing.
if command -v rustup >/dev/null 2>&1; then
  cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt
  cargo clippy --version >/dev/null 2>&1 || rustup component add clippy
fi
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# House rule: no non-test function over 100 lines (prints the offenders and fails).
scripts/long-functions.sh 100
# `kill` (procps) sends the tests' SIGSTOP/SIGCONT/SIGTERM; install it where missing.
if ! type -P kill >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then apt-get update -qq && apt-get install -y -qq procps; fi
fi
# iptables cuts links between nodes in the network-partition tests (as root); they fail, saying
# so, where it cannot be installed or used.
if ! command -v iptables >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iptables; } \
    || echo "iptables could not be installed: the network-partition tests will fail" >&2
fi
# ss (iproute2) resets live connections in the fast-fencing flap test (tests/tests/fast_fencing.rs).
if ! command -v ss >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2; } \
    || echo "iproute2 could not be installed: the connection-reset test will fail" >&2
fi
# Unmodified Kafka clients for tests/tests/kafka_{clients,admin}.rs (kcat, confluent-kafka, kafka-python):
# idempotent and quick once installed; if it cannot install them, those tests fail and say why.
scripts/install-kafka-clients.sh || echo "some Kafka clients could not be installed: their tests will fail" >&2
cargo build --workspace --bins
# Cluster tests each run four broker processes: two at a time fits a 2-core machine.
cargo test --workspace -- --test-threads "${INSYNC_TEST_THREADS:-2}"
