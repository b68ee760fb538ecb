//! The files pgreach writes: never an input, never through a symlink
//! planted at the path, owner-only, and `-` / /dev/stdout still work.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;

use crate::util::{pgreach, stderr, temp_file};

const INCIDENT: &str = "captures/incident.pcap";

/// A private directory holding a copy of the incident capture.
fn scratch(name: &str) -> (PathBuf, PathBuf) {
    let dir = temp_file(name, b"");
    std::fs::remove_file(&dir).unwrap();
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join("in.pcap");
    std::fs::copy(crate::util::project_root().join(INCIDENT), &input).unwrap();
    (dir, input)
}

#[test]
fn o_onto_an_input_is_refused_and_the_input_is_unchanged() {
    let (dir, input) = scratch("o-onto-input");
    let before = std::fs::read(&input).unwrap();
    let link = dir.join("link.pcap");
    std::os::unix::fs::symlink(&input, &link).unwrap();
    let hard = dir.join("hard.pcap");
    std::fs::hard_link(&input, &hard).unwrap();
    for out in [&input, &link, &hard] {
        for args in [
            vec!["analyze", "-o", out.to_str().unwrap(), input.to_str().unwrap()],
            vec!["analyze", "--format", "csv", input.to_str().unwrap(), "-o", out.to_str().unwrap()],
        ] {
            let run = pgreach(&args);
            assert_eq!(run.status.code(), Some(2), "{args:?}: {}", stderr(&run));
            assert!(stderr(&run).contains("refusing to overwrite"), "{}", stderr(&run));
            assert_eq!(std::fs::read(&input).unwrap(), before, "{args:?} changed the input");
        }
    }
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_symlink_at_o_is_replaced_and_its_target_untouched() {
    let (dir, input) = scratch("o-symlink");
    let victim = dir.join("victim.conf");
    std::fs::write(&victim, b"precious\n").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o644)).unwrap();
    let report = dir.join("report.md");
    std::os::unix::fs::symlink(&victim, &report).unwrap();
    let run = pgreach(&["analyze", "--format", "markdown", "-o", report.to_str().unwrap(), input.to_str().unwrap()]);
    assert!(run.status.success(), "{}", stderr(&run));
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious\n");
    assert_eq!(std::fs::metadata(&victim).unwrap().mode() & 0o777, 0o644);
    let meta = std::fs::symlink_metadata(&report).unwrap();
    assert!(meta.file_type().is_file(), "the link was replaced by the report");
    assert_eq!(meta.mode() & 0o777, 0o600, "reports are owner-only");
    assert!(std::fs::read_to_string(&report).unwrap().starts_with("# pgreach report"));
    // No temporary file is left beside it.
    let names: Vec<String> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn dash_and_dev_stdout_still_write_to_standard_output() {
    for out in ["-", "/dev/stdout"] {
        let run = pgreach(&["analyze", "--format", "json", "-o", out, INCIDENT]);
        assert!(run.status.success(), "{out}: {}", stderr(&run));
        let doc: serde_json::Value = serde_json::from_slice(&run.stdout).expect("JSON on stdout");
        assert!(doc["totals"]["attempts"].as_u64().unwrap() > 0);
    }
    assert!(!std::path::Path::new(crate::util::project_root()).join("-").exists());
}

#[test]
fn a_failed_run_leaves_the_old_report() {
    let (dir, _) = scratch("o-failed");
    let report = dir.join("report.txt");
    std::fs::write(&report, b"yesterday's report\n").unwrap();
    let run = pgreach(&["analyze", "-o", report.to_str().unwrap(), "--filter", "not a filter (", INCIDENT]);
    assert_eq!(run.status.code(), Some(2), "{}", stderr(&run));
    assert_eq!(std::fs::read(&report).unwrap(), b"yesterday's report\n");
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 2, "in.pcap, the report, nothing else");
    std::fs::remove_dir_all(&dir).unwrap();
}
