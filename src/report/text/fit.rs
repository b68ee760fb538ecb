//! Fitting the terminal report to the terminal's width: a table is drawn
//! whole where it fits, and otherwise as one wrapped paragraph per row, so
//! that no address, time or outcome is ever broken inside a cell; prose is
//! wrapped at word boundaries. Off a terminal (no width) nothing is wrapped.

use comfy_table::{presets, Cell, CellAlignment, Color, ContentArrangement, Table};
use textwrap::{Options, WordSplitter};

use crate::report::tables::{ColumnKind, Grid};

/// Draws a grid: as a table when it fits `width` (or with no width), as one
/// paragraph per row otherwise.
pub fn grid(grid: &Grid, colour: bool, width: Option<usize>) -> String {
    let table = table(grid, colour);
    match width {
        Some(w) if widest_line(&table) > w => rows_as_paragraphs(grid, w),
        _ => table,
    }
}

/// Draws a grid with comfy-table, never wrapping a cell; `colour` marks
/// non-zero failure counts red and login counts green.
fn table(grid: &Grid, colour: bool) -> String {
    let mut table = Table::new();
    table.load_style(presets::UTF8_FULL_CONDENSED).set_content_arrangement(ContentArrangement::Disabled);
    if colour {
        table.enforce_styling();
    } else {
        table.force_no_tty();
    }
    table.set_header(grid.header.iter().map(Cell::new));
    for row in &grid.rows {
        table.add_row(row.iter().zip(&grid.kinds).map(|(value, &kind)| {
            let mut cell = Cell::new(value);
            if kind.is_numeric() {
                cell = cell.set_alignment(CellAlignment::Right);
            }
            let zero = value.is_empty() || value == "0";
            match kind {
                ColumnKind::Failures if colour && !zero => cell.fg(Color::Red),
                ColumnKind::Logins if colour && !zero => cell.fg(Color::Green),
                _ => cell,
            }
        }));
    }
    table.to_string()
}

/// Each row as a paragraph under the first column's header: its first cell,
/// then `header value` for every
/// other cell that says something (not empty, `0` or `-`), wrapped at word
/// boundaries with a hanging indent.
fn rows_as_paragraphs(grid: &Grid, width: usize) -> String {
    // The first column's header says what each paragraph is about.
    let mut out = grid.header.first().map(|h| format!("{h}:\n")).unwrap_or_default();
    for row in &grid.rows {
        let mut parts = Vec::new();
        for (i, value) in row.iter().enumerate().skip(1) {
            if value.is_empty() || value == "0" || value == "-" {
                continue;
            }
            parts.push(format!("{} {value}", grid.header[i]));
        }
        let first = row.first().map_or("", String::as_str);
        let paragraph = if parts.is_empty() { first.to_owned() } else { format!("{first}: {}", parts.join("; ")) };
        out.push_str(&wrap(&paragraph, width, "    "));
    }
    out.pop();
    out
}

/// Wraps one paragraph at word boundaries (never inside a word: an address
/// or a time stays whole even when longer than the width), continuing
/// lines with `indent`; ends with a newline.
pub fn wrap(paragraph: &str, width: usize, indent: &str) -> String {
    // Never at a hyphen either: "net-unreachable" and "Send-Q" are words.
    let options = Options::new(width.max(20))
        .subsequent_indent(indent)
        .break_words(false)
        .word_splitter(WordSplitter::NoHyphenation);
    let mut out = textwrap::fill(paragraph, options);
    out.push('\n');
    out
}

/// Wraps every line of a text to the width, continuing each line at the
/// indentation of its text (after a list marker such as `- ` or `1. `).
pub fn wrap_lines(text: &str, width: Option<usize>) -> String {
    let Some(width) = width else { return text.to_owned() };
    let mut out = String::new();
    for line in text.split_inclusive('\n') {
        let body = line.trim_end_matches('\n');
        if body.chars().count() <= width {
            out.push_str(line);
            continue;
        }
        let indent = hanging_indent(body);
        out.push_str(&wrap(body, width, &" ".repeat(indent)));
    }
    out
}

/// Where a line's text starts: past its leading spaces and a list marker.
fn hanging_indent(line: &str) -> usize {
    let lead = line.len() - line.trim_start().len();
    let rest = &line[lead..];
    let marker = ["- [seen] ", "- [likely] ", "- [possibly] ", "- "]
        .iter()
        .find(|m| rest.starts_with(**m))
        .map(|m| m.len())
        .or_else(|| {
            let digits = rest.chars().take_while(char::is_ascii_digit).count();
            (digits > 0 && rest[digits..].starts_with(". ")).then_some(digits + 2)
        })
        .unwrap_or(0);
    lead + marker
}

fn widest_line(text: &str) -> usize {
    text.lines().map(|l| l.chars().count()).max().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapping_keeps_words_whole_and_indents_list_items() {
        let text = "   - [likely] the RST carries 192.0.2.1's address but TTL 63, while its SYN-ACKs carry 64\n";
        let wrapped = wrap_lines(text, Some(40));
        for line in wrapped.lines() {
            assert!(line.chars().count() <= 40, "{line:?}");
        }
        assert!(wrapped.contains("192.0.2.1's"), "{wrapped}");
        let second = wrapped.lines().nth(1).unwrap();
        // Under the text after "   - [likely] ": 14 columns in.
        assert!(second.starts_with(&" ".repeat(14)) && !second.starts_with(&" ".repeat(15)), "{second:?}");
        let long_word = wrap("x 2001:db8:ffff:ffff:ffff:ffff:ffff:ffff:5432 y", 20, "  ");
        assert!(long_word.contains("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff:5432"), "{long_word}");
    }
}
