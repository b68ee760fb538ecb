//! The PostgreSQL frontend/backend protocol inside an established
//! connection: framing, message decoding, the session state machine and
//! what its errors mean.

mod classify;
pub mod framer;
pub mod message;
pub mod pooler;
pub mod session;
pub mod summary;

pub use session::PgSession;
pub use summary::{Encryption, PgSummary};
