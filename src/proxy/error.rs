//! The gateway's one error type: what went wrong, typed where it happened, with a stable
//! [`GatewayError::kind`] for logs and metrics, rendered in one place ([`GatewayError::render`])
//! into the front's own error body (`crate::fronts::ApiError`, whose statuses differ per API).

use http::StatusCode;

use crate::fronts::{Api, ApiError};

/// Which limit refused a request: the `limit` label of `agentgate_rate_limited_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// The key's (or the open front's) rate limit.
    Key,
    /// The agent's rate limit.
    Agent,
    /// A concurrent-stream cap (the key's or the agent's).
    Streams,
}

impl Limit {
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::Key => "key",
            Limit::Agent => "agent",
            Limit::Streams => "streams",
        }
    }
}

/// Which wait for the agent's backend ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timeout {
    /// No connection within `connect_timeout_ms`.
    Connect,
    /// No response head within `first_byte_timeout_ms`.
    FirstByte,
}

/// Why a request was not answered. Each variant is made where the failure is known; none is
/// classified afterwards from its text.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// No key, a bad key, or a key without the scope (401/403, or 503 when keys cannot be read).
    #[error("{}", .0.message)]
    Auth(ApiError),
    /// A request the front does not accept: bad body, unknown agent or route (400/404/405/413/422).
    #[error("{}", .0.message)]
    Invalid(ApiError),
    /// A rate limit or a stream cap refused the request (429).
    #[error("{}", .error.message)]
    Limited { limit: Limit, error: ApiError },
    /// The account cannot pay (402) or the ledger is unavailable (503).
    #[error("{}", .0.message)]
    Credits(ApiError),
    /// The agent is disabled or its health check fails (409).
    #[error("agent is not running")]
    AgentNotRunning,
    /// A wait for the agent's backend ran out (504).
    #[error("{}", match .0 {
        Timeout::Connect => "connecting to the agent's backend timed out",
        Timeout::FirstByte => "the agent's backend did not answer in time",
    })]
    UpstreamTimeout(Timeout),
    /// The backend could not be reached, answered with an error status, something other than
    /// an event stream, or failed while answering (502).
    #[error("{}", .0.message)]
    Upstream(ApiError),
    /// A sync answer larger than `[server] max_answer_bytes` (502).
    #[error("{}", .0.message)]
    AnswerTooLarge(ApiError),
    /// The store failed a read or write the request needs (503).
    #[error("{message}: {source}")]
    Store {
        message: &'static str,
        #[source]
        source: crate::store::StoreError,
    },
    /// Anything else, already in the front's error body.
    #[error("{}", .0.message)]
    Other(ApiError),
}

impl GatewayError {
    /// A stable label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            GatewayError::Auth(_) => "auth",
            GatewayError::Invalid(_) => "invalid_request",
            GatewayError::Limited { limit, .. } => match limit {
                Limit::Key => "rate_limited_key",
                Limit::Agent => "rate_limited_agent",
                Limit::Streams => "rate_limited_streams",
            },
            GatewayError::Credits(_) => "credits",
            GatewayError::AgentNotRunning => "agent_not_running",
            GatewayError::UpstreamTimeout(Timeout::Connect) => "upstream_connect_timeout",
            GatewayError::UpstreamTimeout(Timeout::FirstByte) => "upstream_first_byte_timeout",
            GatewayError::Upstream(_) => "upstream",
            GatewayError::AnswerTooLarge(_) => "answer_too_large",
            GatewayError::Store { .. } => "store",
            GatewayError::Other(_) => "other",
        }
    }

    /// The limit that refused the request, when one did.
    pub fn limit(&self) -> Option<Limit> {
        match self {
            GatewayError::Limited { limit, .. } => Some(*limit),
            _ => None,
        }
    }

    /// A store failure: logged here, where it is known, answered with 503.
    pub fn store(message: &'static str, source: crate::store::StoreError) -> GatewayError {
        tracing::error!(error = %source, "{message}");
        GatewayError::Store { message, source }
    }

    /// The one place an error becomes the front's error body (status, code, details, headers).
    /// `api` is the front the client called; the per-API parts (400 vs 422, 404 vs 403) are
    /// chosen where the error is made, with [`ApiError::invalid`] and
    /// [`ApiError::agent_not_found`].
    pub fn render(self, api: Api) -> ApiError {
        let _ = api;
        match self {
            GatewayError::Auth(e)
            | GatewayError::Invalid(e)
            | GatewayError::Limited { error: e, .. }
            | GatewayError::Credits(e)
            | GatewayError::Upstream(e)
            | GatewayError::AnswerTooLarge(e)
            | GatewayError::Other(e) => e,
            GatewayError::AgentNotRunning => ApiError::new(
                StatusCode::CONFLICT,
                "agent_not_running",
                "agent is not running",
            ),
            e @ GatewayError::UpstreamTimeout(_) => ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "gateway_timeout",
                e.to_string(),
            ),
            GatewayError::Store { message, .. } => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
            }
        }
    }

    /// The error as the response the client gets.
    pub fn into_response(self, api: Api) -> http::Response<super::GatewayBody> {
        super::response::api_error_response(api, &self.render(api))
    }

    /// `code` and `message` of the rendered error (team members report failures so).
    pub fn code_and_message(self, api: Api) -> (String, String) {
        let e = self.render(api);
        (e.code.to_owned(), e.message)
    }
}

/// The conversation store failed a read or write the request needs: 503.
pub(super) fn store_unavailable(e: crate::store::StoreError) -> GatewayError {
    GatewayError::store("the conversation store is unavailable", e)
}

impl From<ApiError> for GatewayError {
    fn from(e: ApiError) -> GatewayError {
        GatewayError::Other(e)
    }
}

impl From<GatewayError> for ApiError {
    fn from(e: GatewayError) -> ApiError {
        // Every rendering that depends on the API is chosen where the error is made.
        e.render(Api::Agents)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_stable_and_limits_keep_their_metric_label() {
        let limited = |limit| GatewayError::Limited {
            limit,
            error: ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", "x"),
        };
        assert_eq!(limited(Limit::Key).limit().map(Limit::as_str), Some("key"));
        assert_eq!(limited(Limit::Agent).kind(), "rate_limited_agent");
        assert_eq!(limited(Limit::Streams).limit(), Some(Limit::Streams));
        let timeout = GatewayError::UpstreamTimeout(Timeout::Connect);
        assert_eq!(timeout.kind(), "upstream_connect_timeout");
        let e = timeout.render(Api::Agents);
        assert_eq!(e.status, StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(e.message, "connecting to the agent's backend timed out");
        assert_eq!(
            GatewayError::AgentNotRunning.render(Api::Pharen).status,
            StatusCode::CONFLICT
        );
    }
}
