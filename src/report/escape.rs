//! Escaping at the edge: one function per output kind, called where a
//! string that may come from the wire (a user name, a server message) is
//! written. Anyone who can open a TCP connection to the server chooses those
//! bytes, so none of them may reach a terminal, a spreadsheet or a Markdown
//! document as anything but visible text. JSON needs none of this: serde
//! escapes its strings and keeps them exact.

use std::fmt::Write as _;

/// Whether a character must be shown as an escape rather than written:
/// C0 controls, DEL, C1 controls (some terminals act on them, as on ESC),
/// and the bidirectional overrides and isolates that reorder what a reader
/// sees (CVE-2021-42574).
fn is_hidden(c: char) -> bool {
    matches!(c, '\0'..='\x1f' | '\x7f'..='\u{9f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Appends `c` as the visible escape a Rust reader would recognise: `\n`,
/// `\x1b`, `\u{202e}`.
fn push_visible(out: &mut String, c: char) {
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\0'..='\x1f' | '\x7f' => {
            let _ = write!(out, "\\x{:02x}", c as u32);
        }
        _ => {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
    }
}

/// For a terminal (tables, text, the live view): every control character
/// and bidi override shown as an escape, the rest unchanged. The result is
/// one line with no byte a terminal acts on.
pub fn terminal(text: &str) -> String {
    if !text.chars().any(is_hidden) {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if is_hidden(c) {
            push_visible(&mut out, c);
        } else {
            out.push(c);
        }
    }
    out
}

/// For Markdown prose and table cells: the terminal escape, then every
/// character that would start markup (emphasis, code, links, raw HTML, a
/// table cell boundary) escaped. Newlines are already `\n` text, so no wire
/// string can start a heading or a table row.
pub fn markdown(text: &str) -> String {
    let visible = terminal(text);
    let mut out = String::with_capacity(visible.len() + 8);
    for c in visible.chars() {
        match c {
            // `&#27;` would become the character itself when rendered.
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '*' | '_' | '`' | '[' | ']' | '\\' | '|' => {
                out.push('\\');
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    out
}

/// For one CSV cell (the csv crate adds RFC 4180 quoting): the terminal
/// escape, and a leading `'` before a cell a spreadsheet would read as a
/// formula (OWASP's rule: `=`, `+`, `-`, `@`, tab, carriage return).
pub fn csv(text: &str) -> String {
    let visible = terminal(text);
    if visible.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{visible}")
    } else {
        visible
    }
}

/// For HTML text and attribute values: entities for the characters that
/// would become markup, and control characters shown as escapes, never emitted.
pub fn html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if is_hidden(c) => push_visible(&mut out, c),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_shows_controls_and_bidi_visibly() {
        assert_eq!(terminal("a\x1b]52;c;SGVsbG8=\x07b"), "a\\x1b]52;c;SGVsbG8=\\x07b");
        assert_eq!(terminal("x\ny\r\tz\x7f"), "x\\ny\\r\\tz\\x7f");
        assert_eq!(terminal("\u{9b}31m"), "\\u{9b}31m");
        assert_eq!(terminal("abc\u{202e}fed\u{2066}"), "abc\\u{202e}fed\\u{2066}");
        assert_eq!(terminal("plain äöü — ok"), "plain äöü — ok");
    }

    #[test]
    fn markdown_escapes_structure() {
        assert_eq!(markdown("a|b"), "a\\|b");
        assert_eq!(markdown("\n# head"), "\\\\n# head");
        assert_eq!(markdown("`x`"), "\\`x\\`");
        assert_eq!(markdown("<b>"), "&lt;b&gt;");
        assert_eq!(markdown("&#27;"), "&amp;#27;");
    }

    #[test]
    fn csv_neutralises_formulas() {
        for bad in ["=1+1", "+cmd|' /C calc'!A0", "-2", "@SUM(1+1)"] {
            assert!(csv(bad).starts_with('\''), "{bad}");
        }
        assert_eq!(csv("\tx"), "\\tx");
        assert_eq!(csv("alice"), "alice");
    }

    #[test]
    fn html_never_emits_controls() {
        assert_eq!(html("<a href='x'>&\x1b</a>"), "&lt;a href=&#39;x&#39;&gt;&amp;\\x1b&lt;/a&gt;");
    }
}
