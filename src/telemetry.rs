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
