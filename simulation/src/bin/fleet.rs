//! `cargo run --release -p cascade-simulation --bin fleet -- [flags]`: the fleet-scale fan-out model.
//! Prints the fleet run (10 regions × 10,000 hosts by default) and the loopback-size runs (N = 8, 16, 32
//! hosts, 64 MiB at 100 Mbit/s) with their ratio to the bound `S/B + log2(N)·p/B`. With `--services N` it
//! prints the service mix instead: N services, each deployed only to its hosts, against every host
//! receiving every service's artifact.

use cascade_simulation::fleet::{self, Mix, MixOutcome, Params, PerHost, Placement, Service};
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
    /// Run the service mix of this many services instead of the fleet and loopback runs (0: off).
    #[arg(long, default_value_t = 0)]
    services: u32,
    /// Service mix: smallest artifact, GB.
    #[arg(long, default_value_t = 1.0)]
    service_min_gb: f64,
    /// Service mix: largest artifact, GB.
    #[arg(long, default_value_t = 10.0)]
    service_max_gb: f64,
    /// Service mix: smallest share of the hosts a service runs on.
    #[arg(long, default_value_t = 0.05)]
    placement_min: f64,
    /// Service mix: largest share of the hosts a service runs on.
    #[arg(long, default_value_t = 0.5)]
    placement_max: f64,
    /// Progressive delivery: after the fleet run, activate in these waves (a TOML array as in
    /// `cascade.toml`) against one wave of every host, and with a build whose health probe fails.
    #[arg(long)]
    waves: Option<String>,
    /// With --waves: each wave healthy this long before the next opens, seconds.
    #[arg(long, default_value_t = 0)]
    bake_secs: u64,
    /// With --waves: seconds from a host's switch to its health verdict (activate + probe).
    #[arg(long, default_value_t = 5.0)]
    switch_secs: f64,
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
    if a.services > 0 {
        anyhow::ensure!(
            a.service_min_gb > 0.0 && a.service_min_gb <= a.service_max_gb,
            "service sizes: need 0 < --service-min-gb <= --service-max-gb"
        );
        anyhow::ensure!(
            a.placement_min > 0.0 && a.placement_min <= a.placement_max && a.placement_max <= 1.0,
            "placement: need 0 < --placement-min <= --placement-max <= 1"
        );
        let mix = Mix {
            services: a.services,
            min_bytes: (a.service_min_gb * 1e9) as u64,
            max_bytes: (a.service_max_gb * 1e9) as u64,
            min_fraction: a.placement_min,
            max_fraction: a.placement_max,
        };
        anyhow::ensure!(mix.min_bytes > 0, "--service-min-gb is below one byte");
        print_services(&p, &mix);
    } else if !a.no_fleet {
        let outcome = print_fleet(&p);
        if let Some(waves) = &a.waves {
            print_waves(&outcome, waves, a.bake_secs, a.switch_secs)?;
        }
    }
    if a.services == 0 && !a.no_small {
        let chunks: Vec<u64> = a.small_chunk_mib.split(',').map(|s| s.trim().parse()).collect::<Result<_, _>>()?;
        print_small(&p, &chunks);
    }
    if let Some(mib) = fleet::peak_rss_mib() {
        println!("peak memory (VmHWM): {mib:.0} MiB");
    }
    Ok(())
}

/// The rollout of `waves` over the fan-out `o`, against one wave, then with a failing canary.
fn print_waves(o: &fleet::FleetOutcome, waves: &str, bake_secs: u64, switch_secs: f64) -> anyhow::Result<()> {
    use cascade_core::rollout::{RolloutPolicy, RolloutSection, WaveSection};
    #[derive(serde::Deserialize)]
    struct Waves {
        waves: Vec<WaveSection>,
    }
    let parsed: Waves = toml::from_str(&format!("waves = {waves}"))?;
    let section = RolloutSection {
        waves: Some(parsed.waves),
        bake_secs: Some(bake_secs),
        on_failure: Some("rollback".into()),
        ..RolloutSection::default()
    };
    let staged = section.apply_to(&RolloutPolicy::default()).map_err(|e| anyhow::anyhow!("--waves: {e}"))?;
    let single = RolloutPolicy { on_failure: staged.on_failure, ..RolloutPolicy::default() };
    let run = |policy: &RolloutPolicy, bad_build: bool| {
        fleet::run_waves(
            o,
            &fleet::WaveParams { policy: policy.clone(), switch_s: switch_secs, gate_s: 0.5, bad_build },
        )
    };
    println!("rollout: switch (activate + health) {switch_secs} s per host, gate tick 0.5 s, bake {bake_secs} s");
    for (name, policy) in [("one wave", &single), ("waves", &staged)] {
        let waves: Vec<String> = policy.waves.iter().map(cascade_core::rollout::Wave::describe).collect();
        let good = run(policy, false);
        let opened: Vec<String> = good.opened.iter().map(|(at, hosts)| format!("{at:.1} s ({hosts} hosts)")).collect();
        let end = good
            .end
            .as_ref()
            .map_or("not ended".to_string(), |(state, _, at)| format!("{} at {at:.1} s", state.name()));
        println!(
            "  {name} [{}]: waves opened at {}; {end}; last host healthy {:.1} s",
            waves.join(", "),
            opened.join(", "),
            good.last_verdict_s
        );
        let bad = run(policy, true);
        let end = bad
            .end
            .as_ref()
            .map_or("not ended".to_string(), |(state, reason, at)| format!("{} at {at:.1} s: {reason}", state.name()));
        println!("    bad build: {} of {} hosts switched to it; {end}", bad.switched, bad.hosts);
    }
    Ok(())
}

fn print_fleet(p: &Params) -> fleet::FleetOutcome {
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
    o
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

fn print_services(p: &Params, mix: &Mix) {
    println!(
        "service mix: {} services of {:.1}–{:.1} GB, each on {:.0}–{:.0} % of {} hosts in {} regions, seed {}",
        mix.services,
        mix.min_bytes as f64 / 1e9,
        mix.max_bytes as f64 / 1e9,
        mix.min_fraction * 100.0,
        mix.max_fraction * 100.0,
        p.hosts,
        p.regions,
        p.seed
    );
    println!(
        "       rollouts one after the other (each service alone on the links); per rollout {:.0} % die, {:.0} % slow \
         at {:.0} % speed; hosts {} Gbit/s, {} MiB chunks; times from each service's build",
        p.dead_fraction * 100.0,
        p.slow_fraction * 100.0,
        p.slow_factor * 100.0,
        p.host_gbps,
        p.chunk_bytes >> 20
    );
    let services = fleet::draw_services(p, mix);
    let targeted = fleet::run_mix(p, &services, Placement::Targeted);
    let everything = fleet::run_mix(p, &services, Placement::Everything);
    println!(
        "{:>3} {:>8} {:>7} {:>8} {:>12} {:>12} {:>12} {:>12}",
        "svc", "size GB", "placed", "hosts", "p50 tgt s", "100% tgt s", "p50 all s", "100% all s"
    );
    for (i, s) in services.iter().enumerate() {
        let (t, e) = (&targeted.services[i], &everything.services[i]);
        println!(
            "{:>3} {:>8.2} {:>6.1}% {:>8} {:>12.1} {:>12.1} {:>12.1} {:>12.1}",
            i + 1,
            s.size_bytes as f64 / 1e9,
            s.fraction * 100.0,
            s.targeted(),
            t.p50_s,
            t.p100_s,
            e.p50_s,
            e.p100_s
        );
    }
    let back_to_back = |o: &MixOutcome| o.services.iter().map(|s| s.p100_s).sum::<f64>();
    println!(
        "all {} deploys back to back (Σ 100 %): targeted {:.0} s, everything {:.0} s",
        mix.services,
        back_to_back(&targeted),
        back_to_back(&everything)
    );
    print_bytes(p, &services, &targeted, &everything);
}

fn print_bytes(p: &Params, services: &[Service], targeted: &MixOutcome, everything: &MixOutcome) {
    let gb = |b: f64| b / 1e9;
    let line = |name: &str, o: &MixOutcome| {
        let h = PerHost::of(&o.received_bytes);
        println!(
            "  {name:<11} mean {:>7.1} GB, p50 {:>7.1} GB, max {:>7.1} GB",
            gb(h.mean),
            gb(h.p50 as f64),
            gb(h.max as f64)
        );
    };
    println!("bytes received per host (verified, plus corrupt chunks fetched again):");
    line("targeted", targeted);
    line("everything", everything);
    let running =
        services.iter().flat_map(|s| s.hosts.iter().flatten()).fold(vec![0u32; p.hosts as usize], |mut n, &h| {
            n[h as usize] += 1;
            n
        });
    let per_host = PerHost::of(&running.iter().map(|&n| u64::from(n)).collect::<Vec<_>>());
    println!(
        "services per host: mean {:.2}, p50 {}, max {}; hosts running none {}",
        per_host.mean,
        per_host.p50,
        per_host.max,
        running.iter().filter(|&&n| n == 0).count()
    );
    let total = |o: &MixOutcome, f: fn(&fleet::ServiceOutcome) -> u64| o.services.iter().map(f).sum::<u64>() as f64;
    let copies: f64 = services.iter().map(|s| (s.size_bytes * u64::from(p.regions)) as f64).sum();
    for (name, o) in [("targeted", targeted), ("everything", everything)] {
        println!(
            "fleet total {name:<10}: delivered to hosts {:>9.1} TB, lost to deaths/corruption {:>6.2} TB, store reads {:.2} TB, \
             replication {:.2} TB; {} died in some rollout; model {} M events, {:.1} s wall",
            gb(total(o, |s| s.delivered_bytes)) / 1e3,
            gb(total(o, |s| s.wasted_bytes)) / 1e3,
            gb(total(o, |s| s.store_bytes)) / 1e3,
            gb(copies) / 1e3,
            o.died_once.iter().filter(|&&d| d).count(),
            total(o, |s| s.events) as u64 / 1_000_000,
            o.wall_s
        );
    }
    println!(
        "targeted / everything: delivered bytes {:.3}",
        total(targeted, |s| s.delivered_bytes) / total(everything, |s| s.delivered_bytes).max(1.0)
    );
    // Not modelled: all deploys at once, sharing the links. Whatever the schedule, a host then needs its
    // bytes over its own download link, so that bounds the simultaneous rollout below.
    let link_s = |bytes: f64| bytes * 8.0 / (p.host_gbps * 1e9);
    let (t, e) = (PerHost::of(&targeted.received_bytes), PerHost::of(&everything.received_bytes));
    println!(
        "if all deployed at once (not modelled), a host's bytes / its link bound it below: median host targeted \
         {:.0} s, everything {:.0} s; busiest host {:.0} s, {:.0} s ({:.0} × that on a slow link)",
        link_s(t.p50 as f64),
        link_s(e.p50 as f64),
        link_s(t.max as f64),
        link_s(e.max as f64),
        1.0 / p.slow_factor
    );
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
