//! Optional OpenTelemetry export. Built only with the cargo feature `otlp` (off by default) and
//! active only when `OTEL_EXPORTER_OTLP_ENDPOINT` is set: each request's `request` span is then
//! exported over OTLP/HTTP (protobuf), as a child of the client's `traceparent` when it sent
//! one, and the backend receives a `traceparent` naming that span as its parent. The standard
//! `OTEL_*` variables (`OTEL_SERVICE_NAME`, `OTEL_EXPORTER_OTLP_HEADERS`, …) apply.
//!
//! Without the feature (or the variable) [`link`] passes the trace context through unchanged.

use http::HeaderValue;

/// Joins `span` to the client's trace and returns the `traceparent` to send to the backend.
/// `client` is the valid `traceparent` the client sent, if any; `fallback` is what is sent
/// when OpenTelemetry is off (the client's, or a new trace).
pub fn link(
    span: &tracing::Span,
    client: Option<&HeaderValue>,
    fallback: HeaderValue,
) -> HeaderValue {
    #[cfg(feature = "otlp")]
    if let Some(tp) = otlp::link(span, client) {
        return tp;
    }
    let _ = (span, client);
    fallback
}

/// The W3C trace context a request passes on to its backends: `traceparent` and `tracestate`.
#[derive(Debug, Clone)]
pub struct TraceContext {
    pub traceparent: HeaderValue,
    pub tracestate: Option<HeaderValue>,
}

impl TraceContext {
    /// The trace context of a request whose span is `span`: the client's valid `traceparent`
    /// (and `tracestate`), else a new trace; joined to OpenTelemetry by [`link`]. Records the
    /// trace id in the span's `trace_id` field.
    pub fn start(span: &tracing::Span, headers: &http::HeaderMap) -> TraceContext {
        let (traceparent, tracestate, given) = trace_context(headers);
        let client_tp = given.then(|| traceparent.clone());
        let traceparent = link(span, client_tp.as_ref(), traceparent);
        span.record("trace_id", trace_id(&traceparent));
        TraceContext {
            traceparent,
            tracestate,
        }
    }
}

/// The W3C trace context passed to the backend: the client's `traceparent` (and `tracestate`)
/// when it is valid (`true`), else a new trace started here (and no `tracestate`, as the spec
/// says).
fn trace_context(headers: &http::HeaderMap) -> (HeaderValue, Option<HeaderValue>, bool) {
    if let Some(tp) = headers.get("traceparent") {
        if valid_traceparent(tp.as_bytes()) {
            return (tp.clone(), headers.get("tracestate").cloned(), true);
        }
    }
    let trace: u128 = rand::random::<u128>().max(1);
    let parent: u64 = rand::random::<u64>().max(1);
    let value = format!("00-{trace:032x}-{parent:016x}-01");
    (
        HeaderValue::from_str(&value).expect("hex digits and dashes are a valid header value"),
        None,
        false,
    )
}

/// `version-traceid-parentid-flags`, lower-case hex, ids not all zero, version not `ff`
/// (a longer value is allowed for versions after 00, as the spec asks).
fn valid_traceparent(v: &[u8]) -> bool {
    let hex = |b: &[u8]| b.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
    let zero = |b: &[u8]| b.iter().all(|&c| c == b'0');
    if v.len() < 55 || (v.len() > 55 && (&v[..2] == b"00" || v[55] != b'-')) {
        return false;
    }
    hex(&v[..2])
        && &v[..2] != b"ff"
        && v[2] == b'-'
        && hex(&v[3..35])
        && !zero(&v[3..35])
        && v[35] == b'-'
        && hex(&v[36..52])
        && !zero(&v[36..52])
        && v[52] == b'-'
        && hex(&v[53..55])
}

/// The trace id of a valid `traceparent`.
fn trace_id(tp: &HeaderValue) -> &str {
    tp.to_str().ok().and_then(|s| s.get(3..35)).unwrap_or("-")
}

#[cfg(feature = "otlp")]
pub use otlp::{layer, Guard};

#[cfg(feature = "otlp")]
mod otlp {
    use std::sync::OnceLock;

    use http::HeaderValue;
    use opentelemetry::propagation::{Extractor, TextMapPropagator};
    use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
    use opentelemetry_sdk::propagation::TraceContextPropagator;
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    static ACTIVE: OnceLock<()> = OnceLock::new();

    /// Flushes and stops the exporter when dropped (at the end of `serve`).
    pub struct Guard(Option<SdkTracerProvider>);

    impl Drop for Guard {
        fn drop(&mut self) {
            if let Some(provider) = self.0.take() {
                if let Err(e) = provider.shutdown() {
                    eprintln!("agentgate: OpenTelemetry shutdown: {e}");
                }
            }
        }
    }

    /// The OpenTelemetry layer, when `OTEL_EXPORTER_OTLP_ENDPOINT` is set. Call before the
    /// tokio runtime starts (the exporter's blocking HTTP client has a runtime of its own).
    pub fn layer<S>() -> (
        Option<tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::Tracer>>,
        Guard,
    )
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        if std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_none() {
            return (None, Guard(None));
        }
        let exporter = match opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .build()
        {
            Ok(e) => e,
            Err(e) => {
                eprintln!("agentgate: OTLP exporter not started: {e}");
                return (None, Guard(None));
            }
        };
        let resource = opentelemetry_sdk::Resource::builder()
            .with_service_name(
                std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| "agentgate".into()),
            )
            .build();
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("agentgate");
        let _ = ACTIVE.set(());
        (
            Some(tracing_opentelemetry::layer().with_tracer(tracer)),
            Guard(Some(provider)),
        )
    }

    struct One<'a>(&'a HeaderValue);

    impl Extractor for One<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            (key == "traceparent")
                .then(|| self.0.to_str().ok())
                .flatten()
        }

        fn keys(&self) -> Vec<&str> {
            vec!["traceparent"]
        }
    }

    pub fn link(span: &tracing::Span, client: Option<&HeaderValue>) -> Option<HeaderValue> {
        ACTIVE.get()?;
        if let Some(tp) = client {
            let parent = TraceContextPropagator::new().extract(&One(tp));
            let _ = span.set_parent(parent);
        }
        let cx = span.context();
        let sc = cx.span().span_context().clone();
        if !sc.is_valid() {
            return None;
        }
        let value = format!(
            "00-{}-{}-{:02x}",
            sc.trace_id(),
            sc.span_id(),
            sc.trace_flags().to_u8()
        );
        HeaderValue::from_str(&value).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_validation_follows_w3c() {
        let ok = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert!(valid_traceparent(ok.as_bytes()));
        // A later version may append fields after a dash.
        assert!(valid_traceparent(
            b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra"
        ));
        for bad in [
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", // 00 has no tail
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "",
        ] {
            assert!(!valid_traceparent(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn a_missing_or_bad_traceparent_starts_a_new_trace() {
        let mut headers = http::HeaderMap::new();
        headers.insert("tracestate", HeaderValue::from_static("a=1"));
        let (tp, ts, given) = trace_context(&headers);
        assert!(!given);
        assert!(valid_traceparent(tp.as_bytes()), "{tp:?}");
        assert_eq!(ts, None);
        assert_eq!(trace_id(&tp).len(), 32);
        headers.insert("traceparent", HeaderValue::from_static("garbage"));
        let (tp2, _, _) = trace_context(&headers);
        assert!(valid_traceparent(tp2.as_bytes()) && tp2 != tp);
        let given = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        headers.insert("traceparent", HeaderValue::from_static(given));
        let (tp3, ts3, was_given) = trace_context(&headers);
        assert!(was_given);
        assert_eq!(tp3, given);
        assert_eq!(ts3, Some(HeaderValue::from_static("a=1")));
        assert_eq!(trace_id(&tp3), "4bf92f3577b34da6a3ce929d0e0e4736");
    }
}
