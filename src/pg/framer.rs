//! Splitting one direction's byte stream into PostgreSQL messages by their
//! length, keeping only the first bytes of the bodies worth reading and
//! skipping the rest: a 5 GB COPY passes through in constant memory.

/// What the next bytes of this direction are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A startup-phase packet: 4-byte length, no type byte (client only).
    Untyped,
    /// A regular message: type byte, then 4-byte length.
    Typed,
    /// The server's one-byte answer to SSLRequest / GSSENCRequest.
    SslAnswer,
}

/// A complete message.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// `tag` is 0 for an untyped startup packet. `body` holds at most the
    /// first `keep` bytes (see `Framer::keep`); `len` is the body's full length.
    Message { tag: u8, len: u32, body: &'a [u8] },
    /// The one-byte answer to SSLRequest / GSSENCRequest (`S`, `N`, `G`).
    SslAnswer(u8),
}

/// Why framing stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// A length field below its minimum or above the protocol's maximum.
    BadLength { tag: u8, len: u32 },
    /// The capture lost bytes across a message boundary.
    Gap,
}

/// PostgreSQL refuses startup packets longer than this (MAX_STARTUP_PACKET_LENGTH).
pub const MAX_STARTUP_LEN: u32 = 10_000;
/// The largest message the server accepts or sends (PQ_LARGE_MESSAGE_LIMIT, 1 GB).
const MAX_MESSAGE_LEN: u32 = 0x3fff_ffff;

#[derive(Debug)]
pub struct Framer {
    pub mode: Mode,
    header: [u8; 5],
    header_len: usize,
    /// The message being read: its tag, full body length and bytes still to come.
    current: Option<(u8, u32)>,
    remaining: u32,
    body: Vec<u8>,
    keep: usize,
    failed: Option<FrameError>,
}

impl Framer {
    pub fn new(mode: Mode) -> Framer {
        Framer {
            mode,
            header: [0; 5],
            header_len: 0,
            current: None,
            remaining: 0,
            body: Vec::new(),
            keep: 0,
            failed: None,
        }
    }

    /// A framer that joins a stream at an unknown position (the capture
    /// began mid-connection): it waits for `resync` to find a boundary.
    pub fn unsynced(mode: Mode) -> Framer {
        Framer { failed: Some(FrameError::Gap), ..Framer::new(mode) }
    }

    pub fn error(&self) -> Option<&FrameError> {
        self.failed.as_ref()
    }

    /// Takes the next complete frame from `data`, advancing it; `None` when
    /// `data` is used up mid-frame (more bytes are needed) or framing failed.
    /// `keep(tag)` says how many body bytes of a message with that tag to keep.
    pub fn next_frame(&mut self, data: &mut &[u8], keep: impl Fn(u8) -> usize) -> Option<Frame<'_>> {
        if self.failed.is_some() {
            *data = &[];
            return None;
        }
        if self.current.is_none() {
            if self.mode == Mode::SslAnswer {
                let (&byte, rest) = data.split_first()?;
                *data = rest;
                if matches!(byte, b'S' | b'N' | b'G') {
                    return Some(Frame::SslAnswer(byte));
                }
                // Anything else (an old server's ErrorResponse) is a typed message.
                self.mode = Mode::Typed;
                self.header[0] = byte;
                self.header_len = 1;
            }
            let need = if self.mode == Mode::Untyped { 4 } else { 5 };
            // A header whole in `data` (nearly always) is read in place;
            // one split across segments is gathered first.
            let header = match data.get(..need) {
                Some(whole) if self.header_len == 0 => {
                    *data = &data[need..];
                    whole
                }
                _ => {
                    let take = (need - self.header_len).min(data.len());
                    self.header[self.header_len..self.header_len + take].copy_from_slice(&data[..take]);
                    self.header_len += take;
                    *data = &data[take..];
                    if self.header_len < need {
                        return None;
                    }
                    self.header_len = 0;
                    &self.header[..need]
                }
            };
            let (tag, len_bytes) = if need == 4 { (0, &header[..4]) } else { (header[0], &header[1..5]) };
            let len = u32::from_be_bytes([len_bytes[0], len_bytes[1], len_bytes[2], len_bytes[3]]);
            let (min, max) = if tag == 0 { (8, MAX_STARTUP_LEN) } else { (4, MAX_MESSAGE_LEN) };
            if len < min || len > max {
                self.failed = Some(FrameError::BadLength { tag, len });
                *data = &[];
                return None;
            }
            let body_len = len - 4;
            self.current = Some((tag, body_len));
            self.remaining = body_len;
            self.keep = keep(tag).min(body_len as usize);
            self.body.clear();
        }
        let (tag, body_len) = self.current?;
        let wanted = self.keep.saturating_sub(self.body.len());
        let take = (self.remaining as usize).min(data.len());
        if wanted > 0 {
            self.body.extend_from_slice(&data[..take.min(wanted)]);
        }
        self.remaining -= take as u32;
        *data = &data[take..];
        if self.remaining > 0 {
            return None;
        }
        self.current = None;
        Some(Frame::Message { tag, len: body_len, body: &self.body })
    }

    /// The capture lost `n` bytes. Inside a body being skipped, framing
    /// survives; anywhere else it is lost.
    pub fn gap(&mut self, n: u32) {
        if self.failed.is_some() {
            return;
        }
        let skippable = self.current.is_some() && self.body.len() >= self.keep && n <= self.remaining;
        if skippable {
            self.remaining -= n;
        } else {
            self.failed = Some(FrameError::Gap);
        }
    }

    /// After a gap at a message boundary, `data` (the first bytes of a later
    /// segment) may start a message again: framing resumes there when it
    /// starts with two plausible message headers (a known type byte and a
    /// valid length, the first message complete), or with exactly one whole
    /// message. Random bytes pass that by chance about once in millions.
    pub fn resync(&mut self, data: &[u8], known_tag: fn(u8) -> bool) -> bool {
        if self.failed != Some(FrameError::Gap) || self.mode != Mode::Typed {
            return false;
        }
        let (mut rest, mut headers, mut complete) = (data, 0, 0);
        while rest.len() >= 5 {
            let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]);
            if !known_tag(rest[0]) || !(4..=MAX_MESSAGE_LEN).contains(&len) {
                return false;
            }
            headers += 1;
            let total = 1 + len as usize;
            if total > rest.len() {
                break;
            }
            complete += 1;
            rest = &rest[total..];
        }
        let plausible = (headers >= 2 && complete >= 1) || (complete == 1 && rest.is_empty());
        if plausible {
            self.failed = None;
            self.header_len = 0;
            self.current = None;
            self.remaining = 0;
            self.body.clear();
        }
        plausible
    }

    /// Whether a message is partly read (the stream ended mid-message).
    pub fn mid_message(&self) -> bool {
        self.current.is_some() || self.header_len > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn typed(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![tag];
        m.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        m.extend_from_slice(body);
        m
    }

    /// Feeds `bytes` in pieces of `step` and collects (tag, len, kept body).
    fn frames(bytes: &[u8], step: usize, mode: Mode) -> Vec<(u8, u32, Vec<u8>)> {
        let mut f = Framer::new(mode);
        let mut out = Vec::new();
        for piece in bytes.chunks(step) {
            let mut data = piece;
            while let Some(frame) = f.next_frame(&mut data, |tag| if tag == b'D' { 0 } else { 100 }) {
                match frame {
                    Frame::Message { tag, len, body } => out.push((tag, len, body.to_vec())),
                    Frame::SslAnswer(b) => out.push((b, 1, vec![])),
                }
            }
        }
        out
    }

    #[test]
    fn split_at_every_boundary() {
        let mut stream = typed(b'Z', b"I");
        stream.extend(typed(b'D', &[7; 300]));
        stream.extend(typed(b'S', b"server_version\x0015.4\x00"));
        for step in 1..stream.len() {
            let got = frames(&stream, step, Mode::Typed);
            assert_eq!(got.len(), 3, "step {step}");
            assert_eq!(got[0], (b'Z', 1, b"I".to_vec()));
            assert_eq!(got[1], (b'D', 300, vec![]), "skipped body is not kept");
            assert_eq!(got[2].2, b"server_version\x0015.4\x00");
        }
    }

    #[test]
    fn untyped_startup_packet() {
        let mut pkt = 8u32.to_be_bytes().to_vec();
        pkt.extend_from_slice(&80877103u32.to_be_bytes());
        assert_eq!(frames(&pkt, 3, Mode::Untyped), [(0, 4, 80877103u32.to_be_bytes().to_vec())]);
    }

    #[test]
    fn ssl_answer_then_old_server_error() {
        assert_eq!(frames(b"N", 1, Mode::SslAnswer), [(b'N', 1, vec![])]);
        let err = typed(b'E', b"SFATAL\x00\x00");
        let got = frames(&err, 2, Mode::SslAnswer);
        assert_eq!(got, [(b'E', 8, b"SFATAL\x00\x00".to_vec())]);
    }

    #[test]
    fn bad_lengths_stop_framing() {
        let mut f = Framer::new(Mode::Typed);
        let mut data: &[u8] = &[b'Z', 0, 0, 0, 2];
        assert!(f.next_frame(&mut data, |_| 0).is_none());
        assert_eq!(f.error(), Some(&FrameError::BadLength { tag: b'Z', len: 2 }));
        let mut f = Framer::new(Mode::Untyped);
        let mut data: &[u8] = &[0, 1, 0, 0];
        assert!(f.next_frame(&mut data, |_| 0).is_none());
        assert!(matches!(f.error(), Some(FrameError::BadLength { tag: 0, .. })));
    }

    fn any_tag(tag: u8) -> bool {
        tag.is_ascii_alphanumeric()
    }

    #[test]
    fn resyncs_at_a_segment_that_starts_with_messages() {
        let mut f = Framer::new(Mode::Typed);
        f.gap(10);
        assert_eq!(f.error(), Some(&FrameError::Gap));
        // Not messages: stays lost.
        assert!(!f.resync(b"\xff\xfe\x00\x01random bytes", any_tag));
        // A first header that fits but a second that does not.
        let mut bad = typed(b'D', b"abc");
        bad.extend_from_slice(b"\x00\xff\xff\xff\xff");
        assert!(!f.resync(&bad, any_tag));
        // One complete message with a partial second: not enough evidence.
        assert!(!f.resync(&typed(b'D', b"abc")[..6], any_tag));
        let mut good = typed(b'E', b"SERROR\x00\x00");
        good.extend(typed(b'Z', b"I"));
        assert!(f.resync(&good, any_tag));
        assert_eq!(f.error(), None);
        let mut data = &good[..];
        let mut tags = Vec::new();
        while let Some(Frame::Message { tag, .. }) = f.next_frame(&mut data, |_| 0) {
            tags.push(tag);
        }
        assert_eq!(tags, b"EZ");
    }

    #[test]
    fn gap_inside_a_skipped_body_keeps_framing() {
        let mut f = Framer::new(Mode::Typed);
        let msg = typed(b'D', &[1; 100]);
        let mut data = &msg[..20];
        assert!(f.next_frame(&mut data, |_| 0).is_none());
        f.gap(50);
        let mut rest = &msg[70..];
        assert!(matches!(f.next_frame(&mut rest, |_| 0), Some(Frame::Message { tag: b'D', len: 100, .. })));
        f.gap(3);
        assert_eq!(f.error(), Some(&FrameError::Gap), "a gap at a boundary loses framing");
    }
}
