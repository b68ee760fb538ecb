//! The flow table: each tracked flow in a numbered slot, found by its
//! (client, server) key, packed, once per packet. Deadlines and the eviction order
//! name a flow by its slot and id (12 bytes) instead of a copy of its key
//! (64 bytes): under a SYN flood they hold millions of entries.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use foldhash::HashMap;

use crate::flow::Flow;
use crate::time::Timestamp;

/// A connection is keyed by its client and server addresses; repeated
/// attempts from one client port are told apart by their SYN sequence.
pub type FlowKey = (SocketAddr, SocketAddr);

/// Where a flow lives in the table while it is tracked; reused after it leaves.
pub type Slot = u32;

/// A key in 38 bytes (two 16-byte addresses, two ports, the family),
/// hashed as one run of bytes: a SocketAddr pair is 64 bytes and hashes
/// field by field. An IPv4 address and its IPv4-mapped IPv6 form stay apart.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct PackedKey([u8; 38]);

impl PackedKey {
    fn of((client, server): &FlowKey) -> PackedKey {
        let mut bytes = [0u8; 38];
        for (at, addr) in [(0, client), (18, server)] {
            let ip = match addr.ip() {
                IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
                IpAddr::V6(v6) => v6.octets(),
            };
            bytes[at..at + 16].copy_from_slice(&ip);
            bytes[at + 16..at + 18].copy_from_slice(&addr.port().to_be_bytes());
        }
        bytes[36] = u8::from(client.is_ipv6());
        bytes[37] = u8::from(server.is_ipv6());
        PackedKey(bytes)
    }

    fn unpack(&self) -> FlowKey {
        let addr = |at: usize, v6: u8| {
            let mut ip = [0u8; 16];
            ip.copy_from_slice(&self.0[at..at + 16]);
            let ip = Ipv6Addr::from(ip);
            let ip = match ip.to_ipv4_mapped() {
                Some(v4) if v6 == 0 => IpAddr::V4(v4),
                _ => IpAddr::V6(ip),
            };
            SocketAddr::new(ip, u16::from_be_bytes([self.0[at + 16], self.0[at + 17]]))
        };
        (addr(0, self.0[36]), addr(18, self.0[37]))
    }
}

#[derive(Default)]
pub struct FlowTable {
    index: HashMap<PackedKey, Slot>,
    slots: Vec<Option<(PackedKey, Box<Flow>)>>,
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
        let slot = *self.index.get(&PackedKey::of(key))?;
        let (_, flow) = self.slots.get_mut(slot as usize)?.as_mut()?;
        Some((slot, flow))
    }

    pub fn at(&self, slot: Slot) -> Option<&Flow> {
        self.slots.get(slot as usize)?.as_ref().map(|(_, flow)| &**flow)
    }

    pub fn at_mut(&mut self, slot: Slot) -> Option<&mut Flow> {
        self.slots.get_mut(slot as usize)?.as_mut().map(|(_, flow)| &mut **flow)
    }

    /// The key of the flow in `slot`, and the flow.
    pub fn keyed_mut(&mut self, slot: Slot) -> Option<(FlowKey, &mut Flow)> {
        self.slots.get_mut(slot as usize)?.as_mut().map(|(key, flow)| (key.unpack(), &mut **flow))
    }

    /// Whether `slot` holds the flow with this id (entries naming a flow
    /// that has left are skipped where they are met).
    pub fn holds(&self, slot: Slot, id: u64) -> bool {
        self.at(slot).is_some_and(|f| f.id == id)
    }

    /// Tracks a flow under `key`, ending the tracking of any flow there.
    pub fn insert(&mut self, key: FlowKey, flow: Box<Flow>) -> Slot {
        let key = PackedKey::of(&key);
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
        Some((key.unpack(), flow))
    }

    /// Takes every flow out, leaving the table empty.
    pub fn take_all(&mut self) -> impl Iterator<Item = (FlowKey, Box<Flow>)> {
        self.index = HashMap::default();
        self.free = Vec::new();
        std::mem::take(&mut self.slots).into_iter().flatten().map(|(key, flow)| (key.unpack(), flow))
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
}
