//! A full consistency check of the scheduler's redundant bookkeeping, for tests and debugging.

use super::scheduler::{Scheduler, FREE};
use super::{ChunkId, HostId};

impl Scheduler {
    /// Recomputes every count and index from the slots and the bit matrix and compares: slot counts
    /// within their limits, both ends of every transfer agree, a transfer only carries a chunk its sender
    /// holds to a receiver lacking it, chunk copy counts, pool membership. `O(N·C)`: for tests only.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut copies = vec![0u32; self.cfg.chunks as usize];
        let (mut live, mut complete, mut in_flight) = (0u32, 0u32, 0u64);
        let mut senders = 0usize;
        let mut receivers = 0usize;
        for (h, host) in self.hosts.iter().enumerate() {
            let id = h as u32;
            let row = &self.have[h * self.words..(h + 1) * self.words];
            let held: u32 = row.iter().map(|w| w.count_ones()).sum();
            if held != host.have_count {
                return Err(format!("host {h}: have_count {} but {held} bits", host.have_count));
            }
            if h > 0 && host.live {
                live += 1;
                complete += u32::from(held == self.cfg.chunks);
                for (c, n) in copies.iter_mut().enumerate() {
                    *n += u32::from(self.holds(HostId(id), ChunkId(c as u32)));
                }
            }
            let outs: Vec<_> = if h == 0 {
                self.seed_out.clone()
            } else {
                let u = usize::from(self.cfg.upload_slots);
                self.out_slots[h * u..(h + 1) * u].to_vec()
            };
            let ups = outs.iter().filter(|s| s.peer != FREE).count();
            if ups != usize::from(host.uploads) || host.uploads > self.upload_cap(id) {
                return Err(format!("host {h}: uploads {} vs {ups} slots", host.uploads));
            }
            for s in outs.iter().filter(|s| s.peer != FREE) {
                if !self.holds(HostId(id), ChunkId(s.chunk)) {
                    return Err(format!("host {h} sends chunk {} it does not hold", s.chunk));
                }
                if !self.in_slots_of(s.peer).iter().any(|i| i.peer == id && i.chunk == s.chunk) {
                    return Err(format!("transfer {h}->{} of {} has no receiving end", s.peer, s.chunk));
                }
            }
            let ins = if h == 0 { &[][..] } else { self.in_slots_of(id) };
            let downs = ins.iter().filter(|s| s.peer != FREE).count();
            let fast = ins.iter().filter(|s| s.peer != FREE && s.fast).count();
            if downs != usize::from(host.downloads) || fast != usize::from(host.fast_downloads) {
                return Err(format!("host {h}: downloads {} vs {downs} slots", host.downloads));
            }
            if host.downloads > self.cfg.download_slots || (!host.live && downs + ups > 0) {
                return Err(format!("host {h}: download limit or a departed host with transfers"));
            }
            for s in ins.iter().filter(|s| s.peer != FREE) {
                in_flight += 1;
                copies[s.chunk as usize] += 1;
                if self.holds(HostId(id), ChunkId(s.chunk)) {
                    return Err(format!("host {h} receives chunk {} it already holds", s.chunk));
                }
            }
            let sender = self.senders.contains(id);
            let receiver = self.receivers.contains(id);
            senders += usize::from(sender);
            receivers += usize::from(receiver);
            if h > 0 {
                let want_send = host.live && !host.excluded && held > 0 && host.uploads < self.upload_cap(id);
                let want_recv = host.live
                    && host.downloads < self.cfg.download_slots
                    && held + u32::from(host.downloads) < self.cfg.chunks;
                if sender != want_send || receiver != want_recv {
                    return Err(format!("host {h}: pool membership sender={sender} receiver={receiver}"));
                }
            }
        }
        if copies != self.copies {
            return Err("chunk copy counts disagree".into());
        }
        if (live, complete, in_flight) != (self.live, self.complete, self.in_flight) {
            return Err(format!("counts: live {live} complete {complete} in flight {in_flight}"));
        }
        if senders != self.senders.len() || receivers != self.receivers.len() {
            return Err("a pool holds a host outside the scheduler".into());
        }
        Ok(())
    }
}
