//! The model's event queue. Most events are transfer completions, and a transfer's duration takes only a
//! handful of values (fast or slow ends, full or short last chunk); completions of one duration finish
//! in the order they started. So each duration gets a FIFO and only the rare other events use a heap:
//! pop is a minimum over a few queue heads, ~3× cheaper than a binary heap of a whole region's transfers.
//! Order is exactly the heap's: by time, then by insertion sequence.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

/// Most distinct durations kept in FIFOs; further ones go to the heap.
const MAX_FIFOS: usize = 16;

type Entry<E> = (u64, u64, E);

/// Events ordered by `(time, insertion)`.
pub struct Timeline<E: Ord + Copy> {
    fifos: Vec<(u64, VecDeque<Entry<E>>)>,
    heap: BinaryHeap<Reverse<Entry<E>>>,
    seq: u64,
    now: u64,
}

impl<E: Ord + Copy> Timeline<E> {
    pub fn new() -> Self {
        Timeline { fifos: Vec::new(), heap: BinaryHeap::new(), seq: 0, now: 0 }
    }

    /// Schedules `ev` at absolute time `at` (not in the past).
    pub fn at(&mut self, at: u64, ev: E) {
        assert!(at >= self.now, "an event cannot be scheduled in the past");
        self.seq += 1;
        self.heap.push(Reverse((at, self.seq, ev)));
    }

    /// Schedules `ev` `delay` after now; equal delays share a FIFO.
    pub fn after(&mut self, delay: u64, ev: E) {
        self.seq += 1;
        let entry = (self.now + delay, self.seq, ev);
        if let Some((_, q)) = self.fifos.iter_mut().find(|(d, _)| *d == delay) {
            q.push_back(entry);
        } else if self.fifos.len() < MAX_FIFOS {
            self.fifos.push((delay, VecDeque::from([entry])));
        } else {
            self.heap.push(Reverse(entry));
        }
    }

    /// The earliest event, advancing the clock to it.
    pub fn pop(&mut self) -> Option<(u64, E)> {
        let mut best: Option<(u64, u64)> = self.heap.peek().map(|Reverse((t, s, _))| (*t, *s));
        let mut from = None;
        for (i, (_, q)) in self.fifos.iter().enumerate() {
            if let Some(&(t, s, _)) = q.front() {
                if best.is_none_or(|b| (t, s) < b) {
                    best = Some((t, s));
                    from = Some(i);
                }
            }
        }
        let (t, _, ev) = match from {
            Some(i) => self.fifos[i].1.pop_front().expect("non-empty head"),
            None => self.heap.pop()?.0,
        };
        debug_assert!(t >= self.now, "time never runs backwards");
        self.now = t;
        Some((t, ev))
    }
}
