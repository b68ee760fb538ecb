//! Hand-made malformed captures, generated here: damaged files, headers whose
//! lengths lie, PostgreSQL messages with impossible lengths, floods. Each
//! case says what a careful reader of the bytes should conclude, and runs
//! the binary under a memory ceiling.

use crate::bounds::peak_rss_kib;
use crate::util::*;

const ISN: u32 = 1000;
const SISN: u32 = 5000;
/// Peak resident memory for small inputs: the program itself and little else.
const SMALL_CEILING_KIB: u64 = 40 * 1024;

/// What one run produced.
struct Ran {
    code: i32,
    doc: Option<serde_json::Value>,
    stderr: String,
}

impl Ran {
    fn doc(&self) -> &serde_json::Value {
        self.doc.as_ref().unwrap_or_else(|| panic!("no report; stderr: {}", self.stderr))
    }
    fn stat(&self, name: &str) -> u64 {
        self.doc()["stats"][name].as_u64().unwrap_or_else(|| panic!("stats.{name}"))
    }
    fn outcomes(&self) -> Vec<String> {
        let attempts = self.doc()["attempts"].as_array().expect("attempts");
        attempts.iter().map(|a| a["outcome"].as_str().unwrap().to_owned()).collect()
    }
    fn total(&self, outcome: &str) -> u64 {
        self.doc()["totals"][outcome].as_u64().unwrap_or(0)
    }
}

/// Writes `bytes` as a file and analyzes it as JSON under `ceiling_kib`.
fn run_file(name: &str, bytes: &[u8], ceiling_kib: u64) -> Ran {
    let path = temp_file(name, bytes);
    // Few attempts listed: the ceiling is on the engine, not the report.
    let (out, kib) = peak_rss_kib(&["analyze", "--format", "json", "--max-listed", "10", path.to_str().unwrap()]);
    std::fs::remove_file(&path).ok();
    assert!(kib < ceiling_kib, "{name}: peak {kib} KiB, ceiling {ceiling_kib} KiB");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "{name}: {stderr}");
    Ran { code: out.status.code().unwrap_or(-1), doc: serde_json::from_slice(&out.stdout).ok(), stderr }
}

fn run_frames(name: &str, frames: Vec<Vec<u8>>) -> Ran {
    run_records(name, 1, frames.into_iter().enumerate().map(|(i, f)| (at(i as f64 * 0.001), f)).collect())
}

fn run_records(name: &str, link: u32, records: Vec<(pgreach::time::Timestamp, Vec<u8>)>) -> Ran {
    let records: Vec<_> = records.into_iter().map(|(t, f)| (t, f.clone(), f.len() as u32)).collect();
    run_file(name, &pcap_bytes(link, 262144, &records), SMALL_CEILING_KIB)
}

fn leak(bytes: Vec<u8>) -> &'static [u8] {
    Box::leak(bytes.into_boxed_slice())
}

fn typed(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![tag];
    m.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    m.extend_from_slice(body);
    m
}

fn startup(user: &str) -> Vec<u8> {
    let params = format!("user\0{user}\0database\0postgres\0\0");
    let mut m = ((params.len() + 8) as u32).to_be_bytes().to_vec();
    m.extend_from_slice(&196_608u32.to_be_bytes());
    m.extend_from_slice(params.as_bytes());
    m
}

fn auth_ok_ready() -> Vec<u8> {
    let mut m = typed(b'R', &0u32.to_be_bytes());
    m.extend(typed(b'Z', b"I"));
    m
}

/// A handshake, then the client's bytes and the server's answer, then the
/// client's Terminate and both FINs: a whole conversation.
fn conversation(client: Vec<u8>, server: Vec<u8>) -> Vec<Vec<u8>> {
    let (c, s) = (client.len() as u32, server.len() as u32);
    let mut frames = vec![
        tcp_frame(CLIENT, SERVER, syn(ISN)),
        tcp_frame(SERVER, CLIENT, syn_ack(SISN, ISN + 1)),
        tcp_frame(CLIENT, SERVER, ack(ISN + 1, SISN + 1)),
        tcp_frame(CLIENT, SERVER, data(ISN + 1, SISN + 1, leak(client))),
    ];
    let server = leak(server);
    for (i, piece) in server.chunks(1400).enumerate() {
        frames.push(tcp_frame(SERVER, CLIENT, data(SISN + 1 + (i * 1400) as u32, ISN + 1 + c, piece)));
    }
    frames.push(tcp_frame(CLIENT, SERVER, fin(ISN + 1 + c, SISN + 1 + s)));
    frames.push(tcp_frame(SERVER, CLIENT, fin(SISN + 1 + s, ISN + 2 + c)));
    frames
}

mod files {
    use super::*;

    fn one_syn_pcap() -> Vec<u8> {
        let f = tcp_frame(CLIENT, SERVER, syn(ISN));
        pcap_bytes(1, 262144, &[(at(0.0), f.clone(), f.len() as u32)])
    }

    #[test]
    fn empty_file_is_one_error_line() {
        let r = run_file("empty.pcap", b"", SMALL_CEILING_KIB);
        assert_eq!(r.code, 1);
        assert!(r.stderr.contains("empty.pcap"), "{}", r.stderr);
    }

    #[test]
    fn truncated_global_header() {
        let r = run_file("short_header.pcap", &one_syn_pcap()[..10], SMALL_CEILING_KIB);
        assert_eq!(r.code, 1);
        assert!(r.stderr.contains("short_header.pcap"), "{}", r.stderr);
    }

    #[test]
    fn truncated_record_header_is_a_trailing_fragment() {
        let mut bytes = one_syn_pcap();
        bytes.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7]);
        let r = run_file("fragment.pcap", &bytes, SMALL_CEILING_KIB);
        assert_eq!(r.code, 0, "{}", r.stderr);
        assert_eq!(r.stat("packets"), 1);
    }

    #[test]
    fn record_with_an_impossible_length_keeps_what_came_before() {
        let mut bytes = one_syn_pcap();
        let rst = tcp_frame(SERVER, CLIENT, rst_ack(0, ISN + 1));
        bytes.extend(&pcap_bytes(1, 262144, &[(at(0.001), rst.clone(), rst.len() as u32)])[24..]);
        // A third record claiming 4 GB.
        bytes.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0xf0, 0xff, 0xff, 0xff, 0xf0, 0xff, 0xff, 0xff]);
        bytes.extend_from_slice(&[0; 64]);
        let r = run_file("impossible_length.pcap", &bytes, SMALL_CEILING_KIB);
        assert_eq!(r.code, 4, "exit 4: a damaged file, read up to the damage");
        assert!(r.stderr.contains("impossible_length.pcap"), "{}", r.stderr);
        assert_eq!(r.outcomes(), ["refused"], "the refusal before the damage is reported");
    }

    #[test]
    fn record_cut_short_at_the_end_of_the_file() {
        let mut bytes = one_syn_pcap();
        bytes.truncate(bytes.len() - 10);
        let r = run_file("cut_record.pcap", &bytes, SMALL_CEILING_KIB);
        assert_eq!(r.code, 4, "exit 4: a damaged file");
        assert!(r.stderr.contains("cut_record.pcap"), "{}", r.stderr);
    }

    #[test]
    fn unsupported_link_type() {
        let mut bytes = one_syn_pcap();
        bytes[20..24].copy_from_slice(&147u32.to_le_bytes());
        let r = run_file("link147.pcap", &bytes, SMALL_CEILING_KIB);
        assert_eq!(r.code, 1);
        assert!(r.stderr.contains("link147.pcap"), "{}", r.stderr);
    }

    #[test]
    fn pcapng_block_length_that_lies() {
        // A section header block whose two length fields disagree.
        let mut shb = vec![0x0a, 0x0d, 0x0d, 0x0a];
        shb.extend_from_slice(&28u32.to_le_bytes());
        shb.extend_from_slice(&0x1a2b_3c4du32.to_le_bytes());
        shb.extend_from_slice(&[1, 0, 0, 0]);
        shb.extend_from_slice(&u64::MAX.to_le_bytes());
        shb.extend_from_slice(&0xffff_fff0u32.to_le_bytes());
        let r = run_file("lying_block.pcapng", &shb, SMALL_CEILING_KIB);
        assert_eq!(r.code, 1);
        assert!(r.stderr.contains("lying_block.pcapng"), "{}", r.stderr);
    }

    #[test]
    fn zero_length_records() {
        let records: Vec<_> = (0..100).map(|i| (at(f64::from(i)), Vec::new(), 0)).collect();
        let r = run_file("zero_length.pcap", &pcap_bytes(1, 262144, &records), SMALL_CEILING_KIB);
        assert_eq!(r.code, 0, "{}", r.stderr);
        assert_eq!(r.stat("packets"), 100);
        assert_eq!(r.stat("undecodable"), 100);
    }
}

mod headers {
    use super::*;

    /// A SYN then a RST: refused, whatever junk came between.
    fn around(junk: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
        let mut frames = vec![tcp_frame(CLIENT, SERVER, syn(ISN))];
        frames.extend(junk);
        frames.push(tcp_frame(SERVER, CLIENT, rst_ack(0, ISN + 1)));
        frames
    }

    /// A frame from another client whose headers are patched by `patch`.
    fn patched(patch: impl Fn(&mut Vec<u8>)) -> Vec<u8> {
        let mut f = tcp_frame("192.0.2.99:40000", SERVER, syn(77));
        patch(&mut f);
        f
    }

    fn expect_undecodable(name: &str, junk: Vec<u8>) {
        let r = run_frames(name, around(vec![junk]));
        assert_eq!(r.code, 0, "{name}: {}", r.stderr);
        assert_eq!(r.stat("undecodable"), 1, "{name}");
        assert_eq!(r.outcomes(), ["refused"], "{name}");
    }

    #[test]
    fn ethernet_header_cut() {
        expect_undecodable("eth_cut.pcap", patched(|f| f.truncate(10)));
    }

    #[test]
    fn ipv4_header_cut() {
        expect_undecodable("ip_cut.pcap", patched(|f| f.truncate(14 + 12)));
    }

    #[test]
    fn ipv4_header_length_longer_than_the_packet() {
        expect_undecodable("ihl_long.pcap", patched(|f| f[14] = 0x4f));
    }

    #[test]
    fn ipv4_header_length_below_its_minimum() {
        expect_undecodable("ihl_short.pcap", patched(|f| f[14] = 0x42));
    }

    /// A total length of 0 or one shorter than the header: what a capture
    /// of a sender with segmentation offload shows. The captured length is
    /// believed instead, as etherparse's lax slicing does.
    #[test]
    fn ipv4_total_length_zero_or_shorter_than_its_header() {
        for total in [0u16, 10] {
            let junk = patched(|f| f[16..18].copy_from_slice(&total.to_be_bytes()));
            let r = run_frames("total_short.pcap", around(vec![junk]));
            assert_eq!(r.stat("undecodable"), 0, "total length {total}");
            assert_eq!(r.stat("attempts"), 2, "total length {total}: the patched SYN is read");
        }
    }

    #[test]
    fn tcp_data_offset_below_its_minimum() {
        expect_undecodable("doff_short.pcap", patched(|f| f[14 + 20 + 12] = 0x20));
    }

    #[test]
    fn tcp_data_offset_past_the_packet() {
        expect_undecodable("doff_long.pcap", patched(|f| f[14 + 20 + 12] = 0xf0));
    }

    /// An IPv4 total length larger than the frame: the capture cut it
    /// (snap length), which is counted, not an error.
    #[test]
    fn ipv4_total_length_longer_than_the_frame() {
        let r =
            run_frames("total_long.pcap", around(vec![patched(|f| f[16..18].copy_from_slice(&1500u16.to_be_bytes()))]));
        assert_eq!(r.code, 0);
        assert_eq!(r.outcomes().iter().filter(|o| *o == "refused").count(), 1);
        assert_eq!(r.stat("undecodable") + r.stat("payload_cut"), 1);
    }

    /// 300 IPv6 extension headers chained one after another before TCP.
    #[test]
    fn ipv6_extension_header_chain() {
        let mut packet = vec![0x60, 0, 0, 0];
        let chain = 300usize;
        let tcp = {
            let f = tcp_frame("[2001:db8::50]:40000", "[2001:db8::1]:5432", syn(ISN));
            f[14 + 40..].to_vec()
        };
        packet.extend_from_slice(&((chain * 8 + tcp.len()) as u16).to_be_bytes());
        packet.push(60); // destination options
        packet.push(64);
        packet.extend_from_slice(&"2001:db8::50".parse::<std::net::Ipv6Addr>().unwrap().octets());
        packet.extend_from_slice(&"2001:db8::1".parse::<std::net::Ipv6Addr>().unwrap().octets());
        for i in 0..chain {
            let next = if i + 1 == chain { 6 } else { 60 };
            packet.extend_from_slice(&[next, 0, 1, 4, 0, 0, 0, 0]);
        }
        packet.extend(tcp);
        let r = run_records("ext_chain.pcap", 101, vec![(at(0.0), packet)]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        // Read through, or given up on as undecodable: either way one packet, no more.
        assert_eq!(r.stat("packets"), 1);
        assert!(r.stat("attempts") + r.stat("undecodable") <= 1);
    }

    /// 100 VLAN tags stacked.
    #[test]
    fn vlan_tags_stacked_deep() {
        let f = tcp_frame(CLIENT, SERVER, syn(ISN));
        let mut frame = f[..12].to_vec();
        for _ in 0..100 {
            frame.extend_from_slice(&[0x81, 0x00, 0x00, 0x01]);
        }
        frame.extend_from_slice(&f[12..]);
        let r = run_frames("vlans.pcap", vec![frame]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        assert!(r.stat("attempts") + r.stat("undecodable") <= 1);
    }

    fn icmp_quoting(quoted_len: usize) -> Vec<u8> {
        let mut f = icmp_frame("192.0.2.254", CLIENT, SERVER, ISN, 3, 3);
        // The quote starts after Ethernet, IPv4 and the ICMP header.
        let quote_start = 14 + 20 + 8;
        f.truncate(quote_start + quoted_len);
        let total = (f.len() - 14) as u16;
        f[16..18].copy_from_slice(&total.to_be_bytes());
        f
    }

    /// ICMP errors quoting too little to name the attempt cannot answer it:
    /// the SYN still waits, and times out.
    #[test]
    fn icmp_quoting_cut_headers() {
        for (name, quoted) in [("icmp_ip_cut.pcap", 12), ("icmp_tcp_cut.pcap", 24)] {
            let frames = vec![
                tcp_frame(CLIENT, SERVER, syn(ISN)),
                icmp_quoting(quoted),
                tcp_frame("192.0.2.60:40000", SERVER, syn(1)),
            ];
            let times = [0.0, 0.001, 10.0];
            let records = frames.into_iter().zip(times).map(|(f, t)| (at(t), f)).collect();
            let r = run_records(name, 1, records);
            assert_eq!(r.code, 0, "{name}: {}", r.stderr);
            assert_eq!(r.total("unreachable"), 0, "{name}");
            assert_eq!(r.total("timeout"), 1, "{name}: {:?}", r.outcomes());
        }
    }
}

mod postgres {
    use super::*;

    fn only(r: &Ran) -> String {
        let o = r.outcomes();
        assert_eq!(o.len(), 1, "{o:?}");
        o[0].clone()
    }

    /// A startup packet's length below the protocol's 8: not PostgreSQL.
    #[test]
    fn startup_lengths_zero_and_three() {
        for len in [0u32, 3] {
            let mut client = len.to_be_bytes().to_vec();
            client.extend_from_slice(&196_608u32.to_be_bytes());
            let r = run_frames("startup_len.pcap", conversation(client, Vec::new()));
            assert_eq!(only(&r), "not_postgres", "length {len}");
        }
    }

    /// The server answers with a message of impossible length: the login
    /// cannot be read, and is never taken for a success.
    #[test]
    fn server_lengths_zero_three_and_2_31() {
        for len in [0u32, 3, (1 << 31) - 1] {
            let mut server = vec![b'R'];
            server.extend_from_slice(&len.to_be_bytes());
            server.extend(auth_ok_ready());
            let r = run_frames("server_len.pcap", conversation(startup("alice"), server));
            let outcome = only(&r);
            assert!(!["success", "auth_failed"].contains(&outcome.as_str()), "length {len}: {outcome}");
        }
    }

    /// A user name with no terminating NUL: the server still let the client
    /// in, so it is a login.
    #[test]
    fn unterminated_string_in_the_startup_packet() {
        let body = b"user\0alice";
        let mut client = ((body.len() + 8) as u32).to_be_bytes().to_vec();
        client.extend_from_slice(&196_608u32.to_be_bytes());
        client.extend_from_slice(body);
        let r = run_frames("unterminated.pcap", conversation(client, auth_ok_ready()));
        assert_eq!(only(&r), "success");
    }

    /// An ErrorResponse with 10,000 fields after a password request, its
    /// SQLSTATE first: a failed password, read within bounded memory.
    #[test]
    fn error_response_with_ten_thousand_fields() {
        let mut body = b"SFATAL\0VFATAL\0C28P01\0Mpassword authentication failed for user \"alice\"\0".to_vec();
        for i in 0..10_000 {
            body.extend_from_slice(format!("x{i}\0").as_bytes());
        }
        body.push(0);
        let mut server = typed(b'R', &5u32.to_be_bytes().iter().chain(&[1, 2, 3, 4]).copied().collect::<Vec<_>>());
        server.extend(typed(b'E', &body));
        let mut client = startup("alice");
        client.extend(typed(b'p', b"md5deadbeef\0"));
        let r = run_frames("many_fields.pcap", conversation(client, server));
        assert_eq!(only(&r), "auth_failed");
        // The body is over the 8 KiB read of it: said, per attempt and in all.
        assert_eq!(r.doc()["attempts"][0]["pg"]["limits_cut"], 1);
        assert_eq!(r.stat("pg_limits_cut"), 1);
    }

    /// A 5,000-byte user name: a login, the name kept in part, and said so.
    #[test]
    fn a_user_name_over_the_kept_length() {
        let user = "u".repeat(5000);
        let r = run_frames("long_user.pcap", conversation(startup(&user), auth_ok_ready()));
        assert_eq!(only(&r), "success");
        let pg = &r.doc()["attempts"][0]["pg"];
        assert!(pg["user"].as_str().unwrap().len() <= 1024);
        assert_eq!(pg["limits_cut"], 1);
    }

    /// 10,000 NoticeResponses during a login that succeeds.
    #[test]
    fn ten_thousand_notices() {
        let mut server = typed(b'R', &0u32.to_be_bytes());
        for i in 0..10_000 {
            server.extend(typed(b'N', format!("SNOTICE\0VNOTICE\0C00000\0Mnotice {i}\0\0").as_bytes()));
        }
        server.extend(typed(b'Z', b"I"));
        let r = run_frames("notices.pcap", conversation(startup("alice"), server));
        assert_eq!(only(&r), "success");
        let pg = &r.doc()["attempts"][0]["pg"];
        assert_eq!(pg["notices"], 10_000);
        let kept = pg["first_notices"].as_array().map_or(0, Vec::len);
        assert!(kept <= 4);
        assert_eq!(pg["limits_cut"], 10_000 - kept as u64, "every notice not kept is said");
        assert_eq!(r.stat("pg_limits_cut"), 1);
    }

    /// 256 MB of DataRows in one stream after a login: the login is read,
    /// the rows pass in constant memory.
    #[test]
    fn a_very_large_single_stream() {
        const SEGMENT: usize = 1400;
        const TOTAL: usize = 256 << 20;
        let row = leak({
            // DataRow messages of exactly one segment each.
            let mut m = vec![b'D'];
            m.extend_from_slice(&((SEGMENT - 1) as u32).to_be_bytes());
            m.resize(SEGMENT, b'r');
            m
        });
        let client = leak(startup("alice"));
        let login = leak(auth_ok_ready());
        let c = client.len() as u32;
        let mut out = pcap_bytes(1, 262144, &[]);
        let mut t = 0.0;
        let mut put = |out: &mut Vec<u8>, frame: Vec<u8>| {
            t += 1e-5;
            out.extend(&pcap_bytes(1, 262144, &[(at(t), frame.clone(), frame.len() as u32)])[24..]);
        };
        put(&mut out, tcp_frame(CLIENT, SERVER, syn(ISN)));
        put(&mut out, tcp_frame(SERVER, CLIENT, syn_ack(SISN, ISN + 1)));
        put(&mut out, tcp_frame(CLIENT, SERVER, data(ISN + 1, SISN + 1, client)));
        put(&mut out, tcp_frame(SERVER, CLIENT, data(SISN + 1, ISN + 1 + c, login)));
        let mut seq = SISN + 1 + login.len() as u32;
        for _ in 0..TOTAL / SEGMENT {
            put(&mut out, tcp_frame(SERVER, CLIENT, data(seq, ISN + 1 + c, row)));
            seq = seq.wrapping_add(SEGMENT as u32);
        }
        let r = run_file("large_stream.pcap", &out, SMALL_CEILING_KIB);
        assert_eq!(r.code, 0, "{}", r.stderr);
        assert_eq!(only(&r), "success");
        let sent = (TOTAL / SEGMENT * SEGMENT + login.len()) as u64;
        assert_eq!(r.doc()["attempts"][0]["traffic"]["server_bytes"], sent);
    }

    /// A hundred thousand SYNs on one client port, each with its own
    /// sequence number: each is a new attempt, and the table stays small.
    #[test]
    fn new_sequence_numbers_on_one_port() {
        let records: Vec<_> =
            (0..100_000u32).map(|i| (at(f64::from(i) * 0.0001), tcp_frame(CLIENT, SERVER, syn(i * 7919)))).collect();
        let r = run_records("one_port.pcap", 1, records);
        assert_eq!(r.stat("attempts"), 100_000);
    }

    /// Data 2^31 bytes ahead of the stream: held or declared a gap, never
    /// buffered as 2 GB.
    #[test]
    fn data_two_gigabytes_ahead() {
        let mut frames = conversation(startup("alice"), auth_ok_ready());
        frames.insert(5, tcp_frame(SERVER, CLIENT, data(SISN.wrapping_add(1 << 31), ISN + 1, b"Zjunk")));
        let r = run_frames("far_ahead.pcap", frames);
        assert_eq!(only(&r), "success");
    }

    /// The same SYN retransmitted every second a thousand times: one
    /// attempt, every SYN counted, a bounded number of their times kept.
    #[test]
    fn a_thousand_retransmissions() {
        let records: Vec<_> = (0..1000).map(|i| (at(f64::from(i)), tcp_frame(CLIENT, SERVER, syn(ISN)))).collect();
        let r = run_records("retransmits.pcap", 1, records);
        assert_eq!(r.stat("attempts"), 1);
        let syn = &r.doc()["attempts"][0]["syn"];
        assert_eq!(syn["count"], 1000);
        let times = syn["at_ms"].as_array().unwrap();
        assert_eq!(times.len(), 16);
        let first: Vec<f64> = (0..15).map(|i| f64::from(i) * 1000.0).collect();
        assert_eq!(times[..15].iter().filter_map(|t| t.as_f64()).collect::<Vec<_>>(), first, "the first SYNs are kept");
        assert_eq!(times.last().unwrap(), 999_000.0, "the latest SYN is kept");
    }
}
