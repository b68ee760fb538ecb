//! The `pgreach` command: flags in, report out. All analysis lives in the
//! library; this binary maps flags onto it ([`flags`]), runs the file
//! analysis, and drives a live capture ([`live`]) with its terminal view ([`view`]).

mod docs;
mod flags;
mod keylog;
mod live;
mod read;
mod view;

use std::io::{self, BufWriter, IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, Parser};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use flags::{AnalyzeArgs, Cli, ColorWhen, Command, ReportArgs};
use pgreach::analysis::filter::Filter;
use pgreach::capture::{CaptureCounters, Problems};
use pgreach::engine::Stats;
use pgreach::outfile::{self, Pending, Target};
use pgreach::report::output::{Output, OutputOptions};
use pgreach::report::Format;

/// A reading that lasts longer than this gets a progress bar.
const PROGRESS_AFTER: Duration = Duration::from_secs(1);

fn main() -> ExitCode {
    let cli = Cli::parse();
    let report = match &cli.command {
        Command::Analyze(a) => Some(&a.report),
        Command::Live(l) => Some(&l.report),
        _ => None,
    };
    if let Err(message) = report.map_or(Ok(()), ReportArgs::check) {
        // clap's form and exit code (2), as for any other wrong flag.
        Cli::command().error(clap::error::ErrorKind::ArgumentConflict, message).exit();
    }
    match cli.command {
        Command::Analyze(args) => analyze(args),
        Command::Live(args) => live::live(args),
        Command::Interfaces => interfaces(),
        Command::Completions { shell } => docs::completions(shell),
        Command::Man => docs::man(),
    }
}

fn analyze(args: AnalyzeArgs) -> ExitCode {
    let inputs = match args.inputs() {
        Ok(inputs) => inputs,
        Err(e) => {
            eprintln!("pgreach: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    if let Some(out) = report_path(&args.report) {
        if let Some(input) = inputs.files.iter().find(|f| outfile::same_file(out, Path::new(f))) {
            eprintln!("pgreach: -o {} is the input {input}: refusing to overwrite a capture", out.display());
            return ExitCode::from(EXIT_USAGE);
        }
    }
    let keys = match keylog::load(&keylog::paths(&args.report.keylogs)) {
        Ok(keys) => keys,
        Err(e) => {
            eprintln!("pgreach: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let config = args.report.engine_config(keys);
    let mut problems = Problems::default();
    let Some((mut output, pending)) = open_output(&args.report, inputs.filter.as_deref(), false, false) else {
        return ExitCode::from(EXIT_USAGE);
    };
    let progress = progress_bar(&inputs.files);
    let started = std::time::Instant::now();
    let mut on_progress = |bytes| {
        if let Some(bar) = &progress {
            if bar.is_hidden() && started.elapsed() >= PROGRESS_AFTER {
                bar.set_draw_target(ProgressDrawTarget::stderr());
            }
            bar.set_position(bytes);
        }
    };
    let read =
        read::read(&inputs.points, inputs.filter.as_deref(), &config, &mut problems, &mut output, &mut on_progress);
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    let read = match read {
        Ok(read) => read,
        Err(e) => {
            eprintln!("pgreach: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let lines = problems.lines();
    for line in &lines {
        eprintln!("pgreach: {line}");
    }
    if problems.has_file_errors() && read.stats.packets == 0 {
        // No input could be read: an empty report would only hide the error.
        return ExitCode::from(EXIT_INPUT);
    }
    let matched = args.report.fail_on_matched(output.reported());
    let mut notes = problems.notes();
    notes.extend(read.notes);
    let written = finish_output((output, pending), &args.report, &read.stats, &inputs.files, lines, notes, None);
    match written {
        Err(code) => code,
        Ok(()) if !matched && problems.has_file_errors() => ExitCode::from(EXIT_INPUT),
        Ok(()) if !matched && problems.has_damage() => ExitCode::from(EXIT_DAMAGED),
        Ok(()) => exit_status(matched),
    }
}

/// Exit statuses (the README lists them): an input could not be used, a
/// flag or the set-up was wrong, `--fail-on` matched, an input was read
/// only up to a damaged record (the report is whole for what came before).
const EXIT_INPUT: u8 = 1;
pub(crate) const EXIT_USAGE: u8 = 2;
const EXIT_FAIL_ON: u8 = 3;
const EXIT_DAMAGED: u8 = 4;

/// Success, or `--fail-on`'s status when it matched.
pub(crate) fn exit_status(fail_on_matched: bool) -> ExitCode {
    if fail_on_matched {
        ExitCode::from(EXIT_FAIL_ON)
    } else {
        ExitCode::SUCCESS
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

/// The file named by -o, unless it is `-` (standard output).
pub(crate) fn report_path(r: &ReportArgs) -> Option<&Path> {
    r.output.as_deref().filter(|p| p.as_os_str() != "-")
}

/// The report's destination, from -o, and the file to publish when the
/// report is complete: `None` after printing why it cannot be created.
/// Without -o the report goes to standard output, or to standard error when
/// `stdout_taken` (the packets go there: `live -w -`).
pub(crate) fn open_output(
    r: &ReportArgs,
    capture_filter: Option<&str>,
    live_view: bool,
    stdout_taken: bool,
) -> Option<(Output, Option<Pending>)> {
    let (out, pending): (Box<dyn Write + Send>, _) = match report_path(r).map(outfile::create) {
        Some(Ok(Target::File(f, pending))) => (Box::new(BufWriter::new(f)), Some(pending)),
        Some(Ok(Target::Stream(f))) => (Box::new(BufWriter::new(f)), None),
        Some(Err(e)) => {
            eprintln!("pgreach: cannot create {}: {e}", r.output.as_deref().unwrap_or(Path::new("")).display());
            return None;
        }
        None if stdout_taken => (Box::new(BufWriter::new(io::stderr())), None),
        None => (Box::new(BufWriter::new(io::stdout())), None),
    };
    let opts = OutputOptions {
        format: Format::from(r.format),
        connections: r.connections,
        colour: colour(r),
        width: if report_path(r).is_none() { terminal_width() } else { None },
        filter: Filter {
            clients: r.clients.clone(),
            servers: r.servers.clone(),
            since: r.since,
            until: r.until,
            outcomes: r.outcomes.clone(),
            zone: r.tz.clone(),
        },
        zone: r.tz.clone(),
        command: (!r.redact).then(command_line),
        generated: Some(generated_at()),
        redact: r.redact,
        max_listed: r.max_listed,
        max_rows: r.max_rows,
        bucket: r.bucket,
        ports: r.ports.clone(),
        syn_timeout: r.syn_timeout,
        capture_filter: capture_filter.map(str::to_owned),
        recent_failures: live_view,
    };
    Some((Output::new(opts, out), pending))
}

/// Writes the final report and renames it into place; on failure prints
/// why and gives the exit code.
pub(crate) fn finish_output(
    (output, pending): (Output, Option<Pending>),
    r: &ReportArgs,
    stats: &Stats,
    files: &[String],
    problems: Vec<String>,
    notes: Vec<String>,
    capture: Option<CaptureCounters>,
) -> Result<(), ExitCode> {
    let written = output.finish(stats, files, problems, notes, capture);
    written.and_then(|()| pending.map_or(Ok(()), |mut p| p.publish())).map_err(|e| {
        let to = report_path(r).map_or("standard output".to_owned(), |p| p.display().to_string());
        eprintln!("pgreach: cannot write the report to {to}: {e}");
        ExitCode::FAILURE
    })
}

/// The command line as typed, each word quoted where a shell would need it,
/// for the HTML report's header. Left out under --redact: its arguments may
/// name clients and servers.
fn command_line() -> String {
    let words = std::env::args().skip(1).map(|w| {
        let plain = !w.is_empty() && w.chars().all(|c| c.is_ascii_alphanumeric() || "-_./:=+,@%".contains(c));
        if plain {
            w
        } else {
            format!("'{}'", w.replace('\'', "'\\''"))
        }
    });
    std::iter::once("pgreach".to_owned()).chain(words).collect::<Vec<_>>().join(" ")
}

/// When the report is made: SOURCE_DATE_EPOCH when set (reproducible
/// reports, as reproducible builds take it), else now.
fn generated_at() -> String {
    let from_env = std::env::var("SOURCE_DATE_EPOCH").ok().and_then(|s| s.parse::<i64>().ok());
    let secs = from_env.unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
    });
    let t = pgreach::time::Timestamp::from_secs_nanos(secs, 0).to_string();
    // Whole seconds: the microseconds of a time of making say nothing.
    t.split('.').next().map_or(t.clone(), |s| format!("{s}Z"))
}

/// The width of the terminal on standard output (`COLUMNS` when set, as
/// `ls` takes it), or none off a terminal: a file or a pipe is not wrapped.
pub(crate) fn terminal_width() -> Option<usize> {
    if !io::stdout().is_terminal() {
        return None;
    }
    let columns = std::env::var("COLUMNS").ok().and_then(|c| c.parse::<usize>().ok()).filter(|&c| c > 0);
    columns.or_else(|| crossterm::terminal::size().ok().map(|(w, _)| usize::from(w)))
}

/// Whether the terminal report is coloured (`--color`).
fn colour(r: &ReportArgs) -> bool {
    match r.color {
        ColorWhen::Always => true,
        ColorWhen::Never => false,
        ColorWhen::Auto => report_path(r).is_none() && io::stdout().is_terminal() && colour_allowed(),
    }
}

/// Colour on a terminal unless NO_COLOR is set to anything (no-color.org).
pub(crate) fn colour_allowed() -> bool {
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
