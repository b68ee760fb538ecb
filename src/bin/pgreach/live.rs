//! `pgreach live`: opens the capture, drops privileges, runs the library's
//! live loop on a tokio runtime, and routes what it reports to the output,
//! the metrics and the terminal view.

use std::io::{self, IsTerminal};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pgreach::capture::live::metrics::{self, Metrics, SharedMetrics};
use pgreach::capture::live::savefile::Rotation;
use pgreach::capture::live::{self, Dropped, LiveCapture, LiveOptions, LiveSink, LiveStatus, StopWhen};
use pgreach::capture::Problems;
use pgreach::decode::DecodeError;
use pgreach::engine::{Analyzer, Stats};
use pgreach::outfile;
use pgreach::record::AttemptRecord;
use pgreach::report::output::Output;
use pgreach::report::{text, Format};
use pgreach::time::{short, Timestamp};
use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::flags::ColorWhen;
use crate::flags::LiveArgs;
use crate::view::LiveView;
use crate::{colour_allowed, exit_status, finish_output, open_output, report_path};

pub fn live(args: LiveArgs) -> ExitCode {
    let r = &args.report;
    // -w -: the packets go to standard output, as tcpdump -w - writes them.
    let capture_to_stdout = args.write.as_deref() == Some(Path::new("-"));
    let rotates = args.rotate.is_some() || args.rotate_seconds.is_some();
    let misuse = if capture_to_stdout && rotates {
        Some("-C and -G rotate files; standard output (-w -) cannot be rotated")
    } else if args.file_count.is_some() && !rotates {
        Some("-W counts the files of a rotation: give -C or -G with it")
    } else {
        None
    };
    if let Some(line) = misuse {
        eprintln!("pgreach: {line}");
        return ExitCode::from(crate::EXIT_USAGE);
    }
    if let (Some(w), Some(o)) = (&args.write, report_path(r)) {
        if outfile::same_destination(w, o) {
            eprintln!("pgreach: -w {} and -o {} name the same file", w.display(), o.display());
            return ExitCode::from(crate::EXIT_USAGE);
        }
    }
    let opts = LiveOptions {
        interface: args.interface.clone(),
        ports: r.ports.clone(),
        filter: args.filter.clone(),
        snaplen: args.snaplen as i32,
        buffer_bytes: (args.buffer_size as i32).saturating_mul(1 << 20),
        promiscuous: args.promisc,
        write: args.write.clone().map(|w| {
            let rotation = Rotation {
                bytes: args.rotate,
                every: args.rotate_seconds.map(Duration::from_secs),
                files: args.file_count,
            };
            (if capture_to_stdout { PathBuf::from("/dev/stdout") } else { w }, rotation)
        }),
    };
    // Everything that needs privileges first: the capture, the -w file and
    // the metrics port; then the drop; then the threads.
    let mut capture = match LiveCapture::open(&opts) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("pgreach: {e}");
            return ExitCode::from(crate::EXIT_USAGE);
        }
    };
    let metrics_listener = match args.metrics.map(std::net::TcpListener::bind).transpose() {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "pgreach: cannot serve metrics on {}: {e}",
                args.metrics.map(|a| a.to_string()).unwrap_or_default()
            );
            return ExitCode::from(crate::EXIT_USAGE);
        }
    };
    // -o is created before the drop too, wherever root may write.
    let view = io::stdout().is_terminal() && Format::from(r.format) != Format::Ndjson && !capture_to_stdout;
    let Some((output, mut pending)) = open_output(r, args.filter.as_deref(), view, capture_to_stdout) else {
        return ExitCode::from(crate::EXIT_USAGE);
    };
    if capture.will_drop_privileges(&args.user) {
        // The user may not write in the report's directory: rename it into
        // place now, while root still can.
        if let Err(e) = pending.as_mut().map_or(Ok(()), outfile::Pending::publish) {
            eprintln!("pgreach: {e}");
            return ExitCode::from(crate::EXIT_USAGE);
        }
    }
    // Key logs are read, and opened for following, while still privileged.
    let keylogs = crate::keylog::paths(&r.keylogs);
    let keys = match crate::keylog::load(&keylogs) {
        Ok(keys) => keys,
        Err(e) => {
            eprintln!("pgreach: {e}");
            return ExitCode::from(crate::EXIT_USAGE);
        }
    };
    let keylog_ends = crate::keylog::open_ends(&keylogs);
    match capture.drop_privileges(&args.user) {
        Ok(Dropped::ToUser) => eprintln!("pgreach: capturing on {} as user {}", args.interface, args.user),
        Ok(Dropped::Capabilities) => {
            eprintln!("pgreach: capturing on {} (capabilities dropped)", args.interface)
        }
        Ok(Dropped::Nothing) => eprintln!("pgreach: capturing on {}", args.interface),
        Err(e) => {
            eprintln!("pgreach: {e}");
            return ExitCode::from(crate::EXIT_USAGE);
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
        colour: match r.color {
            ColorWhen::Always => true,
            ColorWhen::Never => false,
            ColorWhen::Auto => colour_allowed(),
        },
    };
    if let Some(store) = &keys {
        crate::keylog::follow(store, keylog_ends);
    }
    let mut analyzer = Analyzer::new(r.engine_config(keys));
    let stop_when = StopWhen { duration: args.duration, count: args.count };
    let (_, status) = runtime.block_on(async {
        if let (Some(listener), Some(m)) = (metrics_listener, metrics.clone()) {
            match listener.set_nonblocking(true).and_then(|()| tokio::net::TcpListener::from_std(listener)) {
                Ok(l) => drop(tokio::spawn(metrics::serve(l, m))),
                Err(e) => eprintln!("pgreach: cannot serve metrics: {e}"),
            }
        }
        // The first Ctrl-C, SIGTERM (timeout, systemd, docker stop) or
        // SIGHUP ends the capture and writes the final report; a second
        // signal exits at once.
        let interrupt = Arc::new(tokio::sync::Notify::new());
        let signals = interrupt.clone();
        tokio::spawn(async move {
            let Ok(mut stops) = StopSignals::new() else { return };
            stops.next().await;
            signals.notify_one();
            stops.next().await;
            if view {
                LiveView::leave_screen();
            }
            std::process::exit(130);
        });
        live::run(capture.start(), &mut analyzer, stop_when, r.syn_timeout, &interrupt, &mut sink).await
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
    let fail_on_matched = r.fail_on_matched(sink.output.reported());
    let finished = finish_output(
        (sink.output, pending),
        r,
        analyzer.stats(),
        &interface,
        sink.problems,
        notes,
        Some(status.counters),
    );
    let code = match finished {
        Err(code) => code,
        Ok(()) => exit_status(fail_on_matched),
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
    /// Colour in the view (`--color`; auto: unless NO_COLOR, the view being on a terminal).
    colour: bool,
}

impl LiveSink for LiveReport {
    fn attempt(&mut self, record: AttemptRecord, capture_start: Timestamp) {
        match &self.metrics {
            Some(metrics) => {
                let mut observe = |r: &AttemptRecord| {
                    if let Ok(mut m) = metrics.lock() {
                        m.observe(r);
                    }
                };
                self.output.attempt_observed(record, capture_start, Some(&mut observe));
            }
            None => self.output.attempt(record, capture_start),
        }
        self.output.flush_rows();
    }

    fn refresh(&mut self, status: &LiveStatus, analyzer: &Analyzer) {
        if let Some(m) = &self.metrics {
            if let Ok(mut m) = m.lock() {
                m.status(status, analyzer.stats());
            }
        }
        let Some(view) = &mut self.view else { return };
        let lines = vec![
            format!(
                "pgreach live on {} port {} — {} running, {} packets; libpcap dropped {} (kernel) {} (interface) — Ctrl-C for the final report",
                view.interface,
                self.ports.iter().map(u16::to_string).collect::<Vec<_>>().join(","),
                short(status.now.since(status.started)),
                status.packets,
                status.counters.kernel_dropped,
                status.counters.interface_dropped
            ),
            format!(
                "now: {} open, {} in the handshake, {} SYNs unanswered for {} or more",
                status.connections.open,
                status.connections.handshaking,
                status.connections.unanswered_syns,
                short(self.syn_timeout)
            ) + &flow_table_full(analyzer.stats()),
        ];
        let report = self.output.report(analyzer.stats(), &[], Vec::new(), Vec::new(), Some(status.counters));
        view.draw(&text::live_view(&report, &lines, view.height(), view.width(), self.colour));
    }

    fn watched(&self) -> bool {
        self.view.is_some() || self.metrics.is_some()
    }

    fn problem(&mut self, line: String) {
        if self.view.is_none() {
            eprintln!("pgreach: {line}");
        }
        self.problems.push(line);
    }

    fn bad_packet(&mut self, packet: u64, error: &DecodeError) {
        self.bad_packets.bad_packet(&self.source, packet, error);
    }
}

/// What a full flow table has cost so far, for the status line: a flood
/// must not pass unseen while it lasts.
fn flow_table_full(stats: &Stats) -> String {
    if stats.evicted + stats.evicted_midstream + stats.untracked == 0 {
        return String::new();
    }
    format!(
        "; flow table full: {} attempts and {} midstream connections ended early, {} packets untracked",
        stats.evicted, stats.evicted_midstream, stats.untracked
    )
}

/// The signals that end a live run: Ctrl-C, SIGTERM and SIGHUP.
struct StopSignals {
    terminate: Signal,
    hangup: Signal,
}

impl StopSignals {
    fn new() -> io::Result<StopSignals> {
        Ok(StopSignals { terminate: signal(SignalKind::terminate())?, hangup: signal(SignalKind::hangup())? })
    }

    /// Waits for the next of them.
    async fn next(&mut self) {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = self.terminate.recv() => {}
            _ = self.hangup.recv() => {}
        }
    }
}
