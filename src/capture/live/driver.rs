//! The live loop: feeds the engine from the capture thread's channel,
//! drives the time-outs of unanswered SYNs at the capture thread's ticks
//! when no packet comes, and tells its caller about finished attempts and,
//! about once a second, how the capture is going. It reads a [`Feed`], not
//! a device, so it can be driven from a plain channel whose producer sends
//! the ticks.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;

use crate::capture::CaptureCounters;
use crate::decode::{DecodeError, LinkType};
use crate::engine::{Analyzer, ConnectionsNow};
use crate::record::{AttemptRecord, Note};
use crate::time::Timestamp;

/// How often the capture thread reads libpcap's counters and sends a tick,
/// at which the loop runs the engine's time-outs. The capture thread is
/// the only clock: a timer of the loop's own would wake two more threads
/// (tokio's timer and the loop) at every tick.
pub(super) const TICK: Duration = Duration::from_millis(250);
/// Ticks between two refreshes of the caller's view.
const TICKS_PER_REFRESH: u32 = 4;
/// A tick advances the engine's clock to its time minus this: packets still
/// on their way (in the kernel's block or the channel) are older than that.
const CLOCK_SLACK: Duration = Duration::from_millis(500);
/// Loss periods remembered for marking attempts.
const MAX_LOSS_PERIODS: usize = 4096;

/// What the capture thread hands to the engine's loop.
pub enum FromCapture {
    Packets(Batch),
    /// Every [`TICK`], after the packets read before it: the time, and
    /// libpcap's counters (none on a platform that has none).
    Tick {
        at: Timestamp,
        counters: Option<CaptureCounters>,
    },
    Problem(String),
}

/// Packets read one after another, handed over at once: one wake-up of the
/// engine's loop per batch, not per packet, and one buffer for their bytes.
#[derive(Default)]
pub struct Batch {
    /// Each packet's time and where its bytes end in `data`.
    packets: Vec<(Timestamp, usize)>,
    data: Vec<u8>,
}

impl Batch {
    /// A batch this large is handed over without waiting for more: room
    /// for all the packets of one of the kernel's blocks (256 KiB) in the
    /// usual case, so that a block wakes the engine's loop once.
    pub const PACKETS: usize = 1024;
    pub const BYTES: usize = 512 * 1024;

    pub fn push(&mut self, ts: Timestamp, frame: &[u8]) {
        self.data.extend_from_slice(frame);
        self.packets.push((ts, self.data.len()));
    }

    pub fn is_full(&self) -> bool {
        self.packets.len() >= Batch::PACKETS || self.data.len() >= Batch::BYTES
    }

    pub fn is_empty(&self) -> bool {
        self.packets.is_empty()
    }

    /// Empties the batch, keeping its buffers for the next packets.
    pub fn clear(&mut self) {
        self.packets.clear();
        self.data.clear();
    }

    fn iter(&self) -> impl Iterator<Item = (Timestamp, &[u8])> {
        let starts = std::iter::once(0).chain(self.packets.iter().map(|&(_, end)| end));
        self.packets.iter().zip(starts).map(|(&(ts, end), start)| (ts, &self.data[start..end]))
    }
}

/// Where the loop's packets come from: a channel, the flag that asks its
/// producer to stop, and the producer's thread to wait for.
pub struct Feed {
    link: LinkType,
    rx: mpsc::Receiver<FromCapture>,
    stop: Arc<AtomicBool>,
    producer: Option<JoinHandle<()>>,
    /// Where emptied batches go back to the producer, if it takes them.
    spares: Option<std::sync::mpsc::SyncSender<Batch>>,
}

impl Feed {
    pub fn new(
        link: LinkType,
        rx: mpsc::Receiver<FromCapture>,
        stop: Arc<AtomicBool>,
        producer: Option<JoinHandle<()>>,
    ) -> Feed {
        Feed { link, rx, stop, producer, spares: None }
    }

    /// Gives each batch back to the producer once its packets are fed, so
    /// that batch buffers are reused rather than allocated anew.
    pub fn with_spares(self, spares: std::sync::mpsc::SyncSender<Batch>) -> Feed {
        Feed { spares: Some(spares), ..self }
    }
}

/// The wall clock, for live timestamps and the timer.
pub(super) fn now() -> Timestamp {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    Timestamp::from_nanos(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// When to stop.
#[derive(Debug, Clone, Copy, Default)]
pub struct StopWhen {
    pub duration: Option<Duration>,
    /// Packets captured.
    pub count: Option<u64>,
}

/// Why the capture stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    Interrupted,
    Duration,
    Count,
    CaptureEnded,
}

/// How the capture is going, for the caller's view.
#[derive(Debug, Clone, Copy)]
pub struct LiveStatus {
    pub started: Timestamp,
    pub now: Timestamp,
    pub packets: u64,
    pub counters: CaptureCounters,
    /// The tracked connections by state, at the last refresh.
    pub connections: ConnectionsNow,
}

/// What the loop tells its caller.
pub trait LiveSink {
    /// An attempt is over (with the capture's start time).
    fn attempt(&mut self, record: AttemptRecord, capture_start: Timestamp);
    /// About once a second, if [`Self::watched`].
    fn refresh(&mut self, status: &LiveStatus, analyzer: &Analyzer);
    /// Whether anything shows what `refresh` is given (a view, metrics):
    /// if not, the loop does not count the connections for it.
    fn watched(&self) -> bool;
    /// A problem worth one line (a failed -w rotation, the capture ending).
    fn problem(&mut self, line: String);
    /// An undecodable packet (counted; a few kept as examples).
    fn bad_packet(&mut self, packet: u64, error: &DecodeError);
}

/// Captures until `interrupt` is notified (the caller's Ctrl-C), the
/// duration, the packet count, or the capture's end; then ends the flows
/// still open, as a file's end does.
pub async fn run(
    feed: Feed,
    analyzer: &mut Analyzer,
    stop_when: StopWhen,
    syn_timeout: Duration,
    interrupt: &tokio::sync::Notify,
    sink: &mut dyn LiveSink,
) -> (Stopped, LiveStatus) {
    let Feed { link, mut rx, stop, producer, spares } = feed;
    let source = Source { link, spares };
    let started = now();
    let mut status = LiveStatus {
        started,
        now: started,
        packets: 0,
        counters: CaptureCounters::default(),
        connections: ConnectionsNow::default(),
    };
    let mut losses = Losses::default();
    let mut tick_count = 0u32;
    let deadline = stop_when.duration.map(|d| tokio::time::Instant::now() + d);
    let until_deadline = async {
        match deadline {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(until_deadline);
    let interrupted = interrupt.notified();
    tokio::pin!(interrupted);

    let stopped = loop {
        tokio::select! {
            message = rx.recv() => match message {
                Some(message) => {
                    let tick = matches!(message, FromCapture::Tick { .. });
                    if take(message, &source, analyzer, &mut status, &mut losses, sink, stop_when.count) {
                        break Stopped::Count;
                    }
                    if tick {
                        // Only with nothing queued: a backlog may hold the answer to
                        // a SYN whose deadline the clock would otherwise pass.
                        if rx.is_empty() {
                            analyzer.handle_timeout(status.now - CLOCK_SLACK);
                        }
                        tick_count += 1;
                        if tick_count.is_multiple_of(TICKS_PER_REFRESH) && sink.watched() {
                            status.connections = analyzer.connections_now(status.now, syn_timeout);
                            sink.refresh(&status, analyzer);
                        }
                    }
                }
                None => break Stopped::CaptureEnded,
            },
            _ = &mut until_deadline => break Stopped::Duration,
            _ = &mut interrupted => break Stopped::Interrupted,
        }
        let start = analyzer.stats().first_packet.unwrap_or(started);
        while let Some(record) = analyzer.poll_finished() {
            losses.hold(record);
        }
        for record in losses.release(false) {
            sink.attempt(record, start);
        }
    };

    // Read what the capture thread still has, with its last counters.
    stop.store(true, Ordering::Relaxed);
    let drain = async {
        while let Some(message) = rx.recv().await {
            // Past --count, the rest of the packets are not wanted.
            if stopped == Stopped::Count && matches!(message, FromCapture::Packets(_)) {
                continue;
            }
            take(message, &source, analyzer, &mut status, &mut losses, sink, None);
        }
    };
    // The reader notices the stop within one read time-out.
    let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
    if let Some(producer) = producer {
        let _ = tokio::task::spawn_blocking(move || producer.join()).await;
    }
    analyzer.finish();
    let start = analyzer.stats().first_packet.unwrap_or(started);
    while let Some(record) = analyzer.poll_finished() {
        losses.hold(record);
    }
    for record in losses.release(true) {
        sink.attempt(record, start);
    }
    status.now = now();
    (stopped, status)
}

/// The packets' link type, and where their emptied batches go back.
struct Source {
    link: LinkType,
    spares: Option<std::sync::mpsc::SyncSender<Batch>>,
}

/// Feeds one message of the capture thread to the engine, the loss record
/// or the sink, and an emptied batch back to `spares`; true when it brought
/// the packet count to `count`.
fn take(
    message: FromCapture,
    source: &Source,
    analyzer: &mut Analyzer,
    status: &mut LiveStatus,
    losses: &mut Losses,
    sink: &mut dyn LiveSink,
    count: Option<u64>,
) -> bool {
    match message {
        FromCapture::Packets(mut batch) => {
            for (ts, frame) in batch.iter() {
                status.packets += 1;
                if let Err(e) = analyzer.handle_packet(ts, source.link, frame) {
                    sink.bad_packet(status.packets, &e);
                }
                if count.is_some_and(|n| status.packets >= n) {
                    return true;
                }
            }
            if let Some(spares) = &source.spares {
                batch.clear();
                // Enough spares already: this one is freed.
                let _ = spares.try_send(batch);
            }
            false
        }
        FromCapture::Tick { at, counters } => {
            status.now = at;
            match counters {
                Some(counters) => {
                    losses.counters(at, counters.dropped());
                    status.counters = counters;
                }
                // Without counters (a platform that has none), nothing waits for them.
                None => losses.counters(at, losses.last.map_or(0, |(_, d)| d)),
            }
            false
        }
        FromCapture::Problem(line) => {
            sink.problem(line);
            false
        }
    }
}

/// When the capture dropped packets, and the finished attempts waiting until
/// the counters tell whether a drop happened during them.
#[derive(Default)]
struct Losses {
    /// The last counters reading: when, and the drops so far.
    last: Option<(Timestamp, u64)>,
    /// Intervals in which the drop counters rose.
    periods: VecDeque<(Timestamp, Timestamp)>,
    pending: VecDeque<AttemptRecord>,
    /// The counters reading the last release went up to.
    released_up_to: Option<Timestamp>,
}

impl Losses {
    fn counters(&mut self, at: Timestamp, dropped: u64) {
        if let Some((before, was)) = self.last {
            if dropped > was {
                match self.periods.back_mut() {
                    Some(last) if last.1 >= before => last.1 = at,
                    _ => self.periods.push_back((before, at)),
                }
                if self.periods.len() > MAX_LOSS_PERIODS {
                    self.periods.pop_front();
                }
            }
        }
        self.last = Some((at, dropped));
    }

    fn hold(&mut self, record: AttemptRecord) {
        self.pending.push_back(record);
    }

    /// The attempts that ended before the last counters reading (or all),
    /// marked when a drop happened while they were in progress.
    fn release(&mut self, all: bool) -> Vec<AttemptRecord> {
        let known_until = self.last.map(|(at, _)| at);
        // Called after every packet: nothing new is known until the next reading.
        if !all && known_until == self.released_up_to {
            return Vec::new();
        }
        self.released_up_to = known_until;
        let mut out = Vec::new();
        // Once round the queue: the attempts kept go back in their order,
        // and the queue keeps its buffer.
        for _ in 0..self.pending.len() {
            let Some(mut record) = self.pending.pop_front() else { break };
            if all || known_until.is_some_and(|t| record.end <= t) {
                if self.periods.iter().any(|&(a, b)| a <= record.end && record.start <= b) {
                    record.notes.push(Note::CaptureDropsDuring);
                }
                out.push(record);
            } else {
                self.pending.push_back(record);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::{Outcome, TcpOutcome};
    fn record(start: f64, end: f64) -> AttemptRecord {
        let ends = (Outcome::Success, TcpOutcome::Established);
        let addresses = ("192.0.2.7:40000".parse().unwrap(), "192.0.2.1:5432".parse().unwrap());
        AttemptRecord::bare(0, addresses, ends, (at(start), at(end)))
    }

    fn at(s: f64) -> Timestamp {
        Timestamp::from_nanos((s * 1e9) as i64)
    }

    #[test]
    fn a_batch_gives_back_each_packet_with_its_time() {
        let mut batch = Batch::default();
        let frames: [&[u8]; 3] = [b"first", b"", b"third frame"];
        for (i, f) in frames.iter().enumerate() {
            batch.push(at(i as f64), f);
        }
        let back: Vec<_> = batch.iter().collect();
        assert_eq!(back, vec![(at(0.0), frames[0]), (at(1.0), frames[1]), (at(2.0), frames[2])]);
        assert!(!batch.is_full());
        for _ in 3..Batch::PACKETS {
            batch.push(at(3.0), b"x");
        }
        assert!(batch.is_full());
    }

    #[test]
    fn attempts_wait_for_the_counters_and_are_marked_when_drops_overlap() {
        let mut l = Losses::default();
        l.counters(at(0.0), 0);
        l.hold(record(0.1, 0.2));
        l.hold(record(0.5, 1.2));
        l.hold(record(2.0, 2.1));
        // Nothing is known past 0.0 yet: every attempt waits.
        assert!(l.release(false).is_empty());
        l.counters(at(1.0), 0);
        let first = l.release(false);
        assert_eq!(first.len(), 1);
        assert!(first[0].notes.is_empty(), "no drop before 1.0");
        // Drops between 1.0 and 1.5: the attempt spanning 1.2 is marked.
        l.counters(at(1.5), 3);
        let second = l.release(false);
        assert_eq!(second.len(), 1);
        assert_eq!(second[0].notes, vec![Note::CaptureDropsDuring]);
        l.counters(at(2.5), 3);
        let third = l.release(false);
        assert_eq!(third.len(), 1);
        assert!(third[0].notes.is_empty(), "drops ended before it started");
        assert!(l.release(true).is_empty());
    }
}
