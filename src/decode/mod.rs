//! Packet decoding: link layer to TCP segment or ICMP error, never panicking.
//!
//! etherparse's lax slicing does the link, VLAN and IP layers because it
//! parses as far as the bytes go and says where it stopped: that is what a
//! packet cut by the snap length, or the header quoted in an ICMP error,
//! needs. The few TCP and ICMP fields pgreach reads are taken here.
//! Nearly every packet is the plain case, IPv4 and TCP with nothing unusual:
//! [`plain`] reads that directly first, and gives the same segment.

mod plain;

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use etherparse::{EtherType, IpNumber, LaxNetSlice, LaxSlicedPacket, TcpHeaderSlice};

use crate::seq::SeqNumber;

/// The link types pgreach reads, by the numbers pcap files and libpcap use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkType {
    /// DLT_NULL: BSD loopback, a 4-byte address family in host byte order.
    Null,
    /// DLT_EN10MB: Ethernet II, with any 802.1Q / QinQ tags.
    Ethernet,
    /// Raw IPv4 or IPv6 (DLT_RAW 12 and 14, LINKTYPE_RAW 101, 228, 229).
    RawIp,
    /// DLT_LOOP: OpenBSD loopback, the family in network byte order.
    Loop,
    /// Linux cooked capture v1 (`tcpdump -i any` before libpcap 1.10).
    LinuxSll,
    /// Linux cooked capture v2 (`tcpdump -i any` since libpcap 1.10).
    LinuxSll2,
}

impl LinkType {
    /// The link type for a pcap DLT / LINKTYPE number, if pgreach reads it.
    pub fn from_dlt(dlt: i32) -> Option<LinkType> {
        Some(match dlt {
            0 => LinkType::Null,
            1 => LinkType::Ethernet,
            12 | 14 | 101 | 228 | 229 => LinkType::RawIp,
            108 => LinkType::Loop,
            113 => LinkType::LinuxSll,
            276 => LinkType::LinuxSll2,
            _ => return None,
        })
    }

    /// The names of the link types pgreach reads, for error messages.
    pub const SUPPORTED: &'static str = "Ethernet (with 802.1Q/QinQ), Linux cooked v1/v2, raw IP, BSD null/loopback";
}

/// Transmission control flags of one segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TcpFlags {
    pub syn: bool,
    pub ack: bool,
    pub fin: bool,
    pub rst: bool,
}

impl fmt::Display for TcpFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = [(self.syn, "SYN"), (self.fin, "FIN"), (self.rst, "RST"), (self.ack, "ACK")];
        let mut first = true;
        for (_, name) in names.iter().filter(|(set, _)| *set) {
            if !first {
                f.write_str("-")?;
            }
            f.write_str(name)?;
            first = false;
        }
        if first {
            f.write_str("none")?;
        }
        Ok(())
    }
}

/// One TCP segment, with the fields connection tracking reads.
#[derive(Debug, Clone)]
pub struct TcpSegment<'a> {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    /// IPv4 TTL or IPv6 hop limit: tells a host's own answer from a middlebox's.
    pub ttl: u8,
    pub seq: SeqNumber,
    pub ack: SeqNumber,
    pub flags: TcpFlags,
    /// The payload bytes the capture holds (fewer than on the wire when cut).
    pub payload: &'a [u8],
    /// The payload length on the wire, from the IP header.
    pub wire_payload_len: u32,
}

/// What an ICMP or ICMPv6 destination-unreachable message says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unreachable {
    Port,
    Net,
    Host,
    /// Communication administratively prohibited (ICMP 3/9, 3/10, 3/13; ICMPv6 1/1).
    AdminProhibited,
    /// Any other code, kept as it was.
    Other,
}

/// An ICMP error that quotes a TCP segment.
#[derive(Debug, Clone)]
pub struct IcmpError {
    /// Who sent the ICMP message: the server itself, or a firewall or router.
    pub from: IpAddr,
    pub ttl: u8,
    pub v6: bool,
    pub icmp_type: u8,
    pub code: u8,
    pub unreachable: Unreachable,
    /// The quoted segment's addresses and sequence number (its first 8 bytes).
    pub quoted_src: SocketAddr,
    pub quoted_dst: SocketAddr,
    pub quoted_seq: SeqNumber,
}

/// One UDP datagram (DNS answers travel in them).
#[derive(Debug, Clone)]
pub struct UdpDatagram<'a> {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    /// The payload bytes the capture holds.
    pub payload: &'a [u8],
}

/// What a packet is, for pgreach.
#[derive(Debug)]
pub enum Decoded<'a> {
    Tcp(TcpSegment<'a>),
    IcmpError(IcmpError),
    Udp(UdpDatagram<'a>),
    /// Anything else (ARP, other ICMP, IP fragments after the first).
    Ignored,
}

/// Why a packet could not be decoded; data for a counter and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The bytes end before a header does (snap length, corrupt record).
    Truncated { layer: &'static str, len: usize, needed: usize },
    /// A header's content is impossible.
    Malformed { layer: &'static str, reason: String },
}

impl DecodeError {
    /// A stable short key for counting errors by kind.
    pub fn kind(&self) -> String {
        match self {
            DecodeError::Truncated { layer, .. } => format!("{layer} cut short"),
            DecodeError::Malformed { layer, .. } => format!("malformed {layer}"),
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Truncated { layer, len, needed } => {
                write!(f, "{layer} cut short: {len} of {needed} bytes captured (snap length or corrupt record)")
            }
            DecodeError::Malformed { layer, reason } => write!(f, "malformed {layer}: {reason}"),
        }
    }
}

/// Decodes one captured frame of the given link type.
pub fn decode(link: LinkType, frame: &[u8]) -> Result<Decoded<'_>, DecodeError> {
    match plain::ipv4_tcp(link, frame) {
        Some(segment) => Ok(Decoded::Tcp(segment)),
        None => decode_sliced(link, frame),
    }
}

/// Any frame, through etherparse's lax slicing.
fn decode_sliced(link: LinkType, frame: &[u8]) -> Result<Decoded<'_>, DecodeError> {
    let sliced = slice_link(link, frame)?;
    let Some(net) = sliced.net.as_ref() else {
        return match &sliced.stop_err {
            Some((err, _)) => Err(net_error(err)),
            None => Ok(Decoded::Ignored),
        };
    };
    let (src, dst, ttl, payload) = match net {
        LaxNetSlice::Ipv4(ip) => {
            let h = ip.header();
            (IpAddr::V4(h.source_addr()), IpAddr::V4(h.destination_addr()), h.ttl(), ip.payload())
        }
        LaxNetSlice::Ipv6(ip) => {
            let h = ip.header();
            (IpAddr::V6(h.source_addr()), IpAddr::V6(h.destination_addr()), h.hop_limit(), ip.payload())
        }
        LaxNetSlice::Arp(_) => return Ok(Decoded::Ignored),
    };
    if payload.fragmented {
        return Ok(Decoded::Ignored);
    }
    match payload.ip_number {
        IpNumber::TCP => {
            let wire_len = if payload.incomplete { declared_payload_len(net) } else { payload.payload.len() };
            tcp_segment(src, dst, ttl, payload.payload, wire_len).map(Decoded::Tcp)
        }
        IpNumber::ICMP => {
            Ok(icmp_error(src, ttl, false, payload.payload)?.map_or(Decoded::Ignored, Decoded::IcmpError))
        }
        IpNumber::IPV6_ICMP => {
            Ok(icmp_error(src, ttl, true, payload.payload)?.map_or(Decoded::Ignored, Decoded::IcmpError))
        }
        IpNumber::UDP => udp_datagram(src, dst, payload.payload).map(Decoded::Udp),
        _ => Ok(Decoded::Ignored),
    }
}

/// The UDP header's ports, and the payload up to its declared length.
fn udp_datagram(src: IpAddr, dst: IpAddr, udp: &[u8]) -> Result<UdpDatagram<'_>, DecodeError> {
    const HEADER: usize = 8;
    if udp.len() < HEADER {
        return Err(DecodeError::Truncated { layer: "UDP header", len: udp.len(), needed: HEADER });
    }
    let declared = usize::from(be16(udp, 4)).clamp(HEADER, udp.len());
    Ok(UdpDatagram {
        src: SocketAddr::new(src, be16(udp, 0)),
        dst: SocketAddr::new(dst, be16(udp, 2)),
        payload: &udp[HEADER..declared],
    })
}

fn slice_link(link: LinkType, frame: &[u8]) -> Result<LaxSlicedPacket<'_>, DecodeError> {
    let after = |header_len: usize, layer: &'static str| {
        frame.get(header_len..).ok_or(DecodeError::Truncated { layer, len: frame.len(), needed: header_len })
    };
    match link {
        LinkType::Ethernet => LaxSlicedPacket::from_ethernet(frame).map_err(|_| DecodeError::Truncated {
            layer: "Ethernet header",
            len: frame.len(),
            needed: 14,
        }),
        LinkType::LinuxSll => {
            let rest = after(16, "Linux cooked header")?;
            Ok(LaxSlicedPacket::from_ether_type(EtherType(be16(frame, 14)), rest))
        }
        LinkType::LinuxSll2 => {
            let rest = after(20, "Linux cooked v2 header")?;
            Ok(LaxSlicedPacket::from_ether_type(EtherType(be16(frame, 0)), rest))
        }
        // The family field's byte order depends on the capturing host; the
        // IP version nibble says the same thing in every byte order.
        LinkType::Null | LinkType::Loop => from_ip(after(4, "loopback header")?),
        LinkType::RawIp => from_ip(frame),
    }
}

fn from_ip(bytes: &[u8]) -> Result<LaxSlicedPacket<'_>, DecodeError> {
    LaxSlicedPacket::from_ip(bytes).map_err(|e| DecodeError::Malformed { layer: "IP header", reason: e.to_string() })
}

fn net_error(err: &etherparse::err::packet::SliceError) -> DecodeError {
    use etherparse::err::packet::SliceError;
    match err {
        SliceError::Len(e) => DecodeError::Truncated { layer: "IP header", len: e.len, needed: e.required_len },
        other => DecodeError::Malformed { layer: "IP header", reason: other.to_string() },
    }
}

/// The IP payload length the header declares, for a packet the capture cut.
fn declared_payload_len(net: &LaxNetSlice<'_>) -> usize {
    match net {
        LaxNetSlice::Ipv4(ip) => {
            let h = ip.header();
            usize::from(h.total_len())
                .saturating_sub(usize::from(h.ihl()) * 4 + ip.extensions().auth.map_or(0, |a| a.slice().len()))
        }
        LaxNetSlice::Ipv6(ip) => {
            usize::from(ip.header().payload_length()).saturating_sub(ip.extensions().slice().len())
        }
        LaxNetSlice::Arp(_) => 0,
    }
}

fn tcp_segment<'a>(
    src: IpAddr,
    dst: IpAddr,
    ttl: u8,
    bytes: &'a [u8],
    wire_len: usize,
) -> Result<TcpSegment<'a>, DecodeError> {
    use etherparse::err::tcp::HeaderSliceError;
    let tcp = TcpHeaderSlice::from_slice(bytes).map_err(|e| match e {
        HeaderSliceError::Len(l) => DecodeError::Truncated { layer: "TCP header", len: l.len, needed: l.required_len },
        HeaderSliceError::Content(c) => DecodeError::Malformed { layer: "TCP header", reason: c.to_string() },
    })?;
    let header_len = tcp.slice().len();
    Ok(TcpSegment {
        src: SocketAddr::new(src, tcp.source_port()),
        dst: SocketAddr::new(dst, tcp.destination_port()),
        ttl,
        seq: SeqNumber(tcp.sequence_number()),
        ack: SeqNumber(tcp.acknowledgment_number()),
        flags: TcpFlags { syn: tcp.syn(), ack: tcp.ack(), fin: tcp.fin(), rst: tcp.rst() },
        payload: bytes.get(header_len..).unwrap_or_default(),
        wire_payload_len: u32::try_from(wire_len.saturating_sub(header_len)).unwrap_or(u32::MAX),
    })
}

/// Reads an ICMP destination-unreachable message that quotes a TCP segment.
/// Other ICMP messages (echo, time exceeded, packet too big…) are `None`.
fn icmp_error(from: IpAddr, ttl: u8, v6: bool, icmp: &[u8]) -> Result<Option<IcmpError>, DecodeError> {
    let (Some(&icmp_type), Some(&code)) = (icmp.first(), icmp.get(1)) else {
        return Err(DecodeError::Truncated { layer: "ICMP header", len: icmp.len(), needed: 8 });
    };
    let unreachable = match (v6, icmp_type, code) {
        (false, 3, 3) | (true, 1, 4) => Unreachable::Port,
        (false, 3, 0 | 6) | (true, 1, 0) => Unreachable::Net,
        (false, 3, 1 | 7) | (true, 1, 3) => Unreachable::Host,
        (false, 3, 9 | 10 | 13) | (true, 1, 1 | 5 | 6) => Unreachable::AdminProhibited,
        (false, 3, _) | (true, 1, _) => Unreachable::Other,
        _ => return Ok(None),
    };
    // The quoted packet starts after type, code, checksum and 4 unused bytes.
    let quoted = icmp.get(8..).unwrap_or_default();
    let sliced = LaxSlicedPacket::from_ip(quoted)
        .map_err(|e| DecodeError::Malformed { layer: "IP header quoted in ICMP", reason: e.to_string() })?;
    let Some(payload) = sliced.ip_payload() else {
        return Err(DecodeError::Truncated { layer: "IP header quoted in ICMP", len: quoted.len(), needed: 20 });
    };
    if payload.ip_number != IpNumber::TCP {
        return Ok(None);
    }
    let (qsrc, qdst) = match sliced.net.as_ref() {
        Some(LaxNetSlice::Ipv4(ip)) => {
            (IpAddr::V4(ip.header().source_addr()), IpAddr::V4(ip.header().destination_addr()))
        }
        Some(LaxNetSlice::Ipv6(ip)) => {
            (IpAddr::V6(ip.header().source_addr()), IpAddr::V6(ip.header().destination_addr()))
        }
        _ => return Ok(None),
    };
    // RFC 792 promises 8 bytes of the quoted transport header: ports and sequence.
    let tcp = payload.payload;
    if tcp.len() < 8 {
        return Err(DecodeError::Truncated { layer: "TCP header quoted in ICMP", len: tcp.len(), needed: 8 });
    }
    Ok(Some(IcmpError {
        from,
        ttl,
        v6,
        icmp_type,
        code,
        unreachable,
        quoted_src: SocketAddr::new(qsrc, be16(tcp, 0)),
        quoted_dst: SocketAddr::new(qdst, be16(tcp, 2)),
        quoted_seq: SeqNumber(u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]])),
    }))
}

/// A big-endian u16 at `at`, zero where the bytes are missing (callers check lengths first).
fn be16(bytes: &[u8], at: usize) -> u16 {
    match bytes.get(at..at + 2) {
        Some(&[a, b]) => u16::from_be_bytes([a, b]),
        _ => 0,
    }
}
