//! The `pgreach` command: flags in, report out. All analysis lives in the library.

use std::fs::File;
use std::io::{self, BufWriter, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use ipnet::IpNet;

use pgreach::capture::{analyze_files, Problems};
use pgreach::engine::{Analyzer, Config, Stats};
use pgreach::live::metrics::{self, Metrics, SharedMetrics};
use pgreach::live::{self as capture_live, CaptureCounters, LiveCapture, LiveOptions, LiveSink, LiveStatus, StopWhen};
use pgreach::record::{AttemptRecord, Outcome};
use pgreach::report::filter::{self, Filter, ServerMatch, TimeBound};
use pgreach::report::output::{Format, Output, OutputOptions};
use pgreach::report::text;
use pgreach::time::Timestamp;

/// Why can't my clients connect to PostgreSQL? Follows every TCP connection
/// to the PostgreSQL port in packet captures, or live on an interface, and
/// reports, per client, how each attempt ended and what that means.
#[derive(Parser)]
#[command(name = "pgreach", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Analyze pcap or pcapng files (`-` reads standard input), merged in time order.
    Analyze(AnalyzeArgs),
    /// Capture on an interface and show the clients live until Ctrl-C, then the final report.
    Live(LiveArgs),
    /// List the interfaces that can be captured on.
    Interfaces,
}

#[derive(clap::Args)]
struct AnalyzeArgs {
    /// Capture files; several are analyzed as one capture.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<String>,
    /// Only packets matching this libpcap filter expression (as tcpdump takes).
    #[arg(short = 'f', long, value_name = "EXPR")]
    filter: Option<String>,
    #[command(flatten)]
    report: ReportArgs,
}

#[derive(clap::Args)]
struct LiveArgs {
    /// The interface (`any` for all of them; see `pgreach interfaces`).
    #[arg(short, long, value_name = "IFACE")]
    interface: String,
    /// A libpcap filter replacing the default (the server ports and the ICMP errors that quote them).
    #[arg(short = 'f', long, value_name = "EXPR")]
    filter: Option<String>,
    /// Stop after this long (e.g. 10m).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Stop after this many packets.
    #[arg(short = 'c', long, value_name = "N")]
    count: Option<u64>,
    /// The kernel capture buffer, in MiB.
    #[arg(short = 'B', long, value_name = "MIB", default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=2047))]
    buffer_size: u32,
    /// Bytes kept of each packet. The default keeps whole login conversations; in immediate
    /// mode libpcap gives each packet a ring slot of this size, so a small one holds more
    /// packets in the buffer. Longer packets (bulk results) are cut: raise it to follow whole sessions.
    #[arg(short = 's', long, value_name = "BYTES", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(96..=262_144))]
    snaplen: u32,
    /// Put the interface in promiscuous mode (off by default).
    #[arg(long)]
    promisc: bool,
    /// Also write the captured packets to this pcap file.
    #[arg(short = 'w', long, value_name = "FILE")]
    write: Option<PathBuf>,
    /// With -w: start a new file (FILE1, FILE2, …) every SIZE million bytes, as tcpdump -C.
    #[arg(short = 'C', long, value_name = "SIZE", requires = "write", value_parser = clap::value_parser!(u64).range(1..))]
    rotate: Option<u64>,
    /// Started as root: run as this user once the capture is open (as tcpdump -Z; `root` keeps root).
    #[arg(short = 'Z', long, value_name = "USER", default_value = "nobody")]
    user: String,
    /// Serve Prometheus metrics on this address (e.g. 127.0.0.1:9187) at /metrics.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<std::net::SocketAddr>,
    #[command(flatten)]
    report: ReportArgs,
}

/// What both commands report, and how.
#[derive(clap::Args)]
struct ReportArgs {
    /// A PostgreSQL server port (repeatable).
    #[arg(short, long = "port", value_name = "PORT", default_values_t = [5432])]
    ports: Vec<u16>,
    /// Also list every attempt with its evidence.
    #[arg(long)]
    connections: bool,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    /// Write the report to this file instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Replace addresses, user, database and application names with stable pseudonyms.
    #[arg(long)]
    redact: bool,
    /// How long a SYN must go unanswered to count as a timeout (e.g. 3s, 500ms).
    #[arg(long, value_name = "DURATION", default_value = "3s", value_parser = humantime::parse_duration)]
    syn_timeout: Duration,
    /// The most connections tracked at once (bounds memory under a SYN flood).
    #[arg(long, value_name = "N", default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    max_flows: u64,
    /// Clients shown in the table, Markdown and HTML reports (JSON lists them all).
    #[arg(long, value_name = "N", default_value_t = 100)]
    max_rows: usize,
    /// The most attempts listed by --connections and JSON (the totals count all).
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    max_listed: usize,
    /// Only clients in this address or CIDR block (repeatable).
    #[arg(long = "client", value_name = "ADDR|CIDR", value_parser = filter::parse_client)]
    clients: Vec<IpNet>,
    /// Only attempts to this server address or address:port (repeatable).
    #[arg(long = "server", value_name = "ADDR")]
    servers: Vec<ServerMatch>,
    /// Only attempts starting at or after this time: RFC 3339, or +DURATION after the capture's start.
    #[arg(long, value_name = "TIME")]
    since: Option<TimeBound>,
    /// Only attempts starting before this time: RFC 3339, or +DURATION after the capture's start.
    #[arg(long, value_name = "TIME")]
    until: Option<TimeBound>,
    /// Only attempts with this outcome (repeatable).
    #[arg(long = "outcome", value_name = "OUTCOME", value_parser = filter::parse_outcome)]
    outcomes: Vec<Outcome>,
    /// The timeline's bucket width (default: chosen from the capture's span).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    bucket: Option<Duration>,
}

/// A reading that lasts longer than this gets a progress bar.
const PROGRESS_AFTER: Duration = Duration::from_secs(1);

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Analyze(args) => analyze(args),
        Command::Live(args) => live(args),
        Command::Interfaces => interfaces(),
    }
}

fn engine_config(r: &ReportArgs) -> Config {
    Config {
        server_ports: r.ports.clone(),
        syn_timeout: r.syn_timeout,
        max_flows: usize::try_from(r.max_flows).unwrap_or(usize::MAX),
    }
}

fn analyze(args: AnalyzeArgs) -> ExitCode {
    let mut analyzer = Analyzer::new(engine_config(&args.report));
    let mut problems = Problems::default();
    let Some(mut output) = open_output(&args.report, false) else { return ExitCode::from(2) };
    let progress = progress_bar(&args.files);
    let started = std::time::Instant::now();
    let mut on_attempt = |record, capture_start| output.attempt(record, capture_start);
    let mut on_progress = |bytes| {
        if let Some(bar) = &progress {
            if bar.is_hidden() && started.elapsed() >= PROGRESS_AFTER {
                bar.set_draw_target(ProgressDrawTarget::stderr());
            }
            bar.set_position(bytes);
        }
    };
    let read = analyze_files(
        &args.files,
        args.filter.as_deref(),
        &mut analyzer,
        &mut problems,
        &mut on_attempt,
        &mut on_progress,
    );
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    if let Err(e) = read {
        eprintln!("pgreach: {e}");
        return ExitCode::from(2);
    }
    let lines = problems.lines();
    for line in &lines {
        eprintln!("pgreach: {line}");
    }
    let written = finish_output(output, &args.report, analyzer.stats(), &args.files, lines, problems.notes(), None);
    match written {
        Err(code) => code,
        Ok(()) if problems.has_file_errors() => ExitCode::FAILURE,
        Ok(()) => ExitCode::SUCCESS,
    }
}

fn live(args: LiveArgs) -> ExitCode {
    let r = &args.report;
    let opts = LiveOptions {
        interface: args.interface.clone(),
        ports: r.ports.clone(),
        filter: args.filter.clone(),
        snaplen: args.snaplen as i32,
        buffer_bytes: (args.buffer_size as i32).saturating_mul(1 << 20),
        promiscuous: args.promisc,
        write: args.write.clone().map(|w| (w, args.rotate.map(|mb| mb * 1_000_000))),
    };
    // Everything that needs privileges first: the capture, the -w file and
    // the metrics port; then the drop; then the threads.
    let mut capture = match LiveCapture::open(&opts) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("pgreach: {e}");
            return ExitCode::from(2);
        }
    };
    let metrics_listener = match args.metrics.map(std::net::TcpListener::bind).transpose() {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "pgreach: cannot serve metrics on {}: {e}",
                args.metrics.map(|a| a.to_string()).unwrap_or_default()
            );
            return ExitCode::from(2);
        }
    };
    // -o is created before the drop too, wherever root may write.
    let view = io::stdout().is_terminal() && r.format != Format::Ndjson;
    let Some(output) = open_output(r, view) else { return ExitCode::from(2) };
    match capture.drop_privileges(&args.user) {
        Ok(true) => eprintln!("pgreach: capturing on {} as user {}", args.interface, args.user),
        Ok(false) => eprintln!("pgreach: capturing on {}", args.interface),
        Err(e) => {
            eprintln!("pgreach: {e}");
            return ExitCode::from(2);
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pgreach: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let metrics = args.metrics.map(|_| Arc::new(Mutex::new(Metrics::default())));
    let mut sink = LiveReport {
        output,
        metrics: metrics.clone(),
        view: view.then(|| LiveView::start(&args.interface)),
        problems: Vec::new(),
        bad_packets: Problems::default(),
        source: format!("live:{}", args.interface),
        syn_timeout: r.syn_timeout,
        ports: r.ports.clone(),
    };
    let mut analyzer = Analyzer::new(engine_config(r));
    let stop_when = StopWhen { duration: args.duration, count: args.count };
    let (_, status) = runtime.block_on(async {
        if let (Some(listener), Some(m)) = (metrics_listener, metrics.clone()) {
            match listener.set_nonblocking(true).and_then(|()| tokio::net::TcpListener::from_std(listener)) {
                Ok(l) => drop(tokio::spawn(metrics::serve(l, m))),
                Err(e) => eprintln!("pgreach: cannot serve metrics: {e}"),
            }
        }
        // The first Ctrl-C ends the capture and writes the final report;
        // a second one exits at once.
        let interrupt = Arc::new(tokio::sync::Notify::new());
        let signals = interrupt.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_err() {
                return;
            }
            signals.notify_one();
            if tokio::signal::ctrl_c().await.is_ok() {
                if view {
                    LiveView::leave_screen();
                }
                std::process::exit(130);
            }
        });
        capture_live::run(capture, &mut analyzer, stop_when, r.syn_timeout, &interrupt, &mut sink).await
    });
    if let Some(view) = sink.view.take() {
        view.end();
        // Held while the view was up.
        for line in &sink.problems {
            eprintln!("pgreach: {line}");
        }
    }
    for line in sink.bad_packets.lines() {
        eprintln!("pgreach: {line}");
        sink.problems.push(line);
    }
    let mut notes = Vec::new();
    if status.counters.dropped() > 0 {
        notes.push(format!(
            "the capture lost {} packets; attempts in progress when it did are marked capture_drops_during",
            status.counters.dropped()
        ));
    }
    let interface = [format!("live:{}", args.interface)];
    let finished =
        finish_output(sink.output, r, analyzer.stats(), &interface, sink.problems, notes, Some(status.counters));
    let code = match finished {
        Err(code) => code,
        Ok(()) => ExitCode::SUCCESS,
    };
    runtime.shutdown_background();
    code
}

/// What the live loop's events become: report lines or rows, the live
/// view, and metrics.
struct LiveReport {
    output: Output,
    metrics: Option<SharedMetrics>,
    view: Option<LiveView>,
    /// Problems said at once (printed unless the view is up).
    problems: Vec<String>,
    /// Undecodable packets, printed as examples and a count at the end.
    bad_packets: Problems,
    /// `live:IFACE`, where packet numbers count from.
    source: String,
    syn_timeout: Duration,
    ports: Vec<u16>,
}

impl LiveSink for LiveReport {
    fn attempt(&mut self, record: AttemptRecord, capture_start: Timestamp) {
        if let Some(m) = &self.metrics {
            if let Ok(mut m) = m.lock() {
                m.observe(&record);
            }
        }
        self.output.attempt(record, capture_start);
        self.output.flush_rows();
    }

    fn refresh(&mut self, status: &LiveStatus, analyzer: &Analyzer) {
        if let Some(m) = &self.metrics {
            if let Ok(mut m) = m.lock() {
                m.status(status);
            }
        }
        let Some(view) = &mut self.view else { return };
        let lines = vec![
            format!(
                "pgreach live on {} port {} — {} running, {} packets; libpcap dropped {} (kernel) {} (interface) — Ctrl-C for the final report",
                view.interface,
                self.ports.iter().map(u16::to_string).collect::<Vec<_>>().join(","),
                pgreach::time::short(status.now.since(status.started)),
                status.packets,
                status.counters.kernel_dropped,
                status.counters.interface_dropped
            ),
            format!(
                "now: {} open, {} in the handshake, {} SYNs unanswered for {} or more",
                status.connections.open,
                status.connections.handshaking,
                status.connections.unanswered_syns,
                pgreach::time::short(self.syn_timeout)
            ),        ];
        let report = self.output.report(analyzer.stats(), &[], Vec::new(), Vec::new(), Some(status.counters));
        view.draw(&text::live_view(&report, &lines, view.rows(), view.columns(), colour_allowed()));
    }

    fn problem(&mut self, line: String) {
        if self.view.is_none() {
            eprintln!("pgreach: {line}");
        }
        self.problems.push(line);
    }

    fn bad_packet(&mut self, packet: u64, error: &pgreach::decode::DecodeError) {
        self.bad_packets.bad_packet(&self.source, packet, error);
    }
}

/// The terminal view, redrawn in place on the alternate screen (as top does),
/// which is left before the final report is printed.
struct LiveView {
    interface: String,
}

impl LiveView {
    fn start(interface: &str) -> LiveView {
        print!("\x1b[?1049h\x1b[H");
        let _ = io::stdout().flush();
        LiveView { interface: interface.to_owned() }
    }

    /// Client rows that fit under the status lines, the headline and the
    /// latest failures.
    fn rows(&self) -> usize {
        let (_, lines) = crossterm::terminal::size().unwrap_or((160, 40));
        usize::from(lines).saturating_sub(19).max(5)
    }

    fn columns(&self) -> usize {
        let (columns, _) = crossterm::terminal::size().unwrap_or((160, 40));
        usize::from(columns)
    }

    fn draw(&mut self, screen: &str) {
        let mut out = io::stdout().lock();
        let _ = write!(out, "\x1b[H\x1b[J{screen}");
        let _ = out.flush();
    }

    fn end(self) {
        LiveView::leave_screen();
    }

    fn leave_screen() {
        print!("\x1b[?1049l");
        let _ = io::stdout().flush();
    }
}

fn interfaces() -> ExitCode {
    match pcap::Device::list() {
        Ok(devices) => {
            for d in devices {
                let mut flags = Vec::new();
                if d.flags.is_up() {
                    flags.push("up");
                }
                if d.flags.is_running() {
                    flags.push("running");
                }
                if d.flags.is_loopback() {
                    flags.push("loopback");
                }
                let addrs: Vec<String> = d.addresses.iter().map(|a| a.addr.to_string()).collect();
                println!("{}\t{}\t{}\t{}", d.name, flags.join(","), addrs.join(" "), d.desc.as_deref().unwrap_or(""));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("pgreach: cannot list interfaces: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The report's destination, from -o: `None` after printing why it cannot be created.
fn open_output(r: &ReportArgs, live_view: bool) -> Option<Output> {
    let out: Box<dyn Write> = match &r.output {
        Some(path) => match File::create(path) {
            Ok(f) => Box::new(BufWriter::new(f)),
            Err(e) => {
                eprintln!("pgreach: cannot create {}: {e}", path.display());
                return None;
            }
        },
        None => Box::new(BufWriter::new(io::stdout())),
    };
    let opts = OutputOptions {
        format: r.format,
        connections: r.connections,
        colour: r.output.is_none() && io::stdout().is_terminal() && colour_allowed(),
        filter: Filter {
            clients: r.clients.clone(),
            servers: r.servers.clone(),
            since: r.since,
            until: r.until,
            outcomes: r.outcomes.clone(),
        },
        redact: r.redact,
        max_listed: r.max_listed,
        max_rows: r.max_rows,
        bucket: r.bucket,
        ports: r.ports.clone(),
        syn_timeout: r.syn_timeout,
        recent_failures: live_view,
    };
    Some(Output::new(opts, out))
}

/// Writes the final report; on failure prints why and gives the exit code.
fn finish_output(
    output: Output,
    r: &ReportArgs,
    stats: &Stats,
    files: &[String],
    problems: Vec<String>,
    notes: Vec<String>,
    capture: Option<CaptureCounters>,
) -> Result<(), ExitCode> {
    output.finish(stats, files, problems, notes, capture).map_err(|e| {
        let to = r.output.as_ref().map_or("standard output".to_owned(), |p| p.display().to_string());
        eprintln!("pgreach: cannot write the report to {to}: {e}");
        ExitCode::FAILURE
    })
}

/// Colour on a terminal unless NO_COLOR is set to anything (no-color.org).
fn colour_allowed() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// A bar on standard error, only on a terminal, hidden until the reading has
/// taken PROGRESS_AFTER: the files' total size, or a byte count for standard input.
fn progress_bar(files: &[String]) -> Option<ProgressBar> {
    if !io::stderr().is_terminal() {
        return None;
    }
    let sizes: Option<Vec<u64>> =
        files.iter().map(|f| if f == "-" { None } else { std::fs::metadata(f).ok().map(|m| m.len()) }).collect();
    let (bar, template) = match sizes {
        Some(sizes) => (ProgressBar::new(sizes.iter().sum()), "{bar:40} {bytes}/{total_bytes} ({eta} left)"),
        None => (ProgressBar::no_length(), "{spinner} {bytes} read ({bytes_per_sec})"),
    };
    bar.set_draw_target(ProgressDrawTarget::hidden());
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    Some(bar)
}
