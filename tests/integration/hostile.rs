//! Hostile input: wire strings chosen by an attacker (terminal escapes,
//! OSC 52 clipboard writes, newlines, bidi overrides, spreadsheet formulas)
//! reach no report raw, in any format.

use crate::formats::{markdown_table, FORMATS};
use crate::util::{ack, at, data, fin, pcap_bytes, pgreach, stderr, syn, syn_ack, tcp_frame, temp_file};

/// Names and server words an attacker can put on the wire.
const USER: &str = "\x1b]52;c;SGVsbG8=\x07mallory\n# injected heading";
const DATABASE: &str = "=cmd|' /C calc'!A0";
const APPLICATION: &str = "\u{202e}gnp.exe\x1b[2J| row |\r\n| fake | row |";
const MESSAGE: &str = "\x1b]0;owned\x07password authentication failed\n## injected";
const DETAIL: &str = "@SUM(1+1)\u{9b}31m\x7f";
const HINT: &str = "+cmd`tick`\t-x\u{2066}";
const SECOND_USER: &str = "-2+3\x01\x02";

fn leak(bytes: Vec<u8>) -> &'static [u8] {
    Box::leak(bytes.into_boxed_slice())
}

/// A v3 StartupMessage with the given parameters.
fn startup(params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = 196_608u32.to_be_bytes().to_vec();
    for (k, v) in params {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut out = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    out.extend(body);
    out
}

/// An ErrorResponse with severity, SQLSTATE, message, detail and hint.
fn error_response(message: &str, detail: &str, hint: &str) -> Vec<u8> {
    let mut body = Vec::new();
    for (code, value) in
        [(b'S', "FATAL"), (b'V', "FATAL"), (b'C', "28P01"), (b'M', message), (b'D', detail), (b'H', hint)]
    {
        body.push(code);
        body.extend_from_slice(value.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut out = vec![b'E'];
    out.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    out.extend(body);
    out
}

/// One login attempt from `client` that the server refuses with the hostile error.
fn refused_login(client: &str, start: f64, user: &str) -> Vec<(pgreach::time::Timestamp, Vec<u8>)> {
    let server = crate::util::SERVER;
    let hello = leak(startup(&[("user", user), ("database", DATABASE), ("application_name", APPLICATION)]));
    let error = leak(error_response(MESSAGE, DETAIL, HINT));
    let (c, s) = (1000u32, 5000u32);
    let hello_end = c + 1 + hello.len() as u32;
    let error_end = s + 1 + error.len() as u32;
    vec![
        (at(start), tcp_frame(client, server, syn(c))),
        (at(start + 0.001), tcp_frame(server, client, syn_ack(s, c + 1))),
        (at(start + 0.002), tcp_frame(client, server, ack(c + 1, s + 1))),
        (at(start + 0.003), tcp_frame(client, server, data(c + 1, s + 1, hello))),
        (at(start + 0.004), tcp_frame(server, client, data(s + 1, hello_end, error))),
        (at(start + 0.005), tcp_frame(server, client, fin(error_end, hello_end))),
        (at(start + 0.006), tcp_frame(client, server, fin(hello_end, error_end + 1))),
        (at(start + 0.007), tcp_frame(server, client, ack(error_end + 1, hello_end + 1))),
    ]
}

fn hostile_capture(test: &str) -> std::path::PathBuf {
    let mut packets = refused_login("192.0.2.66:40001", 0.0, USER);
    packets.extend(refused_login("192.0.2.67:40002", 5.0, SECOND_USER));
    let records: Vec<_> = packets.into_iter().map(|(ts, f)| (ts, f.clone(), f.len() as u32)).collect();
    temp_file(&format!("hostile-names-{test}.pcap"), &pcap_bytes(1, 65535, &records))
}

fn render(format: &str, capture: &str) -> Vec<u8> {
    let out = pgreach(&["analyze", "--connections", "--format", format, capture]);
    assert!(out.status.success(), "{format}: {}", stderr(&out));
    out.stdout
}

#[test]
fn no_format_writes_a_control_character_from_the_wire() {
    let capture = hostile_capture("all");
    let capture = capture.to_str().unwrap();
    for format in FORMATS {
        let bytes = render(format, capture);
        assert!(!bytes.contains(&0x1b), "{format}: ESC in the output");
        if let Some(b) = bytes.iter().find(|&&b| b < 0x20 && b != b'\n' && b != b'\t') {
            panic!("{format}: control byte {b:#04x} in the output");
        }
        let text = String::from_utf8(bytes).expect("UTF-8");
        if format.contains("json") {
            // JSON keeps the exact strings; serde escapes the C0 controls.
            continue;
        }
        for hidden in ['\u{9b}', '\u{7f}', '\u{202e}', '\u{2066}'] {
            assert!(!text.contains(hidden), "{format}: {hidden:?} written raw");
        }
        assert!(text.contains("x07mallory"), "{format}: user not shown");
        assert!(text.contains("u{202e}gnp.exe"), "{format}: bidi override not shown");
    }
}

#[test]
fn json_keeps_the_exact_wire_strings() {
    let capture = hostile_capture("json");
    let out = render("json", capture.to_str().unwrap());
    let doc: serde_json::Value = serde_json::from_slice(&out).expect("JSON");
    let attempts = doc["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 2);
    let pg = &attempts[0]["pg"];
    assert_eq!(pg["user"], USER);
    assert_eq!(pg["application_name"], APPLICATION);
    assert_eq!(pg["error"]["message"], MESSAGE);
    assert_eq!(pg["error"]["hint"], HINT);
    assert_eq!(attempts[1]["pg"]["user"], SECOND_USER);
}

#[test]
fn csv_cells_are_never_formulas() {
    let capture = hostile_capture("csv");
    let out = render("csv", capture.to_str().unwrap());
    let mut reader = csv::Reader::from_reader(out.as_slice());
    let header = reader.headers().expect("header").clone();
    let rows: Vec<csv::StringRecord> = reader.records().map(|r| r.expect("a CSV row")).collect();
    assert_eq!(rows.len(), 2, "one row per attempt");
    for row in &rows {
        assert_eq!(row.len(), header.len());
        for cell in row {
            assert!(!cell.starts_with(['=', '+', '-', '@', '\t', '\r']), "formula cell {cell:?}");
        }
    }
    let col = |name: &str| header.iter().position(|h| h == name).expect(name);
    assert_eq!(&rows[0][col("database")], "'=cmd|' /C calc'!A0");
    assert_eq!(&rows[0][col("detail")], "'@SUM(1+1)\\u{9b}31m\\x7f");
    assert_eq!(&rows[1][col("user")], "'-2+3\\x01\\x02");
}

#[test]
fn markdown_structure_survives_hostile_names() {
    let capture = hostile_capture("markdown");
    let doc = String::from_utf8(render("markdown", capture.to_str().unwrap())).expect("UTF-8");
    let headings: Vec<&str> = doc.lines().filter(|l| l.starts_with('#')).collect();
    for h in &headings {
        assert!(h.starts_with("# pgreach report: ") || !h.contains("injected"), "wire text became a heading: {h}");
    }
    assert!(!doc.lines().any(|l| l.trim_start().starts_with("| fake")), "wire text became a table row");
    let (_, attempts) = markdown_table(&doc, "Attempts");
    assert_eq!(attempts.len(), 2);
    let (header, clients) = markdown_table(&doc, "Clients");
    let users = header.iter().position(|h| h == "users").expect("users column");
    assert!(clients.iter().any(|row| row[users].contains("mallory")));
}
