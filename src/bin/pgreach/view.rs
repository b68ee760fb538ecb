//! The live terminal view: the alternate screen (as top uses), redrawn in
//! place with crossterm and left before the final report is printed.

use std::io::{self, Write};

use crossterm::cursor::MoveTo;
use crossterm::terminal::{self, Clear, ClearType, EnterAlternateScreen, LeaveAlternateScreen};
use crossterm::QueueableCommand;

/// The size assumed when the terminal does not say.
const FALLBACK_SIZE: (u16, u16) = (160, 40);

pub struct LiveView {
    pub interface: String,
}

impl LiveView {
    pub fn start(interface: &str) -> LiveView {
        let mut out = io::stdout();
        let _ = out.queue(EnterAlternateScreen).and_then(|o| o.queue(MoveTo(0, 0))).and_then(|o| o.flush());
        LiveView { interface: interface.to_owned() }
    }

    /// The screen's lines.
    pub fn height(&self) -> usize {
        usize::from(terminal::size().unwrap_or(FALLBACK_SIZE).1)
    }

    /// The screen's columns.
    pub fn width(&self) -> usize {
        usize::from(terminal::size().unwrap_or(FALLBACK_SIZE).0)
    }

    /// Replaces the screen with `screen` (at most `height` lines; the last
    /// one gets no newline, which would scroll the first off the top).
    pub fn draw(&mut self, screen: &str) {
        let mut out = io::stdout().lock();
        let drawn = out
            .queue(MoveTo(0, 0))
            .and_then(|o| o.queue(Clear(ClearType::All)))
            .and_then(|o| o.write_all(screen.trim_end_matches('\n').as_bytes()))
            .and_then(|()| out.flush());
        // A terminal that went away ends the view, not the capture.
        let _ = drawn;
    }

    pub fn end(self) {
        LiveView::leave_screen();
    }

    pub fn leave_screen() {
        let mut out = io::stdout();
        let _ = out.queue(LeaveAlternateScreen).and_then(|o| o.flush());
    }
}
