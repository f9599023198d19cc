//! Calls to agent backends: the request rewritten into the backend's API, and a pooled client.

use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Uri};
use http_body_util::Full;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;
use serde_json::{Map, Value};

use crate::apis::{Api, HistoryMessage, UpstreamChat};
use crate::formats::Format;

mod connector;
pub use connector::Connector;

/// A pooled HTTP/1.1 + HTTP/2 (ALPN) client, https through rustls.
pub type Client = HyperClient<Connector, Full<Bytes>>;

/// Builds a client whose connections time out after `connect_timeout`.
pub fn client(connect_timeout: Duration) -> Client {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_nodelay(true);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    let https = Connector::new(https);
    HyperClient::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(256)
        .build(https)
}

/// The format a backend speaking `api` streams in.
pub fn stream_format(api: Api) -> Format {
    api.default_format()
}

/// What agentgate sends a backend for one chat.
#[derive(Debug)]
pub struct Call<'a> {
    pub api: Api,
    /// Scheme, authority and optional base path of the backend.
    pub base: &'a Uri,
    pub agent_id: &'a str,
    pub token: Option<&'a str>,
    pub message: Option<&'a str>,
    /// The backend's own conversation id, when the conversation continues.
    pub conversation: Option<&'a str>,
    pub user_id: Option<&'a str>,
    /// pharen options (passed on only to a pharen backend).
    pub options: &'a Map<String, Value>,
    /// The conversation's recorded messages, oldest first, for a backend that keeps no
    /// conversation (openai-chat); empty otherwise.
    pub history: &'a [HistoryMessage],
    pub request_id: &'a str,
    pub traceparent: Option<&'a HeaderValue>,
    pub tracestate: Option<&'a HeaderValue>,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot build the upstream request: {0}")]
pub struct BuildError(String);

impl Call<'_> {
    /// The request, always asking the backend for a stream. Only the headers named here are
    /// sent: the client's own (its key, hop-by-hop headers) never reach a backend.
    pub fn request(&self) -> Result<Request<Full<Bytes>>, BuildError> {
        let id = encode_path_segment(self.agent_id);
        let path = crate::apis::upstream_path(self.api, &id);
        let body = self.api.upstream_body(&UpstreamChat {
            agent_id: self.agent_id,
            message: self.message,
            conversation: self.conversation,
            user_id: self.user_id,
            options: self.options,
            history: self.history,
        });
        // A backend called on its base URL (ag-ui) keeps its path as it stands.
        let path_and_query = match path.is_empty() {
            true => self
                .base
                .path_and_query()
                .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned()),
            false => format!("{}{path}", self.base.path().trim_end_matches('/')),
        };
        let uri = Uri::builder()
            .scheme(self.base.scheme_str().unwrap_or("http"))
            .authority(
                self.base
                    .authority()
                    .map(|a| a.as_str())
                    .ok_or_else(|| BuildError("upstream URL has no host".into()))?,
            )
            .path_and_query(path_and_query)
            .build()
            .map_err(|e| BuildError(e.to_string()))?;
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(uri)
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, "text/event-stream")
            .header("x-request-id", self.request_id);
        if let Some(token) = self.token {
            req = req.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        if let Some(tp) = self.traceparent {
            req = req.header("traceparent", tp);
        }
        if let Some(ts) = self.tracestate {
            req = req.header("tracestate", ts);
        }
        req.body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| BuildError(e.to_string()))
    }
}

/// Percent-encodes what a path segment cannot hold verbatim.
fn encode_path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b':' | b'@') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_ask_for_a_stream_and_carry_only_named_headers() {
        let base: Uri = "http://127.0.0.1:9/base/".parse().unwrap();
        let options = Map::new();
        for api in Api::upstreams() {
            let call = Call {
                api,
                base: &base,
                agent_id: "a b",
                token: Some("secret"),
                message: Some("hi"),
                conversation: Some("c1"),
                user_id: None,
                options: &options,
                history: &[],
                request_id: "r1",
                traceparent: None,
                tracestate: None,
            };
            let req = call.request().unwrap();
            if api.upstream_uses_base_path() {
                // ag-ui: the agent's URL as it stands; the agent id is not used.
                assert_eq!(req.uri().path(), "/base/", "{api}");
            } else if api.is_front() {
                assert!(req.uri().path().starts_with("/base/api/"), "{}", req.uri());
                assert!(req.uri().path().contains("a%20b"));
            } else {
                // The OpenAI APIs: the agent id is the body's `model`, the path fixed.
                assert!(req.uri().path().starts_with("/base/v1/"), "{}", req.uri());
            }
            assert_eq!(req.headers()[AUTHORIZATION], "Bearer secret");
            assert_eq!(req.headers()[ACCEPT], "text/event-stream");
        }
    }

    #[test]
    fn a_base_url_as_it_stands_keeps_its_query() {
        let base: Uri = "http://127.0.0.1:9/agents/run?agent=echo&v=2"
            .parse()
            .unwrap();
        let call = Call {
            api: Api::AgUi,
            base: &base,
            agent_id: "ignored",
            token: None,
            message: Some("hi"),
            conversation: None,
            user_id: None,
            options: &Map::new(),
            history: &[],
            request_id: "r1",
            traceparent: None,
            tracestate: None,
        };
        let req = call.request().unwrap();
        assert_eq!(
            req.uri().path_and_query().unwrap(),
            "/agents/run?agent=echo&v=2"
        );
    }
}
