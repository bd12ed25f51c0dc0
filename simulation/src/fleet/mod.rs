//! The fleet-scale model of the fan-out: many regions, each running the real scheduler from
//! `cascade_core::fanout` over simulated links, with replication from the main store, crashes and slow
//! hosts. Regions are independent once their store holds the artifact, so they run on parallel threads;
//! every region is seeded from the run's seed, so a run is reproducible whatever the thread count.

mod region;
mod services;
mod timeline;
mod waves;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

pub use region::{chunk_len, run_region, RegionOutcome};
pub use services::{draw_services, run_mix, Mix, MixOutcome, PerHost, Placement, Service, ServiceOutcome};
pub use waves::{run_waves, WaveParams, WavesOutcome};

/// The fleet, its links and its failures. [`Params::fleet`] holds the defaults of the issue.
#[derive(Clone, Debug)]
pub struct Params {
    /// Regions, each with its own store, manager (seed) and scheduler.
    pub regions: u32,
    /// Hosts in the whole fleet, spread evenly over the regions.
    pub hosts: u32,
    /// Artifact size in bytes.
    pub size_bytes: u64,
    /// Chunk size in bytes.
    pub chunk_bytes: u64,
    /// Every host's link, each direction, Gbit/s.
    pub host_gbps: f64,
    /// The seed's (region manager's) link, Gbit/s.
    pub seed_gbps: f64,
    /// Egress of a regional store, Gbit/s: caps the seed's read and the central alternative.
    pub store_gbps: f64,
    /// Cross-region copy rate into one regional store, Gbit/s.
    pub replication_gbps: f64,
    /// Egress of the main store shared by all regions' copies, Gbit/s.
    pub main_egress_gbps: f64,
    /// Fraction of hosts that crash during the transfer.
    pub dead_fraction: f64,
    /// Fraction of hosts with a slow link.
    pub slow_fraction: f64,
    /// A slow host's link as a fraction of `host_gbps`.
    pub slow_factor: f64,
    /// Fraction of chunks each host already holds from an earlier release.
    pub held_fraction: f64,
    /// Hosts per region (the lowest ids) that corrupt every chunk they send.
    pub bad_hosts: u32,
    /// Time for the manager to notice a crash, milliseconds.
    pub detect_ms: u64,
    /// Scheduler: upload slots per host.
    pub upload_slots: u8,
    /// Scheduler: download slots per host.
    pub download_slots: u8,
    /// Scheduler: upload slots of the seed.
    pub seed_slots: u16,
    /// Scheduler: random candidates per matching attempt.
    pub samples: u8,
    /// Seed of the whole run.
    pub seed: u64,
    /// Worker threads (regions run in parallel).
    pub threads: usize,
}

impl Params {
    /// The fleet: 10 regions, 100,000 hosts, 10 GB, 10 Gbit/s hosts, 1 % crashes, 5 % slow hosts.
    pub fn fleet() -> Self {
        Params {
            regions: 10,
            hosts: 100_000,
            size_bytes: 10_000_000_000,
            chunk_bytes: 16 << 20,
            host_gbps: 10.0,
            seed_gbps: 10.0,
            store_gbps: 25.0,
            replication_gbps: 5.0,
            main_egress_gbps: 25.0,
            dead_fraction: 0.01,
            slow_fraction: 0.05,
            slow_factor: 0.1,
            held_fraction: 0.0,
            bad_hosts: 0,
            detect_ms: 2_000,
            upload_slots: 2,
            download_slots: 2,
            seed_slots: 2,
            samples: 8,
            seed: 1,
            threads: 2,
        }
    }

    /// The loopback benchmark of the deploy issue: one region of `hosts`, 64 MiB at 100 Mbit/s, no failures.
    pub fn loopback(hosts: u32, chunk_bytes: u64) -> Self {
        Params {
            regions: 1,
            hosts,
            size_bytes: 64 << 20,
            chunk_bytes,
            host_gbps: 0.1,
            seed_gbps: 0.1,
            store_gbps: 10.0,
            replication_gbps: f64::INFINITY,
            main_egress_gbps: f64::INFINITY,
            dead_fraction: 0.0,
            slow_fraction: 0.0,
            held_fraction: 0.0,
            threads: 1,
            ..Params::fleet()
        }
    }

    /// Hosts in region `r` (the remainder goes to the first regions).
    pub fn hosts_in(&self, r: u32) -> u32 {
        self.hosts / self.regions + u32::from(r < self.hosts % self.regions)
    }

    /// Seconds until every regional store holds the artifact: all regions copy in parallel, each at the
    /// cross-region rate, together at most the main store's egress.
    pub fn replication_s(&self) -> f64 {
        let per_region = self.replication_gbps.min(self.main_egress_gbps / f64::from(self.regions));
        if per_region.is_infinite() {
            return 0.0;
        }
        self.size_bytes as f64 * 8.0 / (per_region * 1e9)
    }

    /// The bound `S/B + log2(N)·p/B` for a region of `n` hosts, seconds.
    pub fn bound_s(&self, n: u32) -> f64 {
        let b = self.host_gbps * 1e9;
        self.size_bytes as f64 * 8.0 / b + f64::from(n.max(1)).log2() * self.chunk_bytes as f64 * 8.0 / b
    }

    /// The central alternative: every host fetches the whole artifact from the regional store, seconds
    /// after the store holds it (the slowest host's own link caps it too).
    pub fn central_s(&self, n: u32) -> f64 {
        let s = self.size_bytes as f64 * 8.0;
        let slowest = if self.slow_fraction > 0.0 { self.host_gbps * self.slow_factor } else { self.host_gbps };
        (f64::from(n) * s / (self.store_gbps * 1e9)).max(s / (slowest * 1e9))
    }

    /// A single pipelined binary tree: every interior node uploads two copies (rate B/2); with slow hosts
    /// about half the leaves sit below a slow interior node and inherit its rate. Seconds.
    pub fn binary_tree_s(&self, n: u32) -> f64 {
        let b = if self.slow_fraction > 0.0 { self.host_gbps * self.slow_factor } else { self.host_gbps } * 1e9;
        2.0 * self.size_bytes as f64 * 8.0 / b + f64::from(n.max(1)).log2() * 2.0 * self.chunk_bytes as f64 * 8.0 / b
    }
}

/// The outcome of a whole run.
#[derive(Clone, Debug, Default)]
pub struct FleetOutcome {
    /// Per region, in region order.
    pub regions: Vec<RegionOutcome>,
    /// Seconds from the successful build until the regional stores hold the artifact.
    pub replication_s: f64,
    /// Seconds from the build until 50 %, 99 % and 100 % of surviving hosts are active.
    pub p50_s: f64,
    /// See `p50_s`.
    pub p99_s: f64,
    /// See `p50_s`.
    pub p100_s: f64,
    /// Wall-clock seconds the model took.
    pub wall_s: f64,
}

impl FleetOutcome {
    /// Sum of a per-region figure.
    pub fn total(&self, f: impl Fn(&RegionOutcome) -> u64) -> u64 {
        self.regions.iter().map(f).sum()
    }

    /// The slowest region's fan-out (from its store holding the artifact to its last surviving host).
    pub fn slowest_region_s(&self) -> f64 {
        self.regions.iter().filter_map(|r| r.active_ns.iter().max()).max().map_or(0.0, |&ns| ns as f64 / 1e9)
    }
}

/// Runs every region (in parallel on `p.threads` threads) and gathers the figures.
pub fn run(p: &Params) -> FleetOutcome {
    assert!(p.regions > 0 && p.hosts >= p.regions, "at least one host per region");
    let started = Instant::now();
    let regions =
        parallel(p.regions as usize, p.threads, |r| run_region(p, p.hosts_in(r as u32), region_seed(p.seed, r)));
    let replication_s = p.replication_s();
    let mut all: Vec<u64> = regions.iter().flat_map(|r| r.active_ns.iter().copied()).collect();
    all.sort_unstable();
    let at = |q: f64| -> f64 {
        if all.is_empty() {
            return replication_s;
        }
        let i = ((q * all.len() as f64).ceil() as usize).clamp(1, all.len()) - 1;
        replication_s + all[i] as f64 / 1e9
    };
    FleetOutcome {
        p50_s: at(0.50),
        p99_s: at(0.99),
        p100_s: at(1.0),
        replication_s,
        regions,
        wall_s: started.elapsed().as_secs_f64(),
    }
}

/// The seed of region `r` in a run seeded `seed`: fixed per region, so results do not depend on which
/// thread ran which region.
pub fn region_seed(seed: u64, r: usize) -> u64 {
    seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (r as u64 + 1)
}

/// Runs `f(0) .. f(jobs - 1)` on `threads` threads, each taking the next job when it is free, and returns
/// the results in job order. Jobs that own their seed make the result independent of the thread count.
pub fn parallel<T: Send>(jobs: usize, threads: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<T>>> = Mutex::new((0..jobs).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| loop {
                let j = next.fetch_add(1, Ordering::Relaxed);
                if j >= jobs {
                    break;
                }
                let out = f(j);
                results.lock().expect("no worker panicked")[j] = Some(out);
            });
        }
    });
    results.into_inner().expect("no worker panicked").into_iter().map(|r| r.expect("job ran")).collect()
}

/// Peak resident memory of this process in MiB (`VmHWM` of /proc/self/status), if readable.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}
