//! Tidy: the source tree keeps the shape the README describes. Every file
//! says what it is for, the core knows no I/O or clock, the analysis knows
//! no renderer, renderers know no other renderer, the library knows no
//! clap, modules import each other one way only, and files stay short.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Files allowed over MAX_LINES, each with the reason.
const LONG_FILES: &[(&str, &str)] = &[];
const MAX_LINES: usize = 600;

/// The I/O-free core: these take bytes and time and return values.
const CORE: &[&str] = &[
    "time",
    "seq",
    "decode",
    "stream",
    "dns",
    "outcome",
    "tls",
    "pg",
    "duplicate",
    "flow",
    "record",
    "legs",
    "evict",
    "ports",
    "table",
    "engine",
];
/// Names the core must not mention: I/O crates and clocks.
const CORE_FORBIDDEN: &[&str] = &["pcap::", "tokio", "axum", "clap", "SystemTime::now", "Instant::now"];
/// The report modules that render one format each.
const RENDERERS: &[&str] = &["text", "json", "ndjson", "csv", "markdown", "html"];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every library source file: its module path (`report::text`) and its code
/// without comments and without its unit tests.
fn library() -> BTreeMap<String, String> {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut modules = BTreeMap::new();
    for path in files {
        let rel = path.strip_prefix(src()).expect("under src").to_string_lossy().replace('\\', "/");
        if rel.starts_with("bin/") || rel == "lib.rs" {
            continue;
        }
        let name = rel.trim_end_matches(".rs").trim_end_matches("/mod").replace('/', "::");
        modules.insert(name, code_of(&fs::read_to_string(&path).expect("read source")));
    }
    modules
}

/// The code a module compiles outside tests: comment lines and everything
/// from `#[cfg(test)]` on are dropped.
fn code_of(text: &str) -> String {
    let before_tests = text.split("#[cfg(test)]").next().unwrap_or("");
    before_tests.lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n")
}

/// The library modules a module names (`crate::x::y`, `super::z`), resolved
/// to the longest module path that exists.
fn imports(name: &str, code: &str, modules: &BTreeMap<String, String>) -> BTreeSet<String> {
    // `super` is the parent module, for `x.rs` and `x/mod.rs` alike.
    let parent = name.rsplit_once("::").map_or("", |p| p.0).to_owned();
    let mut found = BTreeSet::new();
    for (prefix, base) in [("crate::", String::new()), ("super::", parent)] {
        let mut rest = code;
        while let Some(i) = rest.find(prefix) {
            rest = &rest[i + prefix.len()..];
            let path: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':').collect();
            let mut parts: Vec<&str> = path.split("::").filter(|p| !p.is_empty()).collect();
            if !base.is_empty() && prefix == "super::" {
                parts.insert(0, &base);
            }
            while !parts.is_empty() {
                let candidate = parts.join("::");
                if modules.contains_key(&candidate) {
                    found.insert(candidate);
                    break;
                }
                parts.pop();
            }
        }
    }
    found.remove(name);
    found
}

#[test]
fn every_source_file_opens_with_what_it_is_for() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let tests_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    rust_files(&tests_dir, &mut files);
    let missing: Vec<_> = files
        .iter()
        .filter(|p| !fs::read_to_string(p).expect("read").starts_with("//!"))
        .map(|p| p.display().to_string())
        .collect();
    assert!(missing.is_empty(), "files without a //! opening line: {missing:?}");
}

#[test]
fn the_core_names_no_io_crate_and_no_clock() {
    let modules = library();
    let mut offences = Vec::new();
    for (name, code) in &modules {
        let top = name.split("::").next().unwrap_or("");
        if !CORE.contains(&top) {
            continue;
        }
        for word in CORE_FORBIDDEN {
            if code.contains(word) {
                offences.push(format!("{name} names {word}"));
            }
        }
    }
    assert!(offences.is_empty(), "{offences:?}");
}

#[test]
fn the_library_knows_no_clap() {
    let offences: Vec<_> = library().into_iter().filter(|(_, code)| code.contains("clap")).map(|(n, _)| n).collect();
    assert!(offences.is_empty(), "library modules naming clap: {offences:?}");
}

#[test]
fn the_analysis_imports_no_renderer_and_renderers_import_no_other_renderer() {
    let modules = library();
    let mut offences = Vec::new();
    for (name, code) in &modules {
        let deps = imports(name, code, &modules);
        if name.starts_with("analysis") && deps.iter().any(|d| d.starts_with("report")) {
            offences.push(format!("{name} imports the report: {deps:?}"));
        }
        if let Some(format) = name.strip_prefix("report::").filter(|f| RENDERERS.contains(f)) {
            for d in &deps {
                if d.strip_prefix("report::").is_some_and(|other| other != format && RENDERERS.contains(&other)) {
                    offences.push(format!("{name} imports {d}"));
                }
            }
        }
        if !name.starts_with("capture") && deps.iter().any(|d| d.starts_with("capture::live")) {
            offences.push(format!("{name} imports the live adapter"));
        }
    }
    assert!(offences.is_empty(), "{offences:?}");
}

#[test]
fn modules_import_each_other_one_way() {
    let modules = library();
    // A parent naming its own children (declaring and re-exporting them) is
    // not an import; every other edge counts.
    let edges: BTreeMap<&str, BTreeSet<String>> = modules
        .iter()
        .map(|(name, code)| {
            let deps = imports(name, code, &modules).into_iter().filter(|d| !d.starts_with(&format!("{name}::")));
            (name.as_str(), deps.collect())
        })
        .collect();
    // Depth-first search for a back edge.
    fn visit<'a>(
        node: &'a str,
        edges: &'a BTreeMap<&str, BTreeSet<String>>,
        state: &mut BTreeMap<&'a str, bool>,
        path: &mut Vec<&'a str>,
        cycles: &mut Vec<String>,
    ) {
        state.insert(node, false);
        path.push(node);
        for next in edges.get(node).into_iter().flatten() {
            match state.get(next.as_str()) {
                Some(false) => {
                    let from = path.iter().position(|n| n == next).unwrap_or(0);
                    cycles.push(format!("{} -> {next}", path[from..].join(" -> ")));
                }
                Some(true) => {}
                None => {
                    if let Some((key, _)) = edges.get_key_value(next.as_str()) {
                        visit(key, edges, state, path, cycles);
                    }
                }
            }
        }
        path.pop();
        state.insert(node, true);
    }
    let (mut state, mut path, mut cycles) = (BTreeMap::new(), Vec::new(), Vec::new());
    for node in edges.keys() {
        if !state.contains_key(node) {
            visit(node, &edges, &mut state, &mut path, &mut cycles);
        }
    }
    assert!(cycles.is_empty(), "import cycles: {cycles:?}");
}

#[test]
fn source_files_stay_short() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let long: Vec<String> = files
        .iter()
        .filter_map(|p| {
            let lines = fs::read_to_string(p).expect("read").lines().count();
            let rel = p.strip_prefix(src()).expect("under src").to_string_lossy().into_owned();
            (lines > MAX_LINES && !LONG_FILES.iter().any(|(f, _)| *f == rel)).then(|| format!("{rel}: {lines} lines"))
        })
        .collect();
    assert!(long.is_empty(), "over {MAX_LINES} lines without a reason in LONG_FILES: {long:?}");
}

#[test]
fn the_tidy_checks_see_what_they_guard() {
    // The checks above would pass on an empty tree; make sure they read ours.
    let modules = library();
    for core in CORE {
        assert!(modules.contains_key(*core), "core module {core} not found");
    }
    let text = &modules["report::text"];
    let deps = imports("report::text", text, &modules);
    assert!(deps.contains("analysis::diagnosis"), "{deps:?}");
    assert!(deps.contains("report::words"), "{deps:?}");
    // A made-up cycle is found.
    let mut fake = BTreeMap::new();
    fake.insert("a".to_owned(), "use crate::b::X;".to_owned());
    fake.insert("b".to_owned(), "use crate::a::Y;".to_owned());
    assert!(imports("a", &fake["a"], &fake).contains("b"));
    assert!(imports("b", &fake["b"], &fake).contains("a"));
}
