//! Every report format: Markdown parses as tables with the staged rows, JSON
//! and NDJSON validate against the documented schema, CSV has one row per
//! staged attempt, the HTML chart is drawn by a real browser, redaction
//! leaves no original name behind, and examples/ is up to date.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};

use crate::util::{analyze_json, pgreach, project_root, stderr, temp_file};

pub const FORMATS: [&str; 6] = ["table", "json", "ndjson", "csv", "markdown", "html"];
const INCIDENT: &str = "captures/incident.pcap";

fn expected(capture: &str) -> Value {
    let path = project_root().join("captures").join(format!("{capture}.expected.json"));
    serde_json::from_str(&std::fs::read_to_string(path).expect("expected file")).expect("expected JSON")
}

fn run(args: &[&str]) -> String {
    let out = pgreach(args);
    assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// The staged attempts per client address: (attempts, logins).
fn staged_per_client(capture: &str) -> BTreeMap<String, (u64, u64)> {
    let mut per = BTreeMap::new();
    for a in expected(capture)["attempts"].as_array().unwrap() {
        let e = per.entry(a["client"].as_str().unwrap().to_owned()).or_insert((0, 0));
        e.0 += 1;
        e.1 += u64::from(a["outcome"] == "success");
    }
    per
}

/// The cells of one Markdown table row, split at unescaped pipes.
fn markdown_cells(line: &str) -> Vec<String> {
    let inner = line.trim().strip_prefix('|').and_then(|l| l.strip_suffix('|')).expect("a table row");
    let mut cells = vec![String::new()];
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    cells.last_mut().unwrap().push(next);
                }
            }
            '|' => cells.push(String::new()),
            _ => cells.last_mut().unwrap().push(c),
        }
    }
    cells.into_iter().map(|c| c.trim().to_owned()).collect()
}

/// The table under `## title`: header and rows, each checked to have the
/// header's width and a delimiter row under the header.
pub fn markdown_table(doc: &str, title: &str) -> (Vec<String>, Vec<Vec<String>>) {
    let heading = format!("## {title}\n\n");
    let start = doc.find(&heading).unwrap_or_else(|| panic!("no {title} section")) + heading.len();
    let mut lines = doc[start..].lines().take_while(|l| l.starts_with('|'));
    let header = markdown_cells(lines.next().expect("header"));
    let rule = markdown_cells(lines.next().expect("delimiter row"));
    assert_eq!(rule.len(), header.len());
    assert!(rule.iter().all(|c| c == "---" || c == "---:"), "{rule:?}");
    let rows: Vec<Vec<String>> = lines.map(markdown_cells).collect();
    for row in &rows {
        assert_eq!(row.len(), header.len(), "{row:?}");
    }
    (header, rows)
}

#[test]
fn markdown_tables_hold_the_staged_clients() {
    let doc = run(&["analyze", "--format", "markdown", "--connections", INCIDENT]);
    let staged = staged_per_client("incident");
    let (header, rows) = markdown_table(&doc, "Clients");
    let col = |name: &str| header.iter().position(|h| h == name).unwrap_or_else(|| panic!("column {name}"));
    let mut seen = BTreeMap::new();
    for row in &rows {
        let n = |name: &str| row[col(name)].parse::<u64>().expect("a count");
        seen.insert(row[col("client")].clone(), (n("attempts"), n("logged in")));
    }
    assert_eq!(seen, staged);
    let (_, attempts) = markdown_table(&doc, "Attempts");
    assert_eq!(attempts.len(), staged.values().map(|v| v.0).sum::<u64>() as usize);
    // The timeline covers the capture; the windows are the staged failure periods.
    assert!(markdown_table(&doc, "Timeline").1.len() >= 2);
    assert!(!markdown_table(&doc, "Incident windows").1.is_empty());
}

#[test]
fn markdown_escapes_what_the_server_said() {
    let doc = run(&["analyze", "--format", "markdown", "--connections", "captures/pg_hba_rejected.pcap"]);
    let (header, rows) = markdown_table(&doc, "Attempts");
    let evidence = header.iter().position(|h| h == "evidence").unwrap();
    // The server's message, pipes and underscores included, survives as text.
    assert!(rows.iter().any(|r| r[evidence].contains("no pg_hba.conf entry for replication connection")), "{rows:?}");
}

fn schema() -> Value {
    let text =
        std::fs::read_to_string(project_root().join("docs/report.schema.json")).expect("docs/report.schema.json");
    serde_json::from_str(&text).expect("schema JSON")
}

fn validator(schema: &Value) -> jsonschema::Validator {
    jsonschema::validator_for(schema).expect("a valid schema")
}

fn assert_valid(v: &jsonschema::Validator, doc: &Value, what: &str) {
    let errors: Vec<String> = v.iter_errors(doc).take(5).map(|e| format!("{} at {}", e, e.instance_path())).collect();
    assert!(errors.is_empty(), "{what}: {errors:#?}");
}

fn all_captures() -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(project_root().join("captures"))
        .expect("captures/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "pcap" || x == "pcapng"))
        .map(|p| format!("captures/{}", p.file_name().unwrap().to_string_lossy()))
        .collect();
    files.sort();
    files
}

#[test]
fn json_and_ndjson_follow_the_documented_schema() {
    let schema = schema();
    let document = validator(&schema);
    let attempt = validator(&json!({
        "$schema": schema["$schema"],
        "$defs": schema["$defs"],
        "$ref": "#/$defs/attempt",
    }));
    let captures = all_captures();
    assert!(captures.len() >= 20);
    for file in &captures {
        // Each capture with the arguments it was recorded for (its ports).
        let name = file.trim_start_matches("captures/").split('.').next().unwrap();
        let args: Vec<String> = expected(name)["args"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
            .unwrap_or_default();
        let with = |format: &'static str| {
            let mut all = vec!["analyze", "--format", format, file.as_str()];
            all.extend(args.iter().map(String::as_str));
            run(&all)
        };
        let doc: Value = serde_json::from_str(&with("json")).expect("JSON");
        assert_valid(&document, &doc, file);
        let lines = with("ndjson");
        let mut n = 0;
        for line in lines.lines() {
            assert_valid(&attempt, &serde_json::from_str(line).expect("one JSON object per line"), file);
            n += 1;
        }
        // A pooler's own connections to PostgreSQL are listed but counted apart.
        let legs = doc["attempts"].as_array().unwrap().iter().filter(|a| a["pooler_leg"] == true).count() as u64;
        assert_eq!(n, doc["totals"]["attempts"].as_u64().unwrap() + legs, "{file}: one line per attempt");
    }
    // The schema is strict: a renamed field or an unknown outcome fails.
    let mut doc: Value = serde_json::from_str(&run(&["analyze", "--format", "json", INCIDENT])).unwrap();
    doc["attempts"][0]["outcome"] = json!("fine");
    assert!(!document.is_valid(&doc));
    let mut doc: Value = serde_json::from_str(&run(&["analyze", "--format", "json", INCIDENT])).unwrap();
    let totals = doc["totals"].take();
    doc["total"] = totals;
    assert!(!document.is_valid(&doc));
}

#[test]
fn every_schema_property_is_documented() {
    fn walk(v: &Value, path: &str, missing: &mut Vec<String>) {
        if let Some(props) = v.get("properties").and_then(Value::as_object) {
            for (name, p) in props {
                if p.get("description").and_then(Value::as_str).is_none_or(str::is_empty) {
                    missing.push(format!("{path}.{name}"));
                }
                walk(p, &format!("{path}.{name}"), missing);
            }
        }
        for key in ["items", "$defs", "additionalProperties"] {
            match v.get(key) {
                Some(Value::Object(o)) if key == "$defs" => {
                    o.iter().for_each(|(k, d)| walk(d, &format!("#{k}"), missing))
                }
                Some(inner) => walk(inner, path, missing),
                None => {}
            }
        }
    }
    let mut missing = Vec::new();
    walk(&schema(), "", &mut missing);
    assert!(missing.is_empty(), "undocumented: {missing:?}");
}

#[test]
fn csv_has_one_row_per_staged_attempt() {
    let text = run(&["analyze", "--format", "csv", INCIDENT]);
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let header = reader.headers().expect("header").clone();
    let col = |name: &str| header.iter().position(|h| h == name).unwrap_or_else(|| panic!("column {name}"));
    let mut outcomes: BTreeMap<(String, String), u64> = BTreeMap::new();
    for row in reader.records() {
        let row = row.expect("a well-formed row");
        let client: std::net::SocketAddr = row[col("client")].parse().expect("client address");
        *outcomes.entry((client.ip().to_string(), row[col("outcome")].to_owned())).or_default() += 1;
    }
    let mut staged: BTreeMap<(String, String), u64> = BTreeMap::new();
    for a in expected("incident")["attempts"].as_array().unwrap() {
        let key = (a["client"].as_str().unwrap().to_owned(), a["outcome"].as_str().unwrap().to_owned());
        *staged.entry(key).or_default() += 1;
    }
    assert_eq!(outcomes, staged);
}

#[test]
fn output_file_and_no_colour_off_a_terminal() {
    let dir = temp_file("pgreach-formats-out", b"");
    std::fs::remove_file(&dir).ok();
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("report.md");
    let out = pgreach(&["analyze", "--format", "markdown", "-o", path.to_str().unwrap(), INCIDENT]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(out.stdout.is_empty(), "the report goes to the file only");
    let written = std::fs::read_to_string(&path).unwrap();
    assert!(written.starts_with("# pgreach report"));
    // Standard output here is a pipe: no escape sequences.
    let table = run(&["analyze", INCIDENT]);
    assert!(!table.contains('\u{1b}'));
    let bad = pgreach(&["analyze", "-o", "/nonexistent-dir/r.txt", INCIDENT]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("/nonexistent-dir/r.txt"), "{}", stderr(&bad));
}

/// Every address, user and database the recorder staged in these captures.
fn staged_identifiers(captures: &[&str]) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    for capture in captures {
        // A pooler's server leg (PostgreSQL's address behind it).
        if let Some(server) = expected(capture)["pooler_legs"]["server"].as_str() {
            ids.insert(server.parse::<std::net::SocketAddr>().unwrap().ip().to_string());
        }
        for a in expected(capture)["attempts"].as_array().unwrap() {
            ids.insert(a["client"].as_str().unwrap().to_owned());
            let server: std::net::SocketAddr = a["server"].as_str().unwrap().parse().unwrap();
            ids.insert(server.ip().to_string());
            // "postgres" is also a word of the reports' own prose.
            if let Some(user) = a["user"].as_str().filter(|u| *u != "postgres") {
                ids.insert(user.to_owned());
            }
        }
    }
    // The lab's application_name (xtask/src/lab.rs).
    ids.insert("pgreach-lab".to_owned());
    ids
}

#[test]
fn redaction_leaves_no_original_identifier() {
    let captures =
        ["incident", "pg_hba_rejected", "pg_auth_failures", "ipv6", "nft_reject_admin", "pgbouncer_server_down_any"];
    let ids = staged_identifiers(&captures);
    assert!(ids.contains("192.0.2.100") && ids.contains("blocked") && ids.contains("2001:db8::1"), "{ids:?}");
    for capture in captures {
        let file = format!("captures/{capture}.pcap");
        for format in FORMATS {
            let plain = run(&["analyze", "--connections", "--format", format, &file]);
            let redacted = run(&["analyze", "--connections", "--redact", "--format", format, &file]);
            assert!(ids.iter().any(|id| plain.contains(id.as_str())), "{capture} {format} names someone");
            for id in &ids {
                assert!(!redacted.contains(id.as_str()), "{capture} {format} --redact shows {id}");
            }
        }
    }
    // Stable: the same client gets the same pseudonym in every attempt.
    let doc: Value =
        serde_json::from_str(&run(&["analyze", "--redact", "--format", "json", "captures/pg_auth_failures.pcap"]))
            .unwrap();
    let clients: BTreeSet<&str> = doc["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["client"].as_str().unwrap().split(':').next().unwrap())
        .collect();
    assert_eq!(clients.len(), 1, "{clients:?}");
    let users: BTreeSet<&str> =
        doc["attempts"].as_array().unwrap().iter().filter_map(|a| a["pg"]["user"].as_str()).collect();
    assert_eq!(users.len(), 4, "four staged users, four pseudonyms: {users:?}");
}

/// Renders the HTML report in headless Chromium: its DOM has one bucket
/// group per timeline bucket, and the screenshot shows the chart's colours.
#[test]
fn html_chart_is_drawn_by_a_browser() {
    let Some(chromium) = ["/usr/bin/chromium", "/usr/bin/chromium-browser"].into_iter().find(|p| Path::new(p).exists())
    else {
        assert!(std::env::var_os("CI").is_none(), "CI must have chromium (setup.sh installs it)");
        eprintln!("SKIPPED: chromium is not installed (./setup.sh test installs it)");
        return;
    };
    let doc: Value = serde_json::from_str(&run(&["analyze", "--format", "json", INCIDENT])).unwrap();
    let buckets = doc["timeline"]["buckets"].as_array().unwrap().len();
    let dir = temp_file("pgreach-html", b"");
    std::fs::remove_file(&dir).ok();
    std::fs::create_dir_all(&dir).unwrap();
    let html = dir.join("incident.html");
    let out = pgreach(&["analyze", "--format", "html", "-o", html.to_str().unwrap(), INCIDENT]);
    assert!(out.status.success(), "{}", stderr(&out));
    let url = format!("file://{}", html.display());
    let browser = |extra: &[&str]| {
        let out = Command::new(chromium)
            .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
            .args(["--no-first-run", "--hide-scrollbars", "--window-size=1280,900"])
            .arg(format!("--user-data-dir={}", dir.join("profile").display()))
            .args(extra)
            .arg(&url)
            .output()
            .expect("run chromium");
        assert!(out.status.success(), "chromium: {}", stderr(&out));
        out.stdout
    };
    let dom = String::from_utf8(browser(&["--dump-dom"])).unwrap();
    assert_eq!(dom.matches("<g class=\"bucket\"").count(), buckets, "one group per bucket");
    let png_path = dir.join("incident.png");
    browser(&[&format!("--screenshot={}", png_path.display())]);
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&png_path).expect("screenshot")));
    let mut reader = decoder.read_info().expect("a PNG");
    let mut pixels = vec![0; reader.output_buffer_size().expect("size")];
    let info = reader.next_frame(&mut pixels).expect("PNG frame");
    let channels = info.color_type.samples();
    let count = |rgb: [u8; 3]| pixels.chunks(channels).filter(|p| p[..3] == rgb).count();
    // Bars of the staged classes are large areas; a class not staged shows
    // only in the legend's small square.
    let staged: BTreeSet<String> = expected("incident")["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["outcome"].as_str().unwrap().to_owned())
        .collect();
    for (outcome, rgb) in [
        ("success", [0x2e, 0x7d, 0x32]),
        ("refused", [0xc6, 0x28, 0x28]),
        ("unreachable", [0xef, 0x6c, 0x00]),
        ("timeout", [0x6a, 0x1b, 0x9a]),
    ] {
        assert!(staged.contains(outcome));
        assert!(count(rgb) > 2000, "{outcome} bars drawn: {} pixels", count(rgb));
    }
    let login_failed = count([0x15, 0x65, 0xc0]);
    assert!(login_failed > 0 && login_failed < 500, "login failed only in the legend: {login_failed}");
}

/// The page fits a laptop and a narrow window: nothing wider than the
/// window (tables scroll or wrap inside it), the chart scales, the header
/// says what made it.
#[test]
fn html_fits_1280_and_800_pixel_windows() {
    let Some(chromium) = ["/usr/bin/chromium", "/usr/bin/chromium-browser"].into_iter().find(|p| Path::new(p).exists())
    else {
        assert!(std::env::var_os("CI").is_none(), "CI must have chromium (setup.sh installs it)");
        eprintln!("SKIPPED: chromium is not installed (./setup.sh test installs it)");
        return;
    };
    let dir = temp_file("pgreach-html-fit", b"");
    std::fs::remove_file(&dir).ok();
    std::fs::create_dir_all(&dir).unwrap();
    for capture in [INCIDENT, "captures/server_stopped.pcap"] {
        let page = run(&["analyze", "--format", "html", "--connections", capture]);
        assert!(
            page.contains(&format!("<dt>command</dt><dd>pgreach analyze --format html --connections {capture}</dd>"))
        );
        assert!(page.contains("<dt>made</dt><dd>2026-11-24T12:00:00Z</dd>"), "SOURCE_DATE_EPOCH is the time of making");
        assert!(page.contains("<code>ss -ltnp</code>") || !page.contains("ss -ltnp"), "inline code is code");
        // The check runs in the page once laid out, and leaves its answer in the DOM.
        let probe = "<script>document.body.dataset.overflow = \
                     document.documentElement.scrollWidth - window.innerWidth;</script></body>";
        let html = dir.join("probe.html");
        std::fs::write(&html, page.replace("</body>", probe)).unwrap();
        for width in [1280, 800] {
            let out = Command::new(chromium)
                .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
                .args(["--no-first-run", "--hide-scrollbars", &format!("--window-size={width},900"), "--dump-dom"])
                .arg(format!("--user-data-dir={}", dir.join("profile").display()))
                .arg(format!("file://{}", html.display()))
                .output()
                .expect("run chromium");
            let dom = String::from_utf8_lossy(&out.stdout);
            let overflow = dom.split("data-overflow=\"").nth(1).and_then(|r| r.split('"').next());
            assert_eq!(overflow, Some("0"), "{capture} at {width} px overflows by {overflow:?}");
        }
    }
    // A capture of 6 ms still shows its shape: finer buckets than a second.
    let short = run(&["analyze", "--format", "html", "captures/server_stopped.pcap"]);
    assert!(short.matches("<g class=\"bucket\"").count() > 1, "one bar for the whole capture");
    // Under --redact, the command (which may name clients) is left out.
    let redacted = run(&["analyze", "--format", "html", "--redact", INCIDENT]);
    assert!(!redacted.contains("<dt>command</dt>"));
}

/// `cargo xtask examples` writes the reports listed in examples/MANIFEST;
/// they must match what this build produces.
#[test]
fn examples_are_up_to_date() {
    let examples = project_root().join("examples");
    let manifest = std::fs::read_to_string(examples.join("MANIFEST")).expect("examples/MANIFEST");
    let mut formats = BTreeSet::new();
    for line in manifest.lines().filter(|l| !l.trim().is_empty() && !l.starts_with('#')) {
        let mut words = line.split_whitespace();
        let file = words.next().unwrap();
        let mut args = vec!["analyze"];
        let (captures, flags): (Vec<&str>, Vec<&str>) = words.partition(|w| w.starts_with("captures/"));
        args.extend(flags);
        formats.insert(args.iter().position(|a| *a == "--format").map_or("table", |i| args[i + 1]));
        args.push(captures.first().copied().unwrap_or(INCIDENT));
        let saved = std::fs::read_to_string(examples.join(file))
            .unwrap_or_else(|e| panic!("examples/{file}: {e}; run `cargo xtask examples`"));
        assert!(run(&args) == saved, "examples/{file} is out of date: run `cargo xtask examples`");
    }
    assert_eq!(formats, FORMATS.into_iter().collect(), "an example in every format");
}

/// A SYN flood from thousands of sources must not turn the report into
/// thousands of rows: the tables show --max-rows clients, JSON all.
#[test]
fn tables_show_at_most_max_rows_clients() {
    let staged = staged_per_client("incident");
    let doc = run(&["analyze", "--format", "markdown", "--max-rows", "5", INCIDENT]);
    let (_, rows) = markdown_table(&doc, "Clients");
    assert_eq!(rows.len(), 5);
    assert!(doc.contains(&format!("(+ {} more clients", staged.len() - 5)), "{doc}");
    let table = run(&["analyze", "--max-rows", "5", INCIDENT]);
    assert!(table.contains(&format!("(+ {} more clients", staged.len() - 5)));
    let json: Value =
        serde_json::from_str(&run(&["analyze", "--format", "json", "--max-rows", "5", INCIDENT])).unwrap();
    assert_eq!(json["clients"].as_array().unwrap().len(), staged.len());
}

#[test]
fn attempts_carry_split_addresses_and_the_community_id_tshark_computes() {
    for capture in ["captures/normal.pcap", "captures/ipv6.pcap", "captures/nft_reject.pcap"] {
        let (doc, _) = analyze_json(&[capture]);
        let tshark = Command::new("tshark")
            .args(["-r", capture, "--enable-protocol", "communityid", "-Y", "tcp.flags.syn == 1 && tcp.flags.ack == 0"])
            .args(["-T", "fields", "-e", "ip.src", "-e", "ipv6.src", "-e", "tcp.srcport", "-e", "communityid"])
            .output()
            .expect("tshark is installed by setup.sh");
        let by_client: BTreeMap<String, String> = String::from_utf8_lossy(&tshark.stdout)
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split('\t').collect();
                let ip = if f[0].is_empty() { f[1] } else { f[0] };
                (f.len() == 4 && !f[3].is_empty()).then(|| (format!("{ip} {}", f[2]), f[3].to_owned()))
            })
            .collect();
        let attempts = doc["attempts"].as_array().expect("attempts");
        assert!(!attempts.is_empty() && !by_client.is_empty(), "{capture}");
        for a in attempts {
            let (ip, port) = (a["client_ip"].as_str().expect("client_ip"), a["client_port"].as_u64().expect("port"));
            let joined = if ip.contains(':') { format!("[{ip}]:{port}") } else { format!("{ip}:{port}") };
            assert_eq!(a["client"], joined.as_str(), "{a}");
            let server = a["server"].as_str().expect("server");
            assert!(server.ends_with(&format!(":{}", a["server_port"])), "{a}");
            assert!(server.contains(a["server_ip"].as_str().expect("server_ip")), "{a}");
            let theirs = by_client.get(&format!("{ip} {port}")).unwrap_or_else(|| panic!("tshark saw no SYN of {a}"));
            assert_eq!(a["community_id"], theirs.as_str(), "{capture}: {a}");
        }
    }
}
