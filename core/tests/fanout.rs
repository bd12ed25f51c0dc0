//! The fan-out scheduler under a randomized environment: completeness, slot limits, failures, held chunks.

use cascade_core::fanout::{ChunkId, Config, FailReason, FanoutError, HostId, Report, Scheduler, SplitMix64, Transfer};
use proptest::prelude::*;

/// A toy region: transfers in flight complete (or fail) in random order.
struct Region {
    s: Scheduler,
    flying: Vec<Transfer>,
    rng: SplitMix64,
    sent: Vec<Transfer>,
    /// (host, chunk) pairs a host held when it joined: never to be sent to it.
    held_at_join: std::collections::HashSet<(u32, u32)>,
}

impl Region {
    fn new(cfg: Config, hosts: u32, held: impl Fn(u32, u32) -> bool) -> Region {
        let mut s = Scheduler::new(cfg).unwrap();
        let mut held_at_join = std::collections::HashSet::new();
        for h in 1..=hosts {
            let chunks: Vec<ChunkId> = (0..cfg.chunks).filter(|&c| held(h, c)).map(ChunkId).collect();
            held_at_join.extend(chunks.iter().map(|c| (h, c.0)));
            s.host_joined(HostId(h), &chunks).unwrap();
        }
        for c in 0..cfg.chunks {
            s.seed_has(ChunkId(c)).unwrap();
        }
        Region { s, flying: Vec::new(), rng: SplitMix64::new(cfg.rng_seed ^ 0x5eed), sent: Vec::new(), held_at_join }
    }

    fn poll(&mut self) {
        let start = self.flying.len();
        self.s.next_assignments(&mut self.flying);
        for t in &self.flying[start..] {
            assert!(!self.held_at_join.contains(&(t.to.0, t.chunk.0)), "held chunk re-sent: {t:?}");
            let cfg = *self.s.config();
            let (up, down) = self.s.slots_used(t.from);
            let cap = if t.from.is_seed() { cfg.seed_upload_slots } else { u16::from(cfg.upload_slots) };
            assert!(up <= cap, "upload slots exceeded at {:?}", t.from);
            assert!(self.s.slots_used(t.to).1 <= cfg.download_slots && down <= cfg.download_slots);
        }
        self.sent.extend_from_slice(&self.flying[start..]);
    }

    /// Takes a random transfer out of flight, if any is still valid.
    fn take(&mut self) -> Option<Transfer> {
        while !self.flying.is_empty() {
            let i = self.rng.below(self.flying.len() as u32) as usize;
            let t = self.flying.swap_remove(i);
            // Transfers cancelled by a departure are no longer the scheduler's.
            if self.s.is_in_flight(&t) {
                return Some(t);
            }
        }
        None
    }

    /// Completes transfers until every live host holds everything; `bad` hosts corrupt all they send.
    fn finish(&mut self, bad: &[u32], steps: usize) {
        self.poll();
        for _ in 0..steps {
            if self.s.done() {
                return;
            }
            match self.take() {
                Some(t) if bad.contains(&t.from.0) => {
                    self.s.transfer_failed(t.from, t.to, t.chunk, FailReason::BadChunk).unwrap()
                }
                Some(t) => self.s.chunk_verified(t.to, t.chunk).unwrap(),
                None => {}
            }
            self.poll();
            debug_assert_eq!(self.s.check_invariants(), Ok(()));
        }
        panic!("not done after {steps} steps: {} of {} complete", self.s.complete_hosts(), self.s.live_hosts());
    }
}

fn cfg(chunks: u32, seed: u64) -> Config {
    Config { rng_seed: seed, ..Config::new(chunks) }
}

#[test]
fn every_host_gets_every_chunk() {
    let mut r = Region::new(cfg(50, 1), 40, |_, _| false);
    r.finish(&[], 100_000);
    r.s.check_invariants().unwrap();
    assert!(r.s.done() && r.s.complete_hosts() == 40);
    assert_eq!(r.sent.len(), 40 * 50, "no chunk is sent twice to the same host without a failure");
    let from_seed = r.sent.iter().filter(|t| t.from.is_seed()).count();
    assert!(from_seed >= 50, "the seed injects every chunk");
    assert!(from_seed < 50 * 2, "peers, not the seed, carry the swarm: {from_seed} seed transfers");
}

#[test]
fn held_chunks_are_not_sent_again() {
    // Half the hosts hold even chunks from an earlier release; one host holds everything already.
    let mut r = Region::new(cfg(64, 2), 30, |h, c| h == 7 || (h % 2 == 0 && c % 2 == 0));
    assert!(r.s.is_complete(HostId(7)));
    r.finish(&[], 100_000);
    let expected: usize = (1..=30u32)
        .map(|h| {
            if h == 7 {
                0
            } else if h % 2 == 0 {
                32
            } else {
                64
            }
        })
        .sum();
    assert_eq!(r.sent.len(), expected);
}

#[test]
fn a_bad_sender_is_reported_and_excluded() {
    let mut r = Region::new(cfg(40, 3), 20, |h, _| h == 5); // host 5 holds all, and corrupts all it sends
    r.finish(&[5], 100_000);
    let reports = r.s.drain_reports();
    assert!(reports.iter().any(|x| matches!(x, Report::BadChunk { from: HostId(5), .. })));
    assert!(reports.contains(&Report::Excluded { host: HostId(5), reason: FailReason::BadChunk }));
    let bad = r.s.bad_chunks_from(HostId(5));
    assert!(bad >= 1 && bad <= r.s.config().upload_slots, "excluded at the first: only those in flight fail");
    let after = r.sent.iter().filter(|t| t.from == HostId(5)).count();
    assert!(after <= usize::from(r.s.config().upload_slots), "no new transfer from an excluded sender");
}

#[test]
fn a_dead_sender_is_routed_around_and_a_restarted_host_resumes() {
    let mut r = Region::new(cfg(30, 4), 12, |_, _| false);
    r.poll();
    for _ in 0..150 {
        if let Some(t) = r.take() {
            r.s.chunk_verified(t.to, t.chunk).unwrap();
        }
        r.poll();
    }
    let kept = r.s.chunks_held(HostId(3));
    let victim = r.flying.iter().find(|t| !t.from.is_seed()).copied().expect("peers are sending");
    r.s.transfer_failed(victim.from, victim.to, victim.chunk, FailReason::Dead).unwrap();
    assert!(!r.s.is_live(victim.from));
    r.s.host_left(HostId(3)).ok();
    let held: Vec<ChunkId> = (0..30).map(ChunkId).filter(|&c| r.s.holds(HostId(3), c)).collect();
    assert_eq!(held.len() as u32, kept);
    r.s.host_joined(HostId(3), &held).unwrap();
    r.held_at_join.extend(held.iter().map(|c| (3, c.0)));
    r.s.check_invariants().unwrap();
    r.finish(&[], 100_000);
    assert_eq!(r.s.live_hosts(), if victim.from == HostId(3) { 12 } else { 11 });
}

#[test]
fn events_are_validated_and_refusals_change_nothing() {
    let mut s = Scheduler::new(cfg(4, 5)).unwrap();
    assert!(matches!(Scheduler::new(cfg(0, 0)), Err(FanoutError::InvalidConfig(_))));
    assert_eq!(s.host_joined(HostId::SEED, &[]), Err(FanoutError::Seed));
    s.host_joined(HostId(1), &[ChunkId(0)]).unwrap();
    assert_eq!(s.host_joined(HostId(1), &[]), Err(FanoutError::AlreadyJoined(HostId(1))));
    assert_eq!(s.host_joined(HostId(2), &[ChunkId(9)]), Err(FanoutError::NoSuchChunk(ChunkId(9))));
    assert!(!s.is_live(HostId(2)));
    assert_eq!(s.chunk_verified(HostId(9), ChunkId(0)), Err(FanoutError::UnknownHost(HostId(9))));
    let e = s.transfer_failed(HostId::SEED, HostId(1), ChunkId(1), FailReason::Stalled);
    assert!(matches!(e, Err(FanoutError::NotInFlight { .. })));
    s.check_invariants().unwrap();
    let mut out = Vec::new();
    assert_eq!(s.next_assignments(&mut out), 0, "the seed has nothing yet");
    s.seed_has(ChunkId(2)).unwrap();
    assert_eq!(s.next_assignments(&mut out), 1);
    assert_eq!(out[0], Transfer { from: HostId::SEED, to: HostId(1), chunk: ChunkId(2) });
    s.check_invariants().unwrap();
}

#[test]
fn a_large_region_fits_in_memory_and_decides_quickly() {
    let chunks = 2560; // 10 GB in 4 MiB chunks
    let mut s = Scheduler::new(cfg(chunks, 6)).unwrap();
    for h in 1..=100_000 {
        s.host_joined(HostId(h), &[]).unwrap();
    }
    for c in 0..chunks {
        s.seed_has(ChunkId(c)).unwrap();
    }
    let mut out = Vec::new();
    s.next_assignments(&mut out);
    assert_eq!(out.len(), 2, "only the seed holds anything: its slots bound the first round");
    for t in out.clone() {
        s.chunk_verified(t.to, t.chunk).unwrap();
    }
    out.clear();
    s.next_assignments(&mut out);
    assert!(out.len() > 2 && out.len() <= 2 * 2 + 2, "two new senders plus the seed: {}", out.len());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Under random completions, failures of every kind, departures and rejoins, the bookkeeping stays
    /// consistent, and once the failures stop every live host ends with every chunk.
    #[test]
    fn converges_under_random_failures(
        seed in any::<u64>(),
        hosts in 1u32..24,
        chunks in 1u32..90,
        up in 1u8..4,
        down in 1u8..4,
        seed_slots in 1u16..4,
        steps in 0usize..400,
    ) {
        let cfg = Config { upload_slots: up, download_slots: down, seed_upload_slots: seed_slots,
            ..cfg(chunks, seed) };
        let mut r = Region::new(cfg, hosts, |h, c| (h as u64 * 31 + c as u64 * 7 + seed).wrapping_rem(5) == 0);
        let mut rng = SplitMix64::new(seed);
        r.poll();
        for _ in 0..steps {
            let roll = rng.below(100);
            if let Some(t) = r.take() {
                match roll {
                    0..=79 => r.s.chunk_verified(t.to, t.chunk).unwrap(),
                    80..=86 => r.s.transfer_failed(t.from, t.to, t.chunk, FailReason::Stalled).unwrap(),
                    87..=91 => r.s.transfer_failed(t.from, t.to, t.chunk, FailReason::BadChunk).unwrap(),
                    _ => r.s.transfer_failed(t.from, t.to, t.chunk, FailReason::Dead).unwrap(),
                }
            }
            if roll == 99 {
                let h = HostId(1 + rng.below(hosts));
                if r.s.is_live(h) {
                    r.s.host_left(h).unwrap();
                } else {
                    let held: Vec<ChunkId> = (0..chunks).map(ChunkId).filter(|&c| r.s.holds(h, c)).collect();
                    r.held_at_join.extend(held.iter().map(|c| (h.0, c.0)));
                    r.s.host_joined(h, &held).unwrap();
                }
            }
            r.poll();
            prop_assert_eq!(r.s.check_invariants(), Ok(()));
        }
        r.finish(&[], 200_000);
        prop_assert!(r.s.done());
        prop_assert_eq!(r.s.check_invariants(), Ok(()));
    }
}
