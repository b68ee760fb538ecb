//! The server ports watched: a bit set, so each packet costs one lookup,
//! and which frames cannot concern them at all.

use crate::decode::LinkType;

/// A set of TCP ports, one bit each: one lookup per packet, no hashing.
pub struct PortSet(Box<[u64; 1024]>);

impl PortSet {
    pub fn new(ports: &[u16]) -> PortSet {
        let mut bits = Box::new([0u64; 1024]);
        for &p in ports {
            bits[usize::from(p / 64)] |= 1 << (p % 64);
        }
        PortSet(bits)
    }

    pub fn contains(&self, port: u16) -> bool {
        self.0[usize::from(port / 64)] & (1 << (port % 64)) != 0
    }
}

/// Whether a frame is, for certain, a whole TCP segment between two ports
/// not in `ports` (the engine's: the server ports and DNS's): such a frame
/// is passed over before decoding.
/// Only the common shapes are recognised (Ethernet without VLAN tags,
/// Linux cooked, loopback and raw IP; IPv4 without fragmentation, IPv6
/// without extension headers); anything else, ICMP errors quoting a
/// server port and UDP (DNS) among them, is decoded in full, as is any
/// frame whose decoding could report a problem.
pub fn off_port(link: LinkType, frame: &[u8], ports: &PortSet) -> bool {
    // The IP version the link header announces (an EtherType), if it does.
    let ether_version = |ether_type: Option<&[u8]>| match ether_type {
        Some([0x08, 0x00]) => Some(4),
        Some([0x86, 0xdd]) => Some(6),
        _ => None,
    };
    let (ip, announced) = match link {
        LinkType::Ethernet if frame.len() >= 14 => (&frame[14..], ether_version(frame.get(12..14))),
        LinkType::LinuxSll if frame.len() >= 16 => (&frame[16..], ether_version(frame.get(14..16))),
        LinkType::LinuxSll2 if frame.len() >= 20 => (&frame[20..], ether_version(frame.get(..2))),
        LinkType::Null | LinkType::Loop if frame.len() >= 4 => (&frame[4..], None),
        LinkType::RawIp => (frame, None),
        _ => return false,
    };
    let version = ip.first().map(|b| b >> 4);
    let by_link = matches!(link, LinkType::Ethernet | LinkType::LinuxSll | LinkType::LinuxSll2);
    if by_link && (announced.is_none() || announced != version) {
        return false;
    }
    let tcp = match version {
        Some(4) => {
            let header = usize::from(ip[0] & 0x0f) * 4;
            let total =
                usize::from(u16::from_be_bytes([ip.get(2).copied().unwrap_or(0), ip.get(3).copied().unwrap_or(0)]));
            // More fragments or an offset: a fragment, which decoding ignores on its own terms.
            let fragment = ip.get(6..8).is_none_or(|f| f[0] & 0x3f != 0 || f[1] != 0);
            if header < 20 || total < header || ip.len() < total || fragment || ip.get(9) != Some(&6) {
                return false;
            }
            &ip[header..total]
        }
        Some(6) => {
            let Some(fixed) = ip.get(..40) else { return false };
            let payload = usize::from(u16::from_be_bytes([fixed[4], fixed[5]]));
            if fixed[6] != 6 || ip.len() < 40 + payload {
                return false;
            }
            &ip[40..40 + payload]
        }
        _ => return false,
    };
    let Some(header) = tcp.get(..20) else { return false };
    let data_offset = usize::from(header[12] >> 4) * 4;
    let src = u16::from_be_bytes([header[0], header[1]]);
    let dst = u16::from_be_bytes([header[2], header[3]]);
    data_offset >= 20 && tcp.len() >= data_offset && !ports.contains(src) && !ports.contains(dst)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{decode, Decoded};

    /// An Ethernet/IPv4/TCP frame and an Ethernet/IPv6/TCP one with 6 payload bytes.
    fn frames(sport: u16, dport: u16) -> [Vec<u8>; 2] {
        let mut tcp = vec![0u8; 20];
        tcp[..2].copy_from_slice(&sport.to_be_bytes());
        tcp[2..4].copy_from_slice(&dport.to_be_bytes());
        tcp[12] = 0x50;
        tcp[13] = 0x18;
        tcp.extend_from_slice(b"hello!");
        let mut v4 = vec![0u8; 12];
        v4.extend_from_slice(&[0x08, 0x00, 0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 6, 0, 0, 192, 0, 2, 1, 192, 0, 2, 2]);
        let total = (20 + tcp.len()) as u16;
        v4[16..18].copy_from_slice(&total.to_be_bytes());
        v4.extend_from_slice(&tcp);
        let mut v6 = vec![0u8; 12];
        v6.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
        v6.extend_from_slice(&(tcp.len() as u16).to_be_bytes());
        v6.extend_from_slice(&[6, 64]);
        v6.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        v6.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        v6.extend_from_slice(&tcp);
        [v4, v6]
    }

    #[test]
    fn only_whole_tcp_segments_off_the_ports_are_passed_over() {
        let ports = PortSet::new(&[5432]);
        for frame in frames(40000, 443) {
            assert!(off_port(LinkType::Ethernet, &frame, &ports));
        }
        for frame in frames(40000, 5432).into_iter().chain(frames(5432, 40000)) {
            assert!(!off_port(LinkType::Ethernet, &frame, &ports));
        }
        // Every byte changed, and every length cut: whenever the frame is
        // passed over, decoding it would have given a TCP segment off the
        // ports, nothing else (no error, no ICMP, no UDP).
        for frame in frames(40000, 443) {
            for at in 0..frame.len() {
                for value in [0u8, 1, 0x06, 0x08, 0x11, 0x3f, 0x45, 0x4f, 0x50, 0x60, 0x86, 0xdd, 0xff] {
                    let mut changed = frame.clone();
                    changed[at] = value;
                    for len in [changed.len(), at + 1, at.saturating_sub(1)] {
                        let cut = &changed[..len.min(changed.len())];
                        if off_port(LinkType::Ethernet, cut, &ports) {
                            let decoded = decode(LinkType::Ethernet, cut);
                            let off = matches!(&decoded, Ok(Decoded::Tcp(seg))
                                if !ports.contains(seg.src.port()) && !ports.contains(seg.dst.port()));
                            assert!(off, "byte {at} = {value:#x}, {len} bytes: {decoded:?}");
                        }
                    }
                }
            }
        }
    }
}
