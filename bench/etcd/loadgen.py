#!/usr/bin/env python3
"""Minimal etcd v3 write-load generator (Python 3 standard library only).

Talks to etcd's v3 gRPC-gateway JSON API (POST /v3/kv/put, base64 key/value)
using one keep-alive http.client connection per client thread.  Clients are
spread round-robin over the given endpoints (followers forward to the leader,
exactly like etcd's own `benchmark put --endpoints=a,b,c`).

A put is counted only when etcd answered HTTP 200 with a response header, i.e.
after the entry was committed by a quorum (WAL fsync'd on a majority) and
applied.

Prints one summary line plus a latency line, e.g.
  etcd3.4 3-member loopback fsync: puts=20000 clients=16 seconds=... puts_per_sec=... p50_ms=... p99_ms=...
"""

import argparse
import base64
import http.client
import json
import math
import os
import sys
import threading
import time
import urllib.request


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--endpoints", required=True, help="comma-separated host:port list")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--total", type=int, default=20000, help="total puts (ignored if --duration > 0)")
    p.add_argument("--duration", type=float, default=0.0, help="run for this many seconds instead of --total")
    p.add_argument("--value-size", type=int, default=100)
    p.add_argument("--key-space", type=int, default=0,
                   help="0 = every put writes a fresh key; N = keys drawn from N per-client slots")
    p.add_argument("--warmup", type=int, default=200, help="untimed puts before the measurement")
    p.add_argument("--label", default="etcd3.4 3-member loopback fsync")
    p.add_argument("--timeout", type=float, default=10.0, help="per-request socket timeout (s)")
    return p.parse_args()


def b64(s: bytes) -> str:
    return base64.b64encode(s).decode("ascii")


class Client:
    def __init__(self, endpoint, timeout):
        host, port = endpoint.rsplit(":", 1)
        self.host, self.port, self.timeout = host, int(port), timeout
        self.conn = None

    def _connect(self):
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)

    def put(self, body: bytes):
        """Returns True on success.  Reconnects once on a broken keep-alive connection."""
        for attempt in (0, 1):
            if self.conn is None:
                self._connect()
            try:
                self.conn.request("POST", "/v3/kv/put", body=body,
                                  headers={"Content-Type": "application/json"})
                resp = self.conn.getresponse()
                data = resp.read()
                if resp.status != 200:
                    return False, f"HTTP {resp.status}: {data[:200]!r}"
                doc = json.loads(data)
                if "header" not in doc:
                    return False, f"unexpected reply: {data[:200]!r}"
                return True, None
            except (http.client.HTTPException, OSError) as e:
                try:
                    self.conn.close()
                finally:
                    self.conn = None
                if attempt == 1:
                    return False, repr(e)
        return False, "unreachable"


def percentile(sorted_vals, q):
    if not sorted_vals:
        return float("nan")
    # nearest-rank
    k = max(0, min(len(sorted_vals) - 1, math.ceil(q / 100.0 * len(sorted_vals)) - 1))
    return sorted_vals[k]


def fsync_metrics(endpoints):
    """Sum of etcd_disk_wal_fsync_duration_seconds_{count,sum} over all members."""
    count = total = 0.0
    for ep in endpoints:
        try:
            with urllib.request.urlopen(f"http://{ep}/metrics", timeout=5) as r:
                for line in r.read().decode().splitlines():
                    if line.startswith("etcd_disk_wal_fsync_duration_seconds_count"):
                        count += float(line.split()[-1])
                    elif line.startswith("etcd_disk_wal_fsync_duration_seconds_sum"):
                        total += float(line.split()[-1])
        except OSError:
            return None
    return count, total


def main():
    a = parse_args()
    endpoints = [e.strip() for e in a.endpoints.split(",") if e.strip()]
    value = b64((b"v" * a.value_size))
    run_tag = f"{os.getpid()}-{int(time.time())}"

    def body(cid, seq):
        slot = seq % a.key_space if a.key_space else seq
        key = f"bench/{run_tag}/{cid:03d}/{slot:08d}".encode()
        return json.dumps({"key": b64(key), "value": value}).encode()

    # ---- warmup (untimed): opens connections, elects/settles leader, warms caches
    clients = [Client(endpoints[i % len(endpoints)], a.timeout) for i in range(a.clients)]
    for i in range(a.warmup):
        ok, err = clients[i % a.clients].put(body(i % a.clients, 10**7 + i))
        if not ok:
            print(f"warmup put failed: {err}", file=sys.stderr)
            return 2

    # ---- measurement
    lat = [[] for _ in range(a.clients)]
    errs = [0] * a.clients
    first_err = [None]
    per_client = [a.total // a.clients + (1 if i < a.total % a.clients else 0) for i in range(a.clients)]
    start_evt = threading.Event()
    deadline = [0.0]

    def worker(cid):
        c, my = clients[cid], lat[cid]
        pc = time.perf_counter
        start_evt.wait()
        seq = 0
        while True:
            if a.duration > 0:
                if pc() >= deadline[0]:
                    break
            elif seq >= per_client[cid]:
                break
            b = body(cid, seq)
            t0 = pc()
            ok, err = c.put(b)
            t1 = pc()
            seq += 1
            if ok:
                my.append(t1 - t0)
            else:
                errs[cid] += 1
                if first_err[0] is None:
                    first_err[0] = err
                if errs[cid] > 100:
                    break

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(a.clients)]
    for t in threads:
        t.start()
    fs0 = fsync_metrics(endpoints)
    cpu0 = os.times()
    t_start = time.perf_counter()
    deadline[0] = t_start + a.duration
    start_evt.set()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t_start
    cpu1 = os.times()
    fs1 = fsync_metrics(endpoints)

    all_lat = sorted(x for l in lat for x in l)
    n = len(all_lat)
    nerr = sum(errs)
    ms = lambda s: f"{s * 1000:.2f}"
    mean = sum(all_lat) / n if n else float("nan")
    print(f"{a.label}: puts={n} clients={a.clients} seconds={elapsed:.2f} "
          f"puts_per_sec={n / elapsed:.0f} p50_ms={ms(percentile(all_lat, 50))} "
          f"p99_ms={ms(percentile(all_lat, 99))} errors={nerr}")
    print(f"{a.label}: latency_ms min={ms(all_lat[0]) if n else 'nan'} mean={ms(mean)} "
          f"p90={ms(percentile(all_lat, 90))} p99={ms(percentile(all_lat, 99))} "
          f"p99.9={ms(percentile(all_lat, 99.9))} max={ms(all_lat[-1]) if n else 'nan'} "
          f"value_bytes={a.value_size} endpoints={len(endpoints)}")
    client_cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    extra = f"loadgen_cpu_s={client_cpu:.2f} (of {elapsed:.2f}s wall)"
    if fs0 and fs1:
        dc, ds = fs1[0] - fs0[0], fs1[1] - fs0[1]
        if dc > 0:
            extra += (f" wal_fsyncs_all_members={dc:.0f} mean_wal_fsync_ms={ds / dc * 1000:.2f}"
                      f" puts_per_fsync_per_member={n * len(endpoints) / dc:.1f}")
    print(f"{a.label}: {extra}")
    if nerr:
        print(f"first error: {first_err[0]}", file=sys.stderr)
    return 1 if (n == 0 or nerr) else 0


if __name__ == "__main__":
    sys.exit(main())
