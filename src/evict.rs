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

use std::collections::{BTreeSet, VecDeque};
use std::hash::Hash;

use foldhash::HashSet;

use crate::time::Timestamp;

/// The precision of "idle longest", in nanoseconds.
const GRAIN: i64 = 100_000_000;

fn coarse(t: Timestamp) -> Timestamp {
    Timestamp::from_nanos(t.as_nanos().div_euclid(GRAIN) * GRAIN)
}

/// (latest packet time, id, key).
type Idle<K> = (Timestamp, u64, K);

/// Flows of one kind by latest packet time, identified by their key and
/// their id (a key is reused by a later attempt from the same client port).
///
/// New flows come in time order, so nearly every entry is added at the end
/// of the order: those queue in a FIFO (a SYN flood adds one per packet),
/// the few others go into a sorted set, and the idlest is at the front of
/// one or the other. An entry in the FIFO that is moved or removed stays
/// where it is, named in `gone`, and is dropped when it reaches the front.
#[derive(Debug)]
pub struct IdleOrder<K> {
    in_order: VecDeque<Idle<K>>,
    out_of_order: BTreeSet<Idle<K>>,
    gone: HashSet<Idle<K>>,
}

impl<K: Ord + Copy + Hash> Default for IdleOrder<K> {
    fn default() -> Self {
        IdleOrder { in_order: VecDeque::new(), out_of_order: BTreeSet::new(), gone: HashSet::default() }
    }
}

impl<K: Ord + Copy + Hash> IdleOrder<K> {
    /// A new flow, last active at `at`.
    pub fn insert(&mut self, key: K, id: u64, at: Timestamp) {
        self.add((coarse(at), id, key));
    }

    fn add(&mut self, entry: Idle<K>) {
        match self.in_order.back() {
            Some(&last) if entry == last => {}
            Some(&last) if entry < last => {
                self.out_of_order.insert(entry);
            }
            _ => self.in_order.push_back(entry),
        }
    }

    /// Takes `entry` out of the order; false when it is not there.
    fn take(&mut self, entry: Idle<K>) -> bool {
        if self.out_of_order.remove(&entry) {
            return true;
        }
        // The FIFO is sorted: found by bisection, marked gone.
        self.in_order.binary_search(&entry).is_ok() && self.gone.insert(entry)
    }

    /// A flow's latest packet moved from `was` to `now`.
    pub fn touch(&mut self, key: K, id: u64, was: Timestamp, now: Timestamp) {
        let (was, now) = (coarse(was), coarse(now));
        if was != now && self.take((was, id, key)) {
            self.add((now, id, key));
        }
    }

    /// A flow left the table.
    pub fn remove(&mut self, key: K, id: u64, last: Timestamp) {
        self.take((coarse(last), id, key));
    }

    /// The idlest entry, taken out of the order.
    fn pop_first(&mut self) -> Option<Idle<K>> {
        loop {
            let fifo = self.in_order.front().copied();
            let entry = match (fifo, self.out_of_order.first()) {
                (Some(f), Some(&s)) if s < f => self.out_of_order.pop_first(),
                (Some(_), _) => self.in_order.pop_front(),
                (None, _) => self.out_of_order.pop_first(),
            }?;
            if fifo != Some(entry) || !self.gone.remove(&entry) {
                return Some(entry);
            }
        }
    }

    /// Takes the flow idle longest. `current` says whether an entry still
    /// stands for a flow in the table (entries missed on removal do not).
    pub fn pop_idlest(&mut self, mut current: impl FnMut(&K, u64) -> bool) -> Option<K> {
        while let Some((_, id, key)) = self.pop_first() {
            if current(&key, id) {
                return Some(key);
            }
        }
        None
    }

    /// Entries kept, those marked gone included: what memory holds.
    fn stored(&self) -> usize {
        self.in_order.len() + self.out_of_order.len()
    }

    /// Drops entries of flows that are gone, and those marked gone, once
    /// they are most of what is kept.
    pub fn compact(&mut self, live: usize, mut current: impl FnMut(&K, u64) -> bool) {
        if self.stored() > 2 * live + 1024 {
            let gone = std::mem::take(&mut self.gone);
            self.in_order.retain(|entry| !gone.contains(entry) && current(&entry.2, entry.1));
            self.out_of_order.retain(|(_, id, key)| current(key, *id));
        }
    }

    pub fn clear(&mut self) {
        *self = IdleOrder::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl<K: Ord + Copy + Hash> IdleOrder<K> {
        /// Entries standing for flows.
        fn len(&self) -> usize {
            self.stored() - self.gone.len()
        }

        fn holds(&self, entry: Idle<K>) -> bool {
            self.out_of_order.contains(&entry) || self.in_order.contains(&entry) && !self.gone.contains(&entry)
        }
    }

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
        assert!(q.holds((at(1), 0, 0)));
        // ...and the next grain moves it; removal finds it by the exact time.
        q.touch(0, 0, ms(1), ms(150));
        assert!(q.holds((ms(100), 0, 0)) && !q.holds((at(1), 0, 0)));
        q.remove(0, 0, ms(150));
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn gone_flows_are_skipped_and_compacted() {
        let mut q = IdleOrder::default();
        for i in 0..5000usize {
            q.insert(i, i as u64, at(i as i64));
        }
        q.compact(10, |k, _| *k >= 4990);
        assert_eq!(q.len(), 10);
        assert_eq!(q.pop_idlest(|k, _| *k != 4990), Some(4991));
    }

    #[test]
    fn the_order_is_a_sorted_set_whatever_the_operations() {
        // The same operations on a plain sorted set, the order this one keeps.
        let mut model: BTreeSet<Idle<u32>> = BTreeSet::new();
        let mut q = IdleOrder::default();
        let mut last: Vec<Option<(u64, Timestamp)>> = vec![None; 64];
        let mut random = crate::testing::xorshift(0x2545_f491_4f6c_dd1d);
        let (mut now, mut next_id) = (1_000_000_000i64, 0u64);
        for _ in 0..20_000 {
            let state = random();
            // Time mostly moves on, sometimes steps back.
            now += (state % 300_000_000) as i64 - 50_000_000;
            let t = Timestamp::from_nanos(now);
            let key = (state >> 20) as u32 % 64;
            match (state >> 40) % 4 {
                0 if last[key as usize].is_none() => {
                    next_id += 1;
                    q.insert(key, next_id, t);
                    model.insert((coarse(t), next_id, key));
                    last[key as usize] = Some((next_id, t));
                }
                1 | 2 => {
                    if let Some((id, was)) = last[key as usize] {
                        q.touch(key, id, was, t);
                        if coarse(was) != coarse(t) && model.remove(&(coarse(was), id, key)) {
                            model.insert((coarse(t), id, key));
                        }
                        last[key as usize] = Some((id, t));
                    }
                }
                _ => {
                    if let Some((id, was)) = last[key as usize].take() {
                        q.remove(key, id, was);
                        model.remove(&(coarse(was), id, key));
                    }
                }
            }
            assert_eq!(q.len(), model.len());
        }
        while let Some(entry) = model.pop_first() {
            assert_eq!(q.pop_first(), Some(entry));
        }
        assert_eq!(q.pop_first(), None);
    }

    #[test]
    fn flows_that_end_by_themselves_leave_nothing_behind() {
        // A long capture of short connections: each added in order, then
        // removed while still in the FIFO; a handful live at a time.
        let mut q = IdleOrder::default();
        for i in 0..100_000u32 {
            q.insert(i, u64::from(i), at(i64::from(i)));
            if i >= 10 {
                q.remove(i - 10, u64::from(i - 10), at(i64::from(i - 10)));
            }
            q.compact(10, |&k, _| k + 10 > i);
            assert!(q.stored() <= 2 * 10 + 1024 + 1, "{} entries kept at {i}", q.stored());
        }
        assert_eq!(q.len(), 10);
    }
}
