//! Response bodies and the helpers that build the gateway's responses.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use http::{Response, StatusCode};
use http_body::{Body, Frame, SizeHint};

use super::body::TranscodeBody;
use crate::formats::Format;
use crate::fronts::ApiError;

/// A response body: a whole JSON body, a live transcoded stream, or chunks written by a task
/// (team chat's stream).
pub enum GatewayBody {
    Full(Option<Bytes>),
    Stream(Box<TranscodeBody>),
    Channel(tokio::sync::mpsc::Receiver<Bytes>),
}

impl Body for GatewayBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            GatewayBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            GatewayBody::Stream(s) => Pin::new(s.as_mut()).poll_frame(cx),
            GatewayBody::Channel(rx) => rx.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            GatewayBody::Full(b) => b.is_none(),
            GatewayBody::Stream(s) => s.is_end_stream(),
            GatewayBody::Channel(_) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            GatewayBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            GatewayBody::Full(None) => SizeHint::with_exact(0),
            GatewayBody::Stream(s) => s.size_hint(),
            GatewayBody::Channel(_) => SizeHint::default(),
        }
    }
}

pub fn json_response(status: StatusCode, body: Bytes) -> Response<GatewayBody> {
    let mut r = Response::new(GatewayBody::Full(Some(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// An error in the shared body of seed 000 (where no front's API is known).
pub fn error_response(e: &ApiError) -> Response<GatewayBody> {
    api_error_response(crate::fronts::Api::Agents, e)
}

/// An error as `api` answers it: its status, headers, and the API's error body.
pub fn api_error_response(api: crate::fronts::Api, e: &ApiError) -> Response<GatewayBody> {
    let mut r = json_response(e.status, api.error_bytes(e));
    for (name, value) in &e.headers {
        r.headers_mut().append(name, value.clone());
    }
    r
}

pub(super) fn stream_response(format: Format, body: TranscodeBody) -> Response<GatewayBody> {
    let mut r = Response::new(GatewayBody::Stream(Box::new(body)));
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    if format == Format::UiMessage {
        h.insert(
            "x-vercel-ai-ui-message-stream",
            HeaderValue::from_static("v1"),
        );
    }
    r
}

/// An answer given before, sent again for a retry with the same `Idempotency-Key`.
pub(super) fn replay(
    format: Format,
    status: StatusCode,
    content_type: &str,
    body: Bytes,
) -> Response<GatewayBody> {
    let mut r = json_response(status, body);
    let h = r.headers_mut();
    if let Ok(ct) = HeaderValue::from_str(content_type) {
        h.insert(CONTENT_TYPE, ct);
    }
    if content_type == "text/event-stream" && format == Format::UiMessage {
        h.insert(
            "x-vercel-ai-ui-message-stream",
            HeaderValue::from_static("v1"),
        );
    }
    h.insert("idempotent-replayed", HeaderValue::from_static("true"));
    r
}

pub(super) fn with_headers(
    mut r: Response<GatewayBody>,
    headers: http::HeaderMap,
) -> Response<GatewayBody> {
    r.headers_mut().extend(headers);
    r
}

pub(super) fn with_request_id(
    mut r: Response<GatewayBody>,
    request_id: &str,
) -> Response<GatewayBody> {
    if let Ok(v) = HeaderValue::from_str(request_id) {
        r.headers_mut().insert("x-request-id", v);
    }
    r
}
