//! A request's own facts: its ids, span and timings ([`Ctx`]), its log line, and reading its
//! body within the configured limits.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::CONTENT_LENGTH;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::error::GatewayError;
use crate::fronts::{Api, ApiError};
use crate::telemetry::TraceContext;

/// Per-request facts carried through the pipeline and into the log line.
pub(super) struct Ctx {
    /// The id echoed in `x-request-id` and logged: the client's, when it is a safe one
    /// ([`client_request_id`]), else [`Ctx::id`].
    pub(super) request_id: String,
    /// agentgate's own id of the request: the id of everything stored for it (its credit
    /// reservation, team members' ids), never the client's (SPEC §11).
    pub(super) id: String,
    pub(super) started: Instant,
    pub(super) started_ms: crate::store::UnixMs,
    pub(super) front: Api,
    pub(super) agent: Option<Arc<str>>,
    pub(super) upstream_api: Option<Api>,
    /// Time spent waiting on the client's body and on the backend (not gateway overhead).
    pub(super) waited: Duration,
    pub(super) span: tracing::Span,
}

impl Ctx {
    pub(super) fn new(request_id: String, id: String, front: Api, span: tracing::Span) -> Ctx {
        Ctx {
            request_id,
            id,
            started: Instant::now(),
            started_ms: crate::store::now_ms(),
            front,
            agent: None,
            upstream_api: None,
            waited: Duration::ZERO,
            span,
        }
    }

    /// A copy for the log line written when a stream ends.
    pub(super) fn for_stream_end(&self) -> Ctx {
        Ctx {
            request_id: self.request_id.clone(),
            id: self.id.clone(),
            started: self.started,
            started_ms: self.started_ms,
            front: self.front,
            agent: self.agent.clone(),
            upstream_api: self.upstream_api,
            waited: self.waited,
            span: self.span.clone(),
        }
    }
}

/// Reads the request body: at most `[server] max_body_bytes` (413), within
/// `body_read_timeout_ms` (408).
pub(super) async fn read_body(
    api: Api,
    body: Incoming,
    headers: &http::HeaderMap,
    server: &crate::config::ServerConfig,
) -> Result<Bytes, GatewayError> {
    let max = server.max_body_bytes;
    let too_large = || {
        GatewayError::Invalid(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request body larger than {max} bytes"),
        ))
    };
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(too_large());
    }
    let reading = http_body_util::Limited::new(body, max).collect();
    let Ok(collected) = tokio::time::timeout(server.body_read_timeout, reading).await else {
        return Err(GatewayError::Invalid(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            format!(
                "the request body did not arrive within {} s",
                server.body_read_timeout.as_secs()
            ),
        )));
    };
    match collected {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(e) => Err(GatewayError::Invalid(ApiError::invalid(
            api,
            format!("cannot read the request body: {e}"),
        ))),
    }
}

/// Longest client `x-request-id` taken as the request's id.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// The client's `x-request-id` when it is 1 to [`MAX_REQUEST_ID_LEN`] characters of
/// `[A-Za-z0-9._:-]` (so it cannot forge fields in a log line); `None` otherwise.
pub(super) fn client_request_id(headers: &http::HeaderMap) -> Option<&str> {
    let v = headers.get("x-request-id")?.to_str().ok()?;
    let safe = (1..=MAX_REQUEST_ID_LEN).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
    safe.then_some(v)
}

/// The start of a request: its ids (the client's safe `X-Request-Id` to echo and log, else a
/// new one; agentgate's own for what it stores), its span and the trace context passed on to
/// backends.
pub(super) fn begin<B>(req: &Request<B>, front: Api) -> (Ctx, TraceContext) {
    let id = uuid::Uuid::now_v7().to_string();
    let request_id = client_request_id(req.headers()).map_or_else(|| id.clone(), str::to_owned);
    // `&str` values, which text logs print quoted.
    let span = tracing::info_span!(
        "request",
        request_id = request_id.as_str(),
        front = front.as_str(),
        trace_id = tracing::field::Empty,
        agent = tracing::field::Empty,
        status = tracing::field::Empty,
    );
    let trace = TraceContext::start(&span, req.headers());
    (Ctx::new(request_id, id, front, span), trace)
}

/// The request's one log line, written when it is answered (a stream's, when it ends).
/// `failure` is what went wrong; `kind` its [`GatewayError::kind`] when it was an error.
pub(super) fn log_request(
    ctx: &Ctx,
    status: StatusCode,
    bytes: u64,
    failure: Option<&str>,
    kind: Option<&'static str>,
) {
    tracing::info!(
        request_id = ctx.request_id.as_str(),
        front = ctx.front.as_str(),
        agent = ctx.agent.as_deref().unwrap_or("-"),
        upstream_api = ctx.upstream_api.map_or("-", Api::as_str),
        status = status.as_u16(),
        bytes,
        duration_ms = ctx.started.elapsed().as_secs_f64() * 1000.0,
        failure,
        error_kind = kind,
        "request"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn only_safe_client_request_ids_are_taken() {
        let id = |v: &str| {
            let mut headers = http::HeaderMap::new();
            headers.insert("x-request-id", HeaderValue::from_str(v).unwrap());
            client_request_id(&headers).map(str::to_owned)
        };
        let longest = "a".repeat(MAX_REQUEST_ID_LEN);
        for ok in ["abc", "A-1.b_2:c", longest.as_str()] {
            assert_eq!(id(ok).as_deref(), Some(ok));
        }
        let long = "a".repeat(MAX_REQUEST_ID_LEN + 1);
        for bad in [
            "",
            "a b",
            r#"x status=200 agent="forged""#,
            "a/b",
            long.as_str(),
        ] {
            assert_eq!(id(bad), None, "{bad:?}");
        }
        assert_eq!(client_request_id(&http::HeaderMap::new()), None);
    }
}
