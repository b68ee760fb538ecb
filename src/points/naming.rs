//! Capture points from the command line: `--at NAME=FILE` names one (the
//! same NAME twice groups files), and each other file is a point named
//! after itself, rotations of one file (`out.pcap`, `out.pcap1`, …) grouped.

use std::path::Path;

/// One place the packets were captured: its name and its files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Point {
    pub name: String,
    pub files: Vec<String>,
}

/// The longest point name: names are labels in tables, not paths.
pub const MAX_NAME: usize = 64;

/// Suffixes left off a file's name to name its point.
const CAPTURE_SUFFIXES: &[&str] = &[".gz", ".pcapng", ".pcap", ".cap"];

/// `NAME=FILE`, with NAME made of letters, digits, `-`, `_` and `.`.
pub fn parse_at(word: &str) -> Result<(String, String), String> {
    let Some((name, file)) = word.split_once('=') else {
        return Err(format!("--at {word:?}: expected NAME=FILE (e.g. --at client=client.pcap)"));
    };
    check_name(name).map_err(|why| format!("--at {word:?}: {why}"))?;
    if file.is_empty() {
        return Err(format!("--at {word:?}: no file after {name}="));
    }
    Ok((name.to_owned(), file.to_owned()))
}

fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the point's name is empty".to_owned());
    }
    if name.chars().count() > MAX_NAME {
        return Err(format!("the point's name is longer than {MAX_NAME} characters"));
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
        return Err("a point's name may hold only letters, digits, '-', '_' and '.'".to_owned());
    }
    Ok(())
}

/// The points of `--at` pairs (in order, a repeated name gathering its
/// files) and of the other files (see [`from_files`]); or why they do not
/// make sense together.
pub fn from_flags(files: &[String], at: &[(String, String)]) -> Result<Vec<Point>, String> {
    let mut seen: Vec<&str> = Vec::new();
    for file in at.iter().map(|(_, f)| f.as_str()).chain(files.iter().map(String::as_str)) {
        if seen.contains(&file) {
            return Err(format!("{file} is given twice: each file belongs to one capture point"));
        }
        seen.push(file);
    }
    let mut points: Vec<Point> = Vec::new();
    for (name, file) in at {
        match points.iter_mut().find(|p| &p.name == name) {
            Some(p) => p.files.push(file.clone()),
            None => points.push(Point { name: name.clone(), files: vec![file.clone()] }),
        }
    }
    for point in from_files(files) {
        if points.iter().any(|p| p.name == point.name) {
            return Err(format!(
                "{} would be named {:?}, as an --at point is: name it with --at too",
                point.files[0], point.name
            ));
        }
        points.push(point);
    }
    Ok(points)
}

/// Each file is a point named after it, except files whose names differ
/// only in trailing digits (tcpdump's `-C`/`-W` rotations), which are one.
pub fn from_files(files: &[String]) -> Vec<Point> {
    let mut groups: Vec<(String, Point)> = Vec::new();
    for file in files {
        let key = file.trim_end_matches(|c: char| c.is_ascii_digit()).to_owned();
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, p)) => p.files.push(file.clone()),
            None => groups.push((key.clone(), Point { name: name_of(&key), files: vec![file.clone()] })),
        }
    }
    // Two files named alike in different directories keep their paths apart.
    let names: Vec<String> = groups.iter().map(|(_, p)| p.name.clone()).collect();
    groups
        .into_iter()
        .map(|(key, mut p)| {
            if names.iter().filter(|n| **n == p.name).count() > 1 {
                p.name = key;
            }
            p
        })
        .collect()
}

/// A file's name without its directory and capture suffixes: `client` for
/// `/tmp/client.pcap.gz`; `stdin` for `-`.
fn name_of(file: &str) -> String {
    if file == "-" {
        return "stdin".to_owned();
    }
    let mut name = Path::new(file).file_name().map_or_else(|| file.to_owned(), |n| n.to_string_lossy().into_owned());
    while let Some(stem) = CAPTURE_SUFFIXES.iter().find_map(|s| name.strip_suffix(s).filter(|n| !n.is_empty())) {
        name = stem.to_owned();
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn each_file_is_a_point_named_after_it() {
        let points = from_files(&files(&["/tmp/client.pcap", "db.pcapng.gz"]));
        let names: Vec<&str> = points.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["client", "db"]);
    }

    #[test]
    fn rotations_are_one_point() {
        let points = from_files(&files(&["out.pcap", "out.pcap1", "out.pcap2", "other.pcap"]));
        assert_eq!(points.len(), 2);
        assert_eq!(points[0].files, files(&["out.pcap", "out.pcap1", "out.pcap2"]));
        assert_eq!(points[0].name, "out");
    }

    #[test]
    fn same_names_in_two_directories_stay_apart() {
        let points = from_files(&files(&["a/cap.pcap", "b/cap.pcap"]));
        let names: Vec<&str> = points.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["a/cap.pcap", "b/cap.pcap"]);
    }

    #[test]
    fn at_groups_by_name_and_refuses_bad_use() {
        let at = vec![parse_at("db=a.pcap").unwrap(), parse_at("db=b.pcap").unwrap()];
        let points = from_flags(&files(&["client.pcap"]), &at).unwrap();
        assert_eq!(points[0], Point { name: "db".into(), files: files(&["a.pcap", "b.pcap"]) });
        assert_eq!(points[1].name, "client");
        assert!(from_flags(&files(&["a.pcap"]), &at).unwrap_err().contains("given twice"));
        let clash = vec![parse_at("client=x.pcap").unwrap()];
        assert!(from_flags(&files(&["client.pcap"]), &clash).unwrap_err().contains("--at"));
        for bad in ["nofile", "=x.pcap", "a b=x.pcap", "a=", "a\u{1b}=x"] {
            assert!(parse_at(bad).is_err(), "{bad}");
        }
    }
}
