//! `--metrics ADDR`: Prometheus metrics over HTTP, so a fleet of hosts is
//! watched with the Prometheus and Grafana that users already run.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use super::driver::LiveStatus;
use super::guarded::GuardedListener;
use crate::capture::CaptureCounters;
use crate::engine::Stats;
use crate::record::AttemptRecord;

/// Client addresses given their own series; the rest share `client="other"`,
/// so a scan of many addresses cannot blow up Prometheus.
pub const MAX_CLIENT_SERIES: usize = 1000;
/// Server addresses given their own series (servers are few; a bound anyway).
const MAX_SERVER_SERIES: usize = 64;
const OTHER: &str = "other";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServerLabels {
    server: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClientLabels {
    client: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DropLabels {
    by: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LostLabels {
    what: &'static str,
}

pub struct Metrics {
    registry: Registry,
    attempts: Family<ServerLabels, Counter>,
    client_attempts: Family<ClientLabels, Counter>,
    handshake: Histogram,
    login: Histogram,
    captured: Counter,
    dropped: Family<DropLabels, Counter>,
    /// What a full flow table cost: a flood must not pass unseen here either.
    lost_track: Family<LostLabels, Counter>,
    unanswered: Gauge,
    open: Gauge,
    clients: HashSet<String>,
    servers: HashSet<String>,
    last_counters: CaptureCounters,
    last_stats: Stats,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("pgreach");
        let attempts = Family::<ServerLabels, Counter>::default();
        registry.register("attempts", "Connection attempts to PostgreSQL by server and outcome", attempts.clone());
        let client_attempts = Family::<ClientLabels, Counter>::default();
        registry.register(
            "client_attempts",
            "Connection attempts by client address (the first 1000; further ones as client=\"other\") and outcome",
            client_attempts.clone(),
        );
        // 50 µs to about 1.6 s.
        let handshake = Histogram::new(exponential_buckets(0.000_05, 2.0, 16));
        registry.register("handshake_seconds", "Time from the first SYN to the SYN-ACK", handshake.clone());
        // 1 ms to about 33 s.
        let login = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register("login_seconds", "Time from the first SYN to ReadyForQuery", login.clone());
        let captured = Counter::default();
        registry.register("capture_packets", "Packets libpcap's filter passed", captured.clone());
        let dropped = Family::<DropLabels, Counter>::default();
        registry.register("capture_dropped_packets", "Packets the capture lost, by=kernel|interface", dropped.clone());
        let lost_track = Family::<LostLabels, Counter>::default();
        registry.register(
            "flow_table_full",
            "What the full flow table cost: what=attempts_ended_early|midstream_ended_early|packets_untracked",
            lost_track.clone(),
        );
        let unanswered = Gauge::default();
        registry.register("unanswered_syns", "SYNs waiting longer than the SYN time-out now", unanswered.clone());
        let open = Gauge::default();
        registry.register("open_connections", "Connections established and not closed now", open.clone());
        // The version as a label on a constant 1, as Prometheus exporters do.
        let build_info = Family::<Vec<(&'static str, &'static str)>, Gauge>::default();
        build_info.get_or_create(&vec![("version", env!("CARGO_PKG_VERSION"))]).set(1);
        registry.register("build_info", "The pgreach that serves these metrics (1, with its version)", build_info);
        Metrics {
            registry,
            attempts,
            client_attempts,
            handshake,
            login,
            captured,
            dropped,
            lost_track,
            unanswered,
            open,
            clients: HashSet::new(),
            servers: HashSet::new(),
            last_counters: CaptureCounters::default(),
            last_stats: Stats::default(),
        }
    }
}

impl Metrics {
    pub fn observe(&mut self, a: &AttemptRecord) {
        let outcome = a.outcome.as_str().to_owned();
        let server = bounded(&mut self.servers, a.server.to_string(), MAX_SERVER_SERIES);
        self.attempts.get_or_create(&ServerLabels { server, outcome: outcome.clone() }).inc();
        let client = bounded(&mut self.clients, a.client.ip().to_string(), MAX_CLIENT_SERIES);
        self.client_attempts.get_or_create(&ClientLabels { client, outcome }).inc();
        if let Some(ms) = a.handshake_ms {
            self.handshake.observe(ms / 1e3);
        }
        if let Some(ms) = a.pg.as_ref().and_then(|p| p.login_ms) {
            self.login.observe(ms / 1e3);
        }
    }

    pub fn status(&mut self, status: &LiveStatus, stats: &Stats) {
        let c = status.counters;
        let last = self.last_counters;
        self.captured.inc_by(c.received.saturating_sub(last.received));
        self.dropped
            .get_or_create(&DropLabels { by: "kernel" })
            .inc_by(c.kernel_dropped.saturating_sub(last.kernel_dropped));
        self.dropped
            .get_or_create(&DropLabels { by: "interface" })
            .inc_by(c.interface_dropped.saturating_sub(last.interface_dropped));
        self.last_counters = c;
        let last = &self.last_stats;
        for (what, now, before) in [
            ("attempts_ended_early", stats.evicted, last.evicted),
            ("midstream_ended_early", stats.evicted_midstream, last.evicted_midstream),
            ("packets_untracked", stats.untracked, last.untracked),
        ] {
            self.lost_track.get_or_create(&LostLabels { what }).inc_by(now.saturating_sub(before));
        }
        self.last_stats = stats.clone();
        let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.unanswered.set(gauge(status.connections.unanswered_syns));
        self.open.set(gauge(status.connections.open));
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// The label value for `key`: itself while fewer than `max` are known.
fn bounded(known: &mut HashSet<String>, key: String, max: usize) -> String {
    if known.contains(&key) {
        return key;
    }
    if known.len() < max {
        known.insert(key.clone());
        return key;
    }
    OTHER.to_owned()
}

pub type SharedMetrics = Arc<Mutex<Metrics>>;

/// Serves `/metrics` on an open listener until the process ends, with the
/// bounds of [`GuardedListener`].
pub async fn serve(listener: tokio::net::TcpListener, metrics: SharedMetrics) -> std::io::Result<()> {
    let app = Router::new().route("/metrics", get(scrape)).with_state(metrics);
    axum::serve(GuardedListener::new(listener), app).await
}

async fn scrape(State(metrics): State<SharedMetrics>) -> impl IntoResponse {
    let body = metrics.lock().map(|m| m.encode()).unwrap_or_default();
    ([(CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::ConnectionsNow;
    use crate::time::Timestamp;

    fn status() -> LiveStatus {
        LiveStatus {
            started: Timestamp::default(),
            now: Timestamp::default(),
            packets: 0,
            counters: CaptureCounters::default(),
            connections: ConnectionsNow::default(),
        }
    }

    /// Evictions are counted as they happen, each refresh adding only what
    /// is new since the last.
    #[test]
    fn a_full_flow_table_is_counted() {
        let mut metrics = Metrics::default();
        let mut stats = Stats { evicted: 3, untracked: 5, ..Stats::default() };
        metrics.status(&status(), &stats);
        stats.evicted = 4;
        metrics.status(&status(), &stats);
        let text = metrics.encode();
        assert!(text.contains("pgreach_flow_table_full_total{what=\"attempts_ended_early\"} 4"), "{text}");
        assert!(text.contains("pgreach_flow_table_full_total{what=\"packets_untracked\"} 5"), "{text}");
        assert!(text.contains("pgreach_flow_table_full_total{what=\"midstream_ended_early\"} 0"), "{text}");
    }
}
