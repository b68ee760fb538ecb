//! `--keylog FILE` (repeatable) and `SSLKEYLOGFILE`: TLS key logs read into
//! the engine's key store. For a live capture each file is followed: what
//! the application appended is read when a session's secrets are missing.
//! The secrets go nowhere else.

use pgreach::tls::KeyStore;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// The key log files asked for: the flags', then `SSLKEYLOGFILE`'s.
pub fn paths(flags: &[PathBuf]) -> Vec<PathBuf> {
    let mut all = flags.to_vec();
    if let Some(env) = std::env::var_os("SSLKEYLOGFILE").filter(|v| !v.is_empty()) {
        let env = PathBuf::from(env);
        if !all.contains(&env) {
            all.push(env);
        }
    }
    all
}

/// Reads every key log into one store; `None` when none was asked for. An
/// unreadable file is one error line.
pub fn load(paths: &[PathBuf]) -> Result<Option<KeyStore>, String> {
    if paths.is_empty() {
        return Ok(None);
    }
    let store = KeyStore::default();
    for path in paths {
        let mut file = File::open(path).map_err(|e| format!("key log {}: {e}", path.display()))?;
        let text = read_from(&mut file, path)?;
        let read = store.add_text(&text);
        if read.lines_ignored > 0 {
            eprintln!("pgreach: key log {}: {} lines not understood, skipped", path.display(), read.lines_ignored);
        }
        if read.sessions_refused > 0 {
            eprintln!(
                "pgreach: key log {}: {} sessions beyond the limit, skipped",
                path.display(),
                read.sessions_refused
            );
        }
    }
    Ok(Some(store))
}

/// Opens each key log at its end, to follow it (before privileges are dropped).
pub fn open_ends(paths: &[PathBuf]) -> Vec<(PathBuf, File)> {
    paths
        .iter()
        .filter_map(|path| {
            let mut file = File::open(path).ok()?;
            file.seek(SeekFrom::End(0)).ok()?;
            Some((path.clone(), file))
        })
        .collect()
}

/// Follows each key log: when a session's secrets are missing, the store
/// reads what the application appended since (the files stay open from
/// before the privilege drop).
pub fn follow(store: &KeyStore, mut files: Vec<(PathBuf, File)>) {
    if files.is_empty() {
        return;
    }
    store.set_more_text(Box::new(move || {
        let mut text = String::new();
        for (path, file) in &mut files {
            match read_from(file, path) {
                Ok(more) => text.push_str(&more),
                Err(e) => eprintln!("pgreach: {e}"),
            }
        }
        text
    }));
}

/// What the file holds from its current position on (lossy: a key log is ASCII).
fn read_from(file: &mut File, path: &Path) -> Result<String, String> {
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(|e| format!("key log {}: {e}", path.display()))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}
