//! A set of host indexes with O(1) insert, remove and uniform random pick: the pools of free senders and
//! free receivers that the matcher samples.

use super::rng::SplitMix64;

const ABSENT: u32 = u32::MAX;

/// Dense vector of members plus each host's position in it.
#[derive(Clone, Debug, Default)]
pub(crate) struct HostSet {
    items: Vec<u32>,
    pos: Vec<u32>,
}

impl HostSet {
    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    pub(crate) fn contains(&self, h: u32) -> bool {
        self.pos.get(h as usize).is_some_and(|&p| p != ABSENT)
    }

    /// Makes membership equal `member`.
    pub(crate) fn set(&mut self, h: u32, member: bool) {
        if member {
            self.insert(h)
        } else {
            self.remove(h)
        }
    }

    fn insert(&mut self, h: u32) {
        if self.contains(h) {
            return;
        }
        if self.pos.len() <= h as usize {
            self.pos.resize(h as usize + 1, ABSENT);
        }
        self.pos[h as usize] = self.items.len() as u32;
        self.items.push(h);
    }

    fn remove(&mut self, h: u32) {
        if !self.contains(h) {
            return;
        }
        let p = self.pos[h as usize] as usize;
        let last = self.items.pop().expect("a member implies a non-empty set");
        if last != h {
            self.items[p] = last;
            self.pos[last as usize] = p as u32;
        }
        self.pos[h as usize] = ABSENT;
    }

    /// A uniformly random member, if any.
    pub(crate) fn pick(&self, rng: &mut SplitMix64) -> Option<u32> {
        if self.items.is_empty() {
            return None;
        }
        Some(self.items[rng.below(self.items.len() as u32) as usize])
    }

    /// The members, in no particular order.
    pub(crate) fn items(&self) -> &[u32] {
        &self.items
    }
}
