//! `cargo xtask examples`: writes the example reports listed in
//! examples/MANIFEST from the incident capture (or the capture a line
//! names), with the release binary.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

const CAPTURE: &str = "captures/incident.pcap";
/// When the reports say they were made (SOURCE_DATE_EPOCH), so that making
/// them again changes nothing: 2026-11-24T12:00:00Z, as the tests expect.
const MADE_AT: &str = "1795521600";

/// (file, flags) from examples/MANIFEST.
pub fn manifest(root: &Path) -> Result<Vec<(String, Vec<String>)>> {
    let text = std::fs::read_to_string(root.join("examples/MANIFEST")).context("examples/MANIFEST")?;
    Ok(text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let mut words = l.split_whitespace().map(str::to_owned);
            Some((words.next()?, words.collect()))
        })
        .collect())
}

pub fn run(root: &Path) -> Result<()> {
    let status = Command::new("cargo").args(["build", "--release", "--bin", "pgreach"]).current_dir(root).status()?;
    if !status.success() {
        bail!("cargo build failed");
    }
    let binary = root.join("target/release/pgreach");
    for (file, mut flags) in manifest(root)? {
        let capture = match flags.iter().position(|f| f.starts_with("captures/")) {
            Some(i) => flags.remove(i),
            None => CAPTURE.to_owned(),
        };
        let out = Command::new(&binary)
            .arg("analyze")
            .args(&flags)
            .arg(capture)
            .current_dir(root)
            .env_remove("NO_COLOR")
            .env("SOURCE_DATE_EPOCH", MADE_AT)
            .output()
            .with_context(|| format!("run pgreach for {file}"))?;
        if !out.status.success() {
            bail!("pgreach {flags:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        std::fs::write(root.join("examples").join(&file), &out.stdout).with_context(|| format!("write {file}"))?;
        println!("examples/{file}");
    }
    Ok(())
}
