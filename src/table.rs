//! The flow table: each tracked flow in a numbered slot, found by its
//! (client, server) key, packed, once per packet. Deadlines and the eviction order
//! name a flow by its slot and id (12 bytes) instead of a copy of its key
//! (64 bytes): under a SYN flood they hold millions of entries.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use std::hash::BuildHasher;

use hashbrown::HashTable;

use crate::flow::{Flow, State, WaitingSyn};
use crate::time::Timestamp;

/// A connection is keyed by its client and server addresses; repeated
/// attempts from one client port are told apart by their SYN sequence.
pub type FlowKey = (SocketAddr, SocketAddr);

/// Where a flow lives in the table while it is tracked; reused after it leaves.
pub type Slot = u32;

/// A key in five words (two 16-byte addresses; the two ports and the
/// families), hashed and compared word by word: a
/// SocketAddr pair is 64 bytes and hashes field by field. An IPv4 address
/// and its IPv4-mapped IPv6 form stay apart.
#[derive(Clone, Copy)]
struct PackedKey([u64; 5]);

impl Hash for PackedKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        for word in self.0 {
            state.write_u64(word);
        }
    }
}

impl PartialEq for PackedKey {
    fn eq(&self, other: &PackedKey) -> bool {
        // Word by word, no branch and no library call (a derived
        // comparison of the array calls memcmp on every probe).
        self.0.iter().zip(other.0).fold(0, |diff, (a, b)| diff | (a ^ b)) == 0
    }
}

impl Eq for PackedKey {}

impl PackedKey {
    fn of((client, server): &FlowKey) -> PackedKey {
        let ip = |addr: &SocketAddr| {
            u128::from_be_bytes(match addr.ip() {
                IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
                IpAddr::V6(v6) => v6.octets(),
            })
        };
        let (c, s) = (ip(client), ip(server));
        let tail = u64::from(client.port()) << 48
            | u64::from(server.port()) << 32
            | u64::from(client.is_ipv6()) << 1
            | u64::from(server.is_ipv6());
        PackedKey([(c >> 64) as u64, c as u64, (s >> 64) as u64, s as u64, tail])
    }

    fn unpack(&self) -> FlowKey {
        let [c_hi, c_lo, s_hi, s_lo, tail] = self.0;
        let addr = |hi: u64, lo: u64, port: u64, v6: bool| {
            let ip = Ipv6Addr::from((u128::from(hi) << 64) | u128::from(lo));
            let ip = match ip.to_ipv4_mapped() {
                Some(v4) if !v6 => IpAddr::V4(v4),
                _ => IpAddr::V6(ip),
            };
            SocketAddr::new(ip, (port & 0xffff) as u16)
        };
        (addr(c_hi, c_lo, tail >> 48, tail & 2 != 0), addr(s_hi, s_lo, tail >> 32, tail & 1 != 0))
    }
}

/// A tracked flow as stored: a SYN still waiting alone for its answer
/// is kept compact (a SYN flood is millions of them); it becomes its full
/// `Flow` again when the engine next reads or changes it.
pub enum Entry {
    Waiting(WaitingSyn),
    Tracked(Box<Flow>),
}

impl Entry {
    fn of(flow: Flow) -> Entry {
        match flow.into_waiting() {
            Ok(waiting) => Entry::Waiting(waiting),
            Err(flow) => Entry::Tracked(flow),
        }
    }

    pub fn id(&self) -> u64 {
        match self {
            Entry::Waiting(w) => w.id,
            Entry::Tracked(flow) => flow.id,
        }
    }

    /// Lends the flow to `f`; a waiting SYN (a flood's every flow) as a
    /// flow made on the stack, not boxed again.
    pub fn with_flow<R>(self, f: impl FnOnce(&mut Flow) -> R) -> R {
        match self {
            Entry::Waiting(w) => f(&mut Flow::from(w)),
            Entry::Tracked(mut flow) => f(&mut flow),
        }
    }

    pub fn into_flow(self) -> Box<Flow> {
        match self {
            Entry::Waiting(w) => Box::new(Flow::from(w)),
            Entry::Tracked(flow) => flow,
        }
    }
}

/// The flow in a slot, made full first if it was waiting compact.
fn full(cell: &mut Option<(PackedKey, Entry)>) -> Option<(&PackedKey, &mut Flow)> {
    if let Some((key, Entry::Waiting(_))) = cell {
        let key = *key;
        if let Some((_, entry)) = cell.take() {
            *cell = Some((key, Entry::Tracked(entry.into_flow())));
        }
    }
    match cell {
        Some((key, Entry::Tracked(flow))) => Some((key, &mut **flow)),
        _ => None,
    }
}

#[derive(Default)]
pub struct FlowTable {
    /// Each flow's slot, found by its key's hash. Entries are 4 bytes (the
    /// keys stay in `slots`): a million flows index in 4 MiB, which the
    /// caches hold far better than the keys themselves.
    index: HashTable<Slot>,
    hasher: foldhash::fast::RandomState,
    slots: Vec<Option<(PackedKey, Entry)>>,
    free: Vec<Slot>,
}

/// The key stored in `slot`.
fn key_in(slots: &[Option<(PackedKey, Entry)>], slot: Slot) -> Option<&PackedKey> {
    slots.get(slot as usize)?.as_ref().map(|(key, _)| key)
}

impl FlowTable {
    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    fn find(&self, key: &PackedKey) -> Option<Slot> {
        let slots = &self.slots;
        self.index.find(self.hasher.hash_one(key), |&slot| key_in(slots, slot) == Some(key)).copied()
    }

    pub fn get_mut(&mut self, key: &FlowKey) -> Option<(Slot, &mut Flow)> {
        let slot = self.find(&PackedKey::of(key))?;
        let (_, flow) = full(self.slots.get_mut(slot as usize)?)?;
        Some((slot, flow))
    }

    pub fn at_mut(&mut self, slot: Slot) -> Option<&mut Flow> {
        full(self.slots.get_mut(slot as usize)?).map(|(_, flow)| flow)
    }

    /// The key of the flow in `slot`, and the flow.
    pub fn keyed_mut(&mut self, slot: Slot) -> Option<(FlowKey, &mut Flow)> {
        full(self.slots.get_mut(slot as usize)?).map(|(key, flow)| (key.unpack(), flow))
    }

    /// Whether `slot` holds the flow with this id (entries naming a flow
    /// that has left are skipped where they are met).
    pub fn holds(&self, slot: Slot, id: u64) -> bool {
        self.slots.get(slot as usize).and_then(Option::as_ref).is_some_and(|(_, entry)| entry.id() == id)
    }

    /// Tracks a flow under `key`, ending the tracking of any flow there.
    pub fn insert(&mut self, key: FlowKey, flow: Flow) -> Slot {
        let (key, flow) = (PackedKey::of(&key), Entry::of(flow));
        if let Some(slot) = self.find(&key) {
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
        let (slots, hasher) = (&self.slots, &self.hasher);
        let rehash = |&slot: &Slot| key_in(slots, slot).map_or(0, |key| hasher.hash_one(key));
        self.index.insert_unique(hasher.hash_one(key), slot, rehash);
        slot
    }

    pub fn remove(&mut self, slot: Slot) -> Option<(FlowKey, Entry)> {
        let (key, entry) = self.slots.get_mut(slot as usize)?.take()?;
        // Found by the slot number: the removed key is not read again.
        if let Ok(found) = self.index.find_entry(self.hasher.hash_one(key), |&s| s == slot) {
            found.remove();
        }
        self.free.push(slot);
        Some((key.unpack(), entry))
    }

    /// Takes every flow out, leaving the table empty.
    pub fn take_all(&mut self) -> impl Iterator<Item = (FlowKey, Entry)> {
        self.index = HashTable::new();
        self.free = Vec::new();
        std::mem::take(&mut self.slots).into_iter().flatten().map(|(key, flow)| (key.unpack(), flow))
    }

    /// Each flow's state and start.
    pub fn states(&self) -> impl Iterator<Item = (State, Timestamp)> + '_ {
        self.slots.iter().flatten().map(|(_, entry)| match entry {
            Entry::Waiting(w) => (State::SynSent, w.start),
            Entry::Tracked(flow) => (flow.state, flow.start),
        })
    }
}

/// Deadlines, earliest first (then the earliest attempt): each names the
/// flow's slot and id. An entry is current while the flow in that slot has
/// that id and is armed for that time; others are stale and skipped (lazy
/// deletion).
///
/// Most deadlines come in order (a SYN's time-out is its time plus the
/// same wait, and packets come in time order): those queue at the back of
/// a FIFO, in constant time; only one earlier than the FIFO's last goes into
/// the heap. The earliest deadline is at the front of one or the other.
#[derive(Default)]
pub struct Deadlines {
    in_order: VecDeque<Deadline>,
    out_of_order: BinaryHeap<Reverse<Deadline>>,
}

/// When, which attempt, and its slot.
type Deadline = (Timestamp, u64, Slot);

impl Deadlines {
    pub fn push(&mut self, due: Timestamp, id: u64, slot: Slot) {
        let entry = (due, id, slot);
        if self.in_order.back().is_none_or(|&last| last <= entry) {
            self.in_order.push_back(entry);
        } else {
            self.out_of_order.push(Reverse(entry));
        }
    }

    fn earliest(&self) -> Option<Deadline> {
        let heap = self.out_of_order.peek().map(|&Reverse(entry)| entry);
        match (self.in_order.front().copied(), heap) {
            (Some(fifo), Some(heap)) => Some(fifo.min(heap)),
            (fifo, heap) => fifo.or(heap),
        }
    }

    pub fn next_due(&self) -> Option<Timestamp> {
        self.earliest().map(|(due, ..)| due)
    }

    /// The earliest entry due at or before `now`.
    pub fn pop_due(&mut self, now: Timestamp) -> Option<Deadline> {
        let entry = self.earliest().filter(|&(due, ..)| due <= now)?;
        if self.in_order.front() == Some(&entry) {
            self.in_order.pop_front();
        } else {
            self.out_of_order.pop();
        }
        Some(entry)
    }

    pub fn clear(&mut self) {
        *self = Deadlines::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_keys_give_back_their_addresses() {
        let keys: [FlowKey; 3] = [
            ("192.0.2.7:40000".parse().unwrap(), "192.0.2.1:5432".parse().unwrap()),
            ("[2001:db8::7]:40000".parse().unwrap(), "[2001:db8::1]:5432".parse().unwrap()),
            // An IPv4-mapped IPv6 client is not the IPv4 one.
            ("[::ffff:192.0.2.7]:40000".parse().unwrap(), "192.0.2.1:5432".parse().unwrap()),
        ];
        for key in &keys {
            assert_eq!(PackedKey::of(key).unpack(), *key);
        }
        assert!(PackedKey::of(&keys[0]) != PackedKey::of(&keys[2]));
    }

    #[test]
    fn deadlines_come_out_earliest_first_however_they_went_in() {
        // In order, out of order, and equal times told apart by the attempt.
        let pushed = [(5, 1), (7, 2), (3, 3), (7, 4), (9, 5), (1, 6), (7, 0), (9, 5), (12, 7), (2, 8)];
        let mut deadlines = Deadlines::default();
        for (i, &(secs, id)) in pushed.iter().enumerate() {
            deadlines.push(Timestamp::from_secs_nanos(secs, 0), id, i as Slot);
        }
        let mut expected: Vec<Deadline> = pushed
            .iter()
            .enumerate()
            .map(|(i, &(secs, id))| (Timestamp::from_secs_nanos(secs, 0), id, i as Slot))
            .collect();
        expected.sort();
        assert_eq!(deadlines.next_due(), Some(expected[0].0));
        assert_eq!(deadlines.pop_due(Timestamp::from_secs_nanos(0, 0)), None, "nothing due yet");
        let mut popped = Vec::new();
        while let Some(entry) = deadlines.pop_due(Timestamp::from_secs_nanos(100, 0)) {
            popped.push(entry);
        }
        assert_eq!(popped, expected);
        assert_eq!(deadlines.next_due(), None);
    }
}
