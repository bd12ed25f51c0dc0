#!/usr/bin/env bash
# The README's run command: sets up, builds, and starts a one-node Cascade cluster on 127.0.0.1:7001 with
# local blob stores (main + two regions), one build worker, and an example git repository to build.
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

[stores.main]
kind = "local"
path = "$DATA/stores/main"

[stores.regions.us-east]
kind = "local"
path = "$DATA/stores/us-east"

[stores.regions.eu-west]
kind = "local"
path = "$DATA/stores/eu-west"

[replication]
sync_interval_secs = 60
TOML
cat > "$DATA/worker1.toml" <<TOML
id = "worker-1"
servers = ["127.0.0.1:7001"]
token = "demo-worker-token-change-me"
work_dir = "$DATA/worker-1"

[store]
kind = "local"
path = "$DATA/stores/main"
TOML
# An example service to build: a C program and its recipe, in a local git repository.
REPO="$DATA/example.git"
if [ ! -d "$REPO" ]; then
  SRC="$(mktemp -d)"
  mkdir -p "$SRC/src"
  printf '#include <stdio.h>\nint main(void) { puts("hello from cascade"); return 0; }\n' > "$SRC/src/hello.c"
  printf '[build]\ncommand = "mkdir -p out && cc -O2 -o out/hello src/hello.c"\nartifact = "out/hello"\ntimeout_secs = 300\n' > "$SRC/cascade.toml"
  git -C "$SRC" init -q -b main
  git -C "$SRC" add -A
  git -C "$SRC" -c user.name=demo -c user.email=demo@localhost commit -q -m "hello service"
  git clone -q --bare "$SRC" "$REPO"
  rm -rf "$SRC"
fi
COMMIT="$(git --git-dir "$REPO" rev-parse HEAD)"
"$BIN" node --config "$DATA/node1.toml" &
NODE=$!
"$BIN" worker --config "$DATA/worker1.toml" &
WORKER=$!
trap 'kill $NODE $WORKER 2>/dev/null; wait $NODE $WORKER 2>/dev/null' EXIT INT TERM
for _ in $(seq 1 100); do
  curl -fsS http://127.0.0.1:7001/healthz >/dev/null 2>&1 && break
  sleep 0.2
done
# Initializing an already initialized node is refused harmlessly; the data dir is kept across runs.
"$BIN" --server http://127.0.0.1:7001 --token demo-admin-token-change-me cluster init 2>/dev/null || true
cat <<MSG

Cascade node and a build worker running at http://127.0.0.1:7001 (data in $DATA; Ctrl-C stops them).
  export PATH="$CARGO_TARGET_DIR/release:\$PATH"
  export CASCADE_SERVER=http://127.0.0.1:7001 CASCADE_TOKEN=demo-builder-token-change-me
  cascade build submit --repo file://$REPO --commit $COMMIT --service hello --follow
  cascade build list
  cascade build log 1
Tokens: admin demo-admin-token-change-me, deployer demo-deployer-token-change-me,
        worker demo-worker-token-change-me, viewer demo-viewer-token-change-me
MSG
wait $NODE $WORKER
