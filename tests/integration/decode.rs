//! Decoding every supported link type, VLAN tags, and bad bytes: an error
//! with its layer, never a panic.

use pgreach::decode::{decode, DecodeError, Decoded, LinkType};

use crate::util::*;

fn ip_packet() -> Vec<u8> {
    tcp_frame(CLIENT, SERVER, syn(1))[14..].to_vec()
}

fn is_client_syn(d: Result<Decoded<'_>, DecodeError>) -> bool {
    matches!(d, Ok(Decoded::Tcp(seg)) if seg.src == addr(CLIENT) && seg.dst == addr(SERVER) && seg.flags.syn)
}

#[test]
fn ethernet() {
    assert!(is_client_syn(decode(LinkType::Ethernet, &tcp_frame(CLIENT, SERVER, syn(1)))));
}

#[test]
fn vlan_and_qinq() {
    let ip = ip_packet();
    let mut single = vec![0u8; 12];
    single.extend_from_slice(&[0x81, 0x00, 0x00, 0x64, 0x08, 0x00]);
    single.extend_from_slice(&ip);
    assert!(is_client_syn(decode(LinkType::Ethernet, &single)));
    let mut double = vec![0u8; 12];
    double.extend_from_slice(&[0x88, 0xa8, 0x00, 0x0a, 0x81, 0x00, 0x00, 0x64, 0x08, 0x00]);
    double.extend_from_slice(&ip);
    assert!(is_client_syn(decode(LinkType::Ethernet, &double)));
}

#[test]
fn linux_cooked_v1_and_v2() {
    let ip = ip_packet();
    let mut v1 = vec![0, 0, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0, 0x08, 0x00];
    v1.extend_from_slice(&ip);
    assert!(is_client_syn(decode(LinkType::LinuxSll, &v1)));
    let mut v2 = vec![0x08, 0x00, 0, 0, 0, 0, 0, 2, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0];
    v2.extend_from_slice(&ip);
    assert!(is_client_syn(decode(LinkType::LinuxSll2, &v2)));
}

#[test]
fn raw_ip_and_bsd_loopback() {
    let ip = ip_packet();
    assert!(is_client_syn(decode(LinkType::RawIp, &ip)));
    for header in [[2u8, 0, 0, 0], [0, 0, 0, 2]] {
        let mut null = header.to_vec();
        null.extend_from_slice(&ip);
        assert!(is_client_syn(decode(LinkType::Null, &null)));
        assert!(is_client_syn(decode(LinkType::Loop, &null)));
    }
}

#[test]
fn ipv6_with_an_extension_header() {
    let frame = tcp_frame("[2001:db8::50]:40000", "[2001:db8::1]:5432", syn(1));
    let mut ip = frame[14..].to_vec();
    // Insert a hop-by-hop header (8 bytes, next header TCP) after the fixed header.
    ip[6] = 0;
    let payload_len = u16::from_be_bytes([ip[4], ip[5]]) + 8;
    ip[4..6].copy_from_slice(&payload_len.to_be_bytes());
    let hop_by_hop = [6u8, 0, 1, 4, 0, 0, 0, 0];
    ip.splice(40..40, hop_by_hop);
    match decode(LinkType::RawIp, &ip) {
        Ok(Decoded::Tcp(seg)) => assert_eq!(seg.dst, addr("[2001:db8::1]:5432")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn link_type_numbers() {
    assert_eq!(LinkType::from_dlt(1), Some(LinkType::Ethernet));
    assert_eq!(LinkType::from_dlt(113), Some(LinkType::LinuxSll));
    assert_eq!(LinkType::from_dlt(276), Some(LinkType::LinuxSll2));
    assert_eq!(LinkType::from_dlt(101), Some(LinkType::RawIp));
    assert_eq!(LinkType::from_dlt(147), None);
}

/// A frame cut at every length: each cut inside a header is an error naming
/// that header; a cut in the payload still decodes.
#[test]
fn truncated_at_every_length() {
    let frame = tcp_frame(CLIENT, SERVER, data(1, 2, b"payload"));
    for len in 0..frame.len() {
        let result = decode(LinkType::Ethernet, &frame[..len]);
        match len {
            0..=13 => assert!(matches!(result, Err(DecodeError::Truncated { layer: "Ethernet header", .. })), "{len}"),
            14..=33 => assert!(result.is_err(), "cut at {len} inside the IP header must be an error"),
            34..=53 => assert!(
                matches!(result, Err(DecodeError::Truncated { layer: "TCP header", len: l, needed: 20 }) if l == len - 34),
                "{len}: {result:?}"
            ),
            _ => match result {
                Ok(Decoded::Tcp(seg)) => {
                    assert_eq!(seg.wire_payload_len, 7);
                    assert_eq!(seg.payload.len(), len - 54);
                }
                other => panic!("{len}: {other:?}"),
            },
        }
    }
}

/// Random and mutated bytes on every link type: no panic.
#[test]
fn arbitrary_bytes_never_panic() {
    let links = [LinkType::Ethernet, LinkType::LinuxSll, LinkType::LinuxSll2, LinkType::RawIp, LinkType::Null];
    let seed_frames = [
        tcp_frame(CLIENT, SERVER, syn(1)),
        icmp_frame("192.0.2.1", CLIENT, SERVER, 1, 3, 3),
        icmp_frame("2001:db8::1", "[2001:db8::50]:1", "[2001:db8::1]:5432", 1, 1, 1),
    ];
    let mut rng = Rng::new(0x2545_f491_4f6c_dd1du64);
    let mut next = move || rng.next();
    for round in 0..30_000 {
        let mut bytes = seed_frames[round % seed_frames.len()].clone();
        let flips = (next() % 6) as usize;
        for _ in 0..flips {
            let i = (next() as usize) % bytes.len();
            bytes[i] = next() as u8;
        }
        bytes.truncate((next() as usize) % (bytes.len() + 1));
        for &link in &links {
            let _ = decode(link, &bytes);
        }
    }
}
