//! Reports: what the engine found, for people (the terminal table) and for
//! programs (JSON). They read the engine's finished attempts, never packets.

pub mod diagnosis;
mod evidence;
mod explain;
pub mod filter;
pub mod html;
pub mod json;
pub mod markdown;
pub mod output;
pub mod rows;
pub mod summary;
mod tables;
pub mod text;
pub mod timeline;

use std::time::Duration;

use crate::engine::Stats;
use crate::live::CaptureCounters;
use summary::Summary;

/// What a report is made of.
pub struct Report<'a> {
    pub summary: &'a Summary,
    pub stats: &'a Stats,
    /// The input files, as named on the command line.
    pub files: &'a [String],
    pub server_ports: &'a [u16],
    pub syn_timeout: Duration,
    /// Error lines about the input (file problems, undecodable packets).
    pub problems: Vec<String>,
    /// Facts about the input that are not errors (a trailing fragment).
    pub input_notes: Vec<String>,
    /// Whether filters narrowed the attempts.
    pub filtered: bool,
    /// A live capture's libpcap counters.
    pub capture: Option<CaptureCounters>,
    /// Clients shown in the tables of the terminal, Markdown and HTML reports.
    pub max_rows: usize,
}

impl Report<'_> {
    fn ports_label(&self) -> String {
        let ports: Vec<String> = self.server_ports.iter().map(u16::to_string).collect();
        ports.join(",")
    }
}
