#!/usr/bin/env bash
# Durable-write benchmark of a local 3-member etcd 3.4 cluster (loopback, fsync on).
# See README.md next to this file.  All knobs are environment variables:
#
#   CLIENTS=16            concurrent clients (threads, one keep-alive connection each)
#   TOTAL=20000           total puts (ignored when DURATION is set)
#   DURATION=             run for this many seconds instead of TOTAL puts
#   VALUE_SIZE=100        value size in bytes
#   WARMUP=200            untimed puts before measuring
#   CLIENT_PORTS="23791 23792 23793"
#   PEER_PORTS="23801 23802 23803"
#   BENCH_TMPDIR=         parent of the temporary data dirs (default: $TMPDIR or /tmp);
#                         must be a real disk, not tmpfs, or fsync is meaningless
#   HEALTH_TIMEOUT=30     seconds to wait for the cluster to become healthy
#   CHECK_PERF=0          1 = additionally run `etcdctl check perf --load=s` (~60 s)
#   KEEP_LOGS=0           1 = copy member logs to ./etcd-logs-<ts>/ before cleanup
#                         (they are also kept automatically when the run fails)
#
# Note: etcd treats every ETCD_* environment variable as a flag (e.g.
# ETCD_UNSAFE_NO_FSYNC), so they are all stripped from the members' environment.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

CLIENTS="${CLIENTS:-16}"
TOTAL="${TOTAL:-20000}"
DURATION="${DURATION:-}"
VALUE_SIZE="${VALUE_SIZE:-100}"
WARMUP="${WARMUP:-200}"
HEALTH_TIMEOUT="${HEALTH_TIMEOUT:-30}"
CHECK_PERF="${CHECK_PERF:-0}"
KEEP_LOGS="${KEEP_LOGS:-0}"
read -r -a CPORTS <<<"${CLIENT_PORTS:-23791 23792 23793}"
read -r -a PPORTS <<<"${PEER_PORTS:-23801 23802 23803}"
if [[ ${#CPORTS[@]} -ne 3 || ${#PPORTS[@]} -ne 3 ]]; then
  echo "error: CLIENT_PORTS and PEER_PORTS must each list exactly 3 ports" >&2
  exit 2
fi

log() { echo "[etcd-bench] $*" >&2; }
die() { echo "[etcd-bench] error: $*" >&2; exit 1; }

# ---------------------------------------------------------------- install
if ! command -v etcd >/dev/null 2>&1 || ! command -v etcdctl >/dev/null 2>&1; then
  SUDO=""
  if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null 2>&1 || die "etcd not installed and not root (no sudo)"
    SUDO="sudo"
  fi
  log "installing etcd-server etcd-client"
  if ! $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y etcd-server etcd-client; then
    log "install failed; running apt-get update and retrying"
    $SUDO apt-get update
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y etcd-server etcd-client
  fi
fi
command -v python3 >/dev/null 2>&1 || die "python3 is required for the load generator"
export ETCDCTL_API=3
ETCD_VERSION="$(etcd --version | sed -n 's/^etcd Version: //p')"

# ---------------------------------------------------------------- ports free?
for p in "${CPORTS[@]}" "${PPORTS[@]}"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    die "port $p on 127.0.0.1 is already in use (set CLIENT_PORTS / PEER_PORTS)"
  fi
done

# ---------------------------------------------------------------- temp dir + cleanup
WORK="$(mktemp -d "${BENCH_TMPDIR:-${TMPDIR:-/tmp}}/etcd-bench.XXXXXX")"
PIDS=()
CHILD=""
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [[ -n "$CHILD" ]] && kill -0 "$CHILD" 2>/dev/null; then
    kill -TERM "$CHILD" 2>/dev/null || true
    wait "$CHILD" 2>/dev/null || true
  fi
  if ((${#PIDS[@]})); then
    log "stopping members"
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for _ in $(seq 1 100); do            # up to 10 s for a clean shutdown
      local alive=0
      for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
      ((alive)) || break
      sleep 0.1
    done
    for pid in "${PIDS[@]}"; do
      if kill -0 "$pid" 2>/dev/null; then
        log "member pid $pid did not stop in 10 s, killing"
        kill -KILL "$pid" 2>/dev/null || true
      fi
      wait "$pid" 2>/dev/null || true
    done
  fi
  if [[ "$KEEP_LOGS" == 1 || ($rc -ne 0 && $rc -ne 130 && $rc -ne 143) ]] && compgen -G "$WORK/*.log" >/dev/null; then
    local keep="$PWD/etcd-logs-$(date +%Y%m%d-%H%M%S)"
    mkdir -p "$keep" && cp "$WORK"/*.log "$keep"/ && log "member logs kept in $keep"
  fi
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Run a long step in the background and `wait` for it, so INT/TERM traps fire
# immediately instead of after the step finishes (bash defers traps while a
# foreground child runs).
run_child() {
  "$@" &
  CHILD=$!
  local rc=0
  wait "$CHILD" || rc=$?
  CHILD=""
  return "$rc"
}

fstype="$(stat -f -c %T "$WORK" 2>/dev/null || echo unknown)"
if [[ "$fstype" == tmpfs || "$fstype" == ramfs ]]; then
  log "WARNING: $WORK is on $fstype; fsync is a no-op there, figures are NOT durable writes"
fi

# ---------------------------------------------------------------- start members
CLUSTER=""
ENDPOINTS=""
for i in 0 1 2; do
  CLUSTER+="${CLUSTER:+,}m$((i + 1))=http://127.0.0.1:${PPORTS[$i]}"
  ENDPOINTS+="${ENDPOINTS:+,}127.0.0.1:${CPORTS[$i]}"
done
TOKEN="cascade-bench-$$-$RANDOM"
# Strip ETCD_* variables so the members run with exactly the flags below.
SCRUB=(env)
while IFS= read -r v; do SCRUB+=(-u "$v"); done < <(compgen -e | grep '^ETCD_' || true)

log "etcd $ETCD_VERSION, data under $WORK ($fstype)"
for i in 0 1 2; do
  name="m$((i + 1))"
  # fsync stays ON: etcd's default; --unsafe-no-fsync is deliberately not passed.
  "${SCRUB[@]}" etcd \
    --name "$name" \
    --data-dir "$WORK/$name.etcd" \
    --listen-client-urls "http://127.0.0.1:${CPORTS[$i]}" \
    --advertise-client-urls "http://127.0.0.1:${CPORTS[$i]}" \
    --listen-peer-urls "http://127.0.0.1:${PPORTS[$i]}" \
    --initial-advertise-peer-urls "http://127.0.0.1:${PPORTS[$i]}" \
    --initial-cluster "$CLUSTER" \
    --initial-cluster-token "$TOKEN" \
    --initial-cluster-state new \
    --logger zap --log-outputs stderr --log-level warn \
    >"$WORK/$name.log" 2>&1 &
  PIDS+=($!)
done

# ---------------------------------------------------------------- wait for health
deadline=$((SECONDS + HEALTH_TIMEOUT))
until etcdctl --endpoints="$ENDPOINTS" --dial-timeout=2s --command-timeout=3s \
        endpoint health >/dev/null 2>&1; do
  for idx in 0 1 2; do
    if ! kill -0 "${PIDS[$idx]}" 2>/dev/null; then
      echo "---- m$((idx + 1)).log (tail) ----" >&2
      tail -n 20 "$WORK/m$((idx + 1)).log" >&2 || true
      die "member m$((idx + 1)) exited during startup"
    fi
  done
  if ((SECONDS >= deadline)); then
    etcdctl --endpoints="$ENDPOINTS" --dial-timeout=2s endpoint health >&2 || true
    for n in m1 m2 m3; do echo "---- $n.log (tail) ----" >&2; tail -n 10 "$WORK/$n.log" >&2 || true; done
    die "cluster not healthy after ${HEALTH_TIMEOUT}s"
  fi
  sleep 0.5
done
log "cluster healthy: $(etcdctl --endpoints="$ENDPOINTS" endpoint status -w simple 2>/dev/null \
  | awk -F', ' '$5=="true"{print "leader=" $1}')"

# ---------------------------------------------------------------- load
load_args=(--endpoints "$ENDPOINTS" --clients "$CLIENTS" --value-size "$VALUE_SIZE"
           --warmup "$WARMUP" --label "etcd${ETCD_VERSION%.*} 3-member loopback fsync")
if [[ -n "$DURATION" ]]; then
  load_args+=(--duration "$DURATION")
  log "load: $CLIENTS clients, ${DURATION}s, ${VALUE_SIZE}-byte values, JSON gateway /v3/kv/put"
else
  load_args+=(--total "$TOTAL")
  log "load: $CLIENTS clients, $TOTAL puts, ${VALUE_SIZE}-byte values, JSON gateway /v3/kv/put"
fi
run_child python3 "$HERE/loadgen.py" "${load_args[@]}"

if [[ "$CHECK_PERF" == 1 ]]; then
  # Note: --load=s is a fixed ~150 writes/s target with 50 clients -- a pass/fail
  # sanity check over etcd's native gRPC client, not a max-throughput measurement.
  log "etcdctl check perf --load=s (60 s, etcd's own gRPC client, fixed 150 w/s target)"
  run_child etcdctl --endpoints="$ENDPOINTS" check perf --load=s --prefix=/etcdctl-check-perf/ \
    >"$WORK/check-perf.out" 2>&1 || true
  tr '\r' '\n' <"$WORK/check-perf.out" | grep -E '^(PASS|FAIL)' | sed 's/^/etcdctl check perf: /' || true
fi
