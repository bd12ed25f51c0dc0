#!/usr/bin/env bash
# Durable writes/s: a 3-voter Cascade cluster vs a 3-member etcd 3.4 cluster, on this machine, one after the
# other, same client count. Prints one line per system. Release builds only.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/cascade-target}"
CLIENTS="${CLIENTS:-16}"
TOTAL="${TOTAL:-20000}"
cargo build --release --workspace --bins
"$CARGO_TARGET_DIR/release/raft-writes" --cascade "$CARGO_TARGET_DIR/release/cascade" --clients "$CLIENTS" --total "$TOTAL"
CLIENTS="$CLIENTS" TOTAL="$TOTAL" bash bench/etcd/run.sh
