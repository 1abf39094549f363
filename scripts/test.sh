#!/usr/bin/env bash
# houndpool's test suite: the command README.md gives and .ci/run calls.
# Unit, property, integration and end-to-end tests with real hound processes.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo test --workspace"
cargo test --workspace

echo "== node --test clients/node/ (Node client against a real houndd)"
cargo build -p houndpool-supervisor --bin houndd
node --test clients/node/
