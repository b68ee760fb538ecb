//! Which flow leaves a full table first: flows ordered by their latest
//! packet, so that the one idle longest can be found at once and a new SYN
//! always finds room.
//!
//! Entries hold the latest packet time cut to GRAIN: a busy flow's entry
//! moves once per GRAIN, not on every packet (the hot path), and which of
//! two flows is the idler within GRAIN does not matter for eviction.
//!
//! The engine moves a flow's entry when its latest packet time changes and
//! drops entries when flows leave; an entry it missed (a flow ended by its
//! own packet) is skipped when met, and such entries are dropped in bulk
//! once they outnumber the live ones, so memory follows the table, not the
//! capture's length.

use std::collections::BTreeSet;

use crate::time::Timestamp;

/// The precision of "idle longest", in nanoseconds.
const GRAIN: i64 = 100_000_000;

fn coarse(t: Timestamp) -> Timestamp {
    Timestamp::from_nanos(t.as_nanos().div_euclid(GRAIN) * GRAIN)
}

/// Flows of one kind by latest packet time, identified by their key and
/// their id (a key is reused by a later attempt from the same client port).
#[derive(Debug)]
pub struct IdleOrder<K> {
    by_last: BTreeSet<(Timestamp, u64, K)>,
}

impl<K: Ord + Copy> Default for IdleOrder<K> {
    fn default() -> Self {
        IdleOrder { by_last: BTreeSet::new() }
    }
}

impl<K: Ord + Copy> IdleOrder<K> {
    /// A new flow, last active at `at`.
    pub fn insert(&mut self, key: K, id: u64, at: Timestamp) {
        self.by_last.insert((coarse(at), id, key));
    }

    /// A flow's latest packet moved from `was` to `now`.
    pub fn touch(&mut self, key: K, id: u64, was: Timestamp, now: Timestamp) {
        let (was, now) = (coarse(was), coarse(now));
        if was != now && self.by_last.remove(&(was, id, key)) {
            self.by_last.insert((now, id, key));
        }
    }

    /// A flow left the table.
    pub fn remove(&mut self, key: K, id: u64, last: Timestamp) {
        self.by_last.remove(&(coarse(last), id, key));
    }

    /// Takes the flow idle longest. `current` says whether an entry still
    /// stands for a flow in the table (entries missed on removal do not).
    pub fn pop_idlest(&mut self, mut current: impl FnMut(&K, u64) -> bool) -> Option<K> {
        while let Some((_, id, key)) = self.by_last.pop_first() {
            if current(&key, id) {
                return Some(key);
            }
        }
        None
    }

    /// Drops entries of flows that are gone once they are most of the set.
    pub fn compact(&mut self, live: usize, mut current: impl FnMut(&K, u64) -> bool) {
        if self.by_last.len() > 2 * live + 1024 {
            self.by_last.retain(|(_, id, key)| current(key, *id));
        }
    }

    pub fn clear(&mut self) {
        self.by_last = BTreeSet::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_secs_nanos(s, 0)
    }

    #[test]
    fn the_flow_idle_longest_goes_first() {
        let mut q = IdleOrder::default();
        for i in 0..3usize {
            q.insert(i, i as u64, at(1));
        }
        q.touch(0, 0, at(1), at(10));
        q.touch(1, 1, at(1), at(2));
        q.touch(2, 2, at(1), at(5));
        assert_eq!(q.pop_idlest(|_, _| true), Some(1));
        assert_eq!(q.pop_idlest(|_, _| true), Some(2));
        assert_eq!(q.pop_idlest(|_, _| true), Some(0));
        assert_eq!(q.pop_idlest(|_, _| true), None);
    }

    #[test]
    fn a_busy_flow_moves_once_per_grain() {
        let mut q = IdleOrder::default();
        q.insert(0usize, 0, at(1));
        let ms = |n: i64| Timestamp::from_nanos(1_000_000_000 + n * 1_000_000);
        // Packets 1 ms apart within one grain leave the entry where it is...
        q.touch(0, 0, ms(0), ms(1));
        assert!(q.by_last.contains(&(at(1), 0, 0)));
        // ...and the next grain moves it; removal finds it by the exact time.
        q.touch(0, 0, ms(1), ms(150));
        assert!(q.by_last.contains(&(ms(100), 0, 0)));
        q.remove(0, 0, ms(150));
        assert!(q.by_last.is_empty());
    }

    #[test]
    fn gone_flows_are_skipped_and_compacted() {
        let mut q = IdleOrder::default();
        for i in 0..5000usize {
            q.insert(i, i as u64, at(i as i64));
        }
        q.compact(10, |k, _| *k >= 4990);
        assert_eq!(q.by_last.len(), 10);
        assert_eq!(q.pop_idlest(|k, _| *k != 4990), Some(4991));
    }
}
