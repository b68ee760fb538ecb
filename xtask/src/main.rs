//! Project tasks: `cargo xtask record` stages real connection scenarios and
//! writes captures/ with their expected outcomes; `cargo xtask examples`
//! writes the example reports in examples/; `cargo xtask bench` measures
//! live capture under load against tcpdump; `cargo xtask fuzz` runs the
//! fuzz targets in fuzz/.

mod bench;
mod examples;
mod fuzz;
mod lab;
mod pooler;
mod record;
mod routed;

use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("record") => record::run(&args[1..]),
        Some("bench") => {
            bench::run(Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap_or(Path::new(".")), &args[1..])
        }
        Some("fuzz") => fuzz::run(Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap_or(Path::new(".")), &args[1..]),
        Some("examples") => examples::run(Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap_or(Path::new("."))),
        _ => {
            eprintln!("usage: cargo xtask record [SCENARIO…]   (as root; writes captures/)");
            eprintln!("       cargo xtask examples              (writes examples/ from captures/incident.pcap)");
            eprintln!("       cargo xtask fuzz [SECONDS] [TARGET…] (each fuzz target, 600 s by default; needs nightly and cargo-fuzz)");
            eprintln!("       cargo xtask bench [analyze | live [SECONDS]] (pgreach against tcpdump and tshark; live needs root)");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}
