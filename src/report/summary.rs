//! Aggregating finished attempts into what reports show: totals, one
//! summary per client, and (when asked) the attempts themselves. Every
//! collection here is bounded, so a capture of any size fits in memory.

use std::collections::HashMap;
use std::net::IpAddr;

use serde::Serialize;

use crate::record::{AttemptRecord, Outcome};
use crate::time::Timestamp;

/// Handshake samples kept per client for its median.
const MAX_HANDSHAKE_SAMPLES: usize = 4096;

/// Attempt counts by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct OutcomeCounts {
    pub attempts: u64,
    pub established: u64,
    pub refused: u64,
    pub unreachable: u64,
    pub timeout: u64,
    pub handshake_incomplete: u64,
    pub midstream: u64,
    pub capture_ended: u64,
}

impl OutcomeCounts {
    fn add(&mut self, outcome: Outcome) {
        self.attempts += 1;
        *self.slot(outcome) += 1;
    }

    fn slot(&mut self, outcome: Outcome) -> &mut u64 {
        match outcome {
            Outcome::Established => &mut self.established,
            Outcome::Refused => &mut self.refused,
            Outcome::Unreachable => &mut self.unreachable,
            Outcome::Timeout => &mut self.timeout,
            Outcome::HandshakeIncomplete => &mut self.handshake_incomplete,
            Outcome::Midstream => &mut self.midstream,
            Outcome::CaptureEnded => &mut self.capture_ended,
        }
    }

    pub fn get(&self, outcome: Outcome) -> u64 {
        let mut copy = *self;
        *copy.slot(outcome)
    }

    /// Outcomes that fit none of the main columns.
    pub fn other(&self) -> u64 {
        self.handshake_incomplete + self.midstream + self.capture_ended
    }

    pub fn failures(&self) -> u64 {
        Outcome::ALL.iter().filter(|o| o.is_failure()).map(|&o| self.get(o)).sum()
    }
}

/// What one client address did over the capture.
#[derive(Debug, Clone, Serialize)]
pub struct ClientSummary {
    pub client: IpAddr,
    #[serde(flatten)]
    pub counts: OutcomeCounts,
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
    /// Median SYN to SYN-ACK time of its attempts, in milliseconds.
    pub median_handshake_ms: Option<f64>,
    #[serde(skip)]
    handshakes_ms: Vec<f64>,
}

/// Everything a report shows, built from the engine's finished attempts.
#[derive(Debug)]
pub struct Summary {
    pub totals: OutcomeCounts,
    clients: HashMap<IpAddr, ClientSummary>,
    max_clients: usize,
    /// Attempts of clients beyond `max_clients`, counted together.
    pub other_clients: OutcomeCounts,
    attempts: Vec<AttemptRecord>,
    max_attempts: usize,
    /// Attempts not kept because `max_attempts` was reached.
    pub attempts_not_listed: u64,
    pub first_seen: Option<Timestamp>,
    pub last_seen: Option<Timestamp>,
}

impl Summary {
    /// `max_clients` bounds the per-client table (a spoofed SYN flood has
    /// millions of sources); `max_attempts` bounds the attempt list (0 keeps none).
    pub fn new(max_clients: usize, max_attempts: usize) -> Summary {
        Summary {
            totals: OutcomeCounts::default(),
            clients: HashMap::new(),
            max_clients,
            other_clients: OutcomeCounts::default(),
            attempts: Vec::new(),
            max_attempts,
            attempts_not_listed: 0,
            first_seen: None,
            last_seen: None,
        }
    }

    pub fn add(&mut self, record: AttemptRecord) {
        self.totals.add(record.outcome);
        self.first_seen = Some(self.first_seen.map_or(record.start, |t| t.min(record.start)));
        self.last_seen = Some(self.last_seen.map_or(record.end, |t| t.max(record.end)));
        let ip = record.client.ip();
        let room = self.clients.len() < self.max_clients;
        match self.clients.get_mut(&ip) {
            Some(c) => c.add(&record),
            None if room => {
                let mut c = ClientSummary {
                    client: ip,
                    counts: OutcomeCounts::default(),
                    first_seen: record.start,
                    last_seen: record.end,
                    median_handshake_ms: None,
                    handshakes_ms: Vec::new(),
                };
                c.add(&record);
                self.clients.insert(ip, c);
            }
            None => self.other_clients.add(record.outcome),
        }
        if self.attempts.len() < self.max_attempts {
            self.attempts.push(record);
        } else {
            self.attempts_not_listed += 1;
        }
    }

    /// Clients with the most failed attempts first, then the busiest, then by address.
    pub fn clients(&self) -> Vec<ClientSummary> {
        let mut clients: Vec<ClientSummary> = self.clients.values().cloned().map(ClientSummary::finish).collect();
        clients.sort_by(|a, b| {
            b.counts
                .failures()
                .cmp(&a.counts.failures())
                .then(b.counts.attempts.cmp(&a.counts.attempts))
                .then(a.client.cmp(&b.client))
        });
        clients
    }

    pub fn client_count(&self) -> usize {
        self.clients.len()
    }

    /// Clients that had at least one attempt with this outcome.
    pub fn clients_with(&self, outcome: Outcome) -> usize {
        self.clients.values().filter(|c| c.counts.get(outcome) > 0).count()
    }

    /// The kept attempts, in the order they started.
    pub fn attempts(&self) -> Vec<&AttemptRecord> {
        let mut list: Vec<&AttemptRecord> = self.attempts.iter().collect();
        list.sort_by_key(|a| (a.start, a.id));
        list
    }
}

impl ClientSummary {
    fn add(&mut self, record: &AttemptRecord) {
        self.counts.add(record.outcome);
        self.first_seen = self.first_seen.min(record.start);
        self.last_seen = self.last_seen.max(record.end);
        if let Some(ms) = record.handshake_ms {
            if self.handshakes_ms.len() < MAX_HANDSHAKE_SAMPLES {
                self.handshakes_ms.push(ms);
            }
        }
    }

    fn finish(mut self) -> ClientSummary {
        self.median_handshake_ms = median(&mut self.handshakes_ms);
        self
    }
}

fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 0 { (values[mid - 1] + values[mid]) / 2.0 } else { values[mid] })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(&mut []), None);
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), Some(2.5));
    }
}
