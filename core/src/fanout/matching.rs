//! The decisions: matching free upload slots with free download slots and a chunk the receiver lacks.
//!
//! Work is event-driven: only hosts whose slots or chunks changed since the last poll are examined, each
//! with at most `samples` random partners, so a poll costs `O(events · samples · C/64)`. Random sampling
//! can miss a rare useful pair; the next event touching either end retries it, a small random sweep
//! retries a few receivers per poll, and when nothing at all is in flight an exhaustive pass guarantees
//! that the rollout never stalls while some transfer is possible.

use super::scheduler::{Scheduler, Slot, FREE};
use super::{ChunkId, HostId, Transfer};

/// Receivers re-examined at random by a poll that had no event to process (a periodic tick): events
/// already retry the hosts they touch, and sweeping on every event costs more than it finds.
const SWEEP: usize = 4;

impl Scheduler {
    /// Decides new transfers and appends them to `out`; returns how many. Call it after feeding events
    /// (it is cheap when nothing changed). Every transfer returned holds a slot at both ends until it is
    /// reported verified or failed, or one end leaves.
    pub fn next_assignments(&mut self, out: &mut Vec<Transfer>) -> usize {
        let start = out.len();
        self.inject_fresh(out);
        let pending = self.dirty.len();
        for _ in 0..pending {
            let Some(h) = self.dirty.pop_front() else { break };
            self.hosts[h as usize].dirty = false;
            self.serve(h, out, false);
        }
        for _ in 0..if pending == 0 { SWEEP } else { 0 } {
            let Some(v) = self.receivers.pick(&mut self.rng) else { break };
            self.match_receiver(v, out, false);
        }
        if out.len() == start && self.in_flight == 0 && !self.done() {
            self.exhaustive(out);
        }
        out.len() - start
    }

    /// The seed hands out every chunk once before anything else, newest-loaded last, to fast receivers:
    /// the swarm can only spread what the seed has injected, so the seed's link must never carry a copy
    /// that a peer could have sent instead.
    fn inject_fresh(&mut self, out: &mut Vec<Transfer>) {
        let cap = self.cfg.seed_upload_slots;
        for _ in 0..cap {
            if self.hosts[0].uploads >= cap {
                break;
            }
            while self.fresh < self.seed_loaded.len() && self.copies[self.seed_loaded[self.fresh] as usize] > 0 {
                self.fresh += 1;
            }
            let Some(&c) = self.seed_loaded.get(self.fresh) else { break };
            let Some(v) = self.find_receiver_lacking(c) else { break };
            self.assign(0, v, c, out);
            self.fresh += 1;
        }
        self.refresh(0);
    }

    fn find_receiver_lacking(&mut self, c: u32) -> Option<u32> {
        for _ in 0..self.cfg.samples {
            let v = self.receivers.pick(&mut self.rng)?;
            if !self.hosts[v as usize].slow && self.lacks(v, c) {
                return Some(v);
            }
        }
        None
    }

    /// Whether `v` neither holds `c` nor has it in flight.
    fn lacks(&self, v: u32, c: u32) -> bool {
        !self.holds(HostId(v), ChunkId(c)) && self.in_slots_of(v).iter().all(|s| s.peer == FREE || s.chunk != c)
    }

    /// Fills `h`'s free slots in both directions, as far as samples find partners.
    fn serve(&mut self, h: u32, out: &mut Vec<Transfer>, relaxed: bool) {
        for _ in 0..self.upload_cap(h) {
            if !self.senders.contains(h) || !self.match_sender(h, out, relaxed) {
                break;
            }
        }
        for _ in 0..self.cfg.download_slots {
            if !self.receivers.contains(h) || !self.match_receiver(h, out, relaxed) {
                break;
            }
        }
    }

    fn match_sender(&mut self, u: u32, out: &mut Vec<Transfer>, relaxed: bool) -> bool {
        for _ in 0..self.cfg.samples {
            let Some(v) = self.receivers.pick(&mut self.rng) else { return false };
            if self.try_pair(u, v, out, relaxed) {
                return true;
            }
        }
        false
    }

    fn match_receiver(&mut self, v: u32, out: &mut Vec<Transfer>, relaxed: bool) -> bool {
        for _ in 0..self.cfg.samples {
            let Some(u) = self.senders.pick(&mut self.rng) else { return false };
            if self.try_pair(u, v, out, relaxed) {
                return true;
            }
        }
        false
    }

    /// Assigns a chunk from `u` to `v` if the pair is admissible and `u` has something `v` lacks.
    /// Unless `relaxed`, slow senders serve only slow receivers, and a slow receiver takes at most one
    /// fast sender at a time (a fast slot serving it runs at the slow host's pace).
    fn try_pair(&mut self, u: u32, v: u32, out: &mut Vec<Transfer>, relaxed: bool) -> bool {
        if u == v || !self.senders.contains(u) || !self.receivers.contains(v) {
            return false;
        }
        let (su, sv) = (self.hosts[u as usize].slow, self.hosts[v as usize].slow);
        if !relaxed && ((su && !sv) || (!su && sv && self.hosts[v as usize].fast_downloads > 0)) {
            return false;
        }
        match self.choose_chunk(u, v) {
            Some(c) => {
                self.assign(u, v, c, out);
                true
            }
            None => false,
        }
    }

    /// A chunk `u` holds and `v` lacks (not in flight to it): the rarer of two random candidates.
    fn choose_chunk(&mut self, u: u32, v: u32) -> Option<u32> {
        let first = self.random_useful(u, v)?;
        let second = self.random_useful(u, v).expect("a useful chunk exists");
        Some(if self.copies[second as usize] < self.copies[first as usize] { second } else { first })
    }

    /// Scans the difference of the two rows from a random word and picks a random bit of the first
    /// non-empty word.
    fn random_useful(&mut self, u: u32, v: u32) -> Option<u32> {
        let w = self.words;
        let (ru, rv) = (u as usize * w, v as usize * w);
        let start = self.rng.below(w as u32) as usize;
        for i in 0..w {
            let k = (start + i) % w;
            let mut bits = self.have[ru + k] & !self.have[rv + k];
            if bits == 0 {
                continue;
            }
            for s in self.in_slots_of(v) {
                if s.peer != FREE && s.chunk as usize / 64 == k {
                    bits &= !(1u64 << (s.chunk % 64));
                }
            }
            if bits == 0 {
                continue;
            }
            let mut skip = self.rng.below(bits.count_ones());
            while skip > 0 {
                bits &= bits - 1;
                skip -= 1;
            }
            return Some((k * 64) as u32 + bits.trailing_zeros());
        }
        None
    }

    fn assign(&mut self, u: u32, v: u32, c: u32, out: &mut Vec<Transfer>) {
        assert!(u != v && v != 0, "a transfer joins two distinct hosts and never feeds the seed");
        assert!(self.holds(HostId(u), ChunkId(c)) && self.lacks(v, c), "only a held chunk goes to a host lacking it");
        assert!(self.hosts[u as usize].uploads < self.upload_cap(u), "upload slots respected");
        assert!(self.hosts[v as usize].downloads < self.cfg.download_slots, "download slots respected");
        let fast = !self.hosts[u as usize].slow;
        let outs = self.out_slots_mut(u);
        let o = outs.iter().position(|s| s.peer == FREE).expect("a free upload slot");
        outs[o] = Slot { peer: v, chunk: c, fast };
        let d = usize::from(self.cfg.download_slots);
        let ins = &mut self.in_slots[v as usize * d..(v as usize + 1) * d];
        let i = ins.iter().position(|s| s.peer == FREE).expect("a free download slot");
        ins[i] = Slot { peer: u, chunk: c, fast };
        self.hosts[u as usize].uploads += 1;
        self.hosts[v as usize].downloads += 1;
        if fast {
            self.hosts[v as usize].fast_downloads += 1;
        }
        self.copies[c as usize] += 1;
        self.in_flight += 1;
        self.refresh(u);
        self.refresh(v);
        out.push(Transfer { from: HostId(u), to: HostId(v), chunk: ChunkId(c) });
    }

    /// Tries every free receiver against every free sender (the seed included), ignoring the slow-host
    /// preferences. Runs only when nothing is in flight, so it cannot be what makes a rollout slow.
    fn exhaustive(&mut self, out: &mut Vec<Transfer>) {
        let receivers = self.receivers.items().to_vec();
        let mut senders = self.senders.items().to_vec();
        if !self.senders.contains(0) && self.hosts[0].have_count > 0 {
            senders.push(0);
        }
        for &v in &receivers {
            for &u in &senders {
                if !self.receivers.contains(v) {
                    break;
                }
                if u == 0 && self.hosts[0].uploads < self.cfg.seed_upload_slots {
                    // The seed outside the pool (still injecting): let it serve directly.
                    if let Some(c) = self.choose_chunk_seed(v) {
                        self.assign(0, v, c, out);
                    }
                    continue;
                }
                self.try_pair(u, v, out, true);
            }
        }
    }

    fn choose_chunk_seed(&mut self, v: u32) -> Option<u32> {
        if v == 0 || !self.receivers.contains(v) {
            return None;
        }
        self.choose_chunk(0, v)
    }
}
