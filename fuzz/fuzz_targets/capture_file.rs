//! The pcap/pcapng reading path: the bytes written to a file and read by
//! the library's file adapter into the engine, as `pgreach analyze` does.
//! A damaged file is a problem line, never a panic.
#![no_main]

use std::io::Write;

use libfuzzer_sys::fuzz_target;
use pgreach::capture::file::analyze_files;
use pgreach::capture::Problems;
use pgreach::engine::{Analyzer, Config};

fuzz_target!(|data: &[u8]| {
    let mut file = tempfile();
    file.1.write_all(data).expect("write the input");
    drop(file.1);
    let mut analyzer = Analyzer::new(Config { max_flows: 1000, ..Config::default() });
    let mut problems = Problems::default();
    let paths = [file.0.clone()];
    let _ = analyze_files(&paths, None, &mut analyzer, &mut problems, &mut |_, _| {}, &mut |_| {});
    let _ = problems.lines();
    let _ = std::fs::remove_file(&file.0);
});

/// A file of this process's own in the temporary directory.
fn tempfile() -> (String, std::fs::File) {
    let path = std::env::temp_dir().join(format!("pgreach-fuzz-capture-{}", std::process::id()));
    let file = std::fs::File::create(&path).expect("create the input file");
    (path.to_string_lossy().into_owned(), file)
}
