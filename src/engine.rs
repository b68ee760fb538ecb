//! The analysis engine: packets in, finished connection attempts out.
//!
//! It does no I/O and reads no clock. Drivers feed `handle_packet` with
//! each frame's timestamp, call `handle_timeout` when `poll_timeout` says so
//! (live capture) and `finish` when the capture ends, and take finished
//! attempts from `poll_finished`. Memory is bounded by `max_flows` flows
//! of bounded size each (the README's Limits give the figures) plus
//! `max_held_bytes` of out-of-order data across them.

use std::cmp::Reverse;
use std::collections::VecDeque;
use std::time::Duration;

use serde::Serialize;

use crate::decode::{decode, DecodeError, Decoded, IcmpError, LinkType, TcpSegment};
use crate::dns::{Dns, DnsCounts, DNS_PORT};
use crate::evict::IdleOrder;
use crate::flow::{EndCause, Flow, Origin, State, Step};
use crate::legs::Legs;
use crate::outcome::{Outcome, Side};
use crate::ports::{off_port, PortSet};
use crate::record::AttemptRecord;
use crate::stream::HeldBudget;
use crate::table::{Deadlines, Entry, FlowKey, FlowTable, Slot};
use crate::time::Timestamp;
use crate::tls::KeyStore;

/// A packet dated further than this from the engine's clock (a flipped bit, a clock set wrong
/// for a moment) does not move it unless the next packet confirms the jump: following it
/// would end every attempt in progress as a timeout.
pub const MAX_CLOCK_JUMP: Duration = Duration::from_secs(3600);

/// What the engine needs to know before the first packet.
#[derive(Debug, Clone)]
pub struct Config {
    /// The PostgreSQL server ports: they say which end of a connection is the server.
    pub server_ports: Vec<u16>,
    /// How long a SYN must go unanswered before it counts as a timeout
    /// (shorter waits at the end of a capture are reported as `capture_ended`).
    pub syn_timeout: Duration,
    /// The most connections tracked at once (a SYN flood must not exhaust
    /// memory). When the table is full, a connection joined midstream is
    /// ended first, then the connection idle longest; a new SYN always finds
    /// room, other packets of unknown connections go untracked.
    pub max_flows: usize,
    /// Database server names (`--db-host`; `*.domain` for a domain) whose
    /// failed lookups are `dns_failed` attempts, beside the names clients
    /// were seen using.
    pub db_hosts: Vec<String>,
    /// TLS secrets (a key log's text, added by the driver) to decrypt with.
    pub keys: Option<KeyStore>,
    /// The most out-of-order bytes held across all connections, waiting for
    /// the segments before them; beyond it, holes are declared gaps at once.
    pub max_held_bytes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            server_ports: vec![5432],
            syn_timeout: Duration::from_secs(3),
            max_flows: 1_000_000,
            db_hosts: Vec::new(),
            keys: None,
            max_held_bytes: 64 << 20,
        }
    }
}

/// Counters over the whole capture.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Stats {
    /// Frames handed to the engine.
    pub packets: u64,
    /// TCP segments to or from a server port, and ICMP errors quoting one.
    pub packets_on_port: u64,
    /// Frames that could not be decoded (see the error lines for which).
    pub undecodable: u64,
    /// Segments on the port whose payload the capture cut (snap length).
    pub payload_cut: u64,
    /// Second copies of a segment (e.g. `-i any` on a bridged host).
    pub duplicates: u64,
    /// RSTs and SYN-ACKs with no SYN before them (backscatter, late capture start).
    pub stray_answers: u64,
    /// Connections joined midstream that were only bare segments from one
    /// side, never answered (forged ACKs, a scan, backscatter): not
    /// connections, and not reported as attempts.
    pub stray_segments: u64,
    /// ICMP errors quoting a port connection that matched no waiting SYN.
    pub unmatched_icmp: u64,
    /// What the DNS traffic held (`dns_answers`, `dns_unanswered`, …).
    #[serde(flatten)]
    pub dns: DnsCounts,
    /// Attempts seen from their SYN ended early because the flow table was full.
    pub evicted: u64,
    /// Connections joined midstream ended early to make room for a new SYN.
    pub evicted_midstream: u64,
    /// Segments of connections joined midstream not tracked because the
    /// flow table was full (only a SYN may end another flow to make room).
    pub untracked: u64,
    /// Out-of-order segments not held because the budget for held data
    /// across connections was spent: the holes before them became gaps.
    pub held_over_budget: u64,
    /// Packets dated over an hour from the packets before them (or a first
    /// packet as far from those after it) and not confirmed by the next:
    /// the engine's clock did not follow them.
    pub clock_jumps: u64,
    /// Attempts whose PostgreSQL messages a limit cut short or left out
    /// (`pg.limits_cut`): a long text, a large error body, many notices.
    pub pg_limits_cut: u64,
    /// Attempts reported.
    pub attempts: u64,
    /// The first packet's time: where relative times (`--since +5m`) count from.
    pub first_packet: Option<Timestamp>,
}

/// Tracked connections by state (see `Analyzer::connections_now`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnectionsNow {
    pub open: usize,
    pub handshaking: usize,
    pub unanswered_syns: usize,
    /// Closed or closing, kept a little longer for late packets.
    pub closing: usize,
}

pub struct Analyzer {
    config: Config,
    server_ports: PortSet,
    /// The server ports and DNS's: TCP between other ports is passed over undecoded.
    watched_ports: PortSet,
    flows: FlowTable,
    /// After `finish`: the flows still to report, the next one last.
    ending: Vec<(u64, FlowKey, Entry)>,
    timers: Deadlines,
    /// Who leaves a full table first: connections joined midstream, then
    /// those seen from their SYN, each least recently active first.
    midstream_order: IdleOrder<Slot>,
    syn_order: IdleOrder<Slot>,
    finished: VecDeque<AttemptRecord>,
    /// Clients' recent DNS answers, failed lookups and the names behind
    /// attempts: at the end, the failures of database names become
    /// `dns_failed` attempts.
    dns: Dns,
    /// Set by `finish`: the failed lookups are still to be reported.
    failed_lookups_due: bool,
    /// A pooler's server leg, told apart and related to its clients.
    legs: Legs,
    stats: Stats,
    held: HeldBudget,
    /// The latest time seen: packet timestamps can step back a little.
    clock: Timestamp,
    clock_trust: ClockTrust,
    next_id: u64,
}

/// How far the engine's clock can be believed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClockTrust {
    /// No packet yet.
    Unset,
    /// Set by the first packet alone: if the next is far behind it, the
    /// first was the odd one out.
    FirstPacket,
    /// Confirmed by packets near each other. `jump`: the latest packet
    /// dated too far from the clock, which a next one near it would confirm.
    Settled { jump: Option<Timestamp> },
}

impl Analyzer {
    pub fn new(config: Config) -> Analyzer {
        let server_ports = PortSet::new(&config.server_ports);
        let watched_ports = PortSet::new(&[&config.server_ports[..], &[DNS_PORT]].concat());
        let max_held_bytes = config.max_held_bytes;
        Analyzer {
            config,
            server_ports,
            watched_ports,
            flows: FlowTable::default(),
            ending: Vec::new(),
            timers: Deadlines::default(),
            midstream_order: IdleOrder::default(),
            syn_order: IdleOrder::default(),
            finished: VecDeque::new(),
            dns: Dns::default(),
            failed_lookups_due: false,
            legs: Legs::default(),
            stats: Stats::default(),
            held: HeldBudget::new(max_held_bytes),
            clock: Timestamp::default(),
            clock_trust: ClockTrust::Unset,
            next_id: 0,
        }
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Out-of-order bytes held now across all connections.
    pub fn held_bytes(&self) -> usize {
        self.held.used()
    }

    /// Connections being tracked now.
    pub fn live_flows(&self) -> usize {
        self.flows.len()
    }

    /// The tracked connections by what they are doing at `now`, for a live
    /// view: a SYN unanswered for `syn_timeout` or longer is a time-out in
    /// the making.
    pub fn connections_now(&self, now: Timestamp, syn_timeout: Duration) -> ConnectionsNow {
        let mut c = ConnectionsNow::default();
        for (state, start) in self.flows.states() {
            match state {
                State::SynSent if now.since(start) >= syn_timeout => c.unanswered_syns += 1,
                State::SynSent | State::SynReceived => c.handshaking += 1,
                State::Established => c.open += 1,
                State::Closing | State::Closed => c.closing += 1,
            }
        }
        c
    }

    /// Feeds one captured frame. A frame that cannot be decoded is counted
    /// and its reason returned, for the driver to report with its position.
    pub fn handle_packet(&mut self, ts: Timestamp, link: LinkType, frame: &[u8]) -> Result<(), DecodeError> {
        self.stats.packets += 1;
        if self.believe(ts) {
            self.handle_timeout(ts);
        }
        if off_port(link, frame, &self.watched_ports) {
            return Ok(());
        }
        match decode(link, frame) {
            Ok(Decoded::Tcp(seg)) if Dns::carries(&seg) && !self.on_port(&seg) => self.dns.on_tcp(&seg, ts),
            Ok(Decoded::Tcp(seg)) => {
                self.on_segment(&seg, ts);
                self.stats.held_over_budget = self.held.refused();
            }
            Ok(Decoded::IcmpError(icmp)) => self.on_icmp(&icmp, ts),
            Ok(Decoded::Udp(datagram)) => self.dns.on_udp(&datagram, ts),
            Ok(Decoded::Ignored) => {}
            Err(e) => {
                self.stats.undecodable += 1;
                return Err(e);
            }
        }
        self.stats.dns = self.dns.counts();
        Ok(())
    }

    /// Whether a packet's time may move the clock: not when it is far from
    /// the packets before it, until a next packet near it confirms the jump
    /// (see `MAX_CLOCK_JUMP`). The packet itself keeps its own time.
    fn believe(&mut self, ts: Timestamp) -> bool {
        let near = |a: Timestamp, b: Timestamp| a.since(b).max(b.since(a)) <= MAX_CLOCK_JUMP;
        let far = !near(ts, self.clock);
        match self.clock_trust {
            // The clock starts at the first packet, not at 1970: a capture
            // dated before it must not find every deadline already passed.
            ClockTrust::Unset => {
                self.clock = ts;
                self.clock_trust = ClockTrust::FirstPacket;
                self.stats.first_packet = Some(ts);
            }
            // The first packet was far from the second: it was the odd one
            // out, and time starts again here.
            ClockTrust::FirstPacket if far => {
                self.stats.clock_jumps += 1;
                self.clock = ts;
                self.stats.first_packet = Some(ts);
                self.clock_trust = ClockTrust::Settled { jump: None };
            }
            // A second packet near the first far one: the capture really
            // went quiet, or the next file was recorded at another time.
            ClockTrust::Settled { jump: Some(j) } if far && near(ts, j) => {
                self.stats.clock_jumps -= 1;
                self.clock = ts;
                self.clock_trust = ClockTrust::Settled { jump: None };
            }
            ClockTrust::Settled { .. } if far => {
                self.stats.clock_jumps += 1;
                self.clock_trust = ClockTrust::Settled { jump: Some(ts) };
                return false;
            }
            // A packet near the clock; a far one before it was a lone outlier.
            ClockTrust::FirstPacket | ClockTrust::Settled { .. } => {
                self.clock_trust = ClockTrust::Settled { jump: None };
            }
        }
        true
    }

    /// Advances the clock to `now` and ends the flows whose deadline passed.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        self.clock = self.clock.max(now);
        while let Some((deadline, id, slot)) = self.timers.pop_due(self.clock) {
            self.expire(slot, Some(id), deadline, EndCause::Silence);
        }
        self.dns.handle_timeout(self.clock);
        self.stats.dns = self.dns.counts();
    }

    /// The next time `handle_timeout` has work, if any.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        self.timers.next_due()
    }

    /// The next finished attempt, in the order they ended, with the DNS
    /// answer that gave the client its server's address, if one was seen.
    pub fn poll_finished(&mut self) -> Option<AttemptRecord> {
        loop {
            if let Some(mut record) = self.finished.pop_front() {
                if record.dns.is_none() {
                    record.dns =
                        self.dns.behind(record.client.ip(), record.server.ip(), record.start).cloned().map(Box::new);
                }
                if let Some(lookup) = record.dns.as_ref().filter(|_| record.outcome != Outcome::DnsFailed) {
                    self.dns.used(&lookup.name);
                }
                self.legs.relate(&mut record);
                return Some(record);
            }
            let Some((_, key, entry)) = self.ending.pop() else {
                // Every connection is reported: which names were database
                // names is known now.
                if std::mem::take(&mut self.failed_lookups_due) {
                    self.report_failed_lookups();
                    continue;
                }
                return None;
            };
            entry.with_flow(|flow| self.report(key, flow, EndCause::CaptureEnd));
        }
    }

    /// The capture has ended: every flow still open is reported as it
    /// stands, one at a time as `poll_finished` asks (a capture that ends
    /// during a SYN flood leaves a million flows open: their records are
    /// made one by one, never all at once).
    pub fn finish(&mut self) {
        self.handle_timeout(self.clock);
        // The id beside each flow: sorting then reads no flow (a million
        // of them would be a million cache misses per pass).
        let mut open: Vec<(u64, FlowKey, Entry)> =
            self.flows.take_all().map(|(key, entry)| (entry.id(), key, entry)).collect();
        // Popped from the end: the lowest id first (ids are unique).
        open.sort_unstable_by_key(|&(id, ..)| Reverse(id));
        self.ending = open;
        self.timers.clear();
        self.midstream_order.clear();
        self.syn_order.clear();
        self.failed_lookups_due = true;
    }

    /// The failed lookups of database names, as `dns_failed` attempts.
    fn report_failed_lookups(&mut self) {
        let failed = self.dns.take_failures(&self.config.db_hosts, self.clock);
        self.stats.dns = self.dns.counts();
        for (client, lookup) in failed {
            self.stats.attempts += 1;
            self.finished.push_back(AttemptRecord::dns_failed(self.next_id, client, lookup));
            self.next_id += 1;
        }
    }

    fn on_segment(&mut self, seg: &TcpSegment<'_>, ts: Timestamp) {
        let (key, side) = if self.server_ports.contains(seg.dst.port()) {
            ((seg.src, seg.dst), Side::Client)
        } else if self.server_ports.contains(seg.src.port()) {
            ((seg.dst, seg.src), Side::Server)
        } else {
            return;
        };
        self.stats.packets_on_port += 1;
        if seg.payload.len() < seg.wire_payload_len as usize {
            self.stats.payload_cut += 1;
        }
        let opens = side == Side::Client && seg.flags.syn && !seg.flags.ack;
        // One table lookup for a packet of a tracked flow: the flow is
        // re-armed while it is at hand.
        let (slot, step) = match self.flows.get_mut(&key) {
            Some((slot, flow)) => {
                let was = flow.last;
                let step = flow.on_segment(seg, side, ts, &self.held);
                if step == Step::Continue {
                    arm(&mut self.timers, self.config.syn_timeout, slot, flow);
                }
                let (id, now) = (flow.id, flow.last);
                let order =
                    if flow.origin == Origin::Midstream { &mut self.midstream_order } else { &mut self.syn_order };
                order.touch(slot, id, was, now);
                (slot, step)
            }
            None if opens => {
                self.dns.client_connected(key.0.ip(), ts);
                self.open(key, Flow::from_syn(self.next_id, seg, ts));
                return;
            }
            None if seg.flags.rst => {
                // A RST for a connection never seen: nothing to track.
                self.stats.stray_answers += 1;
                return;
            }
            None => {
                if self.flows.len() >= self.config.max_flows {
                    // Only a SYN may end another flow to make room.
                    self.stats.untracked += 1;
                    return;
                }
                self.open(key, Flow::midstream(self.next_id, seg, side, ts, &self.held));
                return;
            }
        };
        match step {
            Step::Continue => {}
            Step::Duplicate => self.stats.duplicates += 1,
            Step::Finished => self.expire(slot, None, self.clock, EndCause::Packet),
            Step::NewAttempt => {
                if let Some(mut old) = self.take(slot) {
                    self.report(key, &mut old, EndCause::NewAttempt);
                }
                self.open(key, Flow::from_syn(self.next_id, seg, ts));
            }
        }
    }

    /// Whether a segment is to or from a PostgreSQL server port.
    fn on_port(&self, seg: &TcpSegment<'_>) -> bool {
        self.server_ports.contains(seg.dst.port()) || self.server_ports.contains(seg.src.port())
    }

    fn on_icmp(&mut self, icmp: &IcmpError, ts: Timestamp) {
        let key = (icmp.quoted_src, icmp.quoted_dst);
        if !self.server_ports.contains(key.1.port()) {
            return;
        }
        self.stats.packets_on_port += 1;
        let Some((slot, flow)) = self.flows.get_mut(&key) else {
            self.stats.unmatched_icmp += 1;
            return;
        };
        let (id, was) = (flow.id, flow.last);
        let matched = flow.on_icmp(icmp, ts);
        let (now, midstream) = (flow.last, (flow.origin == Origin::Midstream));
        self.order(midstream).touch(slot, id, was, now);
        if matched {
            self.arm(slot);
        } else {
            self.stats.unmatched_icmp += 1;
        }
    }

    /// Starts tracking a new flow, making room first if the table is full.
    fn open(&mut self, key: FlowKey, mut flow: Flow) {
        if self.flows.len() >= self.config.max_flows && !self.evict_one() {
            self.stats.untracked += 1;
            return;
        }
        flow.keys.clone_from(&self.config.keys);
        let (id, last, midstream) = (flow.id, flow.last, flow.origin == Origin::Midstream);
        self.next_id += 1;
        self.legs.on_new_attempt(key.1);
        // Armed before it is stored: a SYN waiting alone is stored compact.
        let due = flow.arm(self.config.syn_timeout);
        let slot = self.flows.insert(key, flow);
        if let Some(due) = due {
            self.timers.push(due, id, slot);
        }
        let order = if midstream { &mut self.midstream_order } else { &mut self.syn_order };
        order.insert(slot, id, last);
        let flows = &self.flows;
        order.compact(flows.len(), |&slot, id| flows.holds(slot, id));
    }

    /// Ends one flow to make room: a connection joined midstream if there
    /// is one (nothing shows it is real: forged ACKs open such flows), else
    /// the attempt idle longest. False only when the table is empty.
    fn evict_one(&mut self) -> bool {
        let flows = &self.flows;
        let current = |&slot: &Slot, id: u64| flows.holds(slot, id);
        let Some(slot) = self.midstream_order.pop_idlest(current).or_else(|| self.syn_order.pop_idlest(current)) else {
            return false;
        };
        if let Some((key, entry)) = self.flows.remove(slot) {
            entry.with_flow(|flow| {
                if flow.state != State::Closed {
                    if flow.origin == Origin::Midstream {
                        self.stats.evicted_midstream += 1;
                    } else {
                        self.stats.evicted += 1;
                    }
                }
                self.report(key, flow, EndCause::Evicted);
            });
        }
        true
    }

    /// [`arm`] for a flow in the table.
    fn arm(&mut self, slot: Slot) {
        if let Some(flow) = self.flows.at_mut(slot) {
            arm(&mut self.timers, self.config.syn_timeout, slot, flow);
        }
    }

    /// A timer entry for the flow in `slot` came due (`id`: the flow it
    /// was for), or the flow ended on a packet.
    fn expire(&mut self, slot: Slot, id: Option<u64>, due: Timestamp, cause: EndCause) {
        let Some((key, flow)) = self.flows.keyed_mut(slot) else { return };
        if cause == EndCause::Silence {
            if flow.armed != Some(due) || id.is_some_and(|id| id != flow.id) {
                return; // a stale entry
            }
            flow.armed = None;
            match flow.deadline(self.config.syn_timeout) {
                Some(deadline) if deadline > self.clock => {
                    flow.armed = Some(deadline);
                    self.timers.push(deadline, flow.id, slot);
                    return;
                }
                None => return,
                Some(_) => {}
            }
            if flow.state == State::Closed {
                self.take(slot);
                return;
            }
        }
        conclude(key, flow, cause, self.clock, &self.config, &mut self.stats, &mut self.finished);
        // The closed entry lingers to absorb late packets.
        flow.armed = None;
        self.arm(slot);
    }

    fn order(&mut self, midstream: bool) -> &mut IdleOrder<Slot> {
        if midstream {
            &mut self.midstream_order
        } else {
            &mut self.syn_order
        }
    }

    /// Takes a flow out of the table and out of the eviction order.
    fn take(&mut self, slot: Slot) -> Option<Box<Flow>> {
        let flow = self.flows.remove(slot)?.1.into_flow();
        let (id, last) = (flow.id, flow.last);
        self.order(flow.origin == Origin::Midstream).remove(slot, id, last);
        Some(flow)
    }

    /// Reports a flow already taken out of the table.
    fn report(&mut self, key: FlowKey, flow: &mut Flow, cause: EndCause) {
        conclude(key, flow, cause, self.clock, &self.config, &mut self.stats, &mut self.finished);
    }
}

/// Makes sure the timer holds the flow's current deadline. A deadline
/// that moved later keeps its earlier entry; `expire` re-arms it then.
fn arm(timers: &mut Deadlines, syn_timeout: Duration, slot: Slot, flow: &mut Flow) {
    if let Some(deadline) = flow.arm(syn_timeout) {
        timers.push(deadline, flow.id, slot);
    }
}

/// Ends a flow and queues its record; a flow with nothing to report that
/// was still open was a stray answer (a lone SYN-ACK).
fn conclude(
    key: FlowKey,
    flow: &mut Flow,
    cause: EndCause,
    clock: Timestamp,
    config: &Config,
    stats: &mut Stats,
    finished: &mut VecDeque<AttemptRecord>,
) {
    if flow.is_stray_segments() {
        flow.state = State::Closed;
        stats.stray_segments += 1;
        return;
    }
    let was_open = flow.state != State::Closed;
    match flow.finish(key, cause, clock, config.syn_timeout) {
        Some(record) => {
            stats.attempts += 1;
            stats.pg_limits_cut += u64::from(record.pg.as_ref().is_some_and(|pg| pg.limits_cut > 0));
            finished.push_back(record);
        }
        None if was_open => stats.stray_answers += 1,
        None => {}
    }
}
