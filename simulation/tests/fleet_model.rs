//! The fleet model at small sizes: it converges, it is reproducible, it lands near the bound, and the
//! service mix sends each host only what it runs.

use cascade_simulation::fleet::{self, Mix, Params, Placement};

fn small_fleet() -> Params {
    Params {
        regions: 3,
        hosts: 300,
        size_bytes: 64 << 20,
        chunk_bytes: 1 << 20,
        dead_fraction: 0.05,
        slow_fraction: 0.1,
        bad_hosts: 2,
        detect_ms: 500,
        threads: 2,
        ..Params::fleet()
    }
}

#[test]
fn every_survivor_activates_despite_crashes_slow_and_corrupt_hosts() {
    let p = small_fleet();
    let o = fleet::run(&p);
    let died: u32 = o.regions.iter().map(|r| r.died).sum();
    let active: usize = o.regions.iter().map(|r| r.active_ns.len()).sum();
    assert!(died > 0, "the seed makes some hosts die");
    assert_eq!(active as u32 + died, p.hosts, "every host that does not die becomes active");
    assert!(o.total(|r| r.bad_reports) >= 2 * 3, "each corrupt host is caught");
    for r in &o.regions {
        assert_eq!(r.store_bytes, p.size_bytes, "the seed reads the artifact from the store once");
        let delivered = r.seed_bytes + r.peer_bytes;
        assert!(r.seed_bytes < delivered / 10, "peers carry the swarm: seed {} of {delivered}", r.seed_bytes);
    }
    assert!(o.p50_s <= o.p99_s && o.p99_s <= o.p100_s);
}

#[test]
fn a_seed_reproduces_a_run_whatever_the_thread_count() {
    let p = small_fleet();
    let a = fleet::run(&p);
    let b = fleet::run(&Params { threads: 1, ..p.clone() });
    assert_eq!(a.p100_s, b.p100_s);
    assert_eq!(a.total(|r| r.peer_bytes), b.total(|r| r.peer_bytes));
    let c = fleet::run(&Params { seed: 2, ..p });
    assert_ne!(a.total(|r| r.events), c.total(|r| r.events), "another seed, another run");
}

#[test]
fn loopback_size_lands_near_the_bound() {
    for n in [8, 16, 32] {
        let p = Params::loopback(n, 1 << 20);
        let o = fleet::run(&p);
        let ratio = o.p100_s / p.bound_s(n);
        assert!(ratio >= 1.0 - 1e-9, "nothing beats the bound: N={n} ratio {ratio}");
        assert!(ratio < 1.3, "N={n}: {ratio:.3} × the bound");
    }
}

#[test]
fn held_chunks_shorten_the_rollout() {
    let base = Params { regions: 1, hosts: 50, dead_fraction: 0.0, slow_fraction: 0.0, ..small_fleet() };
    let fresh = fleet::run(&base);
    let warm = fleet::run(&Params { held_fraction: 0.9, ..base });
    assert!(warm.total(|r| r.peer_bytes + r.seed_bytes) < fresh.total(|r| r.peer_bytes + r.seed_bytes) / 5);
    assert!(warm.p100_s < fresh.p100_s);
}

fn small_mix() -> (Params, Mix) {
    let p = small_fleet();
    let mix = Mix { services: 6, min_bytes: 4 << 20, max_bytes: 24 << 20, min_fraction: 0.1, max_fraction: 0.6 };
    (p, mix)
}

#[test]
fn service_mix_targets_only_the_hosts_that_run_each_service() {
    let (p, mix) = small_mix();
    let services = fleet::draw_services(&p, &mix);
    assert_eq!(services.len(), mix.services as usize);
    for (i, s) in services.iter().enumerate() {
        assert!((mix.min_bytes..=mix.max_bytes).contains(&s.size_bytes), "service {i}: size {}", s.size_bytes);
        assert!((mix.min_fraction..=mix.max_fraction).contains(&s.fraction), "service {i}: {}", s.fraction);
        for (r, hosts) in s.hosts.iter().enumerate() {
            // Each region gets round(fraction × its hosts): within the range up to rounding.
            let n = f64::from(p.hosts_in(r as u32));
            let share = hosts.len() as f64 / n;
            let slack = 0.5 / n + 1e-9;
            assert!(
                share >= mix.min_fraction - slack && share <= mix.max_fraction + slack,
                "service {i} region {r}: {share}"
            );
            assert!(hosts.windows(2).all(|w| w[0] < w[1]), "distinct hosts");
        }
    }
    let targeted = fleet::run_mix(&p, &services, Placement::Targeted);
    let everything = fleet::run_mix(&p, &services, Placement::Everything);
    // What each host should receive: the sizes of the services it runs, and nothing of the others.
    let mut expected = vec![0u64; p.hosts as usize];
    let mut runs = vec![0u64; p.hosts as usize];
    for s in &services {
        for &h in s.hosts.iter().flatten() {
            expected[h as usize] += s.size_bytes;
            runs[h as usize] += 1;
        }
    }
    let all: u64 = services.iter().map(|s| s.size_bytes).sum();
    // A corrupt chunk is received and fetched again: allow a few re-fetched chunks per rollout.
    let refetch = |n: u64| n * 4 * p.chunk_bytes;
    for h in 0..p.hosts as usize {
        let got = targeted.received_bytes[h];
        if runs[h] == 0 {
            assert_eq!(got, 0, "host {h} runs no service and receives nothing");
            continue;
        }
        assert!(got <= expected[h] + refetch(runs[h]), "host {h}: {got} > its services' {}", expected[h]);
        if !targeted.died_once[h] {
            assert!(got >= expected[h], "surviving host {h}: {got} < its services' {}", expected[h]);
        }
        let all_got = everything.received_bytes[h];
        assert!(all_got <= all + refetch(mix.services.into()), "host {h}: {all_got} > every artifact's {all}");
        if !everything.died_once[h] {
            assert!(all_got >= all, "host {h} receives every artifact today: {all_got} < {all}");
        }
    }
    let delivered = |o: &fleet::MixOutcome| o.services.iter().map(|s| s.delivered_bytes).sum::<u64>();
    assert!(delivered(&targeted) < delivered(&everything), "targeting moves fewer bytes");
    assert!(targeted.received_bytes.iter().sum::<u64>() >= delivered(&targeted), "hosts received what was delivered");
    for (s, o) in services.iter().zip(&targeted.services) {
        assert_eq!(o.hosts, s.targeted(), "a service's swarm is its hosts");
        assert_eq!(o.store_bytes, s.size_bytes * u64::from(p.regions), "each region's store read once");
        assert!(o.p50_s <= o.p100_s);
    }
}

#[test]
fn a_seed_reproduces_the_service_mix_whatever_the_thread_count() {
    let (p, mix) = small_mix();
    let services = fleet::draw_services(&p, &mix);
    let a = fleet::run_mix(&p, &services, Placement::Targeted);
    let one = Params { threads: 1, ..p.clone() };
    let b = fleet::run_mix(&one, &fleet::draw_services(&one, &mix), Placement::Targeted);
    assert_eq!(a.received_bytes, b.received_bytes);
    assert_eq!(
        a.services.iter().map(|s| s.p100_s).collect::<Vec<_>>(),
        b.services.iter().map(|s| s.p100_s).collect::<Vec<_>>()
    );
}

/// The fleet model's waves on a small fleet: `[1 cluster, 50 %, 100 %]` over 3 one-cluster regions.
fn staged_policy() -> cascade_core::rollout::RolloutPolicy {
    use cascade_core::rollout::{RolloutPolicy, RolloutSection, WaveSection};
    let wave = |clusters, percent| WaveSection { clusters, percent, ..WaveSection::default() };
    let section = RolloutSection {
        waves: Some(vec![wave(Some(1), None), wave(None, Some(50)), wave(None, Some(100))]),
        on_failure: Some("rollback".into()),
        ..RolloutSection::default()
    };
    section.apply_to(&RolloutPolicy::default()).expect("a valid policy")
}

#[test]
fn waves_open_in_order_and_a_bad_build_reaches_only_the_canary_cluster() {
    use cascade_core::rollout::EndState;
    let p = small_fleet();
    let fanout = fleet::run(&p);
    let run = |bad_build| {
        let params = fleet::WaveParams { policy: staged_policy(), switch_s: 5.0, gate_s: 0.5, bad_build };
        fleet::run_waves(&fanout, &params)
    };
    let good = run(false);
    assert_eq!(good.end.as_ref().map(|(state, _, _)| *state), Some(EndState::Complete), "{:?}", good.end);
    assert_eq!(good.opened.len(), 3, "every wave opened: {:?}", good.opened);
    for pair in good.opened.windows(2) {
        assert!(pair[0].0 < pair[1].0 && pair[0].1 < pair[1].1, "in order, each admitting more: {:?}", good.opened);
    }
    assert_eq!(good.switched, good.hosts, "every surviving host switched");
    let canary = good.opened[0].1;
    assert_eq!(canary, u64::from(p.hosts / p.regions), "wave 1 is one whole cluster");

    let bad = run(true);
    assert_eq!(bad.end.as_ref().map(|(state, _, _)| *state), Some(EndState::RolledBack), "{:?}", bad.end);
    assert_eq!(bad.opened.len(), 1, "no wave after the canary opened: {:?}", bad.opened);
    assert!(bad.switched > 0 && bad.switched <= canary, "{} hosts ran the bad build (canary {canary})", bad.switched);
}
