#!/usr/bin/env bash
# Fan-out benchmark: one file to N hosts, each host in its own network namespace behind a link capped at
# B in both directions, through (1) Cascade's region manager and host agents (QUIC, mutual TLS, the core
# scheduler), (2) one nginx on the seed (every host downloads from it), (3) an aria2c BitTorrent swarm with
# opentracker. Prints, per system, the time until every host holds the verified file and its ratio to the
# bound S/B + log2(N)·p/B. See docs/BENCHMARKS.md ("Fan-out on network namespaces").
#
#   bash bench/fanout/run.sh N RATE_MBIT SIZE_MIB CHUNK_KIB      # defaults: 8 100 64 1024
#   SYSTEMS="cascade nginx aria2" (default all three)   BIN=dir of the release `cascade` and `fanout`
#   LOOPBACK=1: Cascade only, every agent on 127.0.0.1, no namespaces and no tc (unthrottled swarm)
#   TMPDIR=/dev/shm: work dir on tmpfs (a shared disk's write-back stalls otherwise show in the times)
#   TC_STATS=1: bytes sent and packets dropped on every link after each system
#   STATIC_NEIGH=0: resolve neighbours by ARP through the capped links instead of static entries
#   AGENT_LOG=filter: the agents' log filter (default info,quinn=warn); KEEP_WORK=1 keeps the work dir
#
# Needs root, iproute2 (ip netns, tc tbf), nginx-light, aria2, opentracker, mktorrent, curl (Debian). The
# machine's own network is untouched: the bridge lives in a namespace of its own, and everything this
# script starts and creates is removed on exit (trap), whatever happens.
set -euo pipefail

N=${1:-8}
RATE=${2:-100}
SIZE_MIB=${3:-64}
CHUNK_KIB=${4:-1024}
SYSTEMS=${SYSTEMS:-cascade nginx aria2}
LOOPBACK=${LOOPBACK:-0}
AGENT_LOG=${AGENT_LOG:-info,quinn=warn}
BIN=${BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/cascade-target}/release}
WORKER_TOKEN=fanout-bench-worker-token-0001 # the `worker` token `fanout node-config` writes
TAG=cfo$$                                  # prefix of every namespace this run creates
NODE_PORT=$((17400 + $$ % 500))
AGENT_PORT=7000

for tool in "$BIN/cascade" "$BIN/fanout"; do
  [ -x "$tool" ] || { echo "missing $tool: cargo build --release --workspace --bins" >&2; exit 1; }
done
if [ "$LOOPBACK" = 1 ]; then SYSTEMS=cascade; fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/fanout.XXXXXX")
chmod 755 "$WORK"
PIDS=()
NAMESPACES=()

cleanup() {
  set +e
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
  sleep 0.5
  for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null; done
  for ns in "${NAMESPACES[@]}"; do
    # Anything still running inside a namespace of this run was started by this run.
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null; done
    ip netns del "$ns" 2>/dev/null
  done
  if [ "${KEEP_WORK:-0}" = 1 ]; then echo "work dir kept: $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT INT TERM

# in NS CMD...: runs CMD in namespace NS (or directly on loopback).
in_ns() {
  local ns=$1
  shift
  if [ "$LOOPBACK" = 1 ]; then "$@"; else ip netns exec "$TAG-$ns" "$@"; fi
}

# spawn NS CMD... &: like in_ns, but the background job becomes CMD itself, so `$!` is its pid.
spawn() {
  local ns=$1
  shift
  if [ "$LOOPBACK" = 1 ]; then exec "$@"; else exec ip netns exec "$TAG-$ns" "$@"; fi
}

seed_ip() { if [ "$LOOPBACK" = 1 ]; then echo 127.0.0.1; else echo 10.77.0.1; fi; }
host_ip() { if [ "$LOOPBACK" = 1 ]; then echo 127.0.0.1; else echo "10.77.0.$((10 + $1))"; fi; }
host_port() { if [ "$LOOPBACK" = 1 ]; then echo $((AGENT_PORT + $1)); else echo $AGENT_PORT; fi; }

# link NS IP: a veth from namespace NS (eth0, address IP) to the bridge, capped with tbf at both ends.
link() {
  local ns=$TAG-$1 ip=$2 peer=v$1
  ip netns add "$ns"
  NAMESPACES+=("$ns")
  ip link add eth0 netns "$ns" type veth peer name "$peer" netns "$TAG-br"
  ip -n "$ns" addr add "$ip/24" dev eth0
  ip -n "$ns" link set lo up
  ip -n "$ns" link set eth0 up
  ip -n "$TAG-br" link set "$peer" master br0 up
  ip netns exec "$ns" tc qdisc add dev eth0 root tbf rate "${RATE}mbit" burst 128kb latency 50ms
  ip netns exec "$TAG-br" tc qdisc add dev "$peer" root tbf rate "${RATE}mbit" burst 128kb latency 50ms
}

network() {
  ip netns add "$TAG-br"
  NAMESPACES+=("$TAG-br")
  ip -n "$TAG-br" link add br0 type bridge
  ip -n "$TAG-br" link set br0 up
  ip -n "$TAG-br" link set lo up
  link seed "$(seed_ip)"
  for i in $(seq 1 "$N"); do link "h$i" "$(host_ip "$i")"; done
  [ "${STATIC_NEIGH:-1}" = 1 ] && static_neighbours
}

# static_neighbours: every namespace knows every other one's MAC address. Without it, a host that first
# talks to a peer late in a run must resolve it by ARP through its own saturated tbf queue; the requests
# are dropped there and the QUIC handshake times out (seen: no ARP or UDP from the client to the peer ever
# reached the bridge while the client timed out three times in a row). A routed datacentre resolves only
# its gateway, once, so this is the bridge's artefact, not the fleet's.
static_neighbours() {
  local names=(seed) ips=("$(seed_ip)") macs=() i j
  for i in $(seq 1 "$N"); do names+=("h$i"); ips+=("$(host_ip "$i")"); done
  for i in "${!names[@]}"; do macs+=("$(ip -n "$TAG-${names[$i]}" -o link show eth0 | grep -o 'link/ether [0-9a-f:]*' | cut -d' ' -f2)"); done
  for i in "${!names[@]}"; do
    for j in "${!names[@]}"; do
      [ "$i" = "$j" ] && continue
      echo "neigh replace ${ips[$j]} lladdr ${macs[$j]} nud permanent dev eth0"
    done | ip -n "$TAG-${names[$i]}" -batch -
  done
}

cpu_jiffies() { awk '/^cpu /{busy=$2+$3+$4+$7+$8; print busy, busy+$5+$6}' /proc/stat; }
# busy_since "BUSY TOTAL": the machine's busy fraction (of all cores) since that sample.
busy_since() { read -r b0 t0 <<<"$1"; read -r b1 t1 <<<"$(cpu_jiffies)"; awk -v b="$((b1 - b0))" -v t="$((t1 - t0))" 'BEGIN{printf "%.2f", b/t}'; }
now() { date +%s.%N; }
bound() { awk -v s="$SIZE_BYTES" -v b="$RATE" -v n="$N" -v p="$CHUNK_BYTES" 'BEGIN{B=b*1e6/8; printf "%.3f", s/B + log(n)/log(2)*p/B}'; }
ratio() { awk -v t="$1" -v b="$(bound)" 'BEGIN{printf "%.3f", t/b}'; }
report() { # report SYSTEM SECONDS BUSY EXTRA
  printf 'RESULT system=%s N=%s rate_mbit=%s size_mib=%s chunk_kib=%s seconds=%.3f bound=%s ratio=%s machine_busy=%s loadavg="%s" %s\n' \
    "$1" "$N" "$RATE" "$SIZE_MIB" "$CHUNK_KIB" "$2" "$(bound)" "$(ratio "$2")" "$3" "$(cut -d' ' -f1-3 /proc/loadavg)" "${4:-}"
}

SIZE_BYTES=$((SIZE_MIB * 1024 * 1024))
CHUNK_BYTES=$((CHUNK_KIB * 1024))
echo "fan-out: N=$N B=${RATE} Mbit/s S=${SIZE_MIB} MiB p=${CHUNK_KIB} KiB loopback=$LOOPBACK work=$WORK load: $(cat /proc/loadavg)"
[ "$LOOPBACK" = 1 ] || network

# The seed: a one-node cluster with stores main and us, and a succeeded build replicated into us.
"$BIN/fanout" node-config --out "$WORK/node.toml" --listen "127.0.0.1:$NODE_PORT" --dir "$WORK"
spawn seed env CASCADE_LOG=warn "$BIN/cascade" node --config "$WORK/node.toml" 2>"$WORK/node.log" &
PIDS+=($!)
SERVER=http://127.0.0.1:$NODE_PORT
for _ in $(seq 1 100); do in_ns seed curl -sf "$SERVER/healthz" >/dev/null 2>&1 && break || sleep 0.1; done
PREPARED=$(in_ns seed "$BIN/fanout" prepare --server "$SERVER" --dir "$WORK" --size-mib "$SIZE_MIB" --chunk-kib "$CHUNK_KIB")
echo "prepared: $PREPARED"
BUILD=$(sed 's/.*"build":\([0-9]*\).*/\1/' <<<"$PREPARED")
mkdir -p "$WORK/www"
mv "$WORK/artifact.bin" "$WORK/www/artifact.bin"
rm -rf "$WORK/stores/main" # the seed reads the regional store only

tls() { # tls NAME: issues a certificate and prints the [tls] section
  "$BIN/cascade" certs issue --ca "$WORK/ca" --name "$1" --out "$WORK/certs" >/dev/null
  printf '[tls]\nca = "%s"\ncert = "%s"\nkey = "%s"\n' "$WORK/ca/ca.pem" "$WORK/certs/$1.pem" "$WORK/certs/$1.key"
}

run_cascade() {
  "$BIN/cascade" certs ca --dir "$WORK/ca" >/dev/null
  mkdir -p "$WORK/manager" "$WORK/hosts"
  local manager_addr agents=()
  manager_addr="$(seed_ip):$AGENT_PORT"
  cat >"$WORK/manager.toml" <<EOF
region = "us"
cluster = "c1"
servers = ["$SERVER"]
token = "$WORKER_TOKEN"
listen = "$manager_addr"
report_interval_ms = 1000
status_file = "$WORK/manager/status.json"

[store]
kind = "local"
path = "$WORK/stores/us"

$(tls manager)
EOF
  spawn seed env CASCADE_LOG="$AGENT_LOG" "$BIN/cascade" agent manager --config "$WORK/manager.toml" 2>"$WORK/manager.log" &
  PIDS+=($!)
  agents+=($!)
  for i in $(seq 1 "$N"); do
    cat >"$WORK/h$i.toml" <<EOF
name = "h$i"
listen = "$(host_ip "$i"):$(host_port "$i")"
manager = "$manager_addr"
data_dir = "$WORK/hosts/h$i"
services = ["app"]

$(tls "h$i")
EOF
    spawn "h$i" env CASCADE_LOG="$AGENT_LOG" "$BIN/cascade" agent host --config "$WORK/h$i.toml" 2>"$WORK/h$i.log" &
    PIDS+=($!)
    agents+=($!)
  done
  local registered=0
  for _ in $(seq 1 300); do
    registered=$( (grep -l registered "$WORK"/h*.log 2>/dev/null || true) | wc -l)
    [ "$registered" -ge "$N" ] && break
    sleep 0.1
  done
  [ "$registered" -ge "$N" ] || { echo "only $registered of $N hosts registered" >&2; tail -5 "$WORK"/manager.log "$WORK"/h1.log >&2; return 1; }
  local before out seconds
  before=$(cpu_jiffies)
  out=$(in_ns seed "$BIN/fanout" deploy --server "$SERVER" --build "$BUILD" --hosts-dir "$WORK/hosts" --hosts "$N" \
    --pids "$(IFS=,; echo "${agents[*]}")")
  echo "cascade: $out"
  seconds=$(sed 's/.*"last_active_s":\([0-9.]*\).*/\1/' <<<"$out")
  local verified cpu
  verified=$(sed 's/.*"last_verified_s":\([0-9.]*\).*/\1/' <<<"$out")
  cpu=$(sed 's/.*"agents_cpu_s":\([0-9.]*\).*/\1/' <<<"$out")
  report cascade "$seconds" "$(busy_since "$before")" "last_verified_s=$verified verified_ratio=$(ratio "$verified") agents_cpu_s=$cpu seed_chunks=$(grep -o '"seed_chunks_served": *[0-9]*' "$WORK/manager/status.json" | grep -o '[0-9]*$')"
  for pid in "${agents[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait "${agents[@]}" 2>/dev/null || true
  rm -rf "$WORK/hosts"
}

run_nginx() {
  mkdir -p "$WORK/nginx/tmp" "$WORK/dl"
  cat >"$WORK/nginx.conf" <<EOF
user root;
worker_processes 2;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  client_body_temp_path $WORK/nginx/tmp;
  proxy_temp_path $WORK/nginx/tmp;
  fastcgi_temp_path $WORK/nginx/tmp;
  uwsgi_temp_path $WORK/nginx/tmp;
  scgi_temp_path $WORK/nginx/tmp;
  server { listen $(seed_ip):8080; root $WORK/www; }
}
EOF
  spawn seed nginx -c "$WORK/nginx.conf" -e "$WORK/nginx/error.log" &
  local nginx=$!
  PIDS+=($nginx)
  for _ in $(seq 1 50); do in_ns h1 curl -sfI "http://$(seed_ip):8080/artifact.bin" >/dev/null 2>&1 && break || sleep 0.1; done
  local before start end clients=()
  before=$(cpu_jiffies)
  start=$(now)
  for i in $(seq 1 "$N"); do
    spawn "h$i" curl -sf -o "$WORK/dl/h$i.bin" "http://$(seed_ip):8080/artifact.bin" &
    clients+=($!)
  done
  wait "${clients[@]}"
  end=$(now)
  for i in $(seq 1 "$N"); do
    [ "$(stat -c %s "$WORK/dl/h$i.bin")" = "$SIZE_BYTES" ] || { echo "nginx: h$i got a short file" >&2; return 1; }
  done
  report nginx "$(awk -v a="$start" -v b="$end" 'BEGIN{print b-a}')" "$(busy_since "$before")"
  kill "$nginx" 2>/dev/null || true
  wait "$nginx" 2>/dev/null || true
  rm -rf "$WORK/dl"
}

run_aria2() {
  local bt=$WORK/bt rate_bytes=$((RATE * 1000000 / 8))
  mkdir -p "$bt/tracker"
  mktorrent -l $((CHUNK_KIB == 256 ? 18 : CHUNK_KIB == 512 ? 19 : CHUNK_KIB == 2048 ? 21 : CHUNK_KIB == 4096 ? 22 : 20)) \
    -a "http://$(seed_ip):6969/announce" -o "$bt/a.torrent" "$WORK/www/artifact.bin" >/dev/null
  aria2c -S "$bt/a.torrent" | awk '/Info Hash/{print $3}' >"$bt/tracker/whitelist"
  chmod -R a+rX "$bt"
  local swarm=()
  spawn seed opentracker -i "$(seed_ip)" -p 6969 -P 6969 -d "$bt/tracker" -w whitelist >"$bt/tracker.log" 2>&1 &
  PIDS+=($!)
  swarm+=($!)
  local common=(--enable-dht=false --enable-dht6=false --bt-enable-lpd=false --enable-peer-exchange=false
    --seed-ratio=0.0 --bt-max-peers=0 --bt-request-peer-speed-limit="$rate_bytes" --bt-tracker-interval=1
    --disable-ipv6=true --file-allocation=falloc --summary-interval=0 --console-log-level=warn --quiet=true
    --allow-overwrite=true --auto-save-interval=0)
  cat >"$bt/done.sh" <<'EOF'
#!/bin/sh
date +%s.%N >"$(dirname "$3")/.done"
EOF
  chmod +x "$bt/done.sh"
  spawn seed aria2c "${common[@]}" --dir="$WORK/www" --bt-seed-unverified=true --check-integrity=false "$bt/a.torrent" &
  PIDS+=($!)
  swarm+=($!)
  sleep 2 # the seed announces itself
  local before start i done_count=0
  before=$(cpu_jiffies)
  start=$(now)
  for i in $(seq 1 "$N"); do
    mkdir -p "$bt/h$i"
    spawn "h$i" aria2c "${common[@]}" --dir="$bt/h$i" --on-bt-download-complete="$bt/done.sh" "$bt/a.torrent" >"$bt/h$i.log" 2>&1 &
    PIDS+=($!)
    swarm+=($!)
  done
  local deadline=$(($(date +%s) + 600))
  while [ "$(date +%s)" -lt "$deadline" ]; do
    done_count=$(find "$bt" -name .done | wc -l)
    [ "$done_count" -ge "$N" ] && break
    sleep 0.05
  done
  [ "$done_count" -ge "$N" ] || { echo "aria2: only $done_count of $N done" >&2; return 1; }
  local busy last
  busy=$(busy_since "$before")
  last=$(cat "$bt"/h*/.done | sort -n | tail -1)
  for i in $(seq 1 "$N"); do
    [ "$(stat -c %s "$bt/h$i/artifact.bin")" = "$SIZE_BYTES" ] || { echo "aria2: h$i got a short file" >&2; return 1; }
  done
  report aria2 "$(awk -v a="$start" -v b="$last" 'BEGIN{print b-a}')" "$busy"
  for pid in "${swarm[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait "${swarm[@]}" 2>/dev/null || true
}

# TC_STATS=1: after each system, bytes and drops of every link as the bridge saw them.
tc_stats() {
  [ "${TC_STATS:-0}" = 1 ] && [ "$LOOPBACK" != 1 ] || return 0
  local link
  for link in seed $(seq -f 'h%g' 1 "$N"); do
    printf '%s to-host: %s  from-host: %s\n' "$link" \
      "$(ip netns exec "$TAG-br" tc -s qdisc show dev "v$link" | awk '/Sent/{print $2" B, "$4" pkt, dropped "$7}')" \
      "$(ip netns exec "$TAG-$link" tc -s qdisc show dev eth0 | awk '/Sent/{print $2" B, "$4" pkt, dropped "$7}')"
  done
}

for system in $SYSTEMS; do
  "run_$system"
  tc_stats
done
