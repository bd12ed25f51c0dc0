#!/usr/bin/env bash
# The README's run command: sets up, builds, and starts a one-node Cascade cluster on 127.0.0.1:7001.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/cascade-target}"
# The same build as bench/compare-etcd.sh, so the two never rebuild each other's dependencies.
cargo build --release --workspace --bins
BIN="$CARGO_TARGET_DIR/release/cascade"
DATA="${CASCADE_DATA:-$HOME/.local/share/cascade/demo}"
mkdir -p "$DATA"
cat > "$DATA/node1.toml" <<TOML
id = 1
listen = "127.0.0.1:7001"
data_dir = "$DATA/node1"
region = "home"
role = "voter"
cluster_secret = "demo-cluster-secret-change-me"

[[tokens]]
name = "admin"
token = "demo-admin-token-change-me"
role = "admin"

[[tokens]]
name = "builder"
token = "demo-builder-token-change-me"
role = "builder"

[[tokens]]
name = "deployer"
token = "demo-deployer-token-change-me"
role = "deployer"

[[tokens]]
name = "worker"
token = "demo-worker-token-change-me"
role = "worker"

[[tokens]]
name = "viewer"
token = "demo-viewer-token-change-me"
role = "viewer"
TOML
"$BIN" node --config "$DATA/node1.toml" &
NODE=$!
trap 'kill $NODE 2>/dev/null; wait $NODE 2>/dev/null' EXIT INT TERM
for _ in $(seq 1 100); do
  curl -fsS http://127.0.0.1:7001/healthz >/dev/null 2>&1 && break
  sleep 0.2
done
# Initializing an already initialized node is refused harmlessly; the data dir is kept across runs.
"$BIN" --server http://127.0.0.1:7001 --token demo-admin-token-change-me cluster init 2>/dev/null || true
cat <<MSG

Cascade node running at http://127.0.0.1:7001 (data in $DATA; Ctrl-C stops it).
  export PATH="$CARGO_TARGET_DIR/release:\$PATH"
  export CASCADE_SERVER=http://127.0.0.1:7001 CASCADE_TOKEN=demo-builder-token-change-me
  cascade build submit --repo https://git.example.com/team/app.git --commit 0123456789abcdef0123456789abcdef01234567 --service app
  cascade build list
Tokens: admin demo-admin-token-change-me, deployer demo-deployer-token-change-me,
        worker demo-worker-token-change-me, viewer demo-viewer-token-change-me
MSG
wait $NODE
