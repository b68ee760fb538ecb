//! The PostgreSQL framer in each mode, fed in pieces, and every message
//! decoder (frontend and backend) on each frame it yields and on the raw
//! bytes: no panic, and a kept body never longer than asked.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgreach::pg::framer::{Frame, Framer, Mode};
use pgreach::pg::message;

const MODES: [Mode; 3] = [Mode::Untyped, Mode::Typed, Mode::SslAnswer];

fn decode_all(tag: u8, body: &[u8]) {
    match tag {
        0 => drop(message::startup_packet(body)),
        b'R' => {
            let auth = message::auth_request(body);
            let _ = (auth.method(), auth.wants_answer());
        }
        b'S' => drop(message::parameter_status(body)),
        b'K' => drop(message::backend_pid(body)),
        b'v' => drop(message::negotiated_minor(body)),
        _ => {
            let fields = message::error_fields(body);
            let _ = (fields.severity(), fields.is_fatal(), fields.code());
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, rest)) = data.split_first() else { return };
    for tag in [0, b'R', b'S', b'K', b'v', b'E'] {
        decode_all(tag, rest);
    }
    let mode = MODES[usize::from(control & 3) % MODES.len()];
    let keep = usize::from(control >> 2) * 64;
    let piece = usize::from(control % 7) + 1;
    let mut framer = Framer::new(mode);
    for mut chunk in rest.chunks(piece) {
        while !chunk.is_empty() {
            match framer.next_frame(&mut chunk, |_| keep) {
                Some(Frame::Message { tag, body, len }) => {
                    assert!(body.len() <= keep && body.len() <= len as usize);
                    let body = body.to_vec();
                    decode_all(tag, &body);
                }
                Some(Frame::SslAnswer(_)) => {}
                None => break,
            }
        }
    }
    // A gap then a resync attempt on the rest, as after lost packets.
    framer.gap(u32::from(control));
    let _ = framer.resync(rest, |t| t.is_ascii_alphabetic());
    let _ = framer.mid_message();
});
