//! Service targeting: many services, each placed on a subset of the fleet, each deployed only to the hosts
//! that run it (its swarm in a region is those hosts alone), against today's "every host gets everything".
//!
//! Each service's rollout is the existing per-region model ([`run_region`]) with the region's host count
//! set to the service's hosts there. Rollouts run **one after the other**: each service has the links to
//! itself, as when deploys are not simultaneous. That is the simplest honest model; concurrent deploys
//! sharing host links would lengthen every rollout and is not modelled. A service's times are measured
//! from its own successful build (replication of its artifact included).
//!
//! Faults keep the fleet's defaults and are drawn per rollout: in each (service, region) rollout 1 % of
//! the hosts die mid-transfer and 5 % are slow. A crash is a per-rollout event (the host restarts before
//! the next deploy; the model does not replay the one it missed), so a host that died in some rollout
//! received less than its share. Slowness is also drawn per rollout rather than per host; it only decides
//! *which* hosts are the last, and with at least a few hundred hosts per rollout every service has slow
//! hosts either way.

use std::time::Instant;

use cascade_core::fanout::SplitMix64;

use super::{parallel, region_seed, run_region, Params, RegionOutcome};

/// The service mix: how many services, their artifact sizes and how much of the fleet each runs on.
#[derive(Clone, Debug)]
pub struct Mix {
    /// Services in the fleet.
    pub services: u32,
    /// Smallest artifact, bytes (sizes are uniform in `min_bytes..=max_bytes`).
    pub min_bytes: u64,
    /// Largest artifact, bytes.
    pub max_bytes: u64,
    /// Smallest share of the hosts a service runs on (fractions are uniform in the range).
    pub min_fraction: f64,
    /// Largest share of the hosts a service runs on.
    pub max_fraction: f64,
}

impl Mix {
    /// The mix: 20 services of 1–10 GB, each on 5–50 % of the hosts.
    pub fn fleet() -> Self {
        Mix { services: 20, min_bytes: 1_000_000_000, max_bytes: 10_000_000_000, min_fraction: 0.05, max_fraction: 0.5 }
    }
}

/// One service: its artifact and the hosts that run it.
#[derive(Clone, Debug)]
pub struct Service {
    /// Artifact size, bytes.
    pub size_bytes: u64,
    /// The drawn share of the hosts; each region gets `round(fraction × its hosts)`, at least one.
    pub fraction: f64,
    /// Per region, the fleet-wide ids (`0..hosts`, region by region) of the hosts that run the service,
    /// ascending. Host `i` of the service's rollout in region `r` is `hosts[r][i]`.
    pub hosts: Vec<Vec<u32>>,
}

impl Service {
    /// Hosts that run the service in the whole fleet.
    pub fn targeted(&self) -> u32 {
        self.hosts.iter().map(|h| h.len() as u32).sum()
    }
}

/// Who receives a service's artifact.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// Only the hosts that run the service (service targeting).
    Targeted,
    /// Every host of the fleet (today's behaviour).
    Everything,
}

/// One service's rollout over the fleet.
#[derive(Clone, Debug, Default)]
pub struct ServiceOutcome {
    /// Hosts the artifact went to.
    pub hosts: u32,
    /// Hosts that died during the rollout.
    pub died: u32,
    /// Seconds from the service's build until its regional stores hold the artifact.
    pub replication_s: f64,
    /// Seconds from the build until 50 % of the surviving hosts are active.
    pub p50_s: f64,
    /// Seconds from the build until every surviving host is active.
    pub p100_s: f64,
    /// Bytes delivered (verified) to hosts, from seeds and peers.
    pub delivered_bytes: u64,
    /// Bytes of transfers that did not end verified.
    pub wasted_bytes: u64,
    /// Bytes the seeds read from the regional stores.
    pub store_bytes: u64,
    /// Discrete events processed.
    pub events: u64,
}

/// Every service's rollout under one placement.
#[derive(Clone, Debug)]
pub struct MixOutcome {
    /// Per service, in service order.
    pub services: Vec<ServiceOutcome>,
    /// Per fleet host (`0..hosts`): bytes it received over all rollouts (see `RegionOutcome::received_bytes`).
    pub received_bytes: Vec<u64>,
    /// Per fleet host: whether it died in at least one rollout (and so may hold less than its share).
    pub died_once: Vec<bool>,
    /// Wall-clock seconds the model took.
    pub wall_s: f64,
}

/// Mean, median and largest of a per-host figure.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PerHost {
    /// Mean over all hosts.
    pub mean: f64,
    /// Median (the lower one for an even count).
    pub p50: u64,
    /// Largest.
    pub max: u64,
}

impl PerHost {
    /// The figures of `values` (zeros for none).
    pub fn of(values: &[u64]) -> Self {
        if values.is_empty() {
            return PerHost::default();
        }
        let mut v = values.to_vec();
        v.sort_unstable();
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
        PerHost { mean, p50: v[(v.len() - 1) / 2], max: v[v.len() - 1] }
    }
}

/// Draws the mix's services for fleet `p`: per service its size, its fraction and its hosts per region.
/// Everything follows from `p.seed`, so the targeted and the everything runs see the same services.
pub fn draw_services(p: &Params, mix: &Mix) -> Vec<Service> {
    assert!(mix.min_bytes > 0 && mix.min_bytes <= mix.max_bytes, "sizes: 0 < min <= max");
    assert!(
        mix.min_fraction > 0.0 && mix.min_fraction <= mix.max_fraction && mix.max_fraction <= 1.0,
        "fractions: 0 < min <= max <= 1"
    );
    let mut rng = SplitMix64::new(p.seed ^ 0x5E41_11CE_0000_0000);
    let mut offset = 0u32;
    let offsets: Vec<u32> = (0..p.regions)
        .map(|r| {
            let o = offset;
            offset += p.hosts_in(r);
            o
        })
        .collect();
    (0..mix.services)
        .map(|_| {
            let span = (mix.max_bytes - mix.min_bytes) as f64;
            let size_bytes = mix.min_bytes + (rng.unit() * (span + 1.0)).min(span) as u64;
            let fraction = mix.min_fraction + rng.unit() * (mix.max_fraction - mix.min_fraction);
            let hosts = (0..p.regions)
                .map(|r| {
                    let n = p.hosts_in(r);
                    let k = ((fraction * f64::from(n)).round() as u32).clamp(1, n);
                    let mut chosen = pick(&mut rng, n, k);
                    chosen.iter_mut().for_each(|h| *h += offsets[r as usize]);
                    chosen
                })
                .collect();
            Service { size_bytes, fraction, hosts }
        })
        .collect()
}

/// `k` distinct values of `0..n`, ascending (a partial Fisher–Yates shuffle).
fn pick(rng: &mut SplitMix64, n: u32, k: u32) -> Vec<u32> {
    let mut all: Vec<u32> = (0..n).collect();
    for i in 0..k {
        let j = i + rng.below(n - i);
        all.swap(i as usize, j as usize);
    }
    all.truncate(k as usize);
    all.sort_unstable();
    all
}

/// Runs every service's rollout, one after the other in time (each alone on the links), with the artifact
/// going to the hosts `placement` says. The (service, region) rollouts are independent, so they run on
/// `p.threads` threads, largest first; each has its own seed (the service's, the same under both
/// placements), so the result does not depend on the thread count.
pub fn run_mix(p: &Params, services: &[Service], placement: Placement) -> MixOutcome {
    assert!(p.regions > 0 && p.hosts >= p.regions, "at least one host per region");
    let started = Instant::now();
    let hosts_of = |s: usize, r: u32| -> u32 {
        match placement {
            Placement::Targeted => services[s].hosts[r as usize].len() as u32,
            Placement::Everything => p.hosts_in(r),
        }
    };
    let mut jobs: Vec<(usize, u32)> = (0..services.len())
        .flat_map(|s| (0..p.regions).map(move |r| (s, r)))
        .filter(|&(s, r)| hosts_of(s, r) > 0)
        .collect();
    // Longest first, so the last job to finish is a short one and both threads stay busy.
    jobs.sort_by_key(|&(s, r)| std::cmp::Reverse(u64::from(hosts_of(s, r)) * services[s].size_bytes));
    let outcomes = parallel(jobs.len(), p.threads, |j| {
        let (s, r) = jobs[j];
        let ps = service_params(p, s, services[s].size_bytes);
        run_region(&ps, hosts_of(s, r), region_seed(ps.seed, r as usize))
    });
    let mut received_bytes = vec![0u64; p.hosts as usize];
    let mut died_once = vec![false; p.hosts as usize];
    let mut per_service: Vec<Vec<&RegionOutcome>> = vec![Vec::new(); services.len()];
    let mut offsets = vec![0u32; p.regions as usize];
    for r in 1..p.regions as usize {
        offsets[r] = offsets[r - 1] + p.hosts_in(r as u32 - 1);
    }
    for (&(s, r), o) in jobs.iter().zip(&outcomes) {
        let global = |i: usize| -> usize {
            match placement {
                Placement::Targeted => services[s].hosts[r as usize][i] as usize,
                Placement::Everything => (offsets[r as usize] + i as u32) as usize,
            }
        };
        for (i, &b) in o.received_bytes.iter().enumerate() {
            received_bytes[global(i)] += b;
        }
        for &h in &o.died_hosts {
            died_once[global(h as usize - 1)] = true;
        }
        per_service[s].push(o);
    }
    let services = per_service
        .iter()
        .enumerate()
        .map(|(s, regions)| summarize(&service_params(p, s, services[s].size_bytes), regions))
        .collect();
    MixOutcome { services, received_bytes, died_once, wall_s: started.elapsed().as_secs_f64() }
}

/// The fleet's parameters for service `s`'s rollout: its size, and a seed of its own.
fn service_params(p: &Params, s: usize, size_bytes: u64) -> Params {
    let seed = SplitMix64::new(p.seed ^ ((s as u64 + 1) << 40)).next_u64();
    Params { size_bytes, seed, ..p.clone() }
}

/// A service's figures from its regions' rollouts.
fn summarize(p: &Params, regions: &[&RegionOutcome]) -> ServiceOutcome {
    let replication_s = p.replication_s();
    let mut active: Vec<u64> = regions.iter().flat_map(|r| r.active_ns.iter().copied()).collect();
    active.sort_unstable();
    let at = |q: f64| -> f64 {
        if active.is_empty() {
            return replication_s;
        }
        let i = ((q * active.len() as f64).ceil() as usize).clamp(1, active.len()) - 1;
        replication_s + active[i] as f64 / 1e9
    };
    let sum = |f: fn(&RegionOutcome) -> u64| regions.iter().map(|r| f(r)).sum::<u64>();
    ServiceOutcome {
        hosts: regions.iter().map(|r| r.hosts).sum(),
        died: regions.iter().map(|r| r.died).sum(),
        replication_s,
        p50_s: at(0.5),
        p100_s: at(1.0),
        delivered_bytes: sum(|r| r.seed_bytes + r.peer_bytes),
        wasted_bytes: sum(|r| r.wasted_bytes),
        store_bytes: sum(|r| r.store_bytes),
        events: sum(|r| r.events),
    }
}
