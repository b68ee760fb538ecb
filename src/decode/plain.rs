//! The plain case, read directly: an IPv4 packet carrying TCP, whole (not
//! cut by the snapshot length), not a fragment, right after the link
//! header. On a busy server that is nearly every packet; building
//! etherparse's full view of each one cost more than all the rest of
//! their decoding. Anything else, and anything odd about these, is left
//! to the general path, which gives the same segment for what this reads
//! (a test compares the two on mutated real frames).

use std::net::{IpAddr, Ipv4Addr};

use super::{tcp_segment, LinkType, TcpSegment};

/// The EtherType of IPv4.
const IPV4: [u8; 2] = [0x08, 0x00];
const TCP: u8 = 6;

/// The TCP segment in `frame` when it is the plain case; `None` otherwise.
pub(super) fn ipv4_tcp(link: LinkType, frame: &[u8]) -> Option<TcpSegment<'_>> {
    let ip = match link {
        LinkType::Ethernet if frame.get(12..14)? == IPV4 => frame.get(14..)?,
        LinkType::LinuxSll if frame.get(14..16)? == IPV4 => frame.get(16..)?,
        LinkType::LinuxSll2 if frame.get(..2)? == IPV4 => frame.get(20..)?,
        LinkType::Null | LinkType::Loop => frame.get(4..)?,
        LinkType::RawIp => frame,
        _ => return None,
    };
    let &[version_ihl, _, len_hi, len_lo, _, _, flags_hi, flags_lo, ttl, protocol, _, _, s0, s1, s2, s3, d0, d1, d2, d3] =
        ip.get(..20)?
    else {
        return None;
    };
    let header_len = usize::from(version_ihl & 0x0f) * 4;
    let total_len = usize::from(u16::from_be_bytes([len_hi, len_lo]));
    // More-fragments flag and fragment offset: any of them makes a fragment.
    let fragment = u16::from_be_bytes([flags_hi, flags_lo]) & 0x3fff != 0;
    if version_ihl >> 4 != 4 || header_len < 20 || total_len > ip.len() || fragment {
        return None;
    }
    if protocol != TCP {
        return None;
    }
    // Bytes past the declared length are link padding.
    let tcp = ip.get(header_len..total_len)?;
    let (src, dst) = (Ipv4Addr::new(s0, s1, s2, s3), Ipv4Addr::new(d0, d1, d2, d3));
    tcp_segment(IpAddr::V4(src), IpAddr::V4(dst), ttl, tcp, tcp.len()).ok()
}

#[cfg(test)]
mod tests {
    use super::super::{decode_sliced, Decoded};
    use super::*;

    /// The frames of a capture, with its link type.
    fn frames(name: &str) -> (LinkType, Vec<Vec<u8>>) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("captures").join(name);
        let mut capture = pcap::Capture::from_file(&path).expect("opens");
        let link = LinkType::from_dlt(capture.get_datalink().0).expect("a link type pgreach reads");
        let mut frames = Vec::new();
        while let Ok(packet) = capture.next_packet() {
            frames.push(packet.data.to_vec());
        }
        (link, frames)
    }

    /// What the general path makes of `frame`, when it is a TCP segment.
    fn sliced(link: LinkType, frame: &[u8]) -> Option<String> {
        match decode_sliced(link, frame) {
            Ok(Decoded::Tcp(segment)) => Some(format!("{segment:?}")),
            _ => None,
        }
    }

    #[test]
    fn the_plain_case_is_read_as_the_general_path_reads_it() {
        let mut random = crate::testing::xorshift(0x9e37_79b9_7f4a_7c15);
        let (mut plain, mut compared) = (0, 0);
        for name in ["incident.pcap", "cooked_v1.pcap", "cooked_any.pcap", "pg_pgbench.pcap"] {
            let (link, frames) = frames(name);
            for frame in &frames {
                // The frame as captured: TCP over IPv4 takes the plain path.
                if let Some(segment) = ipv4_tcp(link, frame) {
                    assert_eq!(Some(format!("{segment:?}")), sliced(link, frame), "{name}");
                    plain += 1;
                }
                // Then damaged: bytes changed in the headers, or cut short.
                for _ in 0..40 {
                    let mut bad = frame.clone();
                    for _ in 0..1 + random() % 3 {
                        let at = (random() % 64) as usize % bad.len().max(1);
                        if let Some(byte) = bad.get_mut(at) {
                            *byte = random() as u8;
                        }
                    }
                    if random().is_multiple_of(4) {
                        bad.truncate((random() % 80) as usize);
                    }
                    if let Some(segment) = ipv4_tcp(link, &bad) {
                        assert_eq!(Some(format!("{segment:?}")), sliced(link, &bad), "{name}: {bad:02x?}");
                        compared += 1;
                    }
                }
            }
        }
        assert!(plain > 1_000, "{plain} captured frames read on the plain path");
        assert!(compared > 10_000, "{compared} damaged frames compared");
    }

    #[test]
    fn what_is_not_plain_is_left_to_the_general_path() {
        let mut frame = vec![0u8; 14];
        frame[12..14].copy_from_slice(&IPV4);
        // IPv4, header 20 bytes, total 40, TTL 64, TCP, 192.0.2.1 > 192.0.2.2; a 20-byte TCP header.
        frame.extend_from_slice(&[0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, TCP, 0, 0, 192, 0, 2, 1, 192, 0, 2, 2]);
        frame.extend_from_slice(&[0x9c, 0x40, 0x15, 0x38, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
        let segment = ipv4_tcp(LinkType::Ethernet, &frame).expect("plain");
        assert_eq!((segment.src.port(), segment.dst.port(), segment.ttl), (40000, 5432, 64));
        let changed = |at: usize, value: u8| {
            let mut f = frame.clone();
            f[at] = value;
            ipv4_tcp(LinkType::Ethernet, &f).is_none()
        };
        assert!(changed(12, 0x81), "a VLAN tag");
        assert!(changed(14, 0x46), "IP options that leave too little for the TCP header");
        assert!(changed(14, 0x65), "IPv6's version in an IPv4 EtherType");
        assert!(changed(20, 0x20), "more fragments");
        assert!(changed(21, 0x01), "a fragment offset");
        assert!(changed(23, 17), "UDP");
        assert!(changed(17, 60), "a total length past the frame: cut by the snapshot length");
        assert!(ipv4_tcp(LinkType::Ethernet, &frame[..30]).is_none());
    }
}
