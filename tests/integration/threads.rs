//! The second core changes nothing reported: the engine's attempts passed
//! to another thread (as `analyze` does) arrive as the engine finished
//! them, on every capture and on a flood that overflows the flow table.

use std::path::Path;

use pgreach::capture::file::analyze_files;
use pgreach::capture::Problems;
use pgreach::engine::{Analyzer, Config};
use pgreach::handoff;
use pgreach::record::AttemptRecord;

/// Every attempt of `path`, reported on the engine's own thread or on another.
fn attempts(path: &str, config: &Config, threaded: bool) -> Vec<String> {
    let files = [path.to_owned()];
    let mut analyzer = Analyzer::new(config.clone());
    let mut problems = Problems::default();
    let mut read = |hand: &mut dyn FnMut(AttemptRecord)| {
        let mut on_attempt = |record, _| hand(record);
        analyze_files(&files, None, &mut analyzer, &mut problems, &mut on_attempt, &mut |_| {})
            .expect("no filter to fail");
    };
    let mut seen = Vec::new();
    if threaded {
        let ((), reported) = handoff::split(
            |hand: &mut dyn FnMut(AttemptRecord)| read(hand),
            |records| {
                let mut reported = Vec::new();
                records.for_each(|r| reported.push(format!("{r:?}")));
                reported
            },
        );
        seen = reported;
    } else {
        read(&mut |r| seen.push(format!("{r:?}")));
    }
    seen
}

#[test]
fn attempts_reported_on_another_thread_are_the_engine_s_own() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("captures");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("captures/")
        .flatten()
        .map(|e| e.path().display().to_string())
        .filter(|p| p.ends_with(".pcap") || p.ends_with(".pcapng"))
        .collect();
    files.sort();
    let config = Config::default();
    let mut total = 0;
    for file in &files {
        let direct = attempts(file, &config, false);
        assert!(direct == attempts(file, &config, true), "{file}");
        total += direct.len();
    }
    assert!(files.len() > 40 && total > 500, "{} files, {total} attempts", files.len());
}

#[test]
fn a_flood_that_overflows_the_table_is_reported_the_same_on_another_thread() {
    // 3,000 sources against a table of 100 flows: 2,900 evictions, every
    // one an attempt.
    let mut pcap = 0xa1b2_c3d4u32.to_le_bytes().to_vec();
    pcap.extend_from_slice(&[2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    pcap.extend_from_slice(&65535u32.to_le_bytes());
    pcap.extend_from_slice(&1u32.to_le_bytes());
    for i in 0..3000u32 {
        let mut frame = vec![0u8; 54];
        frame[12..14].copy_from_slice(&[0x08, 0x00]);
        frame[14..24].copy_from_slice(&[0x45, 0, 0, 40, 0, 0, 0, 0, 64, 6]);
        frame[26..30].copy_from_slice(&[198, 18, (i >> 8) as u8, i as u8]);
        frame[30..34].copy_from_slice(&[192, 0, 2, 1]);
        frame[34..38].copy_from_slice(&[0x9c, 0x40, 0x15, 0x38]);
        frame[38..42].copy_from_slice(&i.wrapping_mul(2_654_435_761).to_be_bytes());
        frame[46..48].copy_from_slice(&[0x50, 0x02]);
        for field in [1_700_000_000, i * 100, 54, 54] {
            pcap.extend_from_slice(&u32::to_le_bytes(field));
        }
        pcap.extend_from_slice(&frame);
    }
    let path = std::env::temp_dir().join(format!("pgreach-threads-flood-{}.pcap", std::process::id()));
    std::fs::write(&path, &pcap).expect("write");
    let config = Config { max_flows: 100, ..Config::default() };
    let path_text = path.display().to_string();
    let direct = attempts(&path_text, &config, false);
    let threaded = attempts(&path_text, &config, true);
    std::fs::remove_file(&path).expect("remove");
    assert_eq!(direct.len(), 3000);
    assert!(direct == threaded, "the attempts differ");
}
