//! The command line: the flags as clap reads them, and how they map onto
//! the library's types (the library itself knows no clap).

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, Subcommand};
use ipnet::IpNet;

use pgreach::analysis::counts::OutcomeCounts;
use pgreach::analysis::filter::{ServerMatch, TimeBound};
use pgreach::analysis::zone::Zone;
use pgreach::engine::Config;
use pgreach::outcome::Outcome;
use pgreach::points::{self, Point};
use pgreach::report::Format;
use pgreach::tls::KeyStore;

/// Why can't my clients connect to PostgreSQL? Follows every TCP connection
/// to the PostgreSQL port in packet captures, or live on an interface, and
/// reports, per client, how each attempt ended and what that means.
#[derive(Parser)]
#[command(name = "pgreach", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Analyze pcap or pcapng files (`-` reads standard input), merged in time order.
    Analyze(AnalyzeArgs),
    /// Capture on an interface and show the clients live until Ctrl-C, then the final report.
    Live(LiveArgs),
    /// List the interfaces that can be captured on.
    Interfaces,
    /// Print shell completions (e.g. `pgreach completions bash > /etc/bash_completion.d/pgreach`).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (e.g. `pgreach man > /usr/local/share/man/man1/pgreach.1`).
    Man,
}

#[derive(clap::Args)]
pub struct AnalyzeArgs {
    /// Capture files; several are analyzed as one capture. After -r, these words are a
    /// filter expression instead, as tcpdump takes them (`-r FILE port 5432`).
    #[arg(value_name = "FILE")]
    pub files: Vec<String>,
    /// A capture file to read (repeatable), as tcpdump's -r.
    #[arg(short = 'r', long = "read", value_name = "FILE")]
    pub read: Vec<String>,
    /// A capture point: FILE was captured at NAME (repeatable; the same NAME for several files,
    /// such as rotations, makes them one point). Several points are followed attempt by attempt
    /// to say where packets were lost; other files are points named after them.
    #[arg(long = "at", value_name = "NAME=FILE", value_parser = points::naming::parse_at)]
    pub at: Vec<(String, String)>,
    /// Only packets matching this libpcap filter expression (as tcpdump takes).
    #[arg(short = 'f', long, value_name = "EXPR")]
    pub filter: Option<String>,
    #[command(flatten)]
    pub report: ReportArgs,
}

#[derive(clap::Args)]
pub struct LiveArgs {
    /// The interface (`any` for all of them; see `pgreach interfaces`).
    #[arg(short, long, value_name = "IFACE", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub interface: String,
    /// A libpcap filter replacing the default (the server ports and the ICMP errors that quote them).
    #[arg(short = 'f', long, value_name = "EXPR")]
    pub filter: Option<String>,
    /// Stop after this long (e.g. 10m).
    #[arg(long, value_name = "DURATION", value_parser = parse_run_duration)]
    pub duration: Option<Duration>,
    /// Stop after this many packets.
    #[arg(short = 'c', long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
    /// The kernel capture buffer, in MiB.
    #[arg(short = 'B', long, value_name = "MIB", default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=2047))]
    pub buffer_size: u32,
    /// Bytes kept of each packet. The default keeps whole login conversations. Longer packets
    /// (bulk results) are cut: raise it to follow whole sessions.
    #[arg(short = 's', long, value_name = "BYTES", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(96..=262_144))]
    pub snaplen: u32,
    /// Put the interface in promiscuous mode (off by default).
    #[arg(long)]
    pub promisc: bool,
    /// Also write the captured packets to this pcap file (`-`: standard output, and the
    /// report goes to standard error unless -o says where).
    #[arg(short = 'w', long, value_name = "FILE")]
    pub write: Option<PathBuf>,
    /// With -w: start a new file (FILE1, FILE2, …) every SIZE bytes, as tcpdump -C: millions
    /// of bytes, or with a suffix k, m, g (KiB, MiB, GiB).
    #[arg(short = 'C', long, value_name = "SIZE", requires = "write", value_parser = parse_rotate_size)]
    pub rotate: Option<u64>,
    /// With -w: start a new file every SECONDS, as tcpdump -G.
    #[arg(short = 'G', long = "rotate-seconds", value_name = "SECONDS", requires = "write", value_parser = clap::value_parser!(u64).range(1..=31_536_000))]
    pub rotate_seconds: Option<u64>,
    /// With -C or -G: keep at most COUNT files, writing over the oldest (a ring, as tcpdump -C -W).
    #[arg(short = 'W', long = "file-count", value_name = "COUNT", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub file_count: Option<u32>,
    /// Started as root: run as this user once the capture is open (as tcpdump -Z; `root` keeps root).
    #[arg(short = 'Z', long, value_name = "USER", default_value = "nobody", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub user: String,
    /// Serve Prometheus metrics on this address (e.g. 127.0.0.1:9187) at /metrics.
    #[arg(long, value_name = "ADDR", value_parser = parse_metrics_addr)]
    pub metrics: Option<std::net::SocketAddr>,
    #[command(flatten)]
    pub report: ReportArgs,
}

/// What both commands report, and how.
#[derive(clap::Args)]
pub struct ReportArgs {
    /// A server port: PostgreSQL or a pooler in front of it (repeatable).
    #[arg(short, long = "port", value_name = "PORT", default_values_t = [5432, 6432], value_parser = clap::value_parser!(u16).range(1..))]
    pub ports: Vec<u16>,
    /// Also list every attempt with its evidence.
    #[arg(long)]
    pub connections: bool,
    #[arg(long, value_enum, default_value_t = FormatArg::Table)]
    pub format: FormatArg,
    /// Colour the terminal report: `auto` on a terminal unless NO_COLOR is set.
    #[arg(long = "color", value_name = "WHEN", value_enum, default_value_t = ColorWhen::Auto)]
    pub color: ColorWhen,
    /// Write the report to this file instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Replace addresses, user, database and application names with stable pseudonyms.
    #[arg(long)]
    pub redact: bool,
    /// How long a SYN must go unanswered to count as a timeout (e.g. 3s, 500ms).
    #[arg(long, value_name = "DURATION", default_value = "3s", value_parser = parse_syn_timeout)]
    pub syn_timeout: Duration,
    /// The most connections tracked at once (bounds memory under a SYN flood).
    #[arg(long, value_name = "N", default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_flows: u64,
    /// The most out-of-order data held across all connections, in MiB (bounds memory under loss).
    #[arg(long, value_name = "MIB", default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=1 << 20))]
    pub max_held_mib: u64,
    /// Clients shown in the table, Markdown and HTML reports (JSON lists them all).
    #[arg(long, value_name = "N", default_value_t = 100, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=MAX_ROWS))]
    pub max_rows: usize,
    /// The most attempts listed by --connections and JSON (the totals count all).
    #[arg(long, value_name = "N", default_value_t = 100_000, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(0..=MAX_LISTED))]
    pub max_listed: usize,
    /// A database server's DNS name (repeatable; `*.example.com` for a domain): its failed
    /// lookups are reported as dns_failed, beside the names clients were seen connecting with.
    #[arg(long = "db-host", value_name = "NAME")]
    pub db_hosts: Vec<String>,
    /// Only clients in this address or CIDR block (repeatable).
    #[arg(long = "client", value_name = "ADDR|CIDR", value_parser = parse_client)]
    pub clients: Vec<IpNet>,
    /// Only attempts to this server address or address:port (repeatable).
    #[arg(long = "server", value_name = "ADDR")]
    pub servers: Vec<ServerMatch>,
    /// The time zone of the times people read (tables, Markdown, HTML): UTC, local, or
    /// an offset such as +01:00. JSON and CSV stay in UTC.
    #[arg(long, value_name = "ZONE", default_value = "UTC", value_parser = parse_zone)]
    pub tz: Zone,
    /// Only attempts starting at or after this time: RFC 3339 with its offset, a time of
    /// day on the capture's date (in --tz), or +DURATION after the capture's start.
    #[arg(long, value_name = "TIME")]
    pub since: Option<TimeBound>,
    /// Only attempts starting before this time (the same forms as --since).
    #[arg(long, value_name = "TIME")]
    pub until: Option<TimeBound>,
    /// Only attempts with this outcome (repeatable).
    #[arg(long = "outcome", value_name = "OUTCOME", value_parser = str::parse::<Outcome>)]
    pub outcomes: Vec<Outcome>,
    /// Exit with status 3 when any reported attempt has one of these outcomes, or with
    /// `failures` any failure: for cron and CI health checks (repeatable, or comma-separated).
    #[arg(long = "fail-on", value_name = "OUTCOME|failures", value_delimiter = ',', value_parser = parse_fail_on)]
    pub fail_on: Vec<FailOn>,
    /// The timeline's bucket width (default: chosen from the capture's span).
    #[arg(long, value_name = "DURATION", value_parser = parse_bucket)]
    pub bucket: Option<Duration>,
    /// A TLS key log (NSS format, as SSLKEYLOGFILE writes) to decrypt TLS sessions with (repeatable;
    /// SSLKEYLOGFILE is read too). Live, the file is followed as it grows.
    #[arg(long = "keylog", value_name = "FILE")]
    pub keylogs: Vec<PathBuf>,
}

/// `--format`: clap reads the doc lines as its help.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FormatArg {
    /// The terminal report.
    Table,
    /// One document with a schema version (docs/report.schema.json).
    Json,
    /// One JSON object per attempt, written as attempts finish.
    Ndjson,
    /// One row per attempt, written as attempts finish.
    Csv,
    /// The report as Markdown, for a postmortem document.
    Markdown,
    /// One self-contained HTML file with the timeline drawn as a chart.
    Html,
}

impl From<FormatArg> for Format {
    fn from(f: FormatArg) -> Format {
        match f {
            FormatArg::Table => Format::Table,
            FormatArg::Json => Format::Json,
            FormatArg::Ndjson => Format::Ndjson,
            FormatArg::Csv => Format::Csv,
            FormatArg::Markdown => Format::Markdown,
            FormatArg::Html => Format::Html,
        }
    }
}

impl ReportArgs {
    /// What no single flag's parser can see: --since after --until (when
    /// both are absolute, both relative to the capture's start, or both
    /// times of day).
    pub fn check(&self) -> Result<(), String> {
        let ordered = match (self.since, self.until) {
            (Some(TimeBound::At(a)), Some(TimeBound::At(b))) => a < b,
            (Some(TimeBound::AfterStart(a)), Some(TimeBound::AfterStart(b))) => a < b,
            (Some(TimeBound::TimeOfDay(a)), Some(TimeBound::TimeOfDay(b))) => a < b,
            _ => true,
        };
        if ordered {
            Ok(())
        } else {
            Err("--since must be before --until: no attempt could start in that interval".to_owned())
        }
    }

    /// The engine's configuration, with the key logs' secrets, if any.
    pub fn engine_config(&self, keys: Option<KeyStore>) -> Config {
        Config {
            server_ports: self.ports.clone(),
            syn_timeout: self.syn_timeout,
            max_flows: usize::try_from(self.max_flows).unwrap_or(usize::MAX),
            db_hosts: self.db_hosts.clone(),
            keys,
            max_held_bytes: usize::try_from(self.max_held_mib << 20).unwrap_or(usize::MAX),
        }
    }
}

/// What `analyze` reads: its files, grouped by capture point, and the filter expression.
pub struct Inputs {
    pub files: Vec<String>,
    pub points: Vec<Point>,
    pub filter: Option<String>,
}

impl AnalyzeArgs {
    /// The files and the filter, from the positional words, -r and -f as
    /// tcpdump users write them; or why they do not make sense.
    pub fn inputs(&self) -> Result<Inputs, String> {
        if !self.read.is_empty() {
            let trailing = (!self.files.is_empty()).then(|| self.files.join(" "));
            if trailing.is_some() && self.filter.is_some() {
                return Err("a filter expression both after -r's file and with -f: give it once".to_owned());
            }
            return self.with_points(&self.read, trailing.or_else(|| self.filter.clone()));
        }
        if self.files.is_empty() && self.at.is_empty() {
            return Err(
                "no capture to read: give FILE…, -r FILE (`-` reads standard input) or --at NAME=FILE".to_owned()
            );
        }
        // A tcpdump habit: `pgreach analyze f.pcap port 5432`. Words that are
        // no file but read as a filter expression get the hint, not a report.
        if let Some(at) = self.files.iter().position(|f| f != "-" && !Path::new(f).exists()) {
            let words = self.files[at..].join(" ");
            if compiles_as_filter(&words) {
                return Err(format!(
                    "{words:?} is not a file but reads as a filter expression: use -f {words:?}, or tcpdump's form \
                     -r FILE {words}"
                ));
            }
        }
        self.with_points(&self.files, self.filter.clone())
    }

    /// The inputs with `files` and the --at files grouped into capture points.
    fn with_points(&self, files: &[String], filter: Option<String>) -> Result<Inputs, String> {
        let points = points::naming::from_flags(files, &self.at)?;
        if points.iter().flat_map(|p| &p.files).filter(|f| *f == "-").count() > 1 {
            return Err("standard input (`-`) can be read once only".to_owned());
        }
        let files = points.iter().flat_map(|p| p.files.iter().cloned()).collect();
        Ok(Inputs { files, points, filter })
    }
}

/// Whether libpcap compiles the words as a filter (for Ethernet).
fn compiles_as_filter(words: &str) -> bool {
    pcap::Capture::dead(pcap::Linktype::ETHERNET).is_ok_and(|dead| dead.compile(words, true).is_ok())
}

/// `--color`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorWhen {
    Auto,
    Always,
    Never,
}

/// One `--fail-on` condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailOn {
    /// Any failure.
    Failures,
    Outcome(Outcome),
}

impl ReportArgs {
    /// Whether the reported attempts meet a `--fail-on` condition.
    pub fn fail_on_matched(&self, reported: &OutcomeCounts) -> bool {
        self.fail_on.iter().any(|f| match *f {
            FailOn::Failures => reported.failures() > 0,
            FailOn::Outcome(o) => reported.get(o) > 0,
        })
    }
}

fn parse_fail_on(s: &str) -> Result<FailOn, String> {
    if s == "failures" {
        return Ok(FailOn::Failures);
    }
    s.parse::<Outcome>().map(FailOn::Outcome).map_err(|e| format!("{e}, or failures"))
}

/// `--tz`: UTC, local (the host's zone, from the system), or an offset.
fn parse_zone(s: &str) -> Result<Zone, String> {
    if s == "local" {
        return jiff::tz::TimeZone::try_system()
            .map(Zone::local)
            .map_err(|e| format!("the host's time zone cannot be read ({e}); give an offset such as +01:00"));
    }
    Zone::parse_fixed(s)
}

/// The narrowest timeline bucket: finer than the capture's timestamps are
/// useful for, and each bucket is a row or a bar.
const MIN_BUCKET: Duration = Duration::from_millis(1);
/// The widest --syn-timeout: no client waits longer for a SYN-ACK.
const MAX_SYN_TIMEOUT: Duration = Duration::from_secs(3600);
/// -C: a terabyte per file is beyond any disk it is for.
const MAX_ROTATE_BYTES: u64 = 1_000_000_000_000;
/// --max-rows: the summary keeps this many clients at most.
const MAX_ROWS: u64 = 100_000;
/// --max-listed: each listed attempt stays in memory until the report.
const MAX_LISTED: u64 = 10_000_000;

/// `-C SIZE`: millions of bytes as tcpdump takes it (`100`), or with a
/// suffix as newer tcpdump does (`512k`, `100m`, `2g`: KiB, MiB, GiB).
fn parse_rotate_size(s: &str) -> Result<u64, String> {
    let bad = || format!("{s:?}: not a size (millions of bytes, or a number with k, m or g)");
    let (digits, unit) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&s[..i], c.to_ascii_lowercase()),
        _ => (s, ' '),
    };
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let unit: u64 = match unit {
        ' ' => 1_000_000,
        'k' => 1 << 10,
        'm' => 1 << 20,
        'g' => 1 << 30,
        _ => return Err(bad()),
    };
    match n.checked_mul(unit) {
        Some(bytes) if bytes > 0 && bytes <= MAX_ROTATE_BYTES => Ok(bytes),
        _ => Err(format!("{s:?}: a file size from 1 byte to 1 TB")),
    }
}

/// A duration within `[min, max]`, said in the flag's own terms when not.
fn duration_within(s: &str, min: Duration, max: Option<Duration>) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{s:?}: not a duration like 500ms, 3s or 10m ({e})"))?;
    if d < min {
        return Err(format!("{s:?}: at least {} is needed", humantime::format_duration(min)));
    }
    if let Some(max) = max.filter(|&max| d > max) {
        return Err(format!("{s:?}: at most {} is allowed", humantime::format_duration(max)));
    }
    Ok(d)
}

/// `--bucket`: at least MIN_BUCKET; a width far below the capture's span is
/// widened by the timeline, which says so.
fn parse_bucket(s: &str) -> Result<Duration, String> {
    duration_within(s, MIN_BUCKET, None)
}

fn parse_syn_timeout(s: &str) -> Result<Duration, String> {
    duration_within(s, Duration::from_millis(1), Some(MAX_SYN_TIMEOUT))
}

/// `--duration`: a live run that stops at once would report nothing.
fn parse_run_duration(s: &str) -> Result<Duration, String> {
    duration_within(s, Duration::from_millis(1), None)
}

/// `--metrics`: an address with a port (port 0 would pick one nobody knows).
fn parse_metrics_addr(s: &str) -> Result<std::net::SocketAddr, String> {
    let addr: std::net::SocketAddr =
        s.parse().map_err(|_| format!("{s:?}: not an address:port like 127.0.0.1:9187"))?;
    if addr.port() == 0 {
        return Err(format!("{s:?}: port 0 would serve on a port chosen at random"));
    }
    Ok(addr)
}

/// `--client`: an address or a CIDR block.
fn parse_client(s: &str) -> Result<IpNet, String> {
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{s:?}: not an address or CIDR block"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_sizes_as_tcpdump_takes_them() {
        assert_eq!(parse_rotate_size("100"), Ok(100_000_000));
        assert_eq!(parse_rotate_size("512k"), Ok(512 << 10));
        assert_eq!(parse_rotate_size("100M"), Ok(100 << 20));
        assert_eq!(parse_rotate_size("2g"), Ok(2 << 30));
        for bad in ["", "0", "k", "10x", "-1", "99999999999g"] {
            assert!(parse_rotate_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn fail_on_takes_failures_or_an_outcome() {
        assert_eq!(parse_fail_on("failures"), Ok(FailOn::Failures));
        assert_eq!(parse_fail_on("refused"), Ok(FailOn::Outcome(Outcome::Refused)));
        assert!(parse_fail_on("broken").unwrap_err().contains("or failures"));
    }

    #[test]
    fn client_networks() {
        assert_eq!(parse_client("192.0.2.0/25").unwrap().prefix_len(), 25);
        assert_eq!(parse_client("2001:db8::1").unwrap().prefix_len(), 128);
        assert!(parse_client("192.0.2.0/33").is_err());
    }

    #[test]
    fn durations_are_bounded() {
        assert!(parse_bucket("0s").is_err());
        assert!(parse_bucket("1us").is_err());
        assert_eq!(parse_bucket("1ms"), Ok(Duration::from_millis(1)));
        assert!(parse_syn_timeout("0s").is_err());
        assert!(parse_syn_timeout("2h").is_err());
        assert!(parse_run_duration("0s").is_err());
        assert!(parse_metrics_addr("127.0.0.1:0").is_err());
        assert!(parse_metrics_addr("127.0.0.1:9187").is_ok());
    }
}
