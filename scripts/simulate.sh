#!/usr/bin/env bash
# The cluster simulation for CI: its tests (replay byte for byte; the planted bugs are caught: stale
# leases, unsynced disks, unverified chunks, a manager that ignores targeting or waves, a rollout gate
# that skips the bake; a few seeds under faults)
# and then as many seeds as fit a wall-clock budget.
#
# Built with `--cfg tokio_unstable` so turmoil can seed tokio's scheduler (exact replays), in a target dir
# of its own so the flag does not rebuild the main target. Bounded: the seed run stops starting new seeds
# after SIM_BUDGET_SECS (default 180 s); with the tests that is about 3-4 minutes after the build.
#
#   SIM_SEEDS=500 SIM_BUDGET_SECS=180 bash scripts/simulate.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${SIM_TARGET_DIR:-$HOME/.cache/cascade-sim-target}"
export RUSTFLAGS="--cfg tokio_unstable"
export CARGO_TERM_COLOR=never
seeds="${SIM_SEEDS:-500}"
budget="${SIM_BUDGET_SECS:-180}"
# Seeds of the run below start after those the tests use.
from="${SIM_FROM:-1000}"

cargo build -p cascade-simulation --locked --all-targets
cargo test -p cascade-simulation --locked --test 'cluster_*' -- --test-threads=2
cargo run -p cascade-simulation --locked --quiet -- --seeds "$seeds" --from "$from" --budget-secs "$budget"
