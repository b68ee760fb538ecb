//! Live capture: a thin adapter that feeds the engine from libpcap on an
//! interface. libpcap's blocking reads run on their own thread and hand
//! packets over a bounded channel; the async loop feeds the engine, drives
//! the time-outs of unanswered SYNs with a timer when no packet comes, and
//! tells its caller about finished attempts and, about once a second, how
//! the capture is going.

pub mod metrics;
pub mod savefile;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pcap::{Active, Capture, Precision};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::decode::LinkType;
use crate::engine::{Analyzer, ConnectionsNow};
use crate::record::{AttemptRecord, Note};
use crate::time::Timestamp;
use savefile::Savefile;

/// The capture thread waits for packets at most this long at a time, so it
/// notices a stop and reads libpcap's counters when nothing arrives (reads
/// are non-blocking: libpcap's own read time-out does not fire on Linux in
/// immediate mode).
const READ_WAIT_MS: u16 = 100;
/// Packets waiting between the capture thread and the engine. When the
/// engine falls behind, the kernel buffer fills and its drop counter says so.
const CHANNEL_PACKETS: usize = 8192;
/// How often the timer runs the engine's time-outs and the capture thread
/// reads libpcap's counters.
const TICK: Duration = Duration::from_millis(250);
/// Ticks between two refreshes of the caller's view.
const TICKS_PER_REFRESH: u32 = 4;
/// The timer advances the engine's clock to now minus this: packets still on
/// their way (in the kernel buffer or the channel) are older than now.
const CLOCK_SLACK: Duration = Duration::from_millis(500);
/// Loss periods remembered for marking attempts.
const MAX_LOSS_PERIODS: usize = 4096;

/// How to open the capture.
pub struct LiveOptions {
    pub interface: String,
    pub ports: Vec<u16>,
    /// A libpcap filter replacing the default one (the ports and ICMP errors).
    pub filter: Option<String>,
    pub snaplen: i32,
    pub buffer_bytes: i32,
    pub promiscuous: bool,
    /// `-w FILE` and `-C` bytes.
    pub write: Option<(PathBuf, Option<u64>)>,
}

#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error(
        "no permission to capture on {interface} ({reason}): run as root, or give the binary the capture \
         capabilities: setcap cap_net_raw,cap_net_admin=eip {exe}"
    )]
    Permission { interface: String, reason: String, exe: String },
    #[error("cannot capture on {interface}: {reason}")]
    Open { interface: String, reason: String },
    #[error("link type {dlt} of {interface} is not supported; pgreach reads {}", LinkType::SUPPORTED)]
    LinkType { interface: String, dlt: i32 },
    #[error("invalid filter expression {expr:?}: {reason}")]
    Filter { expr: String, reason: String },
    #[error("cannot create {path}: {reason}")]
    Savefile { path: String, reason: String },
    #[error("cannot drop privileges to user {user:?}: {reason}")]
    Privileges { user: String, reason: String },
}

/// The default filter: TCP to or from a server port, and the ICMP errors
/// that can quote such a segment; on Ethernet, VLAN-tagged frames too
/// (libpcap's `vlan` exists only there).
pub fn default_filter(ports: &[u16], link: LinkType) -> String {
    let ports: Vec<String> = ports.iter().map(|p| format!("tcp port {p}")).collect();
    let wanted = format!("{} or icmp[icmptype] == icmp-unreach or (icmp6 and ip6[40] == 1)", ports.join(" or "));
    match link {
        LinkType::Ethernet => format!("({wanted}) or (vlan and ({wanted}))"),
        _ => wanted,
    }
}

/// libpcap's counters: packets the filter passed, and drops.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CaptureCounters {
    pub received: u64,
    /// No room in the kernel buffer: pgreach did not read fast enough.
    pub kernel_dropped: u64,
    /// Dropped by the interface or its driver.
    pub interface_dropped: u64,
}

impl CaptureCounters {
    pub fn dropped(&self) -> u64 {
        self.kernel_dropped + self.interface_dropped
    }
}

/// An open capture, not yet reading.
pub struct LiveCapture {
    capture: Capture<Active>,
    link: LinkType,
    savefile: Option<Savefile>,
    pub interface: String,
}

impl LiveCapture {
    pub fn open(opts: &LiveOptions) -> Result<LiveCapture, LiveError> {
        let interface = opts.interface.clone();
        let open_error = |e: pcap::Error| {
            let reason = e.to_string();
            let lower = reason.to_lowercase();
            if lower.contains("permission") || lower.contains("not permitted") {
                let exe = std::env::current_exe().map_or("pgreach".to_owned(), |p| p.display().to_string());
                LiveError::Permission { interface: interface.clone(), reason, exe }
            } else {
                LiveError::Open { interface: interface.clone(), reason }
            }
        };
        let mut capture = Capture::from_device(opts.interface.as_str())
            .map_err(open_error)?
            .immediate_mode(true)
            .promisc(opts.promiscuous)
            .snaplen(opts.snaplen)
            .buffer_size(opts.buffer_bytes)
            .precision(Precision::Nano)
            .open()
            .and_then(Capture::setnonblock)
            .map_err(open_error)?;
        let dlt = capture.get_datalink().0;
        let link = LinkType::from_dlt(dlt).ok_or(LiveError::LinkType { interface: interface.clone(), dlt })?;
        let expr = opts.filter.clone().unwrap_or_else(|| default_filter(&opts.ports, link));
        capture.filter(&expr, true).map_err(|e| LiveError::Filter { expr, reason: e.to_string() })?;
        let savefile = match &opts.write {
            Some((path, rotate)) => Some(
                Savefile::create(path, dlt as u32, opts.snaplen as u32, *rotate)
                    .map_err(|e| LiveError::Savefile { path: path.display().to_string(), reason: e.to_string() })?,
            ),
            None => None,
        };
        Ok(LiveCapture { capture, link, savefile, interface })
    }

    /// Started as root: become `user` now that the capture and the first
    /// `-w` file are open (that file is handed to the user, so rotation
    /// files and it have one owner). Returns whether privileges changed.
    pub fn drop_privileges(&mut self, user: &str) -> Result<bool, LiveError> {
        use nix::unistd::{getuid, setgid, setgroups, setuid, User};
        if !getuid().is_root() || user == "root" {
            return Ok(false);
        }
        let fail = |reason: String| LiveError::Privileges { user: user.to_owned(), reason };
        let account =
            User::from_name(user).map_err(|e| fail(e.to_string()))?.ok_or_else(|| fail("no such user".into()))?;
        if let Some(s) = &self.savefile {
            std::os::unix::fs::chown(s.current_path(), Some(account.uid.as_raw()), Some(account.gid.as_raw()))
                .map_err(|e| fail(format!("cannot hand the -w file to it: {e}")))?;
        }
        setgroups(&[account.gid]).map_err(|e| fail(e.to_string()))?;
        setgid(account.gid).map_err(|e| fail(e.to_string()))?;
        setuid(account.uid).map_err(|e| fail(e.to_string()))?;
        Ok(true)
    }

    pub fn link(&self) -> LinkType {
        self.link
    }
}

/// What the capture thread hands to the engine's loop.
enum FromCapture {
    Packet { ts: Timestamp, data: Vec<u8> },
    Counters { at: Timestamp, counters: CaptureCounters },
    Problem(String),
}

/// The capture thread: blocking libpcap reads, `-w` writes, and libpcap's
/// counters every tick.
fn spawn_reader(mut live: LiveCapture, tx: mpsc::Sender<FromCapture>, stop: Arc<AtomicBool>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut counters = Wrapping::default();
        let mut next_counters = std::time::Instant::now();
        while !stop.load(Ordering::Relaxed) {
            let message = match live.capture.next_packet() {
                Ok(packet) => {
                    let ts = Timestamp::from_secs_nanos(packet.header.ts.tv_sec, packet.header.ts.tv_usec);
                    let problem =
                        live.savefile.as_mut().and_then(|s| s.write(ts, packet.header.len, packet.data).err());
                    if let Some(e) = problem {
                        let _ = tx.blocking_send(FromCapture::Problem(format!("-w: {e}")));
                    }
                    Some(FromCapture::Packet { ts, data: packet.data.to_vec() })
                }
                Err(pcap::Error::TimeoutExpired) => {
                    wait_readable(&live.capture);
                    None
                }
                Err(e) => {
                    let _ = tx.blocking_send(FromCapture::Problem(format!("capture on {} ended: {e}", live.interface)));
                    break;
                }
            };
            if let Some(m) = message {
                if tx.blocking_send(m).is_err() {
                    break;
                }
            }
            if std::time::Instant::now() >= next_counters {
                next_counters += TICK;
                if let Ok(stat) = live.capture.stats() {
                    let m = FromCapture::Counters { at: now(), counters: counters.update(stat) };
                    if tx.blocking_send(m).is_err() {
                        break;
                    }
                }
            }
        }
        if let Some(s) = &mut live.savefile {
            if let Err(e) = s.flush() {
                let _ = tx.blocking_send(FromCapture::Problem(format!("-w: {e}")));
            }
        }
        if let Ok(stat) = live.capture.stats() {
            let _ = tx.blocking_send(FromCapture::Counters { at: now(), counters: counters.update(stat) });
        }
    })
}

/// Waits until the capture has packets, or READ_WAIT_MS.
fn wait_readable(capture: &Capture<Active>) {
    use nix::poll::{poll, PollFd, PollFlags};
    use std::os::fd::AsFd;
    let mut fds = [PollFd::new(capture.as_fd(), PollFlags::POLLIN)];
    // An interrupted or failed wait only means reading again sooner.
    let _ = poll(&mut fds, READ_WAIT_MS);
}

/// libpcap's counters are 32-bit and wrap; these are 64-bit totals.
#[derive(Default)]
struct Wrapping {
    last: Option<pcap::Stat>,
    totals: CaptureCounters,
}

impl Wrapping {
    fn update(&mut self, s: pcap::Stat) -> CaptureCounters {
        let last = self.last.unwrap_or(pcap::Stat { received: 0, dropped: 0, if_dropped: 0 });
        self.totals.received += u64::from(s.received.wrapping_sub(last.received));
        self.totals.kernel_dropped += u64::from(s.dropped.wrapping_sub(last.dropped));
        self.totals.interface_dropped += u64::from(s.if_dropped.wrapping_sub(last.if_dropped));
        self.last = Some(s);
        self.totals
    }
}

fn now() -> Timestamp {
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
    /// About once a second.
    fn refresh(&mut self, status: &LiveStatus, analyzer: &Analyzer);
    /// A problem worth one line (a failed -w rotation, the capture ending).
    fn problem(&mut self, line: String);
    /// An undecodable packet (counted; a few kept as examples).
    fn bad_packet(&mut self, packet: u64, error: &crate::decode::DecodeError);
}

/// Captures until `interrupt` is notified (the caller's Ctrl-C), the
/// duration, the packet count, or the capture's end; then ends the flows
/// still open, as a file's end does.
pub async fn run(
    live: LiveCapture,
    analyzer: &mut Analyzer,
    stop_when: StopWhen,
    syn_timeout: Duration,
    interrupt: &tokio::sync::Notify,
    sink: &mut dyn LiveSink,
) -> (Stopped, LiveStatus) {
    let link = live.link;
    let (tx, mut rx) = mpsc::channel(CHANNEL_PACKETS);
    let stop = Arc::new(AtomicBool::new(false));
    let reader = spawn_reader(live, tx, stop.clone());
    let started = now();
    let mut status = LiveStatus {
        started,
        now: started,
        packets: 0,
        counters: CaptureCounters::default(),
        connections: ConnectionsNow::default(),
    };
    let mut losses = Losses::default();
    let mut ticks = tokio::time::interval(TICK);
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

    let count_reached = |status: &LiveStatus| stop_when.count.is_some_and(|n| status.packets >= n);
    let stopped = loop {
        tokio::select! {
            message = rx.recv() => match message {
                Some(message) => {
                    if take(message, link, analyzer, &mut status, &mut losses, sink) && count_reached(&status) {
                        break Stopped::Count;
                    }
                }
                None => break Stopped::CaptureEnded,
            },
            _ = ticks.tick() => {
                status.now = now();
                // Only with nothing queued: a backlog may hold the answer to
                // a SYN whose deadline the clock would otherwise pass.
                if rx.is_empty() {
                    analyzer.handle_timeout(status.now - CLOCK_SLACK);
                }
                tick_count += 1;
                if tick_count.is_multiple_of(TICKS_PER_REFRESH) {
                    status.connections = analyzer.connections_now(status.now, syn_timeout);
                    sink.refresh(&status, analyzer);
                }
                // Without counters (a platform that has none), nothing waits for them.
                if losses.last.is_none_or(|(at, _)| status.now.since(at) > 4 * TICK) {
                    losses.counters(status.now, losses.last.map_or(0, |(_, d)| d));
                }
            }
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
            if stopped == Stopped::Count && matches!(message, FromCapture::Packet { .. }) {
                continue;
            }
            take(message, link, analyzer, &mut status, &mut losses, sink);
        }
    };
    // The reader notices the stop within one read time-out.
    let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
    let _ = tokio::task::spawn_blocking(move || reader.join()).await;
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

/// Feeds one message of the capture thread to the engine, the loss record
/// or the sink; true when it was a packet.
fn take(
    message: FromCapture,
    link: LinkType,
    analyzer: &mut Analyzer,
    status: &mut LiveStatus,
    losses: &mut Losses,
    sink: &mut dyn LiveSink,
) -> bool {
    match message {
        FromCapture::Packet { ts, data } => {
            status.packets += 1;
            if let Err(e) = analyzer.handle_packet(ts, link, &data) {
                sink.bad_packet(status.packets, &e);
            }
            true
        }
        FromCapture::Counters { at, counters } => {
            losses.counters(at, counters.dropped());
            status.counters = counters;
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
        let mut keep = VecDeque::new();
        for mut record in self.pending.drain(..) {
            if all || known_until.is_some_and(|t| record.end <= t) {
                if self.periods.iter().any(|&(a, b)| a <= record.end && record.start <= b) {
                    record.notes.push(Note::CaptureDropsDuring);
                }
                out.push(record);
            } else {
                keep.push_back(record);
            }
        }
        self.pending = keep;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Outcome;
    use crate::record::{TcpOutcome, Traffic};

    fn record(start: f64, end: f64) -> AttemptRecord {
        let t = |s: f64| Timestamp::from_nanos((s * 1e9) as i64);
        AttemptRecord {
            id: 0,
            client: "192.0.2.7:40000".parse().unwrap(),
            server: "192.0.2.1:5432".parse().unwrap(),
            outcome: Outcome::Success,
            tcp_outcome: TcpOutcome::Established,
            start: t(start),
            end: t(end),
            syn: None,
            handshake_ms: None,
            client_ttl: None,
            server_ttl: None,
            answer: None,
            gave_up: None,
            wait_ms: None,
            session_end: None,
            traffic: Traffic::default(),
            pg: None,
            notes: Vec::new(),
        }
    }

    fn at(s: f64) -> Timestamp {
        Timestamp::from_nanos((s * 1e9) as i64)
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

    #[test]
    fn the_default_filter_compiles_for_every_link_type() {
        for (dlt, link) in [
            (pcap::Linktype::ETHERNET, LinkType::Ethernet),
            (pcap::Linktype::LINUX_SLL, LinkType::from_dlt(113).unwrap()),
            (pcap::Linktype::LINUX_SLL2, LinkType::from_dlt(276).unwrap()),
            (pcap::Linktype(12), LinkType::from_dlt(12).unwrap()),
            (pcap::Linktype::NULL, LinkType::from_dlt(0).unwrap()),
        ] {
            let dead = pcap::Capture::dead(dlt).unwrap();
            let filter = default_filter(&[5432, 6432], link);
            dead.compile(&filter, true).unwrap_or_else(|e| panic!("{dlt:?}: {filter}: {e}"));
        }
    }
}
