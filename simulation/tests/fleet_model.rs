//! The fleet model at small sizes: it converges, it is reproducible, and it lands near the bound.

use cascade_simulation::fleet::{self, Params};

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
