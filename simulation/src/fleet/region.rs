//! One region's fan-out as a discrete-event model: the real [`Scheduler`] decides, the model supplies the
//! clock, the links and the failures.
//!
//! Bandwidth model: a transfer holds one upload slot of its sender and one download slot of its receiver
//! and runs at `min(up/upload_slots, down/download_slots)` for its whole duration. Bandwidth a slot
//! leaves unused is not lent to the others (pessimistic when few slots are busy, exact when all are).
//! Propagation delay and per-chunk verification are folded into the link rate (a 16 MiB chunk takes
//! ~13 ms at 10 Gbit/s; BLAKE3 verifies it in ~5 ms on one core, pipelined with the next receive).

use cascade_core::fanout::{ChunkId, Config, FailReason, HostId, Scheduler, SplitMix64, Transfer};

use super::timeline::Timeline;
use super::Params;

const NS: f64 = 1e9;

/// What happens to one region, measured from the moment its store holds the artifact.
#[derive(Clone, Debug, Default)]
pub struct RegionOutcome {
    /// Hosts in the region.
    pub hosts: u32,
    /// Hosts that die during the rollout (excluded from the percentiles).
    pub died: u32,
    /// For every host that never dies: nanoseconds from the region's start until it held every chunk.
    pub active_ns: Vec<u64>,
    /// Nanoseconds until the last surviving host that is not slow held every chunk.
    pub fast_last_ns: u64,
    /// Bytes the seed read from the regional store.
    pub store_bytes: u64,
    /// Bytes delivered (verified) from the seed.
    pub seed_bytes: u64,
    /// Bytes delivered (verified) from peers.
    pub peer_bytes: u64,
    /// Bytes of transfers that did not end verified (cancelled by a death, or corrupt).
    pub wasted_bytes: u64,
    /// Discrete events processed.
    pub events: u64,
    /// Bad-chunk reports the scheduler raised.
    pub bad_reports: u64,
    /// Per host (index `h - 1`): bytes it received whole, verified or corrupt (a corrupt chunk is fetched
    /// again, so it counts twice). Transfers cut by a death are left out: how much of them arrived is not
    /// modelled. The service mix sums these into each host's share of the fleet's traffic.
    pub received_bytes: Vec<u64>,
    /// The hosts (1-based ids) that die during the rollout, in id order.
    pub died_hosts: Vec<u32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    /// The seed finished reading a chunk from the store.
    Loaded(u32),
    /// A transfer's last byte arrived and the receiver verified it.
    Done { from: u32, to: u32, chunk: u32 },
    /// A host crashes.
    Die(u32),
    /// The manager notices a crash (missed heartbeats, reset connections).
    Detect(u32),
}

#[derive(Clone, Copy, Debug, Default)]
struct HostLink {
    up_bps: f64,
    down_bps: f64,
    slow: bool,
    dies: bool,
    dead: bool,
    bad: bool,
    marked_slow: bool,
}

/// Runs one region of `hosts` hosts to completion; `seed` fixes which hosts are slow, die or corrupt.
pub fn run_region(p: &Params, hosts: u32, seed: u64) -> RegionOutcome {
    assert!(hosts > 0, "a region has hosts");
    let chunks = p.size_bytes.div_ceil(p.chunk_bytes) as u32;
    let cfg = Config {
        chunks,
        upload_slots: p.upload_slots,
        download_slots: p.download_slots,
        seed_upload_slots: p.seed_slots,
        samples: p.samples,
        rng_seed: seed,
        ..Config::new(chunks)
    };
    let mut sched = Scheduler::new(cfg).expect("valid scheduler config");
    let mut rng = SplitMix64::new(seed ^ 0xF1EE_7000);
    let host_bps = p.host_gbps * 1e9;
    let mut links = vec![HostLink { up_bps: p.seed_gbps * 1e9, down_bps: p.seed_gbps * 1e9, ..HostLink::default() }];
    let mut events: Timeline<Event> = Timeline::new();
    let mut out = RegionOutcome { hosts, received_bytes: vec![0; hosts as usize], ..RegionOutcome::default() };
    // Deaths fall uniformly inside the first S/B: mid-transfer for a host that would otherwise finish.
    let transfer_window = (p.size_bytes as f64 * 8.0 / host_bps * NS) as u64;
    let mut survivors = 0u32;
    for h in 1..=hosts {
        let slow = rng.unit() < p.slow_fraction;
        let dies = rng.unit() < p.dead_fraction;
        let bad = !dies && h <= p.bad_hosts;
        let bps = if slow { host_bps * p.slow_factor } else { host_bps };
        links.push(HostLink { up_bps: bps, down_bps: bps, slow, dies, bad, ..HostLink::default() });
        let held: Vec<ChunkId> = (0..chunks).filter(|_| rng.unit() < p.held_fraction).map(ChunkId).collect();
        sched.host_joined(HostId(h), &held).expect("fresh host joins");
        if dies {
            out.died += 1;
            out.died_hosts.push(h);
            events.at(1 + (rng.unit() * transfer_window as f64) as u64, Event::Die(h));
        } else {
            survivors += 1;
        }
    }
    // The seed streams the artifact from the store with parallel ranged GETs at the slower of the store's
    // egress and its own link.
    let read_bps = (p.store_gbps * 1e9).min(p.seed_gbps * 1e9);
    let mut read_at = 0.0f64;
    for c in 0..chunks {
        let len = chunk_len(p, c);
        read_at += len as f64 * 8.0 / read_bps * NS;
        out.store_bytes += len;
        events.at(read_at as u64, Event::Loaded(c));
    }
    for h in 1..=hosts {
        if sched.is_complete(HostId(h)) && !links[h as usize].dies {
            out.active_ns.push(0);
        }
    }
    let mut decided: Vec<Transfer> = Vec::new();
    let max_events = 64 * (u64::from(hosts) + 1) * u64::from(chunks) + 1_000_000;
    while let Some((now, ev)) = events.pop() {
        out.events += 1;
        assert!(out.events <= max_events, "region did not converge within {max_events} events");
        match ev {
            Event::Loaded(c) => sched.seed_has(ChunkId(c)).expect("chunk in manifest"),
            Event::Die(h) => {
                links[h as usize].dead = true;
                events.after(p.detect_ms * 1_000_000, Event::Detect(h));
            }
            Event::Detect(h) => {
                if sched.is_live(HostId(h)) {
                    sched.host_left(HostId(h)).expect("live host leaves");
                }
            }
            Event::Done { from, to, chunk } => {
                let t = Transfer { from: HostId(from), to: HostId(to), chunk: ChunkId(chunk) };
                let len = chunk_len(p, chunk);
                if links[from as usize].dead || links[to as usize].dead || !sched.is_in_flight(&t) {
                    // Never completes: the bytes are lost and the slots wait for the death to be noticed.
                    out.wasted_bytes += len;
                } else if links[from as usize].bad {
                    out.wasted_bytes += len;
                    out.received_bytes[to as usize - 1] += len;
                    out.bad_reports += 1;
                    sched.transfer_failed(t.from, t.to, t.chunk, FailReason::BadChunk).expect("in flight");
                } else {
                    sched.chunk_verified(t.to, t.chunk).expect("in flight");
                    out.received_bytes[to as usize - 1] += len;
                    if from == 0 {
                        out.seed_bytes += len;
                    } else {
                        out.peer_bytes += len;
                    }
                    // The manager measures each host's throughput from the transfers it times; a host far
                    // below its peers is marked slow after its first transfer.
                    for h in [from, to] {
                        let l = &mut links[h as usize];
                        if h != 0 && l.slow && !l.marked_slow {
                            l.marked_slow = true;
                            sched.set_slow(HostId(h), true).expect("live host");
                        }
                    }
                    if sched.is_complete(t.to) && !links[to as usize].dies {
                        out.active_ns.push(now);
                        if !links[to as usize].slow {
                            out.fast_last_ns = now;
                        }
                    }
                }
            }
        }
        if out.active_ns.len() as u32 == survivors {
            break;
        }
        decided.clear();
        sched.next_assignments(&mut decided);
        for t in &decided {
            let (u, v) = (&links[t.from.0 as usize], &links[t.to.0 as usize]);
            let up_slots = if t.from.is_seed() { f64::from(p.seed_slots) } else { f64::from(p.upload_slots) };
            let bps = (u.up_bps / up_slots).min(v.down_bps / f64::from(p.download_slots));
            let ns = (chunk_len(p, t.chunk.0) as f64 * 8.0 / bps * NS).ceil() as u64;
            events.after(ns.max(1), Event::Done { from: t.from.0, to: t.to.0, chunk: t.chunk.0 });
        }
    }
    assert_eq!(out.active_ns.len() as u32, survivors, "every surviving host becomes active");
    out
}

/// Bytes of chunk `c` (the last one may be short).
pub fn chunk_len(p: &Params, c: u32) -> u64 {
    let start = u64::from(c) * p.chunk_bytes;
    p.chunk_bytes.min(p.size_bytes - start)
}
