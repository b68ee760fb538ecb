//! The live capture device: libpcap opened on an interface with its
//! filter, the `-w` savefile, the privilege drop, and the capture thread
//! that reads it. libpcap's blocking reads run on that thread and hand
//! packets to [`super::driver`] over a bounded channel.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pcap::{Active, Capture, Precision};
use tokio::sync::mpsc;

use super::driver::{now, Batch, Feed, FromCapture, TICK};
use super::savefile::{Rotation, Savefile};
use crate::capture::{CaptureCounters, FilterError, UnsupportedLink};
use crate::decode::LinkType;
use crate::time::Timestamp;

/// The kernel hands packets over a block at a time (Linux TPACKET_V3, as
/// tcpdump does without `--immediate-mode`): when a block is full, or when
/// its first packet is this old. One wake-up per block instead of one per
/// packet; the delay stays well under the driver's clock slack, and under
/// what a person watching the view or a log shipper notices.
const BLOCK_WAIT_MS: u16 = 100;
/// After a stop, the capture thread reads on this long: the packets
/// captured before it may sit in a block the kernel has not handed over.
const LAST_BLOCK_WAIT: Duration = Duration::from_millis(BLOCK_WAIT_MS as u64 + 50);
/// Batches of packets waiting between the capture thread and the engine
/// (up to 8192 packets). When the engine falls behind, the kernel buffer
/// fills and its drop counter says so.
const CHANNEL_BATCHES: usize = 8192 / Batch::PACKETS;
/// Emptied batches kept for reuse: enough that the capture thread rarely
/// allocates, few enough that idle buffers stay small.
const SPARE_BATCHES: usize = 2;

/// How to open the capture.
pub struct LiveOptions {
    pub interface: String,
    pub ports: Vec<u16>,
    /// A libpcap filter replacing the default one (the ports and ICMP errors).
    pub filter: Option<String>,
    pub snaplen: i32,
    pub buffer_bytes: i32,
    pub promiscuous: bool,
    /// `-w FILE` and when it rotates (`-C`, `-G`, `-W`).
    pub write: Option<(PathBuf, Rotation)>,
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
    #[error("{interface}: {link}")]
    LinkType { interface: String, link: UnsupportedLink },
    #[error(transparent)]
    Filter(#[from] FilterError),
    #[error("cannot create {path}: {reason}")]
    Savefile { path: String, reason: String },
    #[error("cannot drop privileges to user {user:?}: {reason}")]
    Privileges { user: String, reason: String },
}

/// The default filter: TCP to or from a server port, the ICMP errors that
/// can quote such a segment, and DNS over UDP and TCP (answers name the
/// server a client went to; a query with no answer is a failed lookup); on
/// Ethernet, VLAN-tagged frames too (libpcap's `vlan` exists only there).
pub fn default_filter(ports: &[u16], link: LinkType) -> String {
    let ports: Vec<String> = ports.iter().map(|p| format!("tcp port {p}")).collect();
    let wanted =
        format!("{} or icmp[icmptype] == icmp-unreach or (icmp6 and ip6[40] == 1) or port 53", ports.join(" or "));
    match link {
        LinkType::Ethernet => format!("({wanted}) or (vlan and ({wanted}))"),
        _ => wanted,
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
            .immediate_mode(false)
            .timeout(i32::from(BLOCK_WAIT_MS))
            .promisc(opts.promiscuous)
            .snaplen(opts.snaplen)
            .buffer_size(opts.buffer_bytes)
            .precision(Precision::Nano)
            .open()
            .and_then(Capture::setnonblock)
            .map_err(open_error)?;
        let datalink = capture.get_datalink();
        let dlt = datalink.0;
        let link = LinkType::from_dlt(dlt)
            .ok_or_else(|| LiveError::LinkType { interface: interface.clone(), link: UnsupportedLink::of(datalink) })?;
        let expr = opts.filter.clone().unwrap_or_else(|| default_filter(&opts.ports, link));
        capture.filter(&expr, true).map_err(|e| FilterError { expr, reason: e.to_string() })?;
        let savefile = match &opts.write {
            Some((path, rotation)) => Some(
                Savefile::create(path, dlt as u32, opts.snaplen as u32, *rotation)
                    .map_err(|e| LiveError::Savefile { path: path.display().to_string(), reason: e.to_string() })?,
            ),
            None => None,
        };
        Ok(LiveCapture { capture, link, savefile, interface })
    }

    /// Whether [`Self::drop_privileges`] will change user.
    pub fn will_drop_privileges(&self, user: &str) -> bool {
        nix::unistd::getuid().is_root() && user != "root"
    }

    /// Gives up what opening the capture needed, before any packet is
    /// parsed. Started as root: become `user`; the `-w` file is renamed
    /// into place first (the user may not write in its directory) and handed
    /// to the user through its open descriptor, never by name, so that
    /// rotation files and it have one owner. Started as another user with
    /// file capabilities (setcap): clear them. Either way no capability is
    /// left in the effective, permitted, inheritable or ambient set.
    pub fn drop_privileges(&mut self, user: &str) -> Result<Dropped, LiveError> {
        use nix::unistd::{getuid, setgid, setgroups, setuid, User};
        let fail = |reason: String| LiveError::Privileges { user: user.to_owned(), reason };
        if !getuid().is_root() {
            let had = caps::read(None, caps::CapSet::Permitted).map_err(|e| fail(e.to_string()))?;
            clear_capabilities().map_err(fail)?;
            return Ok(if had.is_empty() { Dropped::Nothing } else { Dropped::Capabilities });
        }
        if user == "root" {
            return Ok(Dropped::Nothing);
        }
        let account =
            User::from_name(user).map_err(|e| fail(e.to_string()))?.ok_or_else(|| fail("no such user".into()))?;
        if let Some(s) = &mut self.savefile {
            s.publish().map_err(|e| fail(format!("cannot put the -w file in place: {e}")))?;
            s.hand_to(account.uid.as_raw(), account.gid.as_raw())
                .map_err(|e| fail(format!("cannot hand the -w file to it: {e}")))?;
        }
        setgroups(&[account.gid]).map_err(|e| fail(e.to_string()))?;
        setgid(account.gid).map_err(|e| fail(e.to_string()))?;
        setuid(account.uid).map_err(|e| fail(e.to_string()))?;
        // The kernel clears the sets when root becomes another user; say so
        // explicitly rather than rely on it.
        clear_capabilities().map_err(fail)?;
        Ok(Dropped::ToUser)
    }

    pub fn link(&self) -> LinkType {
        self.link
    }

    /// Starts the capture thread: from now on packets flow to the feed.
    pub fn start(self) -> Feed {
        let (tx, rx) = mpsc::channel(CHANNEL_BATCHES);
        let (spare_tx, spare_rx) = std::sync::mpsc::sync_channel(SPARE_BATCHES);
        let stop = Arc::new(AtomicBool::new(false));
        let link = self.link;
        let reader = spawn_reader(self, tx, spare_rx, stop.clone());
        Feed::new(link, rx, stop, Some(reader)).with_spares(spare_tx)
    }
}

/// The capture thread: libpcap reads, `-w` writes, and a tick with
/// libpcap's counters every [`TICK`]. Between blocks of packets it sleeps
/// until the next block or the next tick, whichever comes first; it notices
/// a stop at the latest at the next tick, and ends once the kernel has
/// handed over what it captured before it.
fn spawn_reader(
    mut live: LiveCapture,
    tx: mpsc::Sender<FromCapture>,
    spares: std::sync::mpsc::Receiver<Batch>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut counters = Wrapping::default();
        let mut next_tick = Instant::now() + TICK;
        let mut batch = Batch::default();
        // Hands the packets read so far to the engine, refilling from a
        // batch it has emptied (its buffers already grown); false once the
        // engine is gone.
        let flush = |batch: &mut Batch| {
            batch.is_empty() || {
                let spare = spares.try_recv().unwrap_or_default();
                tx.blocking_send(FromCapture::Packets(std::mem::replace(batch, spare))).is_ok()
            }
        };
        // Set at the stop: until when packets captured before it may come.
        let mut last_block: Option<Instant> = None;
        loop {
            if last_block.is_none() && stop.load(Ordering::Relaxed) {
                last_block = Some(Instant::now() + LAST_BLOCK_WAIT);
            }
            // Whether a tick is due is asked only between batches: not a
            // clock read per packet.
            let between_batches = match live.capture.next_packet() {
                Ok(packet) => {
                    let ts = Timestamp::from_secs_nanos(packet.header.ts.tv_sec, packet.header.ts.tv_usec);
                    let problem =
                        live.savefile.as_mut().and_then(|s| s.write(ts, packet.header.len, packet.data).err());
                    if let Some(e) = problem {
                        let _ = tx.blocking_send(FromCapture::Problem(format!("-w: {e}")));
                    }
                    batch.push(ts, packet.data);
                    if batch.is_full() && !flush(&mut batch) {
                        break;
                    }
                    // Packets that keep coming after a stop do not hold it up.
                    if last_block.is_some_and(|end| Instant::now() >= end) {
                        break;
                    }
                    batch.is_empty()
                }
                // Nothing more to read until the kernel hands over the next block.
                Err(pcap::Error::TimeoutExpired) => {
                    if !flush(&mut batch) || last_block.is_some_and(|end| Instant::now() >= end) {
                        break;
                    }
                    let wake = last_block.map_or(next_tick, |end| end.min(next_tick));
                    wait_readable(&live.capture, wake.saturating_duration_since(Instant::now()));
                    true
                }
                Err(e) => {
                    flush(&mut batch);
                    let _ = tx.blocking_send(FromCapture::Problem(format!("capture on {} ended: {e}", live.interface)));
                    break;
                }
            };
            if between_batches && Instant::now() >= next_tick {
                next_tick = Instant::now() + TICK;
                // The tick follows the packets read before it.
                if !flush(&mut batch) {
                    break;
                }
                let tick =
                    FromCapture::Tick { at: now(), counters: live.capture.stats().ok().map(|s| counters.update(s)) };
                if tx.blocking_send(tick).is_err() {
                    break;
                }
            }
        }
        flush(&mut batch);
        if let Some(s) = &mut live.savefile {
            if let Err(e) = s.publish() {
                let _ = tx.blocking_send(FromCapture::Problem(format!("-w: {e}")));
            }
        }
        let _ = tx.blocking_send(FromCapture::Tick {
            at: now(),
            counters: live.capture.stats().ok().map(|s| counters.update(s)),
        });
    })
}

/// What [`LiveCapture::drop_privileges`] gave up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// Nothing to give up (not root, no capabilities; or `-Z root`).
    Nothing,
    /// Root became the `-Z` user.
    ToUser,
    /// The file capabilities were cleared.
    Capabilities,
}

/// Empties the ambient, inheritable, effective and permitted capability
/// sets of this process (all its threads, which do not exist yet).
fn clear_capabilities() -> Result<(), String> {
    use caps::CapSet;
    // The ambient set exists since Linux 4.3; without it there is nothing to clear.
    if caps::runtime::ambient_set_supported().is_ok() {
        caps::clear(None, CapSet::Ambient).map_err(|e| format!("cannot clear the ambient capabilities: {e}"))?;
    }
    for set in [CapSet::Inheritable, CapSet::Effective, CapSet::Permitted] {
        caps::clear(None, set).map_err(|e| format!("cannot clear the {set:?} capabilities: {e}"))?;
    }
    Ok(())
}

/// Waits until the capture has packets, or for `most`.
fn wait_readable(capture: &Capture<Active>, most: Duration) {
    use nix::poll::{poll, PollFd, PollFlags};
    use std::os::fd::AsFd;
    let mut fds = [PollFd::new(capture.as_fd(), PollFlags::POLLIN)];
    // Rounded up: a wait of no time would spin until the tick.
    let ms = u16::try_from(most.as_nanos().div_ceil(1_000_000)).unwrap_or(u16::MAX);
    // An interrupted or failed wait only means reading again sooner.
    let _ = poll(&mut fds, ms);
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

#[cfg(test)]
mod tests {
    use super::*;

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
