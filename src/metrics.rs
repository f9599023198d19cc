//! Prometheus metrics (via `prometheus-client`), served as text on the admin listener's
//! `GET /metrics`.
//!
//! Everything is recorded once per request (or per stream, at its end), never per chunk: a
//! label set is a few `&'static str`s, a status code and the agent id as an `Arc<str>` interned
//! once per agent per config snapshot, so recording allocates nothing after a label set's first
//! use. The registry lives outside the config snapshot, so a reload resets no counter.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

/// The agent label of requests refused before their agent was known (e.g. a bad key).
pub const NO_AGENT: &str = "-";

/// `Content-Type` of the exposition (OpenMetrics text, which Prometheus scrapes natively).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub front: &'static str,
    pub agent: Arc<str>,
    pub upstream_api: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FrontAgent {
    pub front: &'static str,
    pub agent: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AgentLabel {
    pub agent: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabels {
    pub agent: Arc<str>,
    pub upstream_api: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FrontLabel {
    pub front: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RateLimitLabels {
    pub front: &'static str,
    pub agent: Arc<str>,
    /// `key`, `agent` or `streams`.
    pub limit: &'static str,
}

/// Builds histograms with fixed buckets (a `fn` pointer: no closure state).
#[derive(Clone, Copy)]
pub struct Buckets(fn() -> Histogram);

impl MetricConstructor<Histogram> for Buckets {
    fn new_metric(&self) -> Histogram {
        (self.0)()
    }
}

/// 100 µs … ~105 s, ×2 per bucket: latencies and stream lengths.
fn seconds_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.000_1, 2.0, 21))
}

/// 10 µs … ~0.33 s, ×2 per bucket: time spent inside agentgate.
fn overhead_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.000_01, 2.0, 16))
}

type Histograms<L> = Family<L, Histogram, Buckets>;

/// Every metric agentgate exports. Cheap to share (`Arc`); all methods take `&self`.
pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub stream_duration: Histograms<FrontAgent>,
    pub stream_first_byte: Histograms<FrontAgent>,
    pub upstream_latency: Histograms<UpstreamLabels>,
    pub overhead: Histograms<FrontLabel>,
    pub credits_reserved: Family<AgentLabel, Counter<f64>>,
    pub credits_charged: Family<AgentLabel, Counter<f64>>,
    pub credits_refunded: Family<AgentLabel, Counter<f64>>,
    pub rate_limited: Family<RateLimitLabels, Counter>,
    pub open_streams: Family<FrontLabel, Gauge>,
    pub agent_open_streams: Family<AgentLabel, Gauge>,
    pub drains: Counter,
    pub drain_cut_streams: Counter,
    pub config_reloads: Family<ResultLabel, Counter>,
    pub config_last_reload_success: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub agent_up: Family<AgentLabel, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Reads a count kept elsewhere at scrape time.
pub type CountSource = Box<dyn Fn() -> u64 + Send + Sync>;

/// `agentgate_rate_limit_fail_open_total`: the rate limiter's own count, read at each scrape.
struct FailOpen(CountSource);

impl std::fmt::Debug for FailOpen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FailOpen")
    }
}

impl Collector for FailOpen {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let counter = ConstCounter::new((self.0)());
        let metric = encoder.encode_descriptor(
            "rate_limit_fail_open",
            "Requests admitted without a rate-limit verdict because Redis was unavailable \
             (fail-open; always 0 with local limits)",
            None,
            counter.metric_type(),
        )?;
        counter.encode(metric)
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        Self::with_fail_open(Box::new(|| 0))
    }

    /// `fail_open` reads the rate limiter's fail-open count at scrape time.
    pub fn with_fail_open(fail_open: CountSource) -> Metrics {
        let mut registry = Registry::with_prefix("agentgate");
        let requests = Family::default();
        let stream_duration = Family::new_with_constructor(Buckets(seconds_buckets));
        let stream_first_byte = Family::new_with_constructor(Buckets(seconds_buckets));
        let upstream_latency = Family::new_with_constructor(Buckets(seconds_buckets));
        let overhead = Family::new_with_constructor(Buckets(overhead_buckets));
        let credits_reserved = Family::default();
        let credits_charged = Family::default();
        let credits_refunded = Family::default();
        let rate_limited = Family::default();
        let open_streams = Family::default();
        let agent_open_streams = Family::default();
        let drains = Counter::default();
        let drain_cut_streams = Counter::default();
        let config_reloads = Family::default();
        let config_last_reload_success = Gauge::default();
        let agent_up = Family::default();
        registry.register(
            "requests",
            "Chat requests answered, by front, agent, upstream API and HTTP status",
            requests.clone(),
        );
        registry.register_with_unit(
            "stream_duration",
            "Streamed answers: from the request's arrival to the stream's end",
            Unit::Seconds,
            stream_duration.clone(),
        );
        registry.register_with_unit(
            "stream_first_byte",
            "Streamed answers: from the request's arrival to the first body byte sent to the client",
            Unit::Seconds,
            stream_first_byte.clone(),
        );
        registry.register_with_unit(
            "upstream_latency",
            "From sending the request to a backend to its response headers",
            Unit::Seconds,
            upstream_latency.clone(),
        );
        registry.register_with_unit(
            "gateway_overhead",
            "Time spent in agentgate itself per answered request: total time minus the waits \
             on the backend (response headers, body reads) and on the client (see README)",
            Unit::Seconds,
            overhead.clone(),
        );
        registry.register(
            "credits_reserved",
            "Credits reserved before backends were called",
            credits_reserved.clone(),
        );
        registry.register(
            "credits_charged",
            "Credits charged when requests settled",
            credits_charged.clone(),
        );
        registry.register(
            "credits_refunded",
            "Credits reserved and given back when requests settled",
            credits_refunded.clone(),
        );
        registry.register(
            "rate_limited",
            "Requests refused with 429, by the limit that refused them (key, agent, streams)",
            rate_limited.clone(),
        );
        registry.register(
            "open_streams",
            "Streamed answers open now",
            open_streams.clone(),
        );
        registry.register(
            "agent_open_streams",
            "Streamed answers open now, per agent",
            agent_open_streams.clone(),
        );
        registry.register("drains", "Graceful shutdowns begun", drains.clone());
        registry.register(
            "drain_cut_streams",
            "Drains whose timeout passed with streams still open (ended with a terminal event)",
            drain_cut_streams.clone(),
        );
        registry.register(
            "config_reloads",
            "Config reloads, by result (ok, error)",
            config_reloads.clone(),
        );
        registry.register(
            "config_last_reload_success_timestamp_seconds",
            "Unix time of the last config load that was applied",
            config_last_reload_success.clone(),
        );
        registry.register(
            "agent_up",
            "1 while an agent's health check passes (or it has none), 0 while it fails",
            agent_up.clone(),
        );
        registry.register_collector(Box::new(FailOpen(fail_open)));
        Metrics {
            registry,
            requests,
            stream_duration,
            stream_first_byte,
            upstream_latency,
            overhead,
            credits_reserved,
            credits_charged,
            credits_refunded,
            rate_limited,
            open_streams,
            agent_open_streams,
            drains,
            drain_cut_streams,
            config_reloads,
            config_last_reload_success,
            agent_up,
        }
    }

    /// The exposition, in OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    pub fn request(&self, labels: &RequestLabels) {
        self.requests.get_or_create(labels).inc();
    }

    pub fn credits_reserved(&self, agent: &Arc<str>, reserved: f64) {
        let label = AgentLabel {
            agent: agent.clone(),
        };
        self.credits_reserved.get_or_create(&label).inc_by(reserved);
    }

    pub fn credits_settled(&self, agent: &Arc<str>, charged: f64, refunded: f64) {
        let label = AgentLabel {
            agent: agent.clone(),
        };
        self.credits_charged.get_or_create(&label).inc_by(charged);
        self.credits_refunded.get_or_create(&label).inc_by(refunded);
    }

    pub fn reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.config_reloads
            .get_or_create(&ResultLabel { result })
            .inc();
        if ok {
            self.config_loaded();
        }
    }

    /// A config was applied (at start or by a reload).
    pub fn config_loaded(&self) {
        self.config_last_reload_success.set(unix_now_secs());
    }

    pub fn observe(histogram: &Histogram, d: Duration) {
        histogram.observe(d.as_secs_f64());
    }
}

fn unix_now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}
