#!/usr/bin/env bash
# The README's run command: installs missing Debian packages, builds the `cascade` binary (release), and
# starts `cascade demo --deploy`: a whole small Cascade on loopback (3 voters, a learner per region for 3
# regions, 2 workers, a manager and 5 hosts per region), which builds the example service and deploys it.
# Extra arguments go to `cascade demo` (e.g. `--fresh`, `--base-port 8001`, `--hosts-per-region 10`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/cascade-target}"
# The whole workspace, as the benchmarks build it, so the two never rebuild each other's dependencies.
cargo build --release --workspace --bins
echo "the binary: $CARGO_TARGET_DIR/release/cascade (export PATH=\"$CARGO_TARGET_DIR/release:\$PATH\")"
exec "$CARGO_TARGET_DIR/release/cascade" demo --deploy "$@"
