#!/usr/bin/env bash
# houndpool's test suite: the command README.md gives and .ci/run calls.
# Unit, property, integration and end-to-end tests with real hound processes.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo test --workspace"
cargo test --workspace

echo "== hound-stress chaos --quick"
cargo run --release -p houndpool-stress --bin hound-stress -- chaos --quick
