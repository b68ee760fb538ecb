//! The flow table: each tracked flow in a numbered slot, found by its
//! (client, server) key once per packet. Deadlines and the eviction order
//! name a flow by its slot and id (12 bytes) instead of a copy of its key
//! (64 bytes): under a SYN flood they hold millions of entries.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;

use foldhash::HashMap;

use crate::flow::Flow;
use crate::time::Timestamp;

/// A connection is keyed by its client and server addresses; repeated
/// attempts from one client port are told apart by their SYN sequence.
pub type FlowKey = (SocketAddr, SocketAddr);

/// Where a flow lives in the table while it is tracked; reused after it leaves.
pub type Slot = u32;

#[derive(Default)]
pub struct FlowTable {
    index: HashMap<FlowKey, Slot>,
    slots: Vec<Option<(FlowKey, Box<Flow>)>>,
    free: Vec<Slot>,
}

impl FlowTable {
    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    pub fn get_mut(&mut self, key: &FlowKey) -> Option<(Slot, &mut Flow)> {
        let slot = *self.index.get(key)?;
        let (_, flow) = self.slots.get_mut(slot as usize)?.as_mut()?;
        Some((slot, flow))
    }

    pub fn at(&self, slot: Slot) -> Option<&Flow> {
        self.slots.get(slot as usize)?.as_ref().map(|(_, flow)| &**flow)
    }

    pub fn at_mut(&mut self, slot: Slot) -> Option<(FlowKey, &mut Flow)> {
        self.slots.get_mut(slot as usize)?.as_mut().map(|(key, flow)| (*key, &mut **flow))
    }

    /// Whether `slot` holds the flow with this id (entries naming a flow
    /// that has left are skipped where they are met).
    pub fn holds(&self, slot: Slot, id: u64) -> bool {
        self.at(slot).is_some_and(|f| f.id == id)
    }

    /// Tracks a flow under `key`, ending the tracking of any flow there.
    pub fn insert(&mut self, key: FlowKey, flow: Box<Flow>) -> Slot {
        if let Some(slot) = self.index.get(&key).copied() {
            self.remove(slot);
        }
        let slot = match self.free.pop() {
            Some(slot) => {
                if let Some(cell) = self.slots.get_mut(slot as usize) {
                    *cell = Some((key, flow));
                }
                slot
            }
            None => {
                // Bounded by max_flows, far below 2^32.
                let slot = Slot::try_from(self.slots.len()).unwrap_or(Slot::MAX);
                self.slots.push(Some((key, flow)));
                slot
            }
        };
        self.index.insert(key, slot);
        slot
    }

    pub fn remove(&mut self, slot: Slot) -> Option<(FlowKey, Box<Flow>)> {
        let (key, flow) = self.slots.get_mut(slot as usize)?.take()?;
        self.index.remove(&key);
        self.free.push(slot);
        Some((key, flow))
    }

    /// Takes every flow out, leaving the table empty.
    pub fn take_all(&mut self) -> impl Iterator<Item = (FlowKey, Box<Flow>)> {
        self.index = HashMap::default();
        self.free = Vec::new();
        std::mem::take(&mut self.slots).into_iter().flatten()
    }

    pub fn flows(&self) -> impl Iterator<Item = &Flow> {
        self.slots.iter().flatten().map(|(_, flow)| &**flow)
    }
}

/// Deadlines, earliest first (then the earliest attempt): each names the
/// flow's slot and id. An entry is current while the flow in that slot has
/// that id and is armed for that time; others are stale and skipped (lazy
/// deletion).
#[derive(Default)]
pub struct Deadlines(BinaryHeap<Reverse<(Timestamp, u64, Slot)>>);

impl Deadlines {
    pub fn push(&mut self, due: Timestamp, id: u64, slot: Slot) {
        self.0.push(Reverse((due, id, slot)));
    }

    pub fn next_due(&self) -> Option<Timestamp> {
        self.0.peek().map(|Reverse((due, ..))| *due)
    }

    /// The earliest entry due at or before `now`.
    pub fn pop_due(&mut self, now: Timestamp) -> Option<(Timestamp, u64, Slot)> {
        let &Reverse(entry) = self.0.peek().filter(|Reverse((due, ..))| *due <= now)?;
        self.0.pop();
        Some(entry)
    }

    pub fn clear(&mut self) {
        self.0 = BinaryHeap::new();
    }
}
