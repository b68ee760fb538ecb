//! The `pgreach` command: flags in, report out. All analysis lives in the library.

use std::fs::File;
use std::io::{self, BufWriter, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use ipnet::IpNet;

use pgreach::capture::{analyze_files, Problems};
use pgreach::engine::{Analyzer, Config};
use pgreach::record::{AttemptRecord, Outcome};
use pgreach::redact::Redactor;
use pgreach::report::filter::{self, Filter, ServerMatch, TimeBound};
use pgreach::report::rows::{csv_header, csv_row, ndjson_line};
use pgreach::report::summary::Summary;
use pgreach::report::{html, json, markdown, text, Report};

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

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
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

/// Inputs smaller than this are read before a progress bar would be seen.
const PROGRESS_MIN_BYTES: u64 = 32 << 20;

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
    let lists_attempts = args.connections || matches!(args.format, Format::Json | Format::Markdown | Format::Html);
    let listed = if lists_attempts { args.max_listed } else { 0 };
    let mut summary = Summary::new(MAX_CLIENTS, listed, args.bucket);
    let filter = Filter {
        clients: args.clients.clone(),
        servers: args.servers.clone(),
        since: args.since,
        until: args.until,
        outcomes: args.outcomes.clone(),
    };
    let to_terminal = args.output.is_none() && io::stdout().is_terminal();
    let mut out: Box<dyn Write> = match &args.output {
        Some(path) => match File::create(path) {
            Ok(f) => Box::new(BufWriter::new(f)),
            Err(e) => {
                eprintln!("pgreach: cannot create {}: {e}", path.display());
                return ExitCode::from(2);
            }
        },
        None => Box::new(BufWriter::new(io::stdout().lock())),
    };

    let mut redactor = args.redact.then(Redactor::default);
    let mut write_error = match args.format {
        Format::Csv => csv_header(&mut out).err(),
        _ => None,
    };
    let progress = progress_bar(&args.files);
    {
        let mut on_attempt = |mut record: AttemptRecord, capture_start| {
            if !filter.matches(&record, capture_start) {
                return;
            }
            if let Some(r) = &mut redactor {
                r.redact(&mut record);
            }
            if write_error.is_some() {
                return;
            }
            let written = match args.format {
                Format::Ndjson => ndjson_line(&record, &mut out),
                Format::Csv => csv_row(&record, &mut out),
                _ => {
                    summary.add(record);
                    Ok(())
                }
            };
            if let Err(e) = written {
                write_error = Some(e);
            }
        };
        let mut on_progress = |bytes| {
            if let Some(bar) = &progress {
                bar.set_position(bytes);
            }
        };
        if let Err(e) = analyze_files(
            &args.files,
            args.filter.as_deref(),
            &mut analyzer,
            &mut problems,
            &mut on_attempt,
            &mut on_progress,
        ) {
            eprintln!("pgreach: {e}");
            return ExitCode::from(2);
        }
    }
    if let Some(bar) = progress {
        bar.finish_and_clear();
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
    let finished = match args.format {
        Format::Table => {
            out.write_all(text::render(&report, args.connections, to_terminal && colour_allowed()).as_bytes())
        }
        Format::Json => out.write_all(json::render(&report).as_bytes()),
        Format::Markdown => out.write_all(markdown::render(&report, args.connections).as_bytes()),
        Format::Html => out.write_all(html::render(&report).as_bytes()),
        Format::Csv | Format::Ndjson => Ok(()),
    };
    if let Some(e) = write_error.or(finished.err()).or(out.flush().err()) {
        if e.kind() != io::ErrorKind::BrokenPipe {
            let to = args.output.as_ref().map_or("standard output".to_owned(), |p| p.display().to_string());
            eprintln!("pgreach: cannot write the report to {to}: {e}");
            return ExitCode::FAILURE;
        }
    }
    if problems.has_file_errors() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Colour on a terminal unless NO_COLOR is set to anything (no-color.org).
fn colour_allowed() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// A bar on standard error for inputs large enough to take a while, only on a terminal.
fn progress_bar(files: &[String]) -> Option<ProgressBar> {
    if !io::stderr().is_terminal() {
        return None;
    }
    let total: u64 = files.iter().filter_map(|f| std::fs::metadata(f).ok()).map(|m| m.len()).sum();
    if total < PROGRESS_MIN_BYTES {
        return None;
    }
    let bar = ProgressBar::new(total);
    if let Ok(style) = ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} ({eta} left)") {
        bar.set_style(style);
    }
    Some(bar)
}
