//! The live terminal view: the alternate screen, redrawn in place.

use std::io::{self, Write};

/// The terminal view, redrawn in place on the alternate screen (as top does),
/// which is left before the final report is printed.
pub struct LiveView {
    pub interface: String,
}

impl LiveView {
    pub fn start(interface: &str) -> LiveView {
        print!("\x1b[?1049h\x1b[H");
        let _ = io::stdout().flush();
        LiveView { interface: interface.to_owned() }
    }

    /// Client rows that fit under the status lines, the headline and the
    /// latest failures.
    pub fn rows(&self) -> usize {
        let (_, lines) = crossterm::terminal::size().unwrap_or((160, 40));
        usize::from(lines).saturating_sub(19).max(5)
    }

    pub fn columns(&self) -> usize {
        let (columns, _) = crossterm::terminal::size().unwrap_or((160, 40));
        usize::from(columns)
    }

    pub fn draw(&mut self, screen: &str) {
        let mut out = io::stdout().lock();
        let _ = write!(out, "\x1b[H\x1b[J{screen}");
        let _ = out.flush();
    }

    pub fn end(self) {
        LiveView::leave_screen();
    }

    pub fn leave_screen() {
        print!("\x1b[?1049l");
        let _ = io::stdout().flush();
    }
}
