//! The scheduler's state and the events that change it; the decisions are in `matching.rs`.

use std::collections::VecDeque;

use super::rng::SplitMix64;
use super::sets::HostSet;
use super::{ChunkId, Config, FailReason, FanoutError, HostId, Report, Transfer};

/// An empty slot's peer.
pub(crate) const FREE: u32 = u32::MAX;

/// Most slots a host may have in either direction (keeps per-host arrays small and fixed).
pub(crate) const MAX_HOST_SLOTS: u8 = 16;

/// Most upload slots of the seed.
pub(crate) const MAX_SEED_SLOTS: u16 = 1024;

/// One in-flight transfer seen from one end: the other end and the chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Slot {
    pub(crate) peer: u32,
    pub(crate) chunk: u32,
    /// The sender was not slow when the transfer started (kept so `set_slow` cannot unbalance counts).
    pub(crate) fast: bool,
}

impl Slot {
    pub(crate) const EMPTY: Slot = Slot { peer: FREE, chunk: 0, fast: false };
}

/// Per-host bookkeeping, 16 bytes; the chunks a host holds live in the shared bit matrix.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Host {
    pub(crate) live: bool,
    pub(crate) slow: bool,
    pub(crate) excluded: bool,
    pub(crate) dirty: bool,
    pub(crate) uploads: u16,
    pub(crate) downloads: u8,
    /// In-flight downloads from senders that are not slow: a slow receiver gets at most one, so that fast
    /// upload slots are not tied up at a slow host's pace.
    pub(crate) fast_downloads: u8,
    pub(crate) stalls: u8,
    pub(crate) bad: u8,
    pub(crate) have_count: u32,
}

/// The fan-out scheduler of one region for one artifact. See the [module docs](super) for the design.
///
/// Memory: `N·C/8` bytes of bit matrix plus ~`16 + 8·(upload+download slots)` bytes per host, so
/// 100,000 hosts × 2,560 chunks take ~40 MB. A decision costs `O(samples · C/64)` word operations.
#[derive(Clone, Debug)]
pub struct Scheduler {
    pub(crate) cfg: Config,
    pub(crate) words: usize,
    pub(crate) hosts: Vec<Host>,
    /// Row `h` (words `h·words ..`) holds the chunks host `h` has verified; row 0 is the seed's.
    pub(crate) have: Vec<u64>,
    pub(crate) out_slots: Vec<Slot>,
    pub(crate) seed_out: Vec<Slot>,
    pub(crate) in_slots: Vec<Slot>,
    /// Per chunk: live hosts holding it plus transfers of it in flight (the seed is not counted, so 0
    /// means "never handed out").
    pub(crate) copies: Vec<u32>,
    /// Hosts with a free upload slot and something to send (the seed only once it has injected all).
    pub(crate) senders: HostSet,
    /// Live hosts with a free download slot and a chunk still to fetch.
    pub(crate) receivers: HostSet,
    /// Hosts whose slots or chunks changed since the last poll.
    pub(crate) dirty: VecDeque<u32>,
    /// Chunks the seed holds, in the order it read them; `fresh` indexes the first not yet handed out.
    pub(crate) seed_loaded: Vec<u32>,
    pub(crate) fresh: usize,
    pub(crate) rng: SplitMix64,
    pub(crate) reports: Vec<Report>,
    pub(crate) live: u32,
    pub(crate) complete: u32,
    pub(crate) in_flight: u64,
}

impl Scheduler {
    /// A scheduler with only the seed, which holds nothing yet (call [`Scheduler::seed_has`]).
    pub fn new(cfg: Config) -> Result<Self, FanoutError> {
        if cfg.chunks == 0 {
            return Err(FanoutError::InvalidConfig("an artifact has at least one chunk"));
        }
        if !(1..=MAX_HOST_SLOTS).contains(&cfg.upload_slots) || !(1..=MAX_HOST_SLOTS).contains(&cfg.download_slots) {
            return Err(FanoutError::InvalidConfig("host slots must be 1..=16"));
        }
        if !(1..=MAX_SEED_SLOTS).contains(&cfg.seed_upload_slots) {
            return Err(FanoutError::InvalidConfig("seed slots must be 1..=1024"));
        }
        if cfg.samples == 0 || cfg.max_bad_chunks == 0 || cfg.max_stalls == 0 {
            return Err(FanoutError::InvalidConfig("samples and failure limits must be at least 1"));
        }
        let words = (cfg.chunks as usize).div_ceil(64);
        let mut s = Scheduler {
            cfg,
            words,
            hosts: Vec::new(),
            have: Vec::new(),
            out_slots: Vec::new(),
            seed_out: vec![Slot::EMPTY; usize::from(cfg.seed_upload_slots)],
            in_slots: Vec::new(),
            copies: vec![0; cfg.chunks as usize],
            senders: HostSet::default(),
            receivers: HostSet::default(),
            dirty: VecDeque::new(),
            seed_loaded: Vec::with_capacity(cfg.chunks as usize),
            fresh: 0,
            rng: SplitMix64::new(cfg.rng_seed),
            reports: Vec::new(),
            live: 0,
            complete: 0,
            in_flight: 0,
        };
        s.grow(0);
        s.hosts[0].live = true;
        Ok(s)
    }

    /// Makes room for host index `h` (ids are dense, so this grows by one host at a time in practice).
    fn grow(&mut self, h: u32) {
        let n = h as usize + 1;
        if self.hosts.len() >= n {
            return;
        }
        self.hosts.resize(n, Host::default());
        self.have.resize(n * self.words, 0);
        self.out_slots.resize(n * usize::from(self.cfg.upload_slots), Slot::EMPTY);
        self.in_slots.resize(n * usize::from(self.cfg.download_slots), Slot::EMPTY);
    }

    /// The seed has read `chunk` from the regional store and verified it: it may now send it.
    pub fn seed_has(&mut self, chunk: ChunkId) -> Result<(), FanoutError> {
        self.check_chunk(chunk)?;
        if self.holds(HostId::SEED, chunk) {
            return Ok(());
        }
        self.set_have(0, chunk.0);
        self.seed_loaded.push(chunk.0);
        self.refresh(0);
        Ok(())
    }

    /// Host `id` registered with `held` chunks already verified on its disk (from an earlier release, or
    /// before a restart): those are never sent to it. A host that left may join again.
    pub fn host_joined(&mut self, id: HostId, held: &[ChunkId]) -> Result<(), FanoutError> {
        if id.is_seed() {
            return Err(FanoutError::Seed);
        }
        if self.is_live(id) {
            return Err(FanoutError::AlreadyJoined(id));
        }
        for &c in held {
            self.check_chunk(c)?;
        }
        let h = id.0;
        self.grow(h);
        let row = h as usize * self.words;
        self.have[row..row + self.words].fill(0);
        let prev = self.hosts[h as usize];
        // Trust lost by sending bad chunks survives a restart; stalls do not.
        self.hosts[h as usize] =
            Host { live: true, excluded: prev.excluded, bad: prev.bad, dirty: prev.dirty, ..Host::default() };
        for &c in held {
            if !self.holds(id, c) {
                self.set_have(h, c.0);
                self.copies[c.0 as usize] += 1;
            }
        }
        self.live += 1;
        if self.hosts[h as usize].have_count == self.cfg.chunks {
            self.complete += 1;
        }
        self.refresh(h);
        self.mark_dirty(h);
        Ok(())
    }

    /// The manager measured `id` as slow (far below the link rate of its peers): it then sends only to
    /// other slow hosts and receives from at most one fast sender at a time.
    pub fn set_slow(&mut self, id: HostId, slow: bool) -> Result<(), FanoutError> {
        self.check_live(id)?;
        if id.is_seed() {
            return Err(FanoutError::Seed);
        }
        self.hosts[id.0 as usize].slow = slow;
        self.mark_dirty(id.0);
        Ok(())
    }

    /// Host `id` verified `chunk` (its BLAKE3 matched the manifest): the transfer that brought it ends, and
    /// the host may forward it at once. A chunk verified outside any transfer is recorded too.
    pub fn chunk_verified(&mut self, id: HostId, chunk: ChunkId) -> Result<(), FanoutError> {
        self.check_chunk(chunk)?;
        self.check_live(id)?;
        if id.is_seed() {
            return Err(FanoutError::Seed);
        }
        let h = id.0;
        if let Some(from) = self.in_slots_of(h).iter().find(|s| s.peer != FREE && s.chunk == chunk.0).map(|s| s.peer) {
            self.close(from, h, chunk.0);
            self.copies[chunk.0 as usize] += 1; // the transfer's copy becomes a held copy
        } else if self.holds(id, chunk) {
            return Ok(());
        } else {
            self.copies[chunk.0 as usize] += 1;
        }
        self.set_have(h, chunk.0);
        if self.hosts[h as usize].have_count == self.cfg.chunks {
            self.complete += 1;
        }
        self.refresh(h);
        self.mark_dirty(h);
        Ok(())
    }

    /// The transfer `from → to` of `chunk` failed; the chunk will be fetched from someone else and the
    /// sender is dealt with according to `reason`.
    pub fn transfer_failed(
        &mut self,
        from: HostId,
        to: HostId,
        chunk: ChunkId,
        reason: FailReason,
    ) -> Result<(), FanoutError> {
        self.check_chunk(chunk)?;
        if !self.is_in_flight(&Transfer { from, to, chunk }) {
            return Err(FanoutError::NotInFlight { from, to, chunk });
        }
        self.close(from.0, to.0, chunk.0);
        let f = from.0 as usize;
        match reason {
            FailReason::Dead if !from.is_seed() => self.host_left(from)?,
            FailReason::Dead | FailReason::Stalled => {
                self.hosts[f].stalls = self.hosts[f].stalls.saturating_add(1);
                if !from.is_seed() && self.hosts[f].stalls >= self.cfg.max_stalls {
                    self.exclude(from.0, FailReason::Stalled);
                }
            }
            FailReason::BadChunk => {
                self.hosts[f].bad = self.hosts[f].bad.saturating_add(1);
                self.reports.push(Report::BadChunk { from, to, chunk });
                if !from.is_seed() && self.hosts[f].bad >= self.cfg.max_bad_chunks {
                    self.exclude(from.0, FailReason::BadChunk);
                }
            }
        }
        Ok(())
    }

    /// Host `id` is gone (dead, drained, disconnected): its transfers in both directions are cancelled
    /// and their receivers fetch elsewhere.
    pub fn host_left(&mut self, id: HostId) -> Result<(), FanoutError> {
        if id.is_seed() {
            return Err(FanoutError::Seed);
        }
        self.check_live(id)?;
        let h = id.0;
        let up = usize::from(self.cfg.upload_slots);
        for i in 0..up {
            let s = self.out_slots[h as usize * up + i];
            if s.peer != FREE {
                self.close(h, s.peer, s.chunk);
            }
        }
        let down = usize::from(self.cfg.download_slots);
        for i in 0..down {
            let s = self.in_slots[h as usize * down + i];
            if s.peer != FREE {
                self.close(s.peer, h, s.chunk);
            }
        }
        let row = h as usize * self.words;
        for w in 0..self.words {
            let mut bits = self.have[row + w];
            while bits != 0 {
                let c = w * 64 + bits.trailing_zeros() as usize;
                self.copies[c] -= 1;
                bits &= bits - 1;
            }
        }
        if self.hosts[h as usize].have_count == self.cfg.chunks {
            self.complete -= 1;
        }
        self.hosts[h as usize].live = false;
        self.live -= 1;
        self.refresh(h);
        Ok(())
    }

    /// Takes the reports (bad chunks, excluded senders) accumulated since the last call.
    pub fn drain_reports(&mut self) -> Vec<Report> {
        std::mem::take(&mut self.reports)
    }

    /// Whether `id` has joined and not left (the seed is always live).
    pub fn is_live(&self, id: HostId) -> bool {
        self.hosts.get(id.0 as usize).is_some_and(|h| h.live)
    }

    /// Whether `id` holds `chunk` verified.
    pub fn holds(&self, id: HostId, chunk: ChunkId) -> bool {
        let (h, c) = (id.0 as usize, chunk.0 as usize);
        h < self.hosts.len() && c < self.cfg.chunks as usize && self.have[h * self.words + c / 64] >> (c % 64) & 1 == 1
    }

    /// Whether live host `id` holds every chunk.
    pub fn is_complete(&self, id: HostId) -> bool {
        !id.is_seed() && self.is_live(id) && self.hosts[id.0 as usize].have_count == self.cfg.chunks
    }

    /// Chunks `id` holds.
    pub fn chunks_held(&self, id: HostId) -> u32 {
        self.hosts.get(id.0 as usize).map_or(0, |h| h.have_count)
    }

    /// Live hosts (not counting the seed).
    pub fn live_hosts(&self) -> u32 {
        self.live
    }

    /// Live hosts holding every chunk.
    pub fn complete_hosts(&self) -> u32 {
        self.complete
    }

    /// Whether every live host holds every chunk.
    pub fn done(&self) -> bool {
        self.complete == self.live
    }

    /// Transfers decided and not yet verified or failed.
    pub fn in_flight(&self) -> u64 {
        self.in_flight
    }

    /// Whether `t` is still in flight (not verified, failed, or cancelled by a departure): lets a driver
    /// drop its stale copies of decisions.
    pub fn is_in_flight(&self, t: &Transfer) -> bool {
        self.is_live(t.to)
            && !t.to.is_seed()
            && self.in_slots_of(t.to.0).iter().any(|s| s.peer == t.from.0 && s.chunk == t.chunk.0)
    }

    /// Uploads and downloads in flight at `id`.
    pub fn slots_used(&self, id: HostId) -> (u16, u8) {
        self.hosts.get(id.0 as usize).map_or((0, 0), |h| (h.uploads, h.downloads))
    }

    /// Bad chunks reported against `id` so far.
    pub fn bad_chunks_from(&self, id: HostId) -> u8 {
        self.hosts.get(id.0 as usize).map_or(0, |h| h.bad)
    }

    /// Whether `id` is no longer used as a sender.
    pub fn is_excluded(&self, id: HostId) -> bool {
        self.hosts.get(id.0 as usize).is_some_and(|h| h.excluded)
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    fn check_chunk(&self, c: ChunkId) -> Result<(), FanoutError> {
        if c.0 < self.cfg.chunks {
            Ok(())
        } else {
            Err(FanoutError::NoSuchChunk(c))
        }
    }

    fn check_live(&self, id: HostId) -> Result<(), FanoutError> {
        if self.is_live(id) {
            Ok(())
        } else {
            Err(FanoutError::UnknownHost(id))
        }
    }

    fn set_have(&mut self, h: u32, c: u32) {
        let i = h as usize * self.words + c as usize / 64;
        debug_assert!(self.have[i] >> (c % 64) & 1 == 0, "chunk set twice");
        self.have[i] |= 1 << (c % 64);
        self.hosts[h as usize].have_count += 1;
        assert!(self.hosts[h as usize].have_count <= self.cfg.chunks);
    }

    fn exclude(&mut self, h: u32, reason: FailReason) {
        assert!(h != 0, "the seed is never excluded");
        if !self.hosts[h as usize].excluded {
            self.hosts[h as usize].excluded = true;
            self.reports.push(Report::Excluded { host: HostId(h), reason });
            self.refresh(h);
        }
    }

    pub(crate) fn mark_dirty(&mut self, h: u32) {
        if !self.hosts[h as usize].dirty {
            self.hosts[h as usize].dirty = true;
            self.dirty.push_back(h);
        }
    }

    pub(crate) fn in_slots_of(&self, h: u32) -> &[Slot] {
        let d = usize::from(self.cfg.download_slots);
        &self.in_slots[h as usize * d..(h as usize + 1) * d]
    }

    pub(crate) fn out_slots_mut(&mut self, h: u32) -> &mut [Slot] {
        if h == 0 {
            return &mut self.seed_out;
        }
        let u = usize::from(self.cfg.upload_slots);
        &mut self.out_slots[h as usize * u..(h as usize + 1) * u]
    }

    pub(crate) fn upload_cap(&self, h: u32) -> u16 {
        if h == 0 {
            self.cfg.seed_upload_slots
        } else {
            u16::from(self.cfg.upload_slots)
        }
    }

    /// Ends the in-flight transfer `from → to` of `chunk` (verified or failed): frees both slots and drops
    /// its copy from `copies` (a verified chunk adds the held copy back).
    pub(crate) fn close(&mut self, from: u32, to: u32, chunk: u32) {
        let d = usize::from(self.cfg.download_slots);
        let ins = &mut self.in_slots[to as usize * d..(to as usize + 1) * d];
        let i = ins.iter().position(|s| s.peer == from && s.chunk == chunk).expect("closing a transfer in flight");
        let fast = ins[i].fast;
        ins[i] = Slot::EMPTY;
        let outs = self.out_slots_mut(from);
        let o = outs.iter().position(|s| s.peer == to && s.chunk == chunk).expect("both ends record a transfer");
        outs[o] = Slot::EMPTY;
        self.hosts[from as usize].uploads -= 1;
        self.hosts[to as usize].downloads -= 1;
        if fast {
            self.hosts[to as usize].fast_downloads -= 1;
        }
        self.copies[chunk as usize] -= 1;
        self.in_flight -= 1;
        self.refresh(from);
        self.refresh(to);
        self.mark_dirty(from);
        self.mark_dirty(to);
    }

    /// Puts `h` in or out of the sender and receiver pools according to its slots and chunks.
    pub(crate) fn refresh(&mut self, h: u32) {
        let host = self.hosts[h as usize];
        let has_some = host.have_count > 0 && host.uploads < self.upload_cap(h);
        if h == 0 {
            // The seed joins the ordinary pool once every chunk is loaded and handed out once.
            let injected = self.seed_loaded.len() == self.cfg.chunks as usize && self.fresh == self.seed_loaded.len();
            self.senders.set(0, has_some && injected);
            return;
        }
        self.senders.set(h, host.live && !host.excluded && has_some);
        let wants = host.have_count + u32::from(host.downloads) < self.cfg.chunks;
        self.receivers.set(h, host.live && host.downloads < self.cfg.download_slots && wants);
    }
}
