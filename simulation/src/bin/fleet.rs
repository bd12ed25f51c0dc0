//! `cargo run --release -p cascade-simulation --bin fleet -- [flags]`: the fleet-scale fan-out model.
//! Prints the fleet run (10 regions × 10,000 hosts by default) and the loopback-size runs (N = 8, 16, 32
//! hosts, 64 MiB at 100 Mbit/s) with their ratio to the bound `S/B + log2(N)·p/B`.

use cascade_simulation::fleet::{self, Params};
use clap::Parser;

#[derive(Parser, Debug)]
#[command(about = "Fleet-scale model of Cascade's fan-out, running the real scheduler from cascade-core")]
struct Args {
    /// Regions.
    #[arg(long, default_value_t = 10)]
    regions: u32,
    /// Hosts in the whole fleet.
    #[arg(long, default_value_t = 100_000)]
    hosts: u32,
    /// Artifact size, GB (10^9 bytes).
    #[arg(long, default_value_t = 10.0)]
    size_gb: f64,
    /// Chunk size, MiB.
    #[arg(long, default_value_t = 16)]
    chunk_mib: u64,
    /// Host link, Gbit/s each direction.
    #[arg(long, default_value_t = 10.0)]
    host_gbps: f64,
    /// Seed (region manager) link, Gbit/s.
    #[arg(long, default_value_t = 10.0)]
    seed_gbps: f64,
    /// Regional store egress, Gbit/s (a few-node S3-compatible cluster, or one client's share of S3).
    #[arg(long, default_value_t = 25.0)]
    store_gbps: f64,
    /// Cross-region copy rate into each regional store, Gbit/s.
    #[arg(long, default_value_t = 5.0)]
    replication_gbps: f64,
    /// Main store egress shared by all regions' copies, Gbit/s.
    #[arg(long, default_value_t = 25.0)]
    main_egress_gbps: f64,
    /// Fraction of hosts that die mid-transfer.
    #[arg(long, default_value_t = 0.01)]
    dead: f64,
    /// Fraction of slow hosts.
    #[arg(long, default_value_t = 0.05)]
    slow: f64,
    /// A slow host's link relative to --host-gbps.
    #[arg(long, default_value_t = 0.1)]
    slow_factor: f64,
    /// Fraction of chunks hosts already hold from an earlier release.
    #[arg(long, default_value_t = 0.0)]
    held: f64,
    /// Hosts per region that corrupt what they send.
    #[arg(long, default_value_t = 0)]
    bad_hosts: u32,
    /// Time to notice a crash, ms.
    #[arg(long, default_value_t = 2000)]
    detect_ms: u64,
    /// Upload slots per host.
    #[arg(long, default_value_t = 2)]
    upload_slots: u8,
    /// Download slots per host.
    #[arg(long, default_value_t = 2)]
    download_slots: u8,
    /// Upload slots of the seed.
    #[arg(long, default_value_t = 2)]
    seed_slots: u16,
    /// Random candidates the scheduler tries per matching attempt.
    #[arg(long, default_value_t = 8)]
    samples: u8,
    /// Seed of the run.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Threads (regions run in parallel).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Chunk size of the loopback-size runs, MiB (comma-separated list).
    #[arg(long, default_value = "1,4")]
    small_chunk_mib: String,
    /// Skip the fleet run.
    #[arg(long)]
    no_fleet: bool,
    /// Skip the loopback-size runs.
    #[arg(long)]
    no_small: bool,
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    anyhow::ensure!(a.regions > 0 && a.hosts >= a.regions, "need at least one host per region");
    anyhow::ensure!(a.size_gb > 0.0 && a.chunk_mib > 0, "size and chunk size must be positive");
    let p = Params {
        regions: a.regions,
        hosts: a.hosts,
        size_bytes: (a.size_gb * 1e9) as u64,
        chunk_bytes: a.chunk_mib << 20,
        host_gbps: a.host_gbps,
        seed_gbps: a.seed_gbps,
        store_gbps: a.store_gbps,
        replication_gbps: a.replication_gbps,
        main_egress_gbps: a.main_egress_gbps,
        dead_fraction: a.dead,
        slow_fraction: a.slow,
        slow_factor: a.slow_factor,
        held_fraction: a.held,
        bad_hosts: a.bad_hosts,
        detect_ms: a.detect_ms,
        upload_slots: a.upload_slots,
        download_slots: a.download_slots,
        seed_slots: a.seed_slots,
        samples: a.samples,
        seed: a.seed,
        threads: a.threads,
    };
    if !a.no_fleet {
        print_fleet(&p);
    }
    if !a.no_small {
        let chunks: Vec<u64> = a.small_chunk_mib.split(',').map(|s| s.trim().parse()).collect::<Result<_, _>>()?;
        print_small(&p, &chunks);
    }
    if let Some(mib) = fleet::peak_rss_mib() {
        println!("peak memory (VmHWM): {mib:.0} MiB");
    }
    Ok(())
}

fn print_fleet(p: &Params) {
    let n = p.hosts / p.regions;
    println!(
        "fleet: {} regions × {} hosts, {:.1} GB in {} MiB chunks, hosts {} Gbit/s, seed {} Gbit/s, store {} Gbit/s",
        p.regions,
        n,
        p.size_bytes as f64 / 1e9,
        p.chunk_bytes >> 20,
        p.host_gbps,
        p.seed_gbps,
        p.store_gbps
    );
    println!(
        "       {:.0} % die mid-transfer (noticed after {} ms), {:.0} % slow at {:.0} % speed, slots up/down/seed {}/{}/{}, seed {}",
        p.dead_fraction * 100.0,
        p.detect_ms,
        p.slow_fraction * 100.0,
        p.slow_factor * 100.0,
        p.upload_slots,
        p.download_slots,
        p.seed_slots,
        p.seed
    );
    let o = fleet::run(p);
    let survivors: usize = o.regions.iter().map(|r| r.active_ns.len()).sum();
    let died: u32 = o.regions.iter().map(|r| r.died).sum();
    println!(
        "replication main → regions: {:.1} s ({} Gbit/s per region, main egress {} Gbit/s)",
        o.replication_s, p.replication_gbps, p.main_egress_gbps
    );
    println!("surviving hosts {survivors}, died {died}");
    println!(
        "active (from the successful build): 50 % {:.1} s, 99 % {:.1} s, 100 % {:.1} s",
        o.p50_s, o.p99_s, o.p100_s
    );
    let fast: Vec<f64> = o.regions.iter().map(|r| quantile(&r.active_ns, 0.5)).collect();
    let bound = p.bound_s(n);
    let fast_last = o.regions.iter().map(|r| r.fast_last_ns).max().unwrap_or(0) as f64 / 1e9;
    println!("last host that is not slow active: {:.1} s from the build", o.replication_s + fast_last);
    println!(
        "fan-out per region (from its store holding the artifact): median host {:.2} s, slowest region's last host {:.1} s",
        fast.iter().sum::<f64>() / fast.len() as f64,
        o.slowest_region_s()
    );
    println!(
        "bound S/B + log2(N)·p/B per region: {bound:.2} s; median host / bound = {:.3}; slow hosts' own S/B_slow = {:.1} s",
        fast.iter().sum::<f64>() / fast.len() as f64 / bound,
        p.size_bytes as f64 * 8.0 / (p.host_gbps * p.slow_factor * 1e9)
    );
    let gb = |b: u64| b as f64 / 1e9;
    println!(
        "bytes: store read {:.0} GB, served by seeds {:.0} GB, by peers {:.0} GB ({:.3} % from seeds), wasted {:.1} GB",
        gb(o.total(|r| r.store_bytes)),
        gb(o.total(|r| r.seed_bytes)),
        gb(o.total(|r| r.peer_bytes)),
        100.0 * o.total(|r| r.seed_bytes) as f64 / o.total(|r| r.seed_bytes + r.peer_bytes).max(1) as f64,
        gb(o.total(|r| r.wasted_bytes))
    );
    println!(
        "alternatives: central (every host from the store) {:.0} s; single binary tree {:.0} s; requirement 1800 s",
        o.replication_s + p.central_s(n),
        o.replication_s + p.binary_tree_s(n)
    );
    println!("model: {} events, wall clock {:.1} s", o.total(|r| r.events), o.wall_s);
}

fn print_small(base: &Params, chunk_mibs: &[u64]) {
    println!(
        "loopback size: one region, 64 MiB at 100 Mbit/s, no failures; slots up/down/seed {}/{}/{}",
        base.upload_slots, base.download_slots, base.seed_slots
    );
    println!(
        "{:>4} {:>6} {:>9} {:>9} {:>7} {:>11} {:>8}",
        "N", "p MiB", "time s", "bound s", "ratio", "central s", "ratio"
    );
    for &mib in chunk_mibs {
        for n in [8u32, 16, 32] {
            let p = Params {
                upload_slots: base.upload_slots,
                download_slots: base.download_slots,
                seed_slots: base.seed_slots,
                seed: base.seed,
                samples: base.samples,
                ..Params::loopback(n, mib << 20)
            };
            let o = fleet::run(&p);
            let bound = p.bound_s(n);
            // Central on the loopback bench is one nginx on the seed host: its link is the limit.
            let central = f64::from(n) * p.size_bytes as f64 * 8.0 / (p.seed_gbps * 1e9);
            println!(
                "{n:>4} {mib:>6} {:>9.2} {bound:>9.2} {:>7.3} {central:>11.1} {:>8.1}",
                o.p100_s,
                o.p100_s / bound,
                central / bound
            );
        }
    }
}

/// The `q` quantile of nanosecond samples, in seconds.
fn quantile(ns: &[u64], q: f64) -> f64 {
    let mut v = ns.to_vec();
    v.sort_unstable();
    if v.is_empty() {
        return 0.0;
    }
    let i = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
    v[i] as f64 / 1e9
}
