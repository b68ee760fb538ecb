//! The `pgreach` command: flags in, report out. All analysis lives in the library.

use std::io::{self, Write};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use ipnet::IpNet;
use pgreach::capture::{analyze_files, Problems};
use pgreach::engine::{Analyzer, Config};
use pgreach::record::{AttemptRecord, Outcome};
use pgreach::report::filter::{self, Filter, ServerMatch, TimeBound};
use pgreach::report::summary::Summary;
use pgreach::report::{json, text, Report};

/// Why can't my clients connect to PostgreSQL? Follows every TCP connection
/// to the PostgreSQL port in packet captures and reports, per client, how
/// each attempt ended and what that means.
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
}

#[derive(clap::Args)]
struct AnalyzeArgs {
    /// Capture files; several are analyzed as one capture.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<String>,
    /// A PostgreSQL server port (repeatable).
    #[arg(short, long = "port", value_name = "PORT", default_values_t = [5432])]
    ports: Vec<u16>,
    /// Only packets matching this libpcap filter expression (as tcpdump takes).
    #[arg(short = 'f', long, value_name = "EXPR")]
    filter: Option<String>,
    /// Also list every attempt with its evidence.
    #[arg(long)]
    connections: bool,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    /// How long a SYN must go unanswered to count as a timeout (e.g. 3s, 500ms).
    #[arg(long, value_name = "DURATION", default_value = "3s", value_parser = humantime::parse_duration)]
    syn_timeout: Duration,
    /// The most connections tracked at once (bounds memory under a SYN flood).
    #[arg(long, value_name = "N", default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    max_flows: u64,
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

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Table,
    Json,
}

/// Clients kept in the per-client table; further ones are counted together.
const MAX_CLIENTS: usize = 100_000;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Analyze(args) => analyze(args),
    }
}

fn analyze(args: AnalyzeArgs) -> ExitCode {
    let config = Config {
        server_ports: args.ports.clone(),
        syn_timeout: args.syn_timeout,
        max_flows: usize::try_from(args.max_flows).unwrap_or(usize::MAX),
    };
    let mut analyzer = Analyzer::new(config);
    let mut problems = Problems::default();
    let listed = if args.connections || matches!(args.format, Format::Json) { args.max_listed } else { 0 };
    let mut summary = Summary::new(MAX_CLIENTS, listed, args.bucket);
    let filter = Filter {
        clients: args.clients.clone(),
        servers: args.servers.clone(),
        since: args.since,
        until: args.until,
        outcomes: args.outcomes.clone(),
    };

    let mut on_attempt = |record: AttemptRecord, capture_start| {
        if filter.matches(&record, capture_start) {
            summary.add(record);
        }
    };
    if let Err(e) = analyze_files(&args.files, args.filter.as_deref(), &mut analyzer, &mut problems, &mut on_attempt) {
        eprintln!("pgreach: {e}");
        return ExitCode::from(2);
    }

    let lines = problems.lines();
    for line in &lines {
        eprintln!("pgreach: {line}");
    }
    let report = Report {
        summary: &summary,
        stats: analyzer.stats(),
        files: &args.files,
        server_ports: &args.ports,
        syn_timeout: args.syn_timeout,
        problems: lines,
        input_notes: problems.notes(),
        filtered: !filter.is_empty(),
    };
    let rendered = match args.format {
        Format::Table => text::render(&report, args.connections),
        Format::Json => json::render(&report),
    };
    if let Err(e) = io::stdout().lock().write_all(rendered.as_bytes()) {
        if e.kind() != io::ErrorKind::BrokenPipe {
            eprintln!("pgreach: cannot write the report: {e}");
            return ExitCode::FAILURE;
        }
    }
    if problems.has_file_errors() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
