//! One tracked TCP connection attempt: an explicit state machine driven by
//! the segments and ICMP errors of one (client, server) pair, and the
//! decision of its outcome once it is over.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use crate::decode::{IcmpError, TcpSegment};
use crate::duplicate::LastSegments;
use crate::outcome::{AnswerKind, GaveUp, Outcome, SessionEnd, Side, TcpOutcome, UnreachableKind};
use crate::pg::{PgSession, PgSummary};
use crate::record::{Answer, AttemptRecord, Note, SynEvidence, Traffic};
use crate::seq::SeqNumber;
use crate::stream::{HeldBudget, Stream};
use crate::time::{millis, Timestamp};
use crate::tls::KeyStore;

mod waiting;
pub use waiting::WaitingSyn;

/// How many SYN times an attempt keeps (Linux sends 7 by default); past it the latest replaces the last.
const MAX_SYN_TIMES: usize = 16;
/// How long a SYN-ACK may wait for the client's ACK: Linux retransmits a
/// SYN-ACK 5 times over about 63 s before giving up.
const SYN_RECEIVED_GRACE: Duration = Duration::from_secs(64);
/// How long a half-closed connection waits for the other side's FIN.
const CLOSING_GRACE: Duration = Duration::from_secs(30);
/// How long an ended connection's entry stays to absorb its late packets
/// (final ACKs, retransmitted FINs) so that they do not look like new flows.
const CLOSED_LINGER: Duration = Duration::from_secs(30);
/// Silence after which a connection joined midstream (a forged ACK opens one) is reported and forgotten.
pub const MIDSTREAM_IDLE: Duration = Duration::from_secs(120);
/// The longest initial retransmission time-out of common TCP stacks.
const MAX_INITIAL_RTO: Duration = Duration::from_secs(3);

/// The TCP state of an attempt as seen from the wire (RFC 9293 names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// The client's SYN is out; no valid answer yet.
    SynSent,
    /// The server's SYN-ACK is out; the client's final ACK not yet seen.
    SynReceived,
    Established,
    /// One side has sent FIN.
    Closing,
    /// Over and reported; the entry only absorbs late packets.
    Closed,
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            State::SynSent => "SYN-SENT",
            State::SynReceived => "SYN-RECEIVED",
            State::Established => "ESTABLISHED",
            State::Closing => "CLOSING",
            State::Closed => "CLOSED",
        })
    }
}

/// Whether the capture saw the attempt begin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// From the client's SYN.
    Syn,
    /// From a later packet: the capture began after the SYN.
    Midstream,
}

/// What a segment did to the flow, for the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Nothing more to do.
    Continue,
    /// The attempt is over: report it now.
    Finished,
    /// A client SYN with a new sequence number: this attempt is over and a new one begins.
    NewAttempt,
    /// A second copy of the previous segment; ignored.
    Duplicate,
}

/// Why the engine ends a flow that is still in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndCause {
    /// Its deadline passed with no packet.
    Silence,
    /// A new SYN from the same client port.
    NewAttempt,
    /// One of its own packets (a RST, the last FIN).
    Packet,
    /// The capture ended.
    CaptureEnd,
    /// The flow table is full.
    Evicted,
}

#[derive(Debug)]
pub struct Flow {
    pub id: u64,
    pub state: State,
    pub origin: Origin,
    client_isn: Option<SeqNumber>,
    server_isn: Option<SeqNumber>,
    pub start: Timestamp,
    pub last: Timestamp,
    syn_count: u32,
    /// The first SYN's time, apart: most attempts send one SYN, and an
    /// empty list of later ones allocates nothing (a SYN flood makes millions).
    first_syn: Option<Timestamp>,
    later_syns: Vec<Timestamp>,
    syn_ack_at: Option<Timestamp>,
    server_ttl: Option<u8>,
    client_ttl: Option<u8>,
    answer: Option<Answer>,
    client_reset_at: Option<Timestamp>,
    session_end: Option<SessionEnd>,
    fin_client: bool,
    fin_server: bool,
    traffic: Traffic,
    notes: Vec<Note>,
    last_segments: LastSegments,
    /// The PostgreSQL conversation, once the handshake is done (boxed: most
    /// flows in a SYN flood never get one).
    pg: Option<Box<PgTrack>>,
    /// The deadline the engine's timer holds for this flow, if any.
    pub armed: Option<Timestamp>,
    /// The key log to decrypt TLS with, if one was given.
    pub keys: Option<KeyStore>,
}

impl Flow {
    /// A flow that begins with the client's SYN.
    pub fn from_syn(id: u64, seg: &TcpSegment<'_>, ts: Timestamp) -> Flow {
        let mut flow = Flow::empty(id, ts, State::SynSent, Origin::Syn);
        flow.client_isn = Some(seg.seq);
        flow.client_ttl = Some(seg.ttl);
        flow.last_segments.is_copy(seg, Side::Client, ts);
        flow.record_syn(ts);
        flow.count(Side::Client, seg, ts);
        flow
    }

    /// A flow first seen after its SYN (a late capture start, or backscatter).
    pub fn midstream(id: u64, seg: &TcpSegment<'_>, side: Side, ts: Timestamp, budget: &HeldBudget) -> Flow {
        let state = if seg.flags.syn { State::SynReceived } else { State::Established };
        let mut flow = Flow::empty(id, ts, state, Origin::Midstream);
        flow.last_segments.is_copy(seg, side, ts);
        if seg.flags.syn {
            flow.server_isn = Some(seg.seq);
            flow.server_ttl = Some(seg.ttl);
        }
        flow.count(side, seg, ts);
        flow.feed_midstream(seg, side, ts, budget);
        if seg.flags.fin {
            flow.close(side, false);
        }
        flow
    }

    fn empty(id: u64, ts: Timestamp, state: State, origin: Origin) -> Flow {
        Flow {
            id,
            state,
            origin,
            client_isn: None,
            server_isn: None,
            start: ts,
            last: ts,
            syn_count: 0,
            first_syn: None,
            later_syns: Vec::new(),
            syn_ack_at: None,
            server_ttl: None,
            client_ttl: None,
            answer: None,
            client_reset_at: None,
            session_end: None,
            fin_client: false,
            fin_server: false,
            traffic: Traffic::default(),
            notes: Vec::new(),
            last_segments: LastSegments::default(),
            pg: None,
            armed: None,
            keys: None,
        }
    }

    /// Whether a client SYN with this sequence number starts a new attempt
    /// rather than retransmitting this one's.
    pub fn is_new_syn(&self, seq: SeqNumber) -> bool {
        self.client_isn != Some(seq)
    }

    /// Feeds one segment of this flow, sent by `side`.
    pub fn on_segment(&mut self, seg: &TcpSegment<'_>, side: Side, ts: Timestamp, budget: &HeldBudget) -> Step {
        if side == Side::Client && seg.flags.syn && !seg.flags.ack && self.is_new_syn(seg.seq) {
            return Step::NewAttempt;
        }
        if self.state == State::Closed {
            return Step::Continue;
        }
        if self.last_segments.is_copy(seg, side, ts) {
            return Step::Duplicate;
        }
        self.count(side, seg, ts);
        let step = self.transition(seg, side, ts, budget);
        if let Some(track) = self.pg.as_deref_mut() {
            track.on_segment(seg, side, ts);
        } else {
            self.feed_midstream(seg, side, ts, budget);
        }
        step
    }

    /// The TCP state change one segment makes.
    fn transition(&mut self, seg: &TcpSegment<'_>, side: Side, ts: Timestamp, budget: &HeldBudget) -> Step {
        let f = seg.flags;
        match (self.state, side) {
            // A retransmitted SYN: the client has heard nothing valid yet.
            (State::SynSent | State::SynReceived, Side::Client) if f.syn && !f.ack => {
                if self.answer.as_ref().is_some_and(|a| a.kind == AnswerKind::Icmp) {
                    self.note(Note::RetransmittedAfterIcmp);
                }
                self.record_syn(ts);
                Step::Continue
            }
            // The client aborts before any answer: it gave up waiting.
            (State::SynSent, Side::Client) if f.rst => {
                self.client_reset_at = Some(ts);
                Step::Finished
            }
            // An ACK or data from the client: the SYN-ACK was answered, even
            // if the capture missed it.
            (State::SynSent, Side::Client) => {
                self.note(Note::HandshakeInferred);
                self.establish(seg, side, budget)
            }
            (State::SynSent, Side::Server) if f.syn && f.ack => {
                if Some(seg.ack) == self.client_isn.map(|isn| isn + 1) {
                    self.server_isn = Some(seg.seq);
                    self.syn_ack_at = Some(ts);
                    self.server_ttl = Some(seg.ttl);
                    self.state = State::SynReceived;
                } else {
                    self.note(Note::IgnoredSynAckBadAck);
                }
                Step::Continue
            }
            // A client in SYN-SENT accepts a RST only if it acknowledges its SYN.
            (State::SynSent, Side::Server) if f.rst => {
                if f.ack && Some(seg.ack) == self.client_isn.map(|isn| isn + 1) {
                    self.answer = Some(Answer {
                        kind: AnswerKind::Rst,
                        from: seg.src.ip(),
                        ttl: seg.ttl,
                        icmp_type: None,
                        icmp_code: None,
                        unreachable: None,
                        after_ms: millis(ts.since(self.start)),
                    });
                    Step::Finished
                } else {
                    self.note(Note::IgnoredRstBadAck);
                    Step::Continue
                }
            }
            // Any other segment from the server means the handshake went on unseen.
            (State::SynSent, Side::Server) => {
                self.note(Note::HandshakeInferred);
                self.establish(seg, side, budget)
            }
            (State::SynReceived, Side::Server) if f.syn => {
                self.note(Note::SynAckRetransmitted);
                Step::Continue
            }
            (State::SynReceived, _) if f.rst => {
                self.session_end = Some(SessionEnd::by(side, true));
                Step::Finished
            }
            (State::SynReceived, _) => self.establish(seg, side, budget),
            (State::Established | State::Closing, _) if f.rst => self.close(side, true),
            (State::Established | State::Closing, _) if f.fin => self.close(side, false),
            (State::Established | State::Closing, _) => Step::Continue,
            (State::Closed, _) => Step::Continue,
        }
    }

    /// Feeds an ICMP error; false if it does not quote this flow's SYN.
    /// The flow stays open: some stacks (and Linux, for some ICMPv6 errors)
    /// keep retransmitting, and the first error is the one the client met.
    pub fn on_icmp(&mut self, icmp: &IcmpError, ts: Timestamp) -> bool {
        if self.state != State::SynSent || Some(icmp.quoted_seq) != self.client_isn {
            return false;
        }
        self.last = self.last.max(ts);
        if self.answer.is_some() {
            return true;
        }
        self.answer = Some(Answer {
            kind: AnswerKind::Icmp,
            from: icmp.from,
            ttl: icmp.ttl,
            icmp_type: Some(icmp.icmp_type),
            icmp_code: Some(icmp.code),
            unreachable: Some(icmp.unreachable.into()),
            after_ms: millis(ts.since(self.start)),
        });
        true
    }

    /// Arms the flow for its current deadline; the deadline the timer must get, if any.
    pub fn arm(&mut self, syn_timeout: Duration) -> Option<Timestamp> {
        let deadline = self.deadline(syn_timeout);
        let due = deadline.filter(|&d| self.armed.is_none_or(|armed| d < armed));
        self.armed = if deadline.is_none() { None } else { due.or(self.armed) };
        due
    }

    /// When this flow's state says it should be looked at again with no new packet.
    pub fn deadline(&self, syn_timeout: Duration) -> Option<Timestamp> {
        match self.state {
            State::SynSent => Some(self.last_syn() + self.give_up_after(syn_timeout)),
            State::SynReceived => Some(self.last + SYN_RECEIVED_GRACE),
            State::Established if self.origin == Origin::Midstream => Some(self.last + MIDSTREAM_IDLE),
            State::Established => None,
            State::Closing => Some(self.last + CLOSING_GRACE),
            State::Closed => Some(self.last + CLOSED_LINGER),
        }
    }

    /// Silence after the last SYN that means the client gave up. Retransmission
    /// backoff at most doubles each gap (Linux: linear 1 s steps, then
    /// exponential; others: exponential from 1 or 3 s), so a client that has
    /// not retransmitted within twice its last gap, plus a second, has stopped.
    /// After a single SYN, the first retransmission comes after the initial
    /// RTO: 1 s on Linux (RFC 6298), 3 s on older stacks (RFC 2988).
    fn give_up_after(&self, syn_timeout: Duration) -> Duration {
        let silence = match (self.first_syn, self.later_syns.as_slice()) {
            (_, [.., before, last]) => last.since(*before) * 2,
            (Some(before), [last]) => last.since(before) * 2,
            _ => MAX_INITIAL_RTO,
        };
        syn_timeout.max(silence + Duration::from_secs(1))
    }

    fn last_syn(&self) -> Timestamp {
        self.later_syns.last().copied().or(self.first_syn).unwrap_or(self.start)
    }

    /// Ends the flow and decides its outcome from the state it is in; `None`
    /// when there is nothing to report (already closed, or a lone SYN-ACK).
    /// `clock` is the engine's time now: the capture's end, for `CaptureEnd`.
    /// `key`: the (client, server) addresses the table holds it under (the
    /// flow does not keep a second copy).
    /// Joined midstream and only ever bare segments from one side: nothing
    /// shows a connection was there (forged ACKs, a scan, backscatter).
    pub fn is_stray_segments(&self) -> bool {
        let t = &self.traffic;
        self.origin == Origin::Midstream
            && matches!(self.state, State::Established | State::Closing)
            && t.client_bytes + t.server_bytes == 0
            && (t.client_packets == 0 || t.server_packets == 0)
    }

    pub fn finish(
        &mut self,
        key: (SocketAddr, SocketAddr),
        cause: EndCause,
        clock: Timestamp,
        syn_timeout: Duration,
    ) -> Option<AttemptRecord> {
        let state = std::mem::replace(&mut self.state, State::Closed);
        match cause {
            EndCause::Evicted => self.note(Note::Evicted),
            EndCause::NewAttempt if matches!(state, State::Established | State::Closing) => self.note(Note::Superseded),
            _ => {}
        }
        let mut gave_up = None;
        let mut wait = None;
        let tcp = match (state, self.origin) {
            (State::Closed, _) | (State::SynReceived, Origin::Midstream) => return None,
            (State::SynSent, _) => match &self.answer {
                Some(a) if a.kind == AnswerKind::Rst || a.unreachable == Some(UnreachableKind::Port) => {
                    TcpOutcome::Refused
                }
                Some(_) => TcpOutcome::Unreachable,
                None => {
                    let (why, waited) = match (cause, self.client_reset_at) {
                        (_, Some(reset)) => (GaveUp::ClientReset, reset.since(self.start)),
                        (EndCause::CaptureEnd, None) => {
                            let waited = clock.since(self.start);
                            if waited < syn_timeout {
                                return Some(self.record(key, TcpOutcome::CaptureEnded, None, None, clock));
                            }
                            (GaveUp::StillWaitingAtCaptureEnd, waited)
                        }
                        (EndCause::NewAttempt, None) => (GaveUp::NewAttempt, self.last_syn().since(self.start)),
                        (EndCause::Packet | EndCause::Silence | EndCause::Evicted, None) => {
                            (GaveUp::StoppedRetransmitting, self.last_syn().since(self.start))
                        }
                    };
                    gave_up = Some(why);
                    wait = Some(waited);
                    TcpOutcome::Timeout
                }
            },
            (State::SynReceived, Origin::Syn) => TcpOutcome::HandshakeIncomplete,
            (State::Established | State::Closing, Origin::Syn) => TcpOutcome::Established,
            (State::Established | State::Closing, Origin::Midstream) => TcpOutcome::Midstream,
        };
        Some(self.record(key, tcp, gave_up, wait, clock))
    }

    fn record(
        &mut self,
        (client, server): (SocketAddr, SocketAddr),
        tcp: TcpOutcome,
        gave_up: Option<GaveUp>,
        wait: Option<Duration>,
        clock: Timestamp,
    ) -> AttemptRecord {
        // An open connection lasted until the capture's end, a closed one until its last packet.
        let end = if self.session_end.is_none() { clock.max(self.last) } else { self.last };
        let connected = matches!(tcp, TcpOutcome::Established | TcpOutcome::Midstream);
        let (outcome, pg) = match (tcp, self.pg.take()) {
            (TcpOutcome::Established, Some(track)) => {
                let closed_by_client = matches!(self.session_end, Some(SessionEnd::FinClient | SessionEnd::RstClient));
                let (outcome, summary) =
                    track.finish(closed_by_client, self.session_end.is_none(), self.start, self.last, end);
                (outcome, Some(summary))
            }
            // Joined mid-session: still `midstream`, unless the server's
            // FATAL showed how it ended; what was read is kept.
            (TcpOutcome::Midstream, Some(track)) => {
                let (outcome, summary) = track.finish(false, self.session_end.is_none(), self.start, self.last, end);
                let read = summary.client_messages + summary.server_messages > 0;
                let outcome = if outcome == Outcome::Terminated { outcome } else { Outcome::Midstream };
                (outcome, read.then_some(summary))
            }
            (tcp, _) => (Outcome::from(tcp), None),
        };
        AttemptRecord {
            syn: (self.syn_count > 0).then(|| SynEvidence {
                count: self.syn_count,
                at_ms: self.first_syn.iter().chain(&self.later_syns).map(|t| millis(t.since(self.start))).collect(),
            }),
            handshake_ms: self.syn_ack_at.filter(|_| self.origin == Origin::Syn).map(|t| millis(t.since(self.start))),
            client_ttl: self.client_ttl,
            server_ttl: self.server_ttl,
            answer: self.answer.clone(),
            gave_up,
            wait_ms: wait.map(millis),
            session_end: if connected { Some(self.session_end.unwrap_or(SessionEnd::Open)) } else { self.session_end },
            traffic: self.traffic,
            pg: pg.map(Box::new),
            notes: self.notes.clone(),
            client_isn: self.client_isn.map(|isn| isn.0),
            ..AttemptRecord::bare(self.id, (client, server), (outcome, tcp), (self.start, self.last))
        }
    }

    /// A connection joined mid-session is read as PostgreSQL from its first
    /// segment with data: pure ACKs (an ACK flood, say) allocate nothing.
    fn feed_midstream(&mut self, seg: &TcpSegment<'_>, side: Side, ts: Timestamp, budget: &HeldBudget) {
        let readable = self.origin == Origin::Midstream && self.state == State::Established && !seg.flags.syn;
        if readable && self.pg.is_none() && seg.wire_payload_len > 0 {
            let mut track = Box::new(PgTrack::midstream(budget));
            track.on_segment(seg, side, ts);
            self.pg = Some(track);
        }
    }

    fn establish(&mut self, seg: &TcpSegment<'_>, side: Side, budget: &HeldBudget) -> Step {
        self.state = State::Established;
        if self.origin == Origin::Syn {
            self.pg = Some(Box::new(PgTrack::new([self.client_isn, self.server_isn], self.keys.clone(), budget)));
        }
        if seg.flags.rst || seg.flags.fin {
            return self.close(side, seg.flags.rst);
        }
        Step::Continue
    }

    /// A FIN or RST from `side` in an established connection.
    fn close(&mut self, side: Side, rst: bool) -> Step {
        if self.session_end.is_none() {
            self.session_end = Some(SessionEnd::by(side, rst));
        }
        match side {
            Side::Client => self.fin_client |= !rst,
            Side::Server => self.fin_server |= !rst,
        }
        if rst || (self.fin_client && self.fin_server) {
            Step::Finished
        } else {
            self.state = State::Closing;
            Step::Continue
        }
    }

    fn record_syn(&mut self, ts: Timestamp) {
        self.syn_count = self.syn_count.saturating_add(1);
        if self.first_syn.is_none() {
            self.first_syn = Some(ts);
            return;
        }
        // The first stays; past the bound the latest replaces the last.
        self.later_syns.truncate(MAX_SYN_TIMES - 2);
        self.later_syns.push(ts);
    }

    fn count(&mut self, side: Side, seg: &TcpSegment<'_>, ts: Timestamp) {
        let t = &mut self.traffic;
        let bytes = u64::from(seg.wire_payload_len);
        match side {
            Side::Client => {
                t.client_packets += 1;
                t.client_bytes += bytes;
            }
            Side::Server => {
                t.server_packets += 1;
                t.server_bytes += bytes;
            }
        }
        self.last = self.last.max(ts);
    }

    fn note(&mut self, note: Note) {
        if !self.notes.contains(&note) {
            self.notes.push(note);
        }
    }
}

/// The two byte streams of an established connection and the PostgreSQL
/// session read from them.
#[derive(Debug)]
struct PgTrack {
    /// Client to server, server to client.
    streams: [Stream; 2],
    session: PgSession,
}

impl PgTrack {
    fn new(isns: [Option<SeqNumber>; 2], keys: Option<KeyStore>, budget: &HeldBudget) -> PgTrack {
        let mut streams = [Stream::with_budget(budget.clone()), Stream::with_budget(budget.clone())];
        for (stream, isn) in streams.iter_mut().zip(isns) {
            if let Some(isn) = isn {
                stream.start_after_syn(isn);
            }
        }
        PgTrack { streams, session: PgSession::with_keys(keys) }
    }

    fn midstream(budget: &HeldBudget) -> PgTrack {
        PgTrack { session: PgSession::midstream(), ..PgTrack::new([None, None], None, budget) }
    }

    fn on_segment(&mut self, seg: &TcpSegment<'_>, side: Side, ts: Timestamp) {
        let (mine, theirs) = match side {
            Side::Client => (0, 1),
            Side::Server => (1, 0),
        };
        if seg.flags.ack {
            self.streams[theirs].on_ack(seg.ack);
        }
        if seg.flags.syn || seg.flags.rst {
            if seg.flags.rst && side == Side::Client {
                self.session.on_client_close(ts);
            }
            return;
        }
        let session = &mut self.session;
        self.streams[mine].on_segment(seg.seq, seg.payload, seg.wire_payload_len, seg.flags.fin, &mut |chunk| {
            session.on_chunk(side, chunk, ts)
        });
        if seg.flags.fin && side == Side::Client {
            self.session.on_client_close(ts);
        }
    }

    fn finish(
        mut self,
        closed_by_client: bool,
        capture_ended: bool,
        start: Timestamp,
        last: Timestamp,
        end: Timestamp,
    ) -> (Outcome, PgSummary) {
        for (stream, side) in self.streams.iter_mut().zip([Side::Client, Side::Server]) {
            let session = &mut self.session;
            stream.finish(&mut |chunk| session.on_chunk(side, chunk, last));
        }
        self.session.finish(closed_by_client, capture_ended, start, end)
    }
}
