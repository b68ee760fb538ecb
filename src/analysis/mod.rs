//! What the finished attempts add up to, with no formatting: counts per
//! client and outcome, the timeline and its incident windows, the diagnosis
//! and what each outcome means. Renderers in [`crate::report`] read these.

pub mod counts;
pub mod diagnosis;
mod explain;
pub mod filter;
pub mod identity;
mod median;
pub mod retry;
pub mod summary;
pub mod timeline;
pub mod zone;
