//! Project tasks: `cargo xtask record` stages real connection scenarios and
//! writes captures/ with their expected outcomes.

mod lab;
mod record;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("record") => record::run(&args[1..]),
        _ => {
            eprintln!("usage: cargo xtask record [SCENARIO…]   (as root; writes captures/)");
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
