//! pgreach: why can't clients connect to PostgreSQL? Connection attempts
//! followed from packets, each with an outcome and its evidence.
//!
//! The crate reads top-down as the pipeline; data flows one way:
//!
//! - [`time`], [`seq`]: timestamps and wrapping TCP sequence numbers.
//! - [`decode`]: a frame to a TCP segment or an ICMP error quoting one, never panicking.
//! - [`stream`]: one direction's bytes in sequence order, bounded.
//! - [`outcome`]: the words for how an attempt ended, shared by the layers below.
//! - [`tls`]: TLS records inside a connection: handshake facts, the login's shape.
//! - [`pg`]: the PostgreSQL protocol inside an established connection.
//! - [`flow`]: one attempt's TCP state machine, feeding [`pg`].
//! - [`record`]: a finished attempt with its evidence, the engine's output.
//! - [`legs`]: a pooler's two legs: its own server connections, related to its clients'.
//! - [`ports`]: the watched server ports, one bit each.
//! - [`table`]: tracked flows in numbered slots, and their deadlines.
//! - [`engine`]: the analyzer around the table; takes frames and time, yields records; no I/O, no clock.
//! - [`evict`]: which flow leaves a full table first.
//! - [`capture`]: the input adapters around the engine, files and live interfaces.
//! - [`handoff`]: the second core: the engine's attempts passed in batches to the thread that reports them.
//! - [`points`]: several capture points: the same attempts matched across them, and where packets were lost.
//! - [`redact`]: stable pseudonyms for names and addresses in records.
//! - [`analysis`]: what the records add up to (summary, timeline, diagnosis).
//! - [`report`]: the renderers, one per output format.
//! - [`outfile`]: the files pgreach writes, made beside their destination and renamed into place.
//!
//! The `pgreach` binary (src/bin/pgreach) maps its flags onto these types.
#![deny(unsafe_code)]

pub mod analysis;
pub mod capture;
pub mod decode;
pub mod dns;
pub mod duplicate;
pub mod engine;
pub mod evict;
pub mod flow;
pub mod handoff;
pub mod legs;
pub mod outcome;
pub mod outfile;
pub mod pg;
pub mod points;
pub mod ports;
pub mod record;
pub mod redact;
pub mod report;
pub mod seq;
pub mod stream;
pub mod table;
#[cfg(test)]
mod testing;
pub mod time;
pub mod tls;
