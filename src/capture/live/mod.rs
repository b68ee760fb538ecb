//! Live capture: the adapter that feeds the engine from libpcap on an
//! interface. [`device`] opens the interface and runs the capture thread;
//! [`driver`] is the async loop that feeds the engine and its timer;
//! [`savefile`] writes `-w` files and [`metrics`] serves Prometheus metrics
//! (on a listener with bounded connections, `guarded`).

pub mod device;
pub mod driver;
mod guarded;
pub mod metrics;
pub mod savefile;

pub use device::{default_filter, Dropped, LiveCapture, LiveError, LiveOptions};
pub use driver::{run, Batch, Feed, FromCapture, LiveSink, LiveStatus, StopWhen, Stopped};
