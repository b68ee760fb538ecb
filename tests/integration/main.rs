//! pgreach's integration tests: the engine driven with built packets, the
//! binary run on the recorded captures and the shared corpus, and every
//! input error path.

mod bounds;
mod captures;
mod cli;
mod corpus;
mod decode;
mod dns;
mod engine;
mod formats;
mod hostile;
mod listen;
mod live;
mod live_tls;
mod malformed;
mod outputs;
mod points;
mod poolers;
mod postgres;
mod privileges;
mod recovery;
mod reports;
mod threads;
mod tidy;
mod timestamps;
mod tls;
mod util;
