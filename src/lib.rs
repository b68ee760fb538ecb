//! pgreach: why can't clients connect to PostgreSQL? Connection attempts
//! followed from packets, each with an outcome and its evidence.
//!
//! The [`engine`] takes frames and time and yields finished attempts; it does
//! no I/O. [`capture`] reads pcap files into it and [`report`] renders what
//! it found.
#![deny(unsafe_code)]

pub mod capture;
pub mod decode;
pub mod engine;
pub mod flow;
pub mod live;
pub mod pg;
pub mod record;
pub mod redact;
pub mod report;
pub mod seq;
pub mod stream;
pub mod time;
