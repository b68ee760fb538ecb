//! Where PostgreSQL listens, read from a capture on its host: refused on one
//! address while loopback takes connections (listen_addresses), refused on
//! one port while another port takes them, and localhost refused with
//! nothing on loopback.

use crate::postgres::logged_in;
use crate::recovery::login_between;
use crate::util::*;

/// A SYN answered by the server address's own RST.
fn refused(client: &str, server: &str, t: f64) -> Vec<(pgreach::time::Timestamp, Vec<u8>)> {
    vec![(at(t), tcp_frame(client, server, syn(100))), (at(t + 0.001), tcp_frame(server, client, rst_ack(0, 101)))]
}

fn refused_evidence(frames: Vec<(pgreach::time::Timestamp, Vec<u8>)>, name: &str) -> Vec<String> {
    let mut frames = frames;
    frames.sort_by_key(|f| f.0);
    let records: Vec<_> = frames.into_iter().map(|(t, f)| (t, f.clone(), f.len() as u32)).collect();
    let path = temp_file(name, &pcap_bytes(1, 65535, &records)).to_string_lossy().into_owned();
    let (doc, _) = analyze_json(&["-p", "5432", "-p", "5433", &path]);
    doc["diagnosis"]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["outcome"] == "refused")
        .flat_map(|f| f["evidence"].as_array().unwrap().iter().map(|e| e["text"].as_str().unwrap().to_owned()))
        .collect()
}

#[test]
fn listening_on_localhost_only() {
    // A local client logs in over loopback; a network client is refused on
    // the host's own address at the same time.
    let mut frames = login_between("127.0.0.1:40000", "127.0.0.1:5432", 0.0, "local", logged_in());
    frames.extend(refused("192.0.2.100:41000", "192.0.2.2:5432", 0.5));
    let lines = refused_evidence(frames, "listen-localhost.pcap");
    assert!(
        lines.iter().any(|l| l.contains("192.0.2.2 refused port 5432 while 127.0.0.1 took connections")
            && l.contains("listens on 127.0.0.1 only")),
        "{lines:?}"
    );
}

#[test]
fn the_wrong_port_or_a_second_cluster() {
    let mut frames = login_between("192.0.2.101:40000", "192.0.2.1:5433", 0.0, "app", logged_in());
    frames.extend(refused("192.0.2.100:41000", "192.0.2.1:5432", 0.5));
    let lines = refused_evidence(frames, "listen-port.pcap");
    assert!(lines.iter().any(|l| l.contains("192.0.2.1 refused port 5432 while it took connections on port 5433")));
    assert!(lines.iter().all(|l| !l.contains("listens on")), "one address: {lines:?}");
}

#[test]
fn localhost_refused_with_nothing_on_loopback() {
    let frames = refused("127.0.0.1:41000", "127.0.0.1:5432", 0.0);
    let lines = refused_evidence(frames, "listen-container.pcap");
    assert!(lines.iter().any(|l| l.contains("localhost is the client itself")), "{lines:?}");
    // With loopback taking connections at the time, that is not said.
    let mut frames = login_between("127.0.0.1:40000", "127.0.0.1:5433", 0.0, "local", logged_in());
    frames.extend(refused("127.0.0.1:41000", "127.0.0.1:5432", 0.5));
    let lines = refused_evidence(frames, "listen-container-2.pcap");
    assert!(lines.iter().all(|l| !l.contains("localhost is the client itself")), "{lines:?}");
}
